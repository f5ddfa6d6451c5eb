"""Kept calls that follow the mode: recognise stochastic depth generically.

Capture keeps a ``torch.fx.wrap``-ped function as one call where it branches on a
module's ``training`` flag (the flag argument is read at run time, so the call
follows ``train()``/``eval()``).  Without a rule such a call is a barrier.  This
pass decides, for each such function, whether it is a *channel pass-through in
both modes*, and if so registers it under :data:`fxprune.ops.STOCHASTIC_DEPTH`
in a copy of the registry: the channel pass then resolves it like any other
op, through the registry.

The decision traces the function body twice into scratch graphs (the flag
forced ``True``, then ``False``; the other arguments bound as at the call, the
tensor argument a placeholder whose ``ndim``/``dtype``/``device`` are the call's
and whose sizes are recorded as reads) and accepts a graph only if:

* its output is the input itself, or the input multiplied by tensors that do
  not depend on the input except through ``x.shape[0]``, fresh tensors made
  from it (``new_empty``...) and its dtype/device (noise), and divided by
  non-zero numbers only: so zeros stay zeros;
* each such tensor, at the call's real shapes, is broadcast over every
  dimension but the first (size 1 there): no channel is scaled on its own;
* nothing else reads the input (no reduction, no in-place write, no size of a
  dimension but the first).

What each call of the scratch graph computes (a product, a quotient, a size
read, a fresh tensor) is what its rule declares (:class:`fxprune.ir.Algebra`):
the recogniser matches no op by name.
Anything else stays a barrier, the reason appended to the node's
:data:`fxprune.ir.KEPT_CALL`.  The first dimension (batch) may be read or
carry the noise; where it carries channels, the registered rule fixes them.

Example:
    >>> import torch
    >>> def drop(x, p, training):
    ...     if not training or p == 0.0:
    ...         return x
    ...     return x * x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p) / (1 - p)
    >>> spec = __import__("fxprune").ir.TensorSpec((4, 8, 2, 2), torch.float32)
    >>> _pass_through(drop, (None, 0.5, None), {}, 0, spec, (2,), {}, __import__("fxprune").ops.default_registry())
    (None, {0})
"""
from __future__ import annotations

import dataclasses
import numbers
import operator
import types
from typing import Any, Callable

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import FakeTensorMode

from .. import ir
from ..ops.context import OpContext, first_tensor
from ..ops.elementwise import STOCHASTIC_DEPTH
from ..ops.registry import Keys, Registry, describe_key, node_key

__all__ = ["recognise_mode_calls"]

_ALL = -1  # a read of the whole shape


class _NotPassThrough(Exception):
    pass


class _ScratchProxy(fx.Proxy):
    """A proxy whose ``ndim``/``dim()``/``dtype``/``device`` are concrete on the scratch input."""

    def __getattr__(self, k: str) -> Any:
        tracer = self.tracer
        if isinstance(tracer, _ScratchTracer) and self.node is tracer.input_node:
            spec = tracer.spec
            if k == "ndim":
                return len(spec.shape)
            if k in ("dim", "ndimension"):
                return lambda: len(spec.shape)
            if k == "dtype":
                return spec.dtype
            if k == "device":
                return torch.device("cpu")  # where the check runs (fake tensors)
        return super().__getattr__(k)


class _ScratchTracer(fx.Tracer):
    def __init__(self, spec: ir.TensorSpec) -> None:
        super().__init__()
        self.spec = spec
        self.input_node: fx.Node | None = None

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ScratchProxy(node, self)


