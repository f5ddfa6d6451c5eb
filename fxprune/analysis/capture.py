"""Capture: turn an ``nn.Module`` into a ``torch.fx.GraphModule`` with shapes.

Two steps, both free of real compute:

* :func:`trace` runs ``torch.fx.symbolic_trace`` with a leaf-module policy the
  user can extend (modules listed as leaves stay ``call_module`` nodes; fxprune
  then needs a rule for their type, or treats them as barriers).
* :func:`propagate_shapes` (from :mod:`fxprune.analysis.shapes`) runs the graph on
  *meta* tensors (fake tensors where a graph needs them), so no weights are read
  and a model built on the ``meta`` device can be analysed.  The result is stored
  under :data:`fxprune.ir.SPEC`.

Example:
    >>> import torch, torch.nn as nn
    >>> from fxprune.analysis.capture import trace, propagate_shapes
    >>> from fxprune import ir
    >>> gm = trace(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
    >>> propagate_shapes(gm, (torch.randn(1, 3, 8, 8),))
    >>> [tuple(n.meta[ir.SPEC].shape) for n in gm.graph.nodes if n.op == "call_module"]
    [(1, 8, 6, 6), (1, 8, 6, 6)]
"""
from __future__ import annotations

import functools
import inspect
import traceback
import warnings
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.fx as fx

from .. import ir
from ..errors import ExampleInputError, TraceError, TrainEvalWarning
from .modes import follow_mode, mode_differences
from .shapes import as_example_inputs, propagate_shapes, spec_of
from .copying import code_generated
from .tracer import CAPTURE_LOCK, trace_module, tracing_copy

__all__ = ["trace", "export", "propagate_shapes", "spec_of", "DEFAULT_LEAF_TYPES", "check_analysis_of",
           "as_example_inputs", "bind_example_inputs"]

#: Module types kept as leaves by default (those torch.fx keeps anyway, plus none).
DEFAULT_LEAF_TYPES: tuple[type, ...] = ()


