"""Resolution: analyse a model at a scaled input size, adapting or reporting baked-in sizes.

:func:`at_resolution` scales the spatial dimensions of the example inputs
(every floating input with three or more dimensions: ``[B, C, *spatial]``),
re-propagates shapes at the new size and re-analyses the model there:

* an op whose size is **baked in** makes shape propagation fail at the new size
  (a ``flatten`` into a ``Linear``, a constant ``view`` whose sizes no longer
  divide, a parameter added to activations of another size).  A learned
  **positional embedding** -- a parameter added to the activations, laid out as
  ``[1, prefix + grid, C]`` tokens or as a ``[1, C, *grid]`` map -- is
  recognised from the shapes alone and **adapted**: its grid is interpolated
  (bicubic, antialiased when shrinking; linear for 1-d grids) to the new one,
  its prefix tokens (a class token) kept, in a copy of the model.  Anything else
  raises :class:`ResolutionError` naming the node, its op and why;
* a ``view``/``reshape`` with constant sizes that still runs but regroups
  dimensions differently at the new size (``x.view(-1, 400)`` folding spatial
  positions into the batch) is silently wrong, so it is reported as baked too;
* nodes whose output keeps its spatial size while their input's changes
  (adaptive pooling, ``interpolate(size=...)``) are listed in
  :attr:`Resolution.fixed_size`, for information.

MACs are recounted at the new size (:func:`fxprune.analysis.cost.count_macs`),
and the new input shapes are recorded; :class:`fxprune.rewrite.compose.ResizeInputs`
wraps a module so it can be fed inputs of the original size.

Example:
    >>> import torch, fxprune
    >>> from fxprune.analysis.resolution import at_resolution
    >>> from fxprune.testing import zoo
    >>> model, inputs = zoo.resnet_basic()
    >>> res = at_resolution(model, inputs, 2.0)
    >>> res.input_shapes, round(res.macs / res.macs_before, 2)        # MACs ~ r**2
    (((1, 3, 64, 64),), 4.0)
    >>> vit, images = zoo.vit()
    >>> res = at_resolution(vit, images, 2.0)          # the positional embedding is interpolated
    >>> [(a.param, a.old_shape, a.new_shape) for a in res.adapted]
    [('pos_embed', (1, 17, 32), (1, 65, 32))]
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F

from .. import ir
from ..errors import ConfigError, ExampleInputError, ResolutionError
from ..ir import TensorSpec
from ..modules import get_attr, set_attr
from ..ops import RESHAPE, SPATIAL, VIEW
from .analysis import Analysis, analyze
from .blocks import is_add
from .shapes import propagate_shapes
from .copying import clean_copy, own_copies
from .cost import count_macs

__all__ = ["AdaptedEmbedding", "Resolution", "at_resolution", "input_shapes", "scale_inputs"]


@dataclass(frozen=True)
class AdaptedEmbedding:
    """A positional embedding interpolated to the new input size.

    Attributes:
        param: its qualified name; node: the add that reads it.
        old_shape, new_shape: the parameter's shapes.
        prefix: leading tokens kept as they are (a class token).
        grid, new_grid: the interpolated grid, before and after.
    """

    param: str
    node: str
    old_shape: tuple[int, ...]
    new_shape: tuple[int, ...]
    prefix: int
    grid: tuple[int, ...]
    new_grid: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class Resolution:
    """The result of :func:`at_resolution`.

    Attributes:
        model: the model to run at the new size: the input model itself, or an
            adapted copy (a GraphModule) when an embedding was interpolated.
        analysis: the analysis of ``model`` at the new size.
        example_inputs: the resized example inputs.
        input_shapes, original_shapes: per input, its shape (``None`` for non-tensors).
        scale: the multiplier asked for (``None`` when an explicit size was).
        macs, macs_before: multiply-accumulates at the new and the original size.
        adapted: the interpolated positional embeddings.
        fixed_size: nodes whose output keeps its spatial size while their input's changes.
    """

    model: torch.nn.Module
    analysis: Analysis
    example_inputs: tuple
    input_shapes: tuple
    original_shapes: tuple
    scale: float | None
    macs: int
    macs_before: int
    adapted: tuple[AdaptedEmbedding, ...]
    fixed_size: tuple[str, ...]


def input_shapes(inputs: Sequence[Any]) -> tuple:
    """Per input, its shape as a tuple (``None`` for non-tensors)."""
    return tuple(tuple(x.shape) if isinstance(x, torch.Tensor) else None for x in inputs)


def _spatial(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim >= 3


def scale_inputs(inputs: Sequence[Any], scale: float | None = None, *,
                 size: int | Sequence[int] | None = None) -> tuple:
    """``inputs`` with the spatial dims (2 onwards) of every floating input of 3+ dims resized.

    Exactly one of ``scale`` (new size ``max(1, round(scale * old))``) and ``size``
    (an int, or one int per spatial dim) is given.  Values are resampled with
    ``F.interpolate`` (linear / bilinear / trilinear; antialiased when shrinking images).
    """
    if (scale is None) == (size is None):
        raise ConfigError("give exactly one of scale= (a multiplier) and size= (the new spatial size)")
    if scale is not None and (isinstance(scale, bool) or not scale > 0):
        raise ConfigError(f"scale must be a positive number, got {scale!r}")
    inputs = tuple(inputs)
    if not any(_spatial(x) for x in inputs):
        raise ConfigError("no example input has spatial dimensions (a floating tensor [B, C, *spatial])")
    out = []
    for x in inputs:
        if not _spatial(x):
            out.append(x)
            continue
        old = tuple(x.shape[2:])
        if size is not None:
            new = (int(size),) * len(old) if isinstance(size, int) else tuple(int(s) for s in size)
            if len(new) != len(old) or min(new) < 1:
                raise ConfigError(f"size={size!r} does not fit an input with spatial dims {old}")
        else:
            new = tuple(max(1, int(round(scale * s))) for s in old)
        if new == old:
            out.append(x)
            continue
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}.get(len(old))
        if mode is None:
            raise ConfigError(f"cannot resize an input with {len(old)} spatial dims")
        shrink = mode == "bilinear" and any(n < o for n, o in zip(new, old))
        out.append(F.interpolate(x, size=new, mode=mode, align_corners=False, antialias=shrink))
    return tuple(out)


@contextlib.contextmanager
def _quiet_fake_tensors() -> Iterator[None]:
    """Failing fake ops log a traceback before raising; the failure is reported here instead."""
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _describe(node: fx.Node) -> str:
    target = node.target if node.op in ("call_module", "call_method", "get_attr") else \
        getattr(node.target, "__name__", str(node.target))
    attrs = [str(a.target) for a in node.all_input_nodes if a.op == "get_attr"]
    return f"'{node.name}' ({node.op} {target}" + (f", reading {', '.join(attrs)})" if attrs else ")")


def _probe(gm: fx.GraphModule, inputs: tuple) -> tuple[fx.GraphModule, fx.Node | None, Exception | None]:
    """Propagate shapes on a clean copy of ``gm``'s graph: (copy, first failing node, error)."""
    probe = fx.GraphModule(gm, clean_copy(gm.graph), type(gm).__name__)
    try:
        with _quiet_fake_tensors():
            propagate_shapes(probe, inputs)
    except ExampleInputError as exc:
        failing = next((n for n in probe.graph.nodes if ir.SPEC not in n.meta), None)
        return probe, failing, exc
    return probe, None, None


