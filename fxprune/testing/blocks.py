"""The block-removal invariant: removing a block equals zeroing its branch output.

:func:`mask_blocks` is the reference: a copy of the traced original in which
every chosen block's add reads ``zeros_like(branch output)`` instead of the
branch output.  :func:`check_block_removal` holds
:func:`fxprune.remove_blocks` to it, in float64, raising
:class:`~fxprune.testing.InvariantError` on the first failure:

1. **exactness** -- for every removable block alone, for all of them at once and
   for random subsets, the emitted module equals the masked original;
2. **re-analysis** -- the emitted module is analysed again and lists exactly the
   blocks that were not removed (a block inside a removed branch goes with it,
   and an add whose two operands became one value, ``x + x``, is no block);
3. **re-trace** -- it re-traces with ``symbolic_trace`` (fx front end) and lints;
4. **input untouched** -- the model's parameters, buffers, structure and mode are
   bit-identical afterwards.

Example:
    >>> import torch
    >>> from fxprune.testing import check_block_removal, zoo
    >>> model, inputs = zoo.resnet_basic()
    >>> summary = check_block_removal(model, inputs, subsets=1)
    >>> summary.blocks, summary.projection_blocks, summary.removals
    (8, 3, 10)
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.fx as fx

from ..analysis.analysis import Analysis, analyze
from ..analysis.blocks import Block, ProjectionPolicy, find_blocks
from ..errors import FxPruneError
from ..rewrite.blocks import remove_blocks, select_blocks
from .check import InvariantError, _outputs, _snapshot, _unchanged

__all__ = ["BlockCheckSummary", "check_block_removal", "mask_blocks", "zero_branches"]


@dataclass(frozen=True)
class BlockCheckSummary:
    """What :func:`check_block_removal` verified."""

    blocks: int
    projection_blocks: int
    removals: int
    max_abs_diff: float


def zero_branches(gm: fx.GraphModule, blocks: Iterable[Block]) -> fx.GraphModule:
    """``gm`` (a copy of the analysed graph: same node names) with each block's add reading zeros
    instead of the branch output; changed in place and returned."""
    nodes = {n.name: n for n in gm.graph.nodes}
    for b in blocks:
        add, out = nodes[b.add], nodes[b.output]
        with gm.graph.inserting_before(add):
            zeros = gm.graph.call_function(torch.zeros_like, (out,))
        add.replace_input_with(out, zeros)
    gm.recompile()
    return gm


def mask_blocks(analysis: Analysis, block_ids: Iterable[int], *,
                projection: ProjectionPolicy = ProjectionPolicy.KEEP) -> fx.GraphModule:
    """A copy of the traced original whose chosen blocks add zeros instead of their branch output."""
    chosen = select_blocks(analysis, block_ids, projection)
    return zero_branches(copy.deepcopy(analysis.graph_module), chosen)


def _double(x: Any) -> Any:
    return x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def check_block_removal(
    model: torch.nn.Module,
    example_inputs: Sequence[Any],
    *,
    projection: ProjectionPolicy = ProjectionPolicy.REPLACE,
    subsets: int = 3,
    seed: int = 0,
    rtol: float = 1e-9,
    atol: float = 1e-9,
    **analyze_kwargs: Any,
) -> BlockCheckSummary:
    """Check the block-removal invariants on ``model`` (see the module docstring).

    Args:
        model: any traceable model (in eval mode for deterministic BatchNorm); copied to
            float64 for the comparison, never modified.
        example_inputs: a tuple of positional inputs (floating tensors are cast to float64).
        projection: the :class:`~fxprune.analysis.blocks.ProjectionPolicy` checked.
        subsets: how many random subsets of the removable blocks to check.
        seed: seed of the subsets.
        rtol, atol: float64 tolerance (the two sides run the same ops: they agree to rounding).
        analyze_kwargs: passed to :func:`fxprune.analyze`.

    Raises:
        InvariantError: naming the invariant, the blocks and the difference.
    """
    inputs = tuple(example_inputs)
    snap = _snapshot(model)
    model64 = copy.deepcopy(model).double()
    inputs64 = tuple(_double(x) for x in inputs)
    analysis = analyze(model64, inputs64, **analyze_kwargs)
    blocks = find_blocks(analysis)
    removable = [b.id for b in blocks if b.removable(projection)]
    rng = np.random.default_rng(seed)
    sets = [[i] for i in removable] + ([removable] if len(removable) > 1 else [])
    for _ in range(subsets if len(removable) > 2 else 0):
        sets.append(sorted(rng.choice(removable, int(rng.integers(1, len(removable))), replace=False).tolist()))
    max_diff = 0.0
    for ids in sets:
        max_diff = max(max_diff, _check_one(analysis, blocks, ids, projection, inputs64, rtol, atol,
                                            analyze_kwargs))
    # the user's model itself: removing every removable block must leave it untouched
    if removable:
        remove_blocks(analyze(model, inputs, **analyze_kwargs), removable, projection=projection)
    problem = _unchanged(model, snap)
    if problem:
        raise InvariantError(f"input model mutated by block removal: {problem}")
    return BlockCheckSummary(len(blocks), sum(b.projection for b in blocks), len(sets), max_diff)


def _check_one(analysis: Analysis, blocks: Sequence[Any], ids: list[int], projection: ProjectionPolicy,
               inputs: tuple, rtol: float, atol: float, analyze_kwargs: dict) -> float:
    where = f"removing blocks {ids} ({', '.join(b.add for b in blocks if b.id in ids)})"
    try:
        gm = remove_blocks(analysis, ids, projection=projection)
    except FxPruneError as exc:
        raise InvariantError(f"{where}: the rewrite failed: {exc}") from exc
    got, want = _outputs(gm, inputs), _outputs(mask_blocks(analysis, ids, projection=projection), inputs)
    diff = 0.0
    for k, (a, b) in enumerate(zip(got, want)):
        if a.shape != b.shape:
            raise InvariantError(f"{where}: output {k} has shape {tuple(a.shape)}, the masked original "
                                 f"{tuple(b.shape)}")
        if a.is_floating_point():
            diff = max(diff, (a - b).abs().max().item() if a.numel() else 0.0)
            if not torch.allclose(a, b, rtol=rtol, atol=atol):
                raise InvariantError(f"{where}: output {k} differs from the original with zeroed "
                                     f"branches by {diff:.3g}")
        elif not torch.equal(a, b):
            raise InvariantError(f"{where}: integer output {k} differs from the masked original")
    kept = {n.name: n for n in gm.graph.nodes}
    # every block not removed stays one, unless its two operands became one value (x + x)
    expected = [b.add for b in blocks if b.add in kept and kept[b.add].args[0] is not kept[b.add].args[1]]
    try:
        again = [b.add for b in find_blocks(analyze(gm, inputs, **analyze_kwargs))]
    except FxPruneError as exc:
        raise InvariantError(f"{where}: the result cannot be analysed again: {exc}") from exc
    if analysis.frontend != "fx":  # torch.export renames nodes: compare the count
        again, expected = len(again), len(expected)  # type: ignore[assignment]
    if again != expected:
        raise InvariantError(f"{where}: re-analysis lists blocks {again}, expected {expected}")
    if analysis.frontend == "fx":
        try:
            fx.symbolic_trace(gm).graph.lint()
        except Exception as exc:  # noqa: BLE001
            raise InvariantError(f"{where}: the result does not re-trace: {exc}") from exc
    return diff
