"""Capture: turn an ``nn.Module`` into a ``torch.fx.GraphModule`` with shapes.

Two steps, both free of real compute:

* :func:`trace` runs ``torch.fx.symbolic_trace`` with a leaf-module policy the
  user can extend (modules listed as leaves stay ``call_module`` nodes; fxprune
  then needs a rule for their type, or treats them as barriers).
* :func:`propagate_shapes` runs the graph on *fake* tensors (``FakeTensorMode``),
  so no weights are read and a model built on the ``meta`` device can be analysed.
  Parameters and buffers are swapped for fake copies while each module runs, so
  in-place updates (BatchNorm running statistics in train mode) never touch the
  user's model.  The result is stored under :data:`fxprune.ir.SPEC`.

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
import traceback
from typing import Any, Iterable, Sequence

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensorMode,
    unset_fake_temporarily,
)

from .. import ir
from ..ir import TensorSpec
from ..errors import ExampleInputError, TraceError

__all__ = ["trace", "export", "propagate_shapes", "spec_of", "DEFAULT_LEAF_TYPES"]

#: Module types kept as leaves by default (those torch.fx keeps anyway, plus none).
DEFAULT_LEAF_TYPES: tuple[type, ...] = ()


class _LeafTracer(fx.Tracer):
    def __init__(self, leaf_types: tuple[type, ...], leaf_names: frozenset[str]) -> None:
        super().__init__()
        self._leaf_types = leaf_types
        self._leaf_names = leaf_names

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        if qualname in self._leaf_names or (self._leaf_types and isinstance(m, self._leaf_types)):
            return True
        return super().is_leaf_module(m, qualname)


def trace(
    model: torch.nn.Module,
    *,
    leaf_modules: Iterable[type | str] = (),
) -> fx.GraphModule:
    """Symbolically trace ``model`` into a GraphModule.

    ``leaf_modules`` lists module *types* or qualified *names* that are not traced
    through (the escape hatch for code torch.fx cannot trace).  The returned
    GraphModule shares parameters with ``model``; fxprune never writes to them.

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
    unknown = sorted(names - {n for n, _ in model.named_modules()})
    if unknown:
        from ..errors import ConfigError

        raise ConfigError(f"leaf_modules names {unknown} that are not submodules of the model")
    tracer = _LeafTracer(DEFAULT_LEAF_TYPES + types, names)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # torch.fx raises many types; we re-raise one
        tb = traceback.extract_tb(exc.__traceback__)
        user = [f for f in tb if "torch/fx" not in f.filename.replace("\\", "/")]
        where = f"\n  at {user[-1].filename}:{user[-1].lineno}: {user[-1].line}" if user else ""
        raise TraceError(
            f"torch.fx.symbolic_trace could not trace {type(model).__name__}: "
            f"{type(exc).__name__}: {exc}{where}\n"
            "Fixes: (1) pass leaf_modules=[TheSubmoduleType or 'qualified.name'] so the "
            "offending submodule is kept as one opaque call (its channels become a barrier "
            "unless a rule is registered for its type); (2) make the control flow "
            "independent of tensor values; (3) use frontend='export' (torch.export) for "
            "models symbolic tracing cannot handle."
        ) from exc
    name = type(model).__name__
    return fx.GraphModule(tracer.root, graph, name)


def export(model: torch.nn.Module, example_inputs: Sequence[Any]) -> fx.GraphModule:
    """Capture ``model`` with ``torch.export`` (ATen level) as a GraphModule.

    For models ``symbolic_trace`` cannot handle.  Parameters become ``get_attr``
    nodes and ops are ATen overloads, which the registry maps to the same rules
    as their functional forms.

    Raises:
        TraceError: quoting the torch.export failure.
    """
    if not isinstance(model, torch.nn.Module):
        raise TraceError(f"fxprune needs a torch.nn.Module, got {type(model).__name__}")
    try:
        program = torch.export.export(model, tuple(example_inputs))
    except Exception as exc:  # torch.export raises many types; we re-raise one
        raise TraceError(f"torch.export could not capture {type(model).__name__}: "
                         f"{type(exc).__name__}: {str(exc)[:2000]}\n"
                         "Fixes: check the example inputs; make data-dependent control flow use "
                         "torch.cond, or try frontend='fx' (symbolic_trace).") from exc
    gm = program.module()
    _picklable_guards(gm, example_inputs)
    return gm


def check_input_shapes(shapes: tuple, *args: Any) -> None:
    """The input guard of an exported program captured with static shapes: each tensor input keeps its shape."""
    for i, (want, got) in enumerate(zip(shapes, args)):
        if want is not None and isinstance(got, torch.Tensor) and tuple(got.shape) != want:
            raise AssertionError(f"Guard failed: input {i} has shape {tuple(got.shape)}; "
                                 f"the program was exported for {want}")