def _scratch_graph(function: Callable, args: tuple, kwargs: dict, at: int | str,
                   spec: ir.TensorSpec) -> fx.GraphModule:
    """``function`` traced with the tensor argument ``at`` (a position or keyword) a placeholder."""
    tracer = _ScratchTracer(spec)
    tracer.graph = fx.Graph()
    tracer.root = torch.nn.Module()
    tracer.tensor_attrs = {}
    x = tracer.create_proxy("placeholder", "x", (), {})
    tracer.input_node = x.node
    args, kwargs = list(args), dict(kwargs)
    if isinstance(at, int):
        args[at] = x
    else:
        kwargs[at] = x
    try:
        out = function(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - anything that does not trace is not provably a pass-through
        first = (str(exc).strip().splitlines() or [""])[0]
        raise _NotPassThrough(f"tracing it failed ({type(exc).__name__}: {first})") from None
    if not isinstance(out, fx.Proxy):
        raise _NotPassThrough("it does not return a tensor computed from its input")
    tracer.graph.output(out.node)
    return fx.GraphModule(tracer.root, tracer.graph)  # the root holds tensors made without the input


def _shapes(gm: fx.GraphModule, spec: ir.TensorSpec) -> dict[fx.Node, Any]:
    """Every node's value on a fake input of the call's shape and dtype (on the CPU)."""
    seen: dict[fx.Node, Any] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            seen[n] = value = super().run_node(n)
            return value

    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            Recorder(gm).run(torch.empty(spec.shape, dtype=spec.dtype))
    except Exception as exc:  # noqa: BLE001
        raise _NotPassThrough(f"it does not run on its input's shape ({type(exc).__name__}: {exc})") from None
    return seen


def _key(node: fx.Node) -> Any:
    return node.target if node.op in ("call_function", "call_method") else None


def _algebra(node: fx.Node, registry: Registry) -> ir.Algebra:
    """What the registry says ``node`` computes (``NONE`` without a rule)."""
    rule = registry.rule_for_key(node_key(node, torch.nn.Module()))
    return ir.Algebra.NONE if rule is None else rule.algebra


def _check(gm: fx.GraphModule, spec: ir.TensorSpec, registry: Registry) -> set[int]:
    """The input dims the pass-through reads the size of (only 0) or carries noise along; raises if not one.

    What each call computes comes from its rule's :class:`~fxprune.ir.Algebra`, never from its name.
    """
    graph = gm.graph
    ndim = len(spec.shape)
    x = next(n for n in graph.nodes if n.op == "placeholder")
    output = next(n for n in graph.nodes if n.op == "output")
    values = _shapes(gm, spec)
    chain = {x}      # the input, scaled by noise
    reads: dict[fx.Node, set[int]] = {}  # every other node: the input dims whose size it depends on
    used: set[int] = set()

    def dims_of(arg: Any) -> set[int]:
        found: set[int] = set()

        def visit(a: Any) -> None:
            if isinstance(a, fx.Node):
                if a in chain:
                    raise _NotPassThrough(f"node '{n.name}' ({a.name} in {describe_key(_key(n))}) reads its "
                                          f"input's values")
                if _ALL in reads[a]:
                    raise _NotPassThrough(f"node '{n.name}' uses the whole shape of its input")
                found.update(reads[a])
        fx.node.map_aggregate(arg, visit)
        return found

    for n in graph.nodes:
        if n.op in ("placeholder", "output"):
            continue
        if n.op == "get_attr":  # a tensor made without the input (its shape is checked where it scales it)
            reads[n] = set()
            continue
        if n.op not in ("call_function", "call_method"):
            raise _NotPassThrough(f"node '{n.name}' is a {n.op}")
        args, kwargs = n.args, n.kwargs
        algebra = _algebra(n, registry)
        on_x = bool(args) and args[0] is x
        if on_x and algebra is ir.Algebra.ATTRIBUTE and args[1:] == ("shape",):
            reads[n] = {_ALL}
        elif on_x and algebra is ir.Algebra.SIZES and len(args) == 1 and not kwargs:
            reads[n] = {_ALL}
        elif on_x and algebra is ir.Algebra.SIZES and len(args) == 2 and not kwargs:
            if not isinstance(args[1], int):
                raise _NotPassThrough(f"node '{n.name}' reads a size of its input at a computed dim")
            reads[n] = {args[1] % ndim}
        elif (n.op == "call_function" and n.target is operator.getitem and isinstance(args[0], fx.Node)
              and reads.get(args[0]) == {_ALL} and isinstance(args[1], int)):
            reads[n] = {args[1] % ndim}  # Python indexing of the shape tuple (not a tensor op)
        elif on_x and algebra is ir.Algebra.FRESH:
            reads[n] = dims_of((args[1:], kwargs))
        elif any(a in chain for a in _flat(args, kwargs)):
            def on(a: Any) -> bool:
                return isinstance(a, fx.Node) and a in chain
            mul = algebra is ir.Algebra.PRODUCT and len(args) == 2 and not kwargs
            div = algebra is ir.Algebra.QUOTIENT and len(args) == 2 and not kwargs and on(args[0])
            if not (mul or div) or on(args[0]) == on(args[1]) \
                    or len([a for a in _flat(args, kwargs) if a in chain]) != 1:
                raise _NotPassThrough(f"node '{n.name}' ({describe_key(_key(n))}) does more with the input "
                                      f"than scale it")
            other = args[1] if on(args[0]) else args[0]
            if isinstance(other, fx.Node):
                if div:
                    raise _NotPassThrough(f"node '{n.name}' divides the input by a tensor")
                used |= dims_of(other) | _noise_dims(n, values[other], spec)
            elif not isinstance(other, numbers.Number) or isinstance(other, bool) or div and other == 0:
                raise _NotPassThrough(f"node '{n.name}' scales the input by {other!r}")
            if not isinstance(values[n], torch.Tensor) or tuple(values[n].shape) != tuple(spec.shape):
                raise _NotPassThrough(f"node '{n.name}' changes the input's shape")
            chain.add(n)
        else:
            reads[n] = dims_of((args, kwargs))
    out = output.args[0]
    if not isinstance(out, fx.Node) or out not in chain:
        raise _NotPassThrough("its output is not its input (scaled by noise)")
    used |= {d for r in reads.values() for d in r if d != _ALL}
    if used - {0}:
        raise _NotPassThrough(f"it reads the size of dim(s) {sorted(used - {0})} of its input")
    return used


def _flat(args: Any, kwargs: Any) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_aggregate((args, kwargs), lambda a: found.append(a) if isinstance(a, fx.Node) else None)
    return found


def _noise_dims(node: fx.Node, noise: Any, spec: ir.TensorSpec) -> set[int]:
    """The input dims along which ``noise`` varies (only the first is allowed)."""
    if not isinstance(noise, torch.Tensor):
        raise _NotPassThrough(f"node '{node.name}' scales the input by a non-tensor")
    ndim = len(spec.shape)
    if noise.ndim > ndim:
        raise _NotPassThrough(f"node '{node.name}' broadcasts the input to more dims")
    varying = {j + ndim - noise.ndim for j, s in enumerate(noise.shape) if s != 1}
    if varying - {0}:
        raise _NotPassThrough(f"node '{node.name}' scales dim(s) {sorted(varying - {0})} of the input "
                              f"channel by channel")
    return varying


def _plain(a: Any) -> bool:
    """A constant that traces the same way whatever the mode: numbers, strings, dtypes, devices..."""
    if isinstance(a, (tuple, list)):
        return all(_plain(v) for v in a)
    if isinstance(a, dict):
        return all(_plain(v) for v in a.values())
    return a is None or isinstance(a, (bool, numbers.Number, str, torch.dtype, torch.device, torch.memory_format))


def _flag(a: Any) -> bool:
    return isinstance(a, fx.Node) and a.op == "get_attr" and str(a.target).rsplit(".", 1)[-1] == "training"


def _pass_through(function: Callable, args: tuple, kwargs: dict, at: int | str, spec: ir.TensorSpec,
                  flags: tuple, flag_kwargs: dict, registry: Registry) -> tuple[str | None, set[int]]:
    """``(None, dims)`` if ``function`` is a pass-through of the argument ``at`` in both modes, else ``(why, ...)``.

    ``flags``/``flag_kwargs`` name the positions/keywords of the training flags.
    """
    used: set[int] = set()
    for mode in (True, False):
        bound = tuple(mode if i in flags else a for i, a in enumerate(args))
        bound_kw = {k: (mode if k in flag_kwargs else v) for k, v in kwargs.items()}
        try:
            used |= _check(_scratch_graph(function, bound, bound_kw, at, spec), spec, registry)
        except _NotPassThrough as exc:
            return f"in {'train' if mode else 'eval'} mode, {exc}", used
    return None, used


def _call_pass_through(node: fx.Node, registry: Registry) -> tuple[str | None, set[int]]:
    """Whether the kept call ``node`` is a pass-through of its one tensor argument in both modes."""
    tensor_at: list[int | str] = []
    flags, flag_kwargs = [], {}
    for where, a in list(enumerate(node.args)) + list(node.kwargs.items()):
        if _flag(a):
            (flags.append(where) if isinstance(where, int) else flag_kwargs.setdefault(where, True))
        elif isinstance(a, fx.Node) and isinstance(a.meta.get(ir.SPEC), ir.TensorSpec):
            tensor_at.append(where)
        elif _flat(a, {}):
            return "an argument other than its tensor and the training flag is computed in the graph", set()
        elif not _plain(a):  # a module (its own flag would not follow the forced one), a callable...
            return f"it takes an argument of type {type(a).__name__} (only plain constants are bound)", set()
    if len(tensor_at) != 1:
        return f"it takes {len(tensor_at)} tensor arguments (a pass-through takes one)", set()
    at = tensor_at[0]
    spec = (node.args[at] if isinstance(at, int) else node.kwargs[at]).meta[ir.SPEC]
    args = tuple(None if i == at or i in flags else a for i, a in enumerate(node.args))
    kwargs = {k: (None if k == at or k in flag_kwargs else v) for k, v in node.kwargs.items()}
    return _pass_through(node.target, args, kwargs, at, spec, tuple(flags), flag_kwargs, registry)


def _fixing(dims: frozenset[int]) -> Callable[[OpContext], Any]:
    """STOCHASTIC_DEPTH's propagation, fixing the channels of the dims the noise reads or varies along."""
    base = STOCHASTIC_DEPTH.propagate

    def propagate(ctx: OpContext) -> Any:
        labels = base(ctx)
        x = first_tensor(ctx)
        for d in dims:
            ctx.fix(x.labels[d], "the stochastic-depth noise depends on this dim's size")
        return labels
    return propagate


def recognise_mode_calls(gm: fx.GraphModule, registry: Registry) -> tuple[Registry, tuple[str, ...]]:
    """The registry with every recognised stochastic-depth function registered, and notes saying so.

    Reads the kept calls of ``gm`` (shapes propagated) that take a ``training`` flag and have no
    rule; a function is registered only if every one of its calls is a pass-through in both
    modes.  ``registry`` is not modified (a copy is returned when anything is registered).
    """
    calls: dict[Any, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if (node.op == "call_function" and node.meta.get(ir.KEPT_CALL) and isinstance(node.target, types.FunctionType)
                and any(_flag(a) for a in _flat(node.args, node.kwargs)) and registry.match(node.target) is None):
            calls.setdefault(node.target, []).append(node)
    if not calls:
        return registry, ()
    out, notes = None, []
    for function, nodes in calls.items():
        dims: set[int] = set()
        why = None
        for node in nodes:
            why, used = _call_pass_through(node, registry)
            if why is not None:
                why = f"node '{node.name}': {why}"
                break
            dims |= used
        name = describe_key(function)
        if why is not None:
            for node in nodes:
                node.meta[ir.KEPT_CALL] += f"; not recognised as stochastic depth: {why}"
            continue
        rule = STOCHASTIC_DEPTH.with_keys(Keys(functions=(function,)))
        if dims:
            rule = dataclasses.replace(rule, propagate=_fixing(frozenset(dims)))
        out = out if out is not None else registry.copy()
        out.register(rule)
        notes.append(f"stochastic depth '{name}' recognised: pass-through in train and eval "
                     f"({len(nodes)} call(s) follow the mode at run time)")
    return (out if out is not None else registry), tuple(notes)
