"""Shapes: every node of a captured graph annotated with its :class:`~fxprune.ir.TensorSpec`.

:func:`propagate_shapes` runs the graph once: a small CPU model with CPU kernels on
copies of its state and inputs (cheaper than any shape function there), any
other on ``meta`` tensors: the parameters
and buffers are swapped for meta copies once for the whole graph (never per
module call), no dispatch cache or fake-tensor bookkeeping runs, and device
arguments a capture recorded (``.to(cpu)``, ``arange(..., device=cpu)``) move to
``meta``.  A graph that cannot run there (it reads tensor values, mixes in real
tensors it creates, or calls an op without a meta kernel) runs on fake tensors
(``FakeTensorMode``) instead, where a leaf module with value-dependent code runs
for real on random inputs of the right shapes and on a copy of its state.
Either way no weight is read, the user's tensors are never written (BatchNorm
running statistics in train mode update the copies), and every module attribute
is restored afterwards.

Example:
    >>> import torch, torch.nn as nn
    >>> from fxprune.analysis.capture import trace
    >>> from fxprune import ir
    >>> gm = trace(nn.Sequential(nn.Linear(4, 8), nn.ReLU()))
    >>> propagate_shapes(gm, (torch.randn(2, 4),))
    >>> [tuple(n.meta[ir.SPEC].shape) for n in gm.graph.nodes if n.op == "call_module"]
    [(2, 8), (2, 8)]
"""
from __future__ import annotations

import contextlib
import time
import types
import warnings
from typing import Any, Sequence

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensorMode,
    unset_fake_temporarily,
)

from .. import ir
from ..errors import ExampleInputError
from ..ir import TensorSpec
from ..modules import submodule
from .copying import is_plain_cpu, state_restored

__all__ = ["RealShapeProp", "propagate_shapes", "spec_of", "as_example_inputs", "real_run_applies", "real_run_deadline"]


def as_example_inputs(example_inputs: Any) -> tuple:
    """``example_inputs`` as the tuple of positional inputs of ``model.forward``.

    A single tensor is wrapped; a dict, ``None``, a string or a non-iterable is
    refused (a dict's keys, a string's characters would silently become the inputs).

    Example:
        >>> as_example_inputs(torch.zeros(1)).__class__.__name__
        'tuple'
        >>> as_example_inputs({"x": torch.zeros(1)})
        Traceback (most recent call last):
        ...
        fxprune.errors.ExampleInputError: example_inputs is a dict (keys ['x']): ...
    """
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, dict):
        raise ExampleInputError(
            f"example_inputs is a dict (keys {sorted(map(str, example_inputs))[:5]}): fxprune passes "
            "example inputs positionally, so its keys would become the inputs. Pass a tuple of the "
            "positional inputs of model.forward in order, e.g. (inputs['x'],), or pass the dict as "
            "example_kwargs=... (keyword inputs, as Hugging Face models take them)")
    if example_inputs is None or isinstance(example_inputs, (str, bytes)) \
            or not isinstance(example_inputs, (tuple, list)):
        raise ExampleInputError(
            f"example_inputs must be a tuple of the positional inputs of model.forward, got "
            f"{type(example_inputs).__name__} {example_inputs!r:.60}; wrap a single tensor as (x,)")
    return tuple(example_inputs)


def _fake(mode: FakeTensorMode, value: Any, device: torch.device | None = None) -> Any:
    """Fake copies of the tensors in ``value``; meta tensors move to ``device`` (the model's)."""
    if isinstance(value, torch.Tensor):
        if device is not None and value.device.type == "meta" and device.type != "meta":
            with mode:
                return torch.empty(tuple(value.shape), dtype=value.dtype, device=device)
        return mode.from_tensor(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_fake(mode, v, device) for v in value)
    if isinstance(value, dict):
        return {k: _fake(mode, v, device) for k, v in value.items()}
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