def trace(
    model: torch.nn.Module,
    *,
    leaf_modules: Iterable[type | str] = (),
    kept_functions: Iterable[Any] = (),
    example_inputs: Sequence[Any] | None = None,
) -> fx.GraphModule:
    """Symbolically trace ``model`` into a GraphModule.

    Where plain symbolic tracing fails and ``example_inputs`` are given (positional,
    as :func:`bind_example_inputs` gives them), the model is traced again from the
    example values (Hugging Face models: decorated ``forward`` with ``**kwargs``,
    branches on sizes and dtypes): each proxy carries its value (with CPU kernels on
    copies for a small plain-CPU model, every read of tensor data refused; on meta copies
    for another plain-CPU model or where that fails; else on fake tensors:
    :mod:`fxprune.analysis.values`), and every node its :data:`fxprune.ir.SPEC`, so
    ``.dtype``, ``.device`` and ``.dim()`` are answered from it while sizes stay graph
    nodes (reshapes follow the batch and sequence); a branch on a size, a size used
    as a Python int, the rank and dtype of each tensor input and the value of each
    other input are frozen and checked at run time
    (:func:`fxprune.modules.check_traced` raises :class:`~fxprune.errors.GuardError`);
    a branch on tensor *values* still fails.  The GraphModule takes the example
    inputs positionally (placeholders named after the parameters of ``forward``) and
    gives back the model's own output type; :data:`fxprune.ir.CAPTURE_NOTES` in its
    ``meta`` says what was frozen.

    ``leaf_modules`` lists module *types* or qualified *names* that are not traced
    through (the escape hatch for code torch.fx cannot trace), and functions
    recorded as one call (the registry's leaf functions).  Functions wrapped with
    ``torch.fx.wrap`` are traced into unless listed in ``kept_functions`` (the
    functions the registry has a rule for) or tracing into them fails or would
    freeze a branch (:data:`fxprune.ir.KEPT_CALL`).  The returned
    GraphModule shares parameters and buffers with ``model``; fxprune never
    writes to them, and the model keeps every attribute as it was (see
    :mod:`fxprune.analysis.tracer`: buffers updated in ``forward``, Python-side
    caches, custom autograd Functions, ``self.training``, threads).

    Raises:
        TraceError: quoting the torch.fx failure and naming the fixes.
    """
    if isinstance(model, fx.GraphModule):
        return model
    if not isinstance(model, torch.nn.Module):
        raise TraceError(f"fxprune needs a torch.nn.Module, got {type(model).__name__}")
    leaf_list = list(leaf_modules)
    types = tuple(x for x in leaf_list if isinstance(x, type))
    names = frozenset(x for x in leaf_list if isinstance(x, str))
    functions = tuple(x for x in leaf_list if callable(x) and not isinstance(x, type))
    unknown = sorted(names - {n for n, _ in model.named_modules()}) if names else []
    if unknown:
        from ..errors import ConfigError

        raise ConfigError(f"leaf_modules names {unknown} that are not submodules of the model")
    options = dict(leaf_types=DEFAULT_LEAF_TYPES + types, leaf_names=names, leaf_functions=functions,
                   kept_functions=tuple(kept_functions))
    try:
        return trace_module(model, **options)
    except Exception as exc:  # torch.fx raises many types; we re-raise one
        first = exc
    also = ""
    if example_inputs is not None:
        try:
            return trace_module(model, example_inputs=tuple(example_inputs), **options)
        except Exception as exc:  # noqa: BLE001 - reported with the plain trace's failure
            message = str(exc).strip().splitlines()
            also = (f"\n  and tracing from the example values failed: {type(exc).__name__}: "
                    f"{message[0][:500] if message else ''}{_where(exc)}")
    raise TraceError(
        f"torch.fx.symbolic_trace could not trace {type(model).__name__}: "
        f"{type(first).__name__}: {first}{_where(first)}{also}\n"
        "Fixes: (1) pass leaf_modules=[TheSubmoduleType or 'qualified.name'] so the "
        "offending submodule is kept as one opaque call (its channels become a barrier "
        "unless a rule is registered for its type); (2) make the control flow "
        "independent of tensor values; (3) use frontend='export' (torch.export) for "
        "models symbolic tracing cannot handle."
    ) from first


def _where(exc: BaseException) -> str:
    """``at file:line: code`` of the innermost frame of ``exc``'s traceback outside torch.fx and the tracer."""
    tb = traceback.extract_tb(exc.__traceback__)
    user = [f for f in tb if not any(p in f.filename.replace("\\", "/") for p in ("torch/fx", "fxprune/analysis/"))]
    return f"\n  at {user[-1].filename}:{user[-1].lineno}: {user[-1].line}" if user else ""