def _picklable_guards(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> None:
    """Make the ``_guards_fn`` of ``ExportedProgram.module()`` picklable (its generated forward is a
    closure, so ``torch.save`` of the pruned module failed): the same check, as a ``functools.partial``."""
    guards = getattr(gm, "_guards_fn", None)
    if isinstance(guards, torch.nn.Module) and "forward" in vars(guards):
        flat = torch.utils._pytree.tree_leaves(tuple(example_inputs))
        shapes = tuple(tuple(x.shape) if isinstance(x, torch.Tensor) else None for x in flat)
        guards.forward = functools.partial(check_input_shapes, shapes)


def _fake(mode: FakeTensorMode, value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return mode.from_tensor(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_fake(mode, v) for v in value)
    if isinstance(value, dict):
        return {k: _fake(mode, v) for k, v in value.items()}
    return value


def spec_of(value: Any) -> Any:
    """Convert a (possibly nested) fake value into TensorSpecs; other values unchanged."""
    if isinstance(value, torch.Tensor):
        return TensorSpec(tuple(int(s) for s in value.shape), value.dtype)
    if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
        return tuple(spec_of(v) for v in value)
    if isinstance(value, torch.Size):
        return tuple(int(s) for s in value)
    return value


class _FakeProp(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, mode: FakeTensorMode) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self._mode = mode
        self._fake_state: dict[str, torch.Tensor] = {}
        for name, t in list(gm.named_parameters()) + list(gm.named_buffers()):
            self._fake_state[name] = mode.from_tensor(t)

    def _local_state(self, prefix: str) -> dict[str, torch.Tensor]:
        p = prefix + "."
        return {k[len(p):]: v for k, v in self._fake_state.items() if k.startswith(p)}

    def get_attr(self, target: str, args: Any, kwargs: Any) -> Any:
        if target in self._fake_state:
            return self._fake_state[target]
        return _fake(self._mode, super().get_attr(target, args, kwargs))

    def call_module(self, target: str, args: Any, kwargs: Any) -> Any:
        mod = self.fetch_attr(target)
        try:
            return torch.func.functional_call(mod, self._local_state(target), tuple(args), dict(kwargs))
        except (DataDependentOutputException, DynamicOutputShapeException):
            return self._run_real(mod, args, kwargs)

    def _run_real(self, mod: torch.nn.Module, args: Any, kwargs: Any) -> Any:
        """Fallback for leaf modules whose code depends on tensor values.

        The module runs for real, on random inputs of the fake inputs' shapes and
        on a copy of its state, so the user's buffers are never written.
        """
        state = {k: v for k, v in list(mod.named_parameters()) + list(mod.named_buffers())}
        if any(v.device.type == "meta" for v in state.values()):
            raise ExampleInputError("a leaf module with value-dependent control flow cannot be "
                                    "analysed on the meta device")

        def real(v: Any) -> Any:
            if isinstance(v, torch.Tensor):
                if v.dtype.is_floating_point:
                    return torch.randn(tuple(v.shape), dtype=v.dtype)
                return torch.zeros(tuple(v.shape), dtype=v.dtype)
            return v

        with unset_fake_temporarily(), torch.no_grad():
            r_args = fx.node.map_aggregate(args, real)
            r_kwargs = fx.node.map_aggregate(kwargs, real)
            copies = {k: v.detach().clone() for k, v in state.items()}
            out = torch.func.functional_call(mod, copies, tuple(r_args), dict(r_kwargs))
        return _fake(self._mode, out)

    def run_node(self, n: fx.Node) -> Any:
        try:
            result = super().run_node(n)
        except ExampleInputError:
            raise
        except Exception as exc:
            stack = n.meta.get("stack_trace") or ""
            raise ExampleInputError(
                f"the example inputs do not run the model: node '{n.name}' "
                f"({n.op} {getattr(n.target, '__name__', n.target)}) failed with "
                f"{type(exc).__name__}: {exc}\n{stack}"
                "Check the number, shapes and dtypes of example_inputs: they must be a tuple "
                "of the positional arguments of model.forward."
            ) from exc
        n.meta[ir.SPEC] = spec_of(result)
        return result


def propagate_shapes(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> None:
    """Annotate every node with :data:`fxprune.ir.SPEC` using fake tensors.

    Example inputs may be real, fake or meta tensors; only their shapes and dtypes
    are used.  Inputs are moved to the device of the model's parameters when the
    model lives on ``meta``.

    Raises:
        ExampleInputError: naming the node that failed.
    """
    if not isinstance(example_inputs, (tuple, list)):
        raise ExampleInputError(
            f"example_inputs must be a tuple of positional arguments, got "
            f"{type(example_inputs).__name__}; wrap a single tensor as (x,)"
        )
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    required = [n for n in placeholders if not n.args]  # no default value
    if len(example_inputs) < len(required) or len(example_inputs) > len(placeholders):
        raise ExampleInputError(
            f"model.forward takes {len(required)}..{len(placeholders)} positional inputs "
            f"({', '.join(n.name for n in placeholders)}) but {len(example_inputs)} "
            "example inputs were given"
        )
    first = next(iter(gm.parameters()), None)
    on_meta = first is not None and first.device.type == "meta"
    inputs = [x.to("meta") if on_meta and isinstance(x, torch.Tensor) else x for x in example_inputs]
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        fake_inputs = _fake(mode, tuple(inputs))
        _FakeProp(gm, mode).run(*fake_inputs)