def _grid_candidates(n_old: int, n_new: int, old: tuple[int, ...], new: tuple[int, ...]) -> list[tuple[int, tuple, tuple]]:
    """``(prefix, grid, new_grid)`` such that ``n = prefix + prod(grid)`` before and after,
    the grid tiling the input with one patch size that also tiles the new input."""
    found = []
    for prefix in range(0, min(n_old, 9)):
        cells = n_old - prefix
        shapes = [(cells,)] if len(old) == 1 else \
            [(d, cells // d) for d in range(1, cells + 1) if cells % d == 0] if len(old) == 2 else []
        for grid in shapes:
            if any(o % g for o, g in zip(old, grid)):
                continue
            patch = [o // g for o, g in zip(old, grid)]
            new_grid = tuple(s // p for s, p in zip(new, patch))
            if prefix + math.prod(new_grid) == n_new and min(new_grid) >= 1:
                found.append((prefix, grid, new_grid))
    # the squarest patch first (equal patch sizes along every dim), then the fewest prefix tokens
    return sorted(found, key=lambda c: (np.ptp([o // g for o, g in zip(old, c[1])]), c[0]))


def _interpolate(t: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """``t`` of shape ``[1, C, *old grid]`` resampled to ``grid``."""
    mode = "bicubic" if len(grid) == 2 else "linear"
    shrink = mode == "bicubic" and any(n < o for n, o in zip(grid, t.shape[2:]))
    dtype = t.dtype
    work = t.float() if dtype not in (torch.float32, torch.float64) else t
    out = F.interpolate(work, size=grid, mode=mode, align_corners=False, antialias=shrink)
    return out.to(dtype)


def _adapt(probe: fx.GraphModule, node: fx.Node, registry: Any, old_spatial: tuple, new_spatial: tuple
           ) -> tuple[str, torch.Tensor, AdaptedEmbedding] | None:
    """The interpolated embedding for a failing ``x + embedding``, or ``None`` if it is not one."""
    if not is_add(node, registry, probe):
        return None
    operands = [a for a in node.args[:2] if isinstance(a, fx.Node)]
    attrs = [a for a in operands if a.op == "get_attr"]
    others = [a for a in operands if a.op != "get_attr" and isinstance(a.meta.get(ir.SPEC), TensorSpec)]
    if len(attrs) != 1 or len(others) != 1:
        return None
    target = str(attrs[0].target)
    param = get_attr(probe, target)
    want = others[0].meta[ir.SPEC].shape
    if not isinstance(param, torch.Tensor) or param.ndim != len(want) or param.shape[0] != 1 or param.ndim < 3:
        return None
    differ = [d for d in range(1, param.ndim) if param.shape[d] != want[d]]
    with torch.no_grad():
        value = param.detach()
        if differ == [1] and param.ndim == 3 and old_spatial:  # tokens [1, prefix + grid, C]
            cands = _grid_candidates(param.shape[1], want[1], old_spatial, new_spatial)
            if not cands:
                return None
            prefix, grid, new_grid = cands[0]
            cells = value[:, prefix:].transpose(1, 2).reshape(1, -1, *grid)
            moved = _interpolate(cells, new_grid).reshape(1, param.shape[2], -1).transpose(1, 2)
            new = torch.cat([value[:, :prefix], moved], 1)
        elif differ and differ == list(range(2, param.ndim)):  # a map [1, C, *grid]
            prefix, grid, new_grid = 0, tuple(param.shape[2:]), tuple(want[2:])
            new = _interpolate(value, new_grid)
        else:
            return None
    new = new.contiguous()
    if isinstance(param, torch.nn.Parameter):
        new = torch.nn.Parameter(new, requires_grad=param.requires_grad)
    return target, new, AdaptedEmbedding(target, node.name, tuple(param.shape), tuple(new.shape), prefix,
                                         tuple(grid), tuple(new_grid))


def _cuts(a: Sequence[int], b: Sequence[int]) -> set[tuple[int, int]]:
    """Where a reshape from ``a`` to ``b`` may cut: the index pairs with equal running products."""
    ca, cb = np.cumprod([1, *a]).tolist(), np.cumprod([1, *b]).tolist()
    return {(i, j) for i, x in enumerate(ca) for j, y in enumerate(cb) if x == y}


def _regrouped(before: Analysis, after: Analysis) -> list[str]:
    """Reshapes with constant sizes whose dimension grouping differs between the two sizes."""
    old = {n.name: n for n in before.graph_module.graph.nodes}
    bad = []
    for node in after.graph_module.graph.nodes:
        prev = old.get(node.name)
        if prev is None or node.meta.get(ir.RULE) not in (VIEW, RESHAPE) or not node.args:
            continue
        literal = [a for a in fx.node.map_aggregate(node.args[1:], lambda v: v) if isinstance(a, int) and a > 1] \
            if len(node.args) > 1 else []
        src, src_prev = node.args[0], prev.args[0]
        if not literal or not isinstance(src, fx.Node):
            continue
        shapes = [(src_prev.meta.get(ir.SPEC), prev.meta.get(ir.SPEC)), (src.meta.get(ir.SPEC), node.meta.get(ir.SPEC))]
        if not all(isinstance(s, TensorSpec) for pair in shapes for s in pair):
            continue
        (a0, b0), (a1, b1) = [(x.shape, y.shape) for x, y in shapes]
        if not _cuts(a0, b0) <= _cuts(a1, b1):  # a grouping of dims no longer holds
            bad.append(f"{_describe(node)}: its constant sizes regroup {tuple(a1)} -> {tuple(b1)} "
                       f"unlike {tuple(a0)} -> {tuple(b0)}")
    return bad


def _fixed_size(before: Analysis, after: Analysis) -> tuple[str, ...]:
    old = {n.name: n for n in before.graph_module.graph.nodes}
    out = []
    for node in after.graph_module.graph.nodes:
        prev = old.get(node.name)
        if prev is None or node.meta.get(ir.RULE) is not SPATIAL or not node.args:
            continue
        specs = [n.meta.get(ir.SPEC) for n in (node.args[0], prev.args[0], node, prev) if isinstance(n, fx.Node)]
        if len(specs) == 4 and all(isinstance(s, TensorSpec) for s in specs):
            x, x0, y, y0 = (s.shape[2:] for s in specs)
            if x != x0 and y == y0:
                out.append(node.name)
    return tuple(out)


def at_resolution(model: torch.nn.Module, example_inputs: Sequence[Any], scale: float | None = None, *,
                  size: int | Sequence[int] | None = None, adapt: bool = True, **analyze_kwargs: Any) -> Resolution:
    """Analyse ``model`` at a scaled input size (see the module docstring).

    Args:
        model: the model; never modified (adapted embeddings live in a copy).
        example_inputs: the positional inputs at the original size.
        scale: the resolution multiplier ``r`` (spatial sizes ``round(r * size)``), or
        size: the new spatial size (an int, or one per spatial dim).
        adapt: interpolate positional embeddings; ``False`` reports them as baked.
        analyze_kwargs: passed to :func:`fxprune.analyze` (both sizes).

    Raises:
        ResolutionError: an op's size is baked in (the message names the node); also a
            :class:`~fxprune.errors.ConfigError` for a bad ``scale``/``size``.
    """
    inputs = tuple(example_inputs) if not isinstance(example_inputs, torch.Tensor) else (example_inputs,)
    new_inputs = scale_inputs(inputs, scale, size=size)
    before = analyze(model, inputs, **analyze_kwargs)
    old_spatial = next((tuple(x.shape[2:]) for x in inputs if _spatial(x)), ())
    new_spatial = next((tuple(x.shape[2:]) for x in new_inputs if _spatial(x)), ())
    current: torch.nn.Module = model
    gm = before.graph_module
    adapted: list[AdaptedEmbedding] = []
    owned = False
    while True:
        probe, failing, error = _probe(gm, new_inputs)
        if failing is None:
            break
        fix = _adapt(probe, failing, before.registry, old_spatial, new_spatial) if adapt else None
        if fix is None or any(a.param == fix[0] for a in adapted):
            raise ResolutionError(
                f"the model cannot run at input size {input_shapes(new_inputs)} (analysed at "
                f"{input_shapes(inputs)}): node {_describe(failing)} fails: "
                f"{str(error.__cause__ or error).splitlines()[0]}\nEither its size is baked in (a flatten "
                "into a Linear, constant view sizes, an embedding that could not be interpolated: make "
                "the size follow the input, e.g. adaptive pooling before the classifier, sizes read "
                "from x.shape), or the input is too small for the model's strides."
                + ("" if adapt else " (adapt=False: positional embeddings are not interpolated)")) from error
        if not owned:
            gm = fx.GraphModule(gm, clean_copy(gm.graph), type(gm).__name__)
            own_copies(gm)  # the user's model is never written
            owned = True
        set_attr(gm, fix[0], fix[1])
        adapted.append(fix[2])
        current = gm
    after = analyze(current, new_inputs, **analyze_kwargs)
    regrouped = _regrouped(before, after)
    if regrouped:
        raise ResolutionError(f"the model gives wrong shapes at input size {input_shapes(new_inputs)}: "
                              + "; ".join(regrouped) + ". Compute the sizes from x.shape instead of "
                              "constants, or keep this resolution.")
    return Resolution(current, after, new_inputs, input_shapes(new_inputs), input_shapes(inputs), scale,
                      count_macs(after.graph_module, after.registry), count_macs(before.graph_module, before.registry),
                      tuple(adapted), _fixed_size(before, after))