def export(model: torch.nn.Module, example_inputs: Sequence[Any], *, dynamic: bool = True) -> fx.GraphModule:
    """Capture ``model`` with ``torch.export`` (ATen level) as a GraphModule.

    For models ``symbolic_trace`` cannot handle.  Parameters become ``get_attr``
    nodes and ops are ATen overloads, which the registry maps to the same rules
    as their functional forms.  ``torch.export`` bakes ``self.training`` into
    constants: where a ``train``/``training`` argument of an ATen op came from a
    ``torch.nn`` module (``nn.Dropout``, ``nn.BatchNorm2d``) it reads the emitted
    module's flag at run time instead; where it came from your own module's code
    it cannot be told from a literal, and is reported (:data:`fxprune.ir.MODE_BRANCHES`).
    Python code that branches on ``self.training`` outside ``torch.nn`` (attention
    written ``dropout_p=self.dropout if self.training else 0.0``) leaves no trace in
    the ATen graph: the model is captured a second time in the other mode, and
    where the two graphs differ outside ``torch.nn`` modules, that is reported too.

    With ``dynamic`` (the default) the batch dim (dim 0 of every tensor input)
    and the sequence dim (dim 1 of integer inputs: token ids, attention masks)
    are exported as dynamic dims (``torch.export.Dim.AUTO``), so the captured
    graph, and the pruned module emitted from it, run on other batch sizes and
    sequence lengths; an example batch (or sequence) of one is widened to two
    for the capture, since ``torch.export`` specialises a size of one.  Where
    export with dynamic dims fails it falls back to static shapes; the notes
    under :data:`fxprune.ir.CAPTURE_NOTES` in the GraphModule's ``meta`` say so,
    and which dims are dynamic.

    Raises:
        TraceError: quoting the torch.export failure.
    """
    if not isinstance(model, torch.nn.Module):
        raise TraceError(f"fxprune needs a torch.nn.Module, got {type(model).__name__}")
    notes: list[str] = []
    program = None
    used: tuple[tuple, Any] = (tuple(example_inputs), None)   # the inputs and dims the kept program was captured with
    if dynamic:
        widened, dims = _dynamic_dims(tuple(example_inputs))
        if dims is not None:
            try:
                program = _export(model, widened, dims)
                used = (widened, dims)
            except Exception as exc:  # noqa: BLE001 - fall back to static shapes, and say so
                notes.append(f"export with dynamic batch/sequence dims failed ({type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}); "
                             "captured with static shapes: the pruned module runs on the example shapes only")
        if program is not None and any(a is not b for a, b in zip(widened, example_inputs)):
            # captured at size two where the example has one: the code must not special-case one
            try:
                static = _export(model, tuple(example_inputs), None)
            except Exception:  # noqa: BLE001 - the plain export's failure is reported below, if any
                static = None
            if static is not None and _compute_ops(static) != _compute_ops(program):
                notes.append("export with dynamic batch/sequence dims records other ops at the example's "
                             "size of one than at two (the model's code special-cases a size of one); "
                             "captured with static shapes: the pruned module runs on the example shapes only")
                program, used = static, (tuple(example_inputs), None)
    if program is None:
        try:
            program = _export(model, tuple(example_inputs), None)
        except Exception as exc:  # torch.export raises many types; we re-raise one
            raise TraceError(f"torch.export could not capture {type(model).__name__}: "
                             f"{type(exc).__name__}: {str(exc)[:2000]}\n"
                             "Fixes: check the example inputs; make data-dependent control flow use "
                             "torch.cond, or try frontend='fx' (symbolic_trace).") from exc
    gm = program.module()
    shapes = _input_shapes(program)
    dynamic_dims = [f"input {i} dim {d}" for i, shape in enumerate(shapes) if shape is not None
                    for d, size in enumerate(shape) if size is None]
    if dynamic and dynamic_dims:
        notes.append("export: dynamic dims " + ", ".join(dynamic_dims)
                     + " (the pruned module runs on other batch sizes / sequence lengths)")
    elif dynamic and not notes:
        notes.append("export: no input dim could be captured as dynamic; the pruned module runs on the "
                     "example shapes only")
    gm.meta[ir.CAPTURE_NOTES] = tuple(notes)
    _picklable_guards(gm, shapes)
    gm.training = bool(model.training)
    frozen = mode_differences(gm, model, *used) + follow_mode(gm, model)
    gm.meta[ir.MODE_BRANCHES] = frozen
    if frozen:
        warnings.warn(f"{type(model).__name__}: train/eval behaviour frozen at capture: " + "; ".join(frozen[:3])
                      + ". Use frontend='fx' for models whose own code reads self.training.",
                      TrainEvalWarning, stacklevel=3)
    return gm


def _export(model: torch.nn.Module, inputs: tuple, dims: Any) -> Any:
    """``torch.export.export`` of a copy of ``model`` sharing its parameters (Python-side state stays as it was)."""
    with CAPTURE_LOCK:
        copy = tracing_copy(model)
        return torch.export.export(copy if copy is not None else model, inputs, dynamic_shapes=dims)