def _random_like(v: Any) -> Any:
    """A real random tensor of a fake tensor's shape and dtype (zeros for integers); other values unchanged."""
    if isinstance(v, torch.Tensor):
        if v.dtype.is_floating_point:
            return torch.randn(tuple(v.shape), dtype=v.dtype)
        return torch.zeros(tuple(v.shape), dtype=v.dtype)
    return v


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

    def call_function(self, target: Any, args: Any, kwargs: Any) -> Any:
        try:
            return super().call_function(target, args, kwargs)
        except (DataDependentOutputException, DynamicOutputShapeException):
            if not isinstance(target, types.FunctionType):  # a torch op: a real data dependency
                raise
            return self._run_real(target, args, kwargs)  # a kept torch.fx.wrap-ped Python function

    def _run_real(self, mod: Any, args: Any, kwargs: Any) -> Any:
        """Fallback for leaf modules (and kept Python functions) whose code depends on tensor values.

        The module runs for real, on random inputs of the fake inputs' shapes and
        on a copy of its state, so the user's buffers are never written.
        """
        if not isinstance(mod, torch.nn.Module):
            with unset_fake_temporarily(), torch.no_grad():
                return _fake(self._mode, mod(*fx.node.map_aggregate(args, _random_like),
                                             **fx.node.map_aggregate(kwargs, _random_like)))
        state = {k: v for k, v in list(mod.named_parameters()) + list(mod.named_buffers())}
        if any(v.device.type == "meta" for v in state.values()):
            raise ExampleInputError("a leaf module with value-dependent control flow cannot be "
                                    "analysed on the meta device")

        with unset_fake_temporarily(), torch.no_grad():
            r_args = fx.node.map_aggregate(args, _random_like)
            r_kwargs = fx.node.map_aggregate(kwargs, _random_like)
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


_META = torch.device("meta")


def _on_meta(args: Any, kwargs: Any) -> tuple[Any, Any]:
    """Device arguments (a captured ``.to(cpu)``, ``arange(..., device=cpu)``) moved to ``meta``."""
    args, kwargs = fx.node.map_aggregate((args, kwargs), lambda v: _META if isinstance(v, torch.device) else v)
    if isinstance(kwargs.get("device"), str):
        kwargs = {**kwargs, "device": _META}
    return args, kwargs


class _LeanProp(fx.Interpreter):
    """An interpreter annotating every node with its spec, without fx's per-node bookkeeping.

    ``fx.Interpreter.run`` enters a context (the current node, for tracing through the
    interpreter), formats a debug message and builds a progress bar per run; none of
    it matters to a run that only reads shapes, and on small graphs it is a large
    share of the time.  Values are freed after their last use as fx frees them; any
    failure propagates (the callers fall back to the next path).
    """

    def run(self, *args: Any, initial_env: Any = None, enable_io_processing: bool = True) -> Any:
        graph = self.graph
        if enable_io_processing:
            args = graph.process_inputs(*args)
        self.args_iter = iter(args)
        env = self.env = dict(initial_env or {})
        last_uses = self.user_to_last_uses if self.garbage_collect_values else {}
        for node in graph.nodes:
            if node in env:
                continue
            env[node] = self.run_node(node)
            for dead in last_uses.get(node, ()):
                del env[dead]
            if node.op == "output":
                out = env[node]
                return graph.process_outputs(out) if enable_io_processing else out
        return None

    def run_node(self, n: fx.Node) -> Any:
        env = self.env
        args = fx.node.map_arg(n.args, env.__getitem__)
        kwargs = fx.node.map_arg(n.kwargs, env.__getitem__)
        result = getattr(self, n.op)(n.target, args, kwargs)
        n.meta[ir.SPEC] = spec_of(result)
        return result

    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        # the module read from the child dicts (:func:`~fxprune.modules.submodule`), not through
        # fx's ``fetch_attr``, whose hasattr/getattr per path item fall through nn.Module.__getattr__
        return submodule(self.module, target)(*args, **kwargs)


class _MetaProp(_LeanProp):
    """Shape propagation on ``meta`` tensors: no dispatch cache, no fake-tensor bookkeeping."""

    def call_function(self, target: Any, args: Any, kwargs: Any) -> Any:
        return super().call_function(target, *_on_meta(args, kwargs))

    def call_method(self, target: Any, args: Any, kwargs: Any) -> Any:
        return super().call_method(target, *_on_meta(args, kwargs))


def _to_meta(value: Any) -> Any:
    return fx.node.map_aggregate(
        value, lambda v: torch.empty_like(v, device="meta") if isinstance(v, torch.Tensor) else v)