def _dynamic_dims(inputs: tuple) -> tuple[tuple, Any]:
    """The inputs to export with (sizes of one widened to two) and their ``dynamic_shapes``, or ``(inputs, None)``.

    Dim 0 of every tensor input is the batch; dim 1 of an integer input of two or
    more dims is the sequence.
    """
    from torch.export import Dim

    dims: list[Any] = []
    widened: list[Any] = []
    for x in inputs:
        if not isinstance(x, torch.Tensor) or x.ndim == 0:
            dims.append(None)
            widened.append(x)
            continue
        spec = {0: Dim.AUTO}
        if not x.is_floating_point() and not x.is_complex() and x.ndim >= 2:
            spec[1] = Dim.AUTO
        for d in spec:
            if x.shape[d] == 1:
                x = torch.cat([x, x], dim=d)
        dims.append(spec)
        widened.append(x)
    if all(d is None for d in dims):
        return inputs, None
    return tuple(widened), tuple(dims)


#: ATen ops that export records or elides depending on sizes alone (a full slice, an alias)
_SIZE_DEPENDENT_NO_OPS = ("slice", "alias", "view", "_unsafe_view", "reshape", "expand", "clone", "contiguous",
                          "sym_size", "sym_numel", "sym_stride", "sym_constrain_range_for_size")


def _compute_ops(program: Any) -> list[str]:
    """The ATen ops of an exported program in order, without runtime asserts and size-only no-ops."""
    ops = []
    for n in program.graph.nodes:
        packet = getattr(n.target, "overloadpacket", None) if n.op == "call_function" else None
        name = getattr(packet, "__name__", "")
        if packet is not None and not name.startswith("_assert") and name not in _SIZE_DEPENDENT_NO_OPS:
            ops.append(name)
    return ops


def _input_shapes(program: Any) -> tuple:
    """Per flat user input of an exported program: its shape, ``None`` for dynamic dims (``None``: not a tensor)."""
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    shapes = []
    for name in program.graph_signature.user_inputs:
        val = placeholders[name].meta.get("val") if name in placeholders else None
        if isinstance(val, torch.Tensor):
            shapes.append(tuple(int(s) if isinstance(s, int) else None for s in val.shape))
        else:
            shapes.append(None)
    return tuple(shapes)


def check_input_shapes(shapes: tuple, *args: Any) -> None:
    """The input guard of an exported program: each tensor input keeps its rank and its static sizes
    (``None`` in ``shapes``: a dynamic dim, any size)."""
    for i, (want, got) in enumerate(zip(shapes, args)):
        if want is None or not isinstance(got, torch.Tensor):
            continue
        if got.ndim != len(want) or any(w is not None and w != g for w, g in zip(want, got.shape)):
            raise AssertionError(f"Guard failed: input {i} has shape {tuple(got.shape)}; "
                                 "the program was exported for "
                                 f"{tuple('*' if w is None else w for w in want)} (* any size)")


def _picklable_guards(gm: fx.GraphModule, shapes: tuple) -> None:
    """Make the ``_guards_fn`` of ``ExportedProgram.module()`` picklable (its generated forward is a
    closure, so ``torch.save`` of the pruned module failed): the shape check, as a ``functools.partial``."""
    guards = getattr(gm, "_guards_fn", None)
    if isinstance(guards, torch.nn.Module) and "forward" in vars(guards):
        guards.forward = functools.partial(check_input_shapes, shapes)


def bind_example_inputs(model: Any, example_inputs: Any = (),
                        example_kwargs: Mapping[str, Any] | None = None) -> tuple:
    """Positional and keyword example inputs as the one tuple of positional inputs fxprune captures with.

    Keyword inputs (``input_ids=..., attention_mask=...``) are placed at their
    parameters' positions in ``model.forward``; parameters between them that
    were not given take their defaults.  Without ``example_kwargs`` this is
    :func:`as_example_inputs`.

    Example:
        >>> import torch.nn as nn
        >>> class M(nn.Module):
        ...     def forward(self, input_ids, position_ids=None, attention_mask=None):
        ...         return input_ids
        >>> bind_example_inputs(M(), (), {"input_ids": 1, "attention_mask": 2})
        (1, None, 2)

    Raises:
        ExampleInputError: a keyword that is not a parameter of ``forward`` (or only
            a ``**kwargs`` one), one given twice, or a parameter without a default left out.
    """
    args = () if example_inputs is None and example_kwargs else as_example_inputs(example_inputs)
    if not example_kwargs:
        return args
    if not isinstance(example_kwargs, Mapping):
        raise ExampleInputError(f"example_kwargs must be a dict of keyword inputs, got {type(example_kwargs).__name__}")
    forward = getattr(code_generated(model), "forward", model)  # a lazy GraphModule: its real forward
    try:
        params = list(inspect.signature(forward).parameters.values())
    except (TypeError, ValueError) as exc:
        raise ExampleInputError(f"example_kwargs: cannot read the signature of {type(model).__name__}.forward "
                                f"({exc}); pass the inputs positionally") from exc
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = [p.name for p in positional]
    unknown = sorted(set(example_kwargs) - set(names))
    if unknown:
        raise ExampleInputError(
            f"example_kwargs {unknown} are not positional-or-keyword parameters of {type(model).__name__}.forward "
            f"(its parameters: {names}); fxprune captures with positional inputs, so only those can be given")
    twice = sorted(n for n in example_kwargs if names.index(n) < len(args))
    if twice:
        raise ExampleInputError(f"example_kwargs {twice} are given positionally too (example_inputs has "
                                f"{len(args)} inputs: {names[:len(args)]})")
    last = max(names.index(n) for n in example_kwargs)
    bound = list(args)
    for p in positional[len(args):last + 1]:
        if p.name in example_kwargs:
            bound.append(example_kwargs[p.name])
        elif p.default is not p.empty:
            bound.append(p.default)
        else:
            raise ExampleInputError(f"example input {p.name!r} of {type(model).__name__}.forward has no default "
                                    "and was not given: pass it in example_inputs or example_kwargs")
    return tuple(bound)


def check_analysis_of(model: torch.nn.Module, analysis: Any) -> None:
    """Refuse an analysis that does not describe ``model`` (``prune(b, x, analysis=analyze(a, x))``).

    An analysis reads its weights through its own traced module: pruning ``b``
    with an analysis of ``a`` would return ``a``'s weights.  Every parameter and
    buffer of the analysis must be the model's tensor of the same name (or, for
    a copy, equal to it).

    Example:
        >>> import torch.nn as nn, fxprune
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> analysis = fxprune.analyze(a, (torch.randn(1, 2),))
        >>> check_analysis_of(a, analysis)
        >>> check_analysis_of(b, analysis)
        Traceback (most recent call last):
        ...
        fxprune.errors.ConfigError: the analysis does not describe this model: ...
    """
    from ..errors import ConfigError

    gm = analysis.graph_module
    if gm is model:
        return
    own = {**dict(gm.named_parameters(remove_duplicate=False)), **dict(gm.named_buffers(remove_duplicate=False))}
    theirs = {**dict(model.named_parameters(remove_duplicate=False)),
              **dict(model.named_buffers(remove_duplicate=False))}
    problem = None
    for name in analysis.state.param_labels:
        mine = own.get(name)
        if mine is None:
            continue  # a constant the capture created
        other = theirs.get(name)
        if other is None and not isinstance(mine, torch.nn.Parameter):
            continue  # a tensor constant the capture registered
        if other is None:
            problem = f"its parameter {name!r} is not a parameter of the model"
        elif other is not mine and (other.shape != mine.shape or other.dtype != mine.dtype or (
                "meta" not in (other.device.type, mine.device.type)
                and not torch.equal(other.detach().cpu(), mine.detach().cpu()))):
            problem = f"its tensor {name!r} differs from the model's"
        if problem:
            raise ConfigError(f"the analysis does not describe this model: {problem}. Pass the analysis "
                              "of this very model (fxprune.analyze(model, example_inputs)), or none")