def _propagate_on_meta(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> bool:
    """Run ``gm`` once on meta copies of its state and inputs; False when any node cannot.

    The state is swapped for meta tensors once for the whole graph (not per module
    call); in-place updates (BatchNorm running statistics) land on those copies.
    Code that mixes meta tensors with real ones it creates itself, reads values
    (``.item()``, ``nonzero``) or has no meta kernel makes this return False, and
    :func:`propagate_shapes` falls back to fake tensors, which handle all of these.
    """
    return _run_on_copies(list(gm.modules()), lambda t: torch.empty_like(t, device="meta"),
                          _to_meta(tuple(example_inputs)),
                          _MetaProp(gm, garbage_collect_values=True))


#: a real run is tried only on CPU state of at most this many elements (copying it stays cheap)
REAL_RUN_MAX_STATE = 4_000_000
#: ... and abandoned for meta tensors past this many seconds (of the thread's CPU time) per graph node
#: (about meta dispatch's cost),
REAL_RUN_SECONDS_PER_NODE = 2e-4
#: ... or past this many seconds for a small graph (first calls of CPU kernels set up their primitives)
REAL_RUN_MIN_SECONDS = 5e-3


class _OverBudget(Exception):
    """A real run took longer than meta tensors would."""


def real_run_deadline(gm: fx.GraphModule) -> float:
    """The thread CPU time past which a real run of ``gm`` is given up (:data:`REAL_RUN_SECONDS_PER_NODE`
    per node, at least :data:`REAL_RUN_MIN_SECONDS`): CPU time, not wall time, since on a busy machine
    the run is no costlier, only slower."""
    return time.thread_time() + max(REAL_RUN_SECONDS_PER_NODE * len(gm.graph.nodes), REAL_RUN_MIN_SECONDS)


class RealShapeProp(_LeanProp):
    """Shape propagation on real CPU tensors, given up past a deadline (:func:`real_run_deadline`):
    every node gets its :data:`fxprune.ir.SPEC`.  It runs on whatever state the module holds;
    :func:`propagate_shapes` runs it on copies, the rewrite's check on the module it owns."""

    def __init__(self, gm: fx.GraphModule, deadline: float) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self._deadline = deadline

    def run_node(self, n: fx.Node) -> Any:
        if time.thread_time() > self._deadline:
            raise _OverBudget(n.name)
        return super().run_node(n)


#: a module's own dicts that hold no unregistered tensor: its state, and its children (modules)
_STATE_DICTS = frozenset({"_parameters", "_buffers", "_modules"})
#: attribute types that are never a tensor nor hold one
_SCALARS = frozenset({bool, int, float, str, type(None)})


def _holds_unregistered_tensors(modules: Sequence[torch.nn.Module]) -> bool:
    """Whether a module keeps a tensor outside its parameters and buffers (an attribute, or in a
    list/dict/tuple attribute): a real run could write it in place, and it is the user's."""
    tensor = torch.Tensor
    for m in modules:
        for k, v in vars(m).items():
            t = type(v)
            if t in _SCALARS:  # most attributes (flags, sizes, names): one lookup
                continue
            if isinstance(v, tensor):
                return True
            if isinstance(v, dict):
                if not v or k in _STATE_DICTS:  # most are empty (hooks)
                    continue
                items: Any = v.values()
            elif isinstance(v, (list, tuple, set)):
                items = v
            else:
                continue
            for i in items:
                if isinstance(i, tensor):
                    return True
    return False


def real_run_applies(module: torch.nn.Module, example_inputs: Sequence[Any]) -> bool:
    """Whether values of ``module`` at ``example_inputs`` may be computed with CPU kernels on copies.

    Every parameter, buffer and tensor input must be a plain CPU tensor
    (:func:`~fxprune.analysis.copying.is_plain_cpu`), the state at most
    :data:`REAL_RUN_MAX_STATE` elements (copying it stays cheap), and no module may
    keep a tensor outside its parameters and buffers (a plain tensor attribute is
    the user's, and a real run could write it in place).  Shared by the shape
    propagation here and the trace from example values
    (:mod:`fxprune.analysis.values`).
    """
    return _real_run_modules(module, example_inputs) is not None


def _real_run_modules(module: torch.nn.Module, example_inputs: Sequence[Any]) -> list[torch.nn.Module] | None:
    """The modules of ``module`` (each once, in ``modules()`` order) where :func:`real_run_applies`, else ``None``."""
    # one walk of the module tree for every question below (each walk costs as much as the rest
    # of the checks on a small model); with duplicates, as named_parameters(remove_duplicate=False)
    every = [m for _, m in module.named_modules(remove_duplicate=False)]
    state = [t for m in every for d in (m._parameters, m._buffers) for t in d.values() if t is not None]
    flat: list[Any] = []
    fx.node.map_aggregate(tuple(example_inputs), flat.append)
    tensors = [x for x in flat if isinstance(x, torch.Tensor)]
    if not all(is_plain_cpu(t) for t in state) or not all(is_plain_cpu(t) for t in tensors):
        return None
    modules = list(dict.fromkeys(every))  # each module once, in module.modules() order
    if sum(t.numel() for t in state) > REAL_RUN_MAX_STATE or _holds_unregistered_tensors(modules):
        return None
    return modules


def _propagate_on_real(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> bool:
    """Run ``gm`` once with CPU kernels on copies of its state and inputs; False when it cannot or should not.

    On small models CPU kernels are an order of magnitude cheaper than meta
    dispatch (whose shape functions are Python).  Only a model :func:`real_run_applies`
    to is tried; everything runs on
    copies (in-place updates, BatchNorm statistics and in-place ops on inputs
    land on them), without autograd, with the random number generator's state
    restored after; a run slower than :data:`REAL_RUN_SECONDS_PER_NODE` per graph
    node is given up for meta tensors, which bounds the cost of trying.
    """
    modules = _real_run_modules(gm, example_inputs)
    if modules is None:
        return False
    inputs = fx.node.map_aggregate(
        tuple(example_inputs), lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v)
    return _run_on_copies(modules, lambda t: t.detach().clone(), inputs, RealShapeProp(gm, real_run_deadline(gm)),
                          torch.random.fork_rng(devices=[]))


@contextlib.contextmanager
def _state_swapped(modules: Sequence[torch.nn.Module], copy_of: Any) -> Any:
    """Every parameter and buffer of every module swapped for ``copy_of`` it (a tensor held twice,
    tied weights, is copied once), in the modules' own dicts as ``torch.func.functional_call``
    swaps them; the originals are back afterwards."""
    memo: dict[int, torch.Tensor] = {}
    slots: list[tuple[dict, str, torch.Tensor]] = []
    for m in modules:
        for d in (m._parameters, m._buffers):
            for k, t in d.items():
                if t is not None:
                    slots.append((d, k, t))
                    if id(t) not in memo:
                        memo[id(t)] = copy_of(t)
    try:
        for d, k, t in slots:
            d[k] = memo[id(t)]
        yield
    finally:
        for d, k, t in reversed(slots):
            d[k] = t


def _run_on_copies(modules: Sequence[torch.nn.Module], copy_of: Any, inputs: tuple, prop: fx.Interpreter,
                   *contexts: Any) -> bool:
    """Run ``prop`` with every parameter and buffer of ``modules`` (every module of its graph module)
    swapped for ``copy_of`` it (tied tensors stay one copy), without autograd or warnings; False
    when any node fails."""
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_state_swapped(modules, copy_of))
            stack.enter_context(torch.no_grad())
            for ctx in contexts:
                stack.enter_context(ctx)
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
            prop.run(*inputs)
    except Exception:  # noqa: BLE001 - any failure (or over budget): the next path decides, and names the node
        return False
    return True


def propagate_shapes(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> None:
    """Annotate every node with :data:`fxprune.ir.SPEC` (shapes and dtypes).

    A small model on the CPU runs with CPU kernels on copies of its state and
    inputs (:func:`_propagate_on_real`: an order of magnitude cheaper than meta
    dispatch there, given up past a time budget); otherwise the graph runs on
    ``meta`` tensors (about five times cheaper than fake ones); a graph that cannot
    (it reads tensor values, mixes in real tensors it creates, or calls an op
    without a meta kernel) runs on fake tensors (``FakeTensorMode``), which also
    run leaf modules with value-dependent code for real on random inputs.  The
    user's tensors are never written, whichever runs.
    Example inputs may be real, fake or meta tensors; only their shapes and dtypes
    are used (and, on the CPU path, their values).  Inputs are moved to the device of the model's parameters when the
    model lives on ``meta``, and meta inputs to the model's device.

    Raises:
        ExampleInputError: naming the node that failed.
    """
    example_inputs = as_example_inputs(example_inputs)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    required = [n for n in placeholders if not n.args]  # no default value
    if len(example_inputs) < len(required) or len(example_inputs) > len(placeholders):
        raise ExampleInputError(
            f"model.forward takes {len(required)}..{len(placeholders)} positional inputs "
            f"({', '.join(n.name for n in placeholders)}) but {len(example_inputs)} "
            "example inputs were given"
        )
    # The graph may share its modules with the user's model (one that cannot be copied);
    # code run here (hooks, caches) must leave no attribute behind on them.
    with state_restored(gm):
        if not _propagate_on_real(gm, example_inputs) and not _propagate_on_meta(gm, example_inputs):
            _propagate_on_fake(gm, example_inputs)


def _propagate_on_fake(gm: fx.GraphModule, example_inputs: tuple) -> None:
    first = next(iter(gm.parameters()), None)
    first = first if first is not None else next(iter(gm.buffers()), None)
    on_meta = first is not None and first.device.type == "meta"
    inputs = [x.to("meta") if on_meta and isinstance(x, torch.Tensor) else x for x in example_inputs]
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        fake_inputs = _fake(mode, tuple(inputs), first.device if first is not None else None)
        _FakeProp(gm, mode).run(*fake_inputs)
