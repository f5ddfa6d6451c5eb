"""The symbolic tracer behind :func:`fxprune.analysis.capture.trace`.

``torch.fx.symbolic_trace`` runs ``forward`` with proxies, which leaves marks
on the model and the process unless guarded.  This tracer:

* traces a *copy* of the module tree that shares the parameters and buffers
  (Python-side state, such as a dict caching a tensor on first call, is written
  to the copy; the user's model keeps every attribute as it was);
* records buffers as graph values (``proxy_buffer_attributes``), so an
  in-place update in ``forward`` (a step counter, an EMA) becomes a node of
  the graph instead of running for real while tracing;
* traces through parametrized modules (``torch.nn.utils.parametrizations``):
  the weight they compute is part of the graph, each parametrization a call
  (``weight_norm``, ``spectral_norm``: barriers unless a rule is registered);
* keeps a custom ``torch.autograd.Function`` as one call (an
  :class:`~fxprune.ir.AutogradFunction` module): its ``backward`` survives,
  and its channels are a barrier unless a rule is registered for ``Fn.apply``;
* records ``x += y`` on a tensor as the in-place ``operator.iadd`` eager runs
  (plain ``torch.fx`` rebinds ``x = x + y``, which differs where ``x`` is aliased);
* replaces each module's ``training`` flag by a recording int while tracing:
  where it reaches a call as an argument (``F.dropout(x, p, self.training)``)
  the graph reads the flag at run time, so the emitted module follows its own
  ``train()``/``eval()``; where Python branches on it (``if self.training:``)
  the branch is frozen, and it is reported (a :class:`~fxprune.errors.TrainEvalWarning`
  and :data:`fxprune.ir.MODE_BRANCHES` in the GraphModule's ``meta``);
* traces *into* plain Python functions wrapped with ``torch.fx.wrap`` (which
  plain ``torch.fx`` records as one opaque call: a barrier), unless the
  registry has a rule for the function; a function whose tracing fails, or
  that branches on tensor values or on a ``training`` flag (stochastic depth:
  tracing into it would freeze the mode), is kept as one call, the reason under
  :data:`fxprune.ir.KEPT_CALL` on its node (and in its barrier's hint); a call kept
  for a ``training`` flag that passes channels through in both modes is then
  recognised as stochastic depth by :mod:`fxprune.analysis.mode_calls` (no barrier);
* with example inputs, traces from their values (:mod:`fxprune.analysis.values`:
  HF models; branches on sizes frozen and checked at run time; values computed with
  CPU kernels on copies, on meta or on fake tensors: :func:`value_paths`);
* serialises tracing with a process-wide lock, and lets module calls from other
  threads run untouched while it patches ``nn.Module.__call__``.

Example:
    >>> import torch, torch.nn as nn, torch.nn.functional as F
    >>> class M(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = nn.Linear(3, 3)
    ...     def forward(self, x):
    ...         return F.dropout(self.fc(x), 0.5, training=self.training)
    >>> gm = trace_module(M().eval())
    >>> "training = self.training" in gm.code, gm.training
    (True, False)
"""
from __future__ import annotations

import builtins
import contextlib
import functools
import inspect
import operator
import threading
import types
import warnings
from typing import Any, Iterable, Iterator

import torch
import torch.fx as fx
import torch.fx._symbolic_trace as fx_trace
from torch.fx.proxy import ParameterProxy
from torch.nn.utils import parametrize

from .. import ir
from ..errors import TrainEvalWarning
from ..gcpause import gc_paused
from ..ir import AutogradFunction
from .copying import is_plain_cpu, lazy_graph_module, shallow_copy_module, state_restored
from .shapes import real_run_applies
from .tracing_shortcuts import Shortcuts, check_root_arguments
from .values import ValueTracing, ValuesFailed, ValuesOn, keep_unused_state, user_frame_line

__all__ = ["CAPTURE_LOCK", "meta_values_apply", "state_restored", "trace_module", "tracing_copy", "value_paths"]

#: held while a model is captured: torch.fx patches ``nn.Module.__call__`` process-wide
CAPTURE_LOCK = threading.RLock()

_LOCAL = threading.local()  # the tracer of this thread, if it is tracing


class _ModeFlag(int):
    """A module's ``training`` flag while tracing: an int 0/1 that records branches on it."""

    def __new__(cls, value: bool, owner: str, kind: str, reads: list[str]) -> "_ModeFlag":
        flag = super().__new__(cls, bool(value))
        flag.owner, flag.kind, flag.reads = owner, kind, reads
        return flag

    def __bool__(self) -> bool:
        self.reads.append(_user_frame(self.owner or "the model", self.kind))
        return int(self) != 0

    def __repr__(self) -> str:
        return repr(int(self) != 0)


def _user_frame(owner: str, kind: str) -> str:
    return f"a branch on {owner} ({kind}).training at {user_frame_line()}"


class _Tracer(Shortcuts, ValueTracing, fx.Tracer):
    proxy_buffer_attributes = True

    def __init__(self, leaf_types: tuple[type, ...], leaf_names: frozenset[str],
                 leaf_functions: tuple[Any, ...], reads: list[str]) -> None:
        super().__init__(autowrap_functions=leaf_functions)
        self._init_shortcuts(self.PROXY_TYPES)
        self._leaf_types = leaf_types
        self._leaf_names = leaf_names
        self._thread = threading.get_ident()
        self._reads = reads  # the _ModeFlag reads of this trace
        self._proxy_cache: dict | None = None  # torch.fx's parameter proxy cache of this trace
        self._tensor_names: tuple | None = None  # (root, parameters by id, buffers by id), see _tensor_name
        self._init_values()

    def constant_value(self, a: Any) -> Any:
        """A module's training flag (:class:`_ModeFlag`) computes as the plain bool it stands for."""
        return int(a) != 0 if isinstance(a, _ModeFlag) else a

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        if isinstance(m, AutogradFunction) or qualname in self._leaf_names \
                or (self._leaf_types and isinstance(m, self._leaf_types)):
            return True
        if parametrize.is_parametrized(m) or isinstance(m, parametrize.ParametrizationList):
            return False  # weight_norm/spectral_norm...: the computed weight is traced, parametrization by parametrization
        return super().is_leaf_module(m, qualname)

    def call_module(self, m: torch.nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        if threading.get_ident() != self._thread or self._computing:  # another thread's model, a value: run it
            return forward(*args, **kwargs)
        if self._stateless_stranger(m):  # e.g. a module-level ``gelu = GELUActivation()``: its ops are traced
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def _stateless_stranger(self, m: torch.nn.Module) -> bool:
        """Whether ``m`` is not a submodule of the traced model and holds no tensors (so tracing into it is exact)."""
        try:
            self.path_of_module(m)
            return False
        except NameError:
            return not any(True for _ in m.parameters()) and not any(True for _ in m.buffers())

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict) -> Any:
        if threading.get_ident() != self._thread or self._computing:
            return attr_val
        self._proxy_cache = parameter_proxy_cache
        name = self._tensor_name(attr_val)
        if name is None:  # not a tensor of the root as it was when first asked: torch.fx's own search
            return super().getattr(attr, attr_val, parameter_proxy_cache)
        if name not in parameter_proxy_cache:  # as torch.fx creates it
            kwargs: dict[str, Any] = {}
            if "proxy_factory_fn" in inspect.signature(self.create_proxy).parameters:
                kwargs["proxy_factory_fn"] = (None if not self.param_shapes_constant else
                                              lambda node: ParameterProxy(self, node, name, attr_val))
            parameter_proxy_cache[name] = self.create_proxy("get_attr", name, (), {}, **kwargs)
        return parameter_proxy_cache[name]

    def _tensor_name(self, value: Any) -> str | None:
        """The name torch.fx's ``getattr`` finds for ``value``: the first parameter of the root that
        is ``value``, else (buffers proxied) the first such buffer.  torch.fx searches every
        parameter on each read (quadratic in the model's size); here one table per root answers."""
        if not isinstance(value, torch.Tensor):
            return None
        if self._tensor_names is None or self._tensor_names[0] is not self.root:
            params: dict[int, tuple[str, Any]] = {}
            buffers: dict[int, tuple[str, Any]] = {}
            for n, t in self.root.named_parameters():
                params.setdefault(id(t), (n, t))
            for n, t in self.root.named_buffers():
                buffers.setdefault(id(t), (n, t))
            self._tensor_names = (self.root, params, buffers)
        _, params, buffers = self._tensor_names
        tables = ((params,) if isinstance(value, torch.nn.Parameter) else ()) \
            + ((buffers,) if self.proxy_buffer_attributes else ())
        for table in tables:
            hit = table.get(id(value))
            if hit is not None and hit[1] is value:
                return hit[0]
        return None

    def trace_into(self, function: Any, args: tuple, kwargs: dict) -> Any:
        """Run a ``torch.fx.wrap``-ped ``function`` on proxies, recording its ops in the graph.

        If that fails, or the function branches on a ``training`` flag, every node it
        recorded is removed again and the call is recorded as one node (as
        ``torch.fx`` does), with the reason under :data:`fxprune.ir.KEPT_CALL`.
        """
        graph = self.graph
        last = graph._root.prev  # the last node before the call (the root sentinel if none)
        reads, stack = len(self._reads), self.module_stack.copy()
        reason = None
        try:
            result = function(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - anything torch.fx cannot trace: keep the call
            message = str(exc).strip().splitlines()
            reason = f"tracing into it failed ({type(exc).__name__}: {message[0] if message else ''})"
        else:
            if len(self._reads) > reads:
                reason = ("it branches on a training flag (tracing into it would freeze train/eval "
                          f"behaviour): {self._reads[reads]}")
        if reason is None:
            return result
        self._roll_back(last)
        del self._reads[reads:]
        self.module_stack.clear()
        self.module_stack.update(stack)
        proxy = self.create_proxy("call_function", function, args, kwargs)
        proxy.node.meta["is_wrapped"] = True
        proxy.node.meta[ir.KEPT_CALL] = reason
        return proxy

    def _roll_back(self, last: fx.Node) -> None:
        """Erase every node recorded after ``last`` (and forget their cached parameter proxies)."""
        graph = self.graph
        added = []
        node = last.next
        while node is not graph._root:
            added.append(node)
            node = node.next
        for node in reversed(added):  # users were recorded later: erased first
            graph.erase_node(node)
        gone = set(added)
        if self._proxy_cache:
            for key in [k for k, p in self._proxy_cache.items() if getattr(p, "node", None) in gone]:
                del self._proxy_cache[key]

    def autograd_call(self, function: type, args: tuple, kwargs: dict) -> Any:
        """Record ``function.apply(*args, **kwargs)`` as one call of an AutogradFunction module."""
        for name, m in self.root.named_children():
            if isinstance(m, AutogradFunction) and m.function is function:
                break
        else:
            name = f"fxprune_autograd{sum(isinstance(m, AutogradFunction) for m in self.root.children())}"
            self.root.add_module(name, AutogradFunction(function))
        return self.create_proxy("call_module", name, args, kwargs)


def _has_proxy(values: Any) -> bool:
    found = []
    fx.node.map_aggregate(values, lambda v: found.append(v) if isinstance(v, fx.Proxy) else None)
    return bool(found)


_INPLACE_OPERATORS = ("iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow", "imatmul", "iand", "ior",
                      "ixor", "ilshift", "irshift")


#: torch factories taking sizes as varargs: ``torch.ones(n, 8)`` with a traced ``n`` fails in torch's
#: argument parser before torch.fx sees it, while ``torch.ones((n, 8))`` is recorded
_VARARG_SIZE_FACTORIES = ("ones", "zeros", "empty", "rand", "randn")


@contextlib.contextmanager
def _size_factories_take_proxies() -> Iterator[None]:
    """``torch.ones(n, 8)`` with a proxy among the sizes is called as ``torch.ones((n, 8))`` (recorded as such)."""
    originals = {name: getattr(torch, name) for name in _VARARG_SIZE_FACTORIES}

    def sized(original: Any) -> Any:
        @functools.wraps(original)
        def factory(*args: Any, **kwargs: Any) -> Any:
            if len(args) > 1 and any(isinstance(a, fx.Proxy) for a in args):
                return original(tuple(args), **kwargs)
            return original(*args, **kwargs)
        return factory

    try:
        for name, original in originals.items():
            setattr(torch, name, sized(original))
        yield
    finally:
        for name, original in originals.items():
            setattr(torch, name, original)


@contextlib.contextmanager
def _inplace_operators_recorded() -> Iterator[None]:
    """``x += y`` on a proxy records ``operator.iadd(x, y)`` (in place, as eager runs it), not ``x = x + y``."""
    def recorder(name: str) -> Any:
        fn = getattr(operator, name)

        def method(self: fx.Proxy, other: Any) -> Any:
            return self.tracer.create_proxy("call_function", fn, (self, other), {})
        return method

    saved = {name: fx.Proxy.__dict__.get(f"__{name}__") for name in _INPLACE_OPERATORS}
    for name in _INPLACE_OPERATORS:
        setattr(fx.Proxy, f"__{name}__", recorder(name))
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                delattr(fx.Proxy, f"__{name}__")
            else:
                setattr(fx.Proxy, f"__{name}__", old)


def _traced_into(function: Any) -> Any:
    """The stand-in of a ``torch.fx.wrap``-ped function while fxprune traces: it traces into it."""
    @functools.wraps(function)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        proxy = fx_trace._find_proxy(args, kwargs)
        if proxy is None:
            return function(*args, **kwargs)
        tracer = proxy.tracer
        if isinstance(tracer, _Tracer) and threading.get_ident() == tracer._thread:
            return tracer.trace_into(function, args, kwargs)
        kept = tracer.create_proxy("call_function", function, args, kwargs)
        kept.node.meta["is_wrapped"] = True
        return kept
    return wrapped


@contextlib.contextmanager
def _wrapped_functions_traced_into(kept: tuple[Any, ...]) -> Iterator[None]:
    """``torch.fx.wrap``-ped Python functions are traced into, except those in ``kept`` (they have a rule).

    ``torch.fx`` patches every wrapped name in its module's globals with a recorder of one
    call (``_patch_wrapped_functions``); this replaces that step for plain Python
    functions.  Builtins and methods wrapped by name stay as ``torch.fx`` records them.
    """
    original = fx_trace._patch_wrapped_functions
    kept_ids = {id(f) for f in kept}

    def patch(patcher: Any) -> None:
        for (_, name), frame_dict in fx_trace._wrapped_fns_to_patch.copy().items():
            if name not in frame_dict and hasattr(builtins, name):
                function = getattr(builtins, name)
            else:
                function = frame_dict[name]
            traced = isinstance(function, types.FunctionType) and id(function) not in kept_ids
            patcher.patch(frame_dict, name, _traced_into(function) if traced
                          else fx_trace._create_wrapped_func(function))
        for cls, name in fx_trace._wrapped_methods_to_patch:
            patcher.patch_method(cls, name, fx_trace._create_wrapped_method(cls, name))

    fx_trace._patch_wrapped_functions = patch
    try:
        yield
    finally:
        fx_trace._patch_wrapped_functions = original


@contextlib.contextmanager
def _autograd_functions_kept() -> Iterator[None]:
    """While tracing, ``Fn.apply`` on proxies records one call instead of inlining ``Fn.forward``."""
    original = torch.autograd.Function.__dict__["apply"]

    def apply(cls: type, *args: Any, **kwargs: Any) -> Any:
        tracer = getattr(_LOCAL, "tracer", None)
        if tracer is not None and _has_proxy((args, kwargs)):
            return tracer.autograd_call(cls, args, kwargs)
        return original.__get__(None, cls)(*args, **kwargs)

    torch.autograd.Function.apply = classmethod(apply)
    try:
        yield
    finally:
        torch.autograd.Function.apply = original


def tracing_copy(model: torch.nn.Module) -> torch.nn.Module | None:
    """A copy of the module tree sharing every parameter and buffer (``None`` if it cannot be copied).

    Structural, not deep: each module is a new object with its own attribute dict,
    and every dict, list or set attribute (parameters, buffers, children, hooks,
    the user's own caches) is a new container, one level deep; tensors and other
    values are shared.  What tracing or a capture writes on a module (training
    flags, hooks, appended cache entries) lands on the copy; a module reached
    twice is copied once.

    Example:
        >>> import torch.nn as nn
        >>> model = nn.Sequential(nn.Linear(2, 2))
        >>> twin = tracing_copy(model)
        >>> twin[0] is model[0], twin[0].weight is model[0].weight
        (False, True)
    """
    memo: dict[int, torch.nn.Module] = {}

    def copy_module(m: torch.nn.Module) -> torch.nn.Module:
        if id(m) in memo:
            return memo[id(m)]
        new = shallow_copy_module(m, containers=True)
        memo[id(m)] = new
        for k, child in m._modules.items():
            new._modules[k] = copy_module(child) if child is not None else None
        return new

    try:
        return copy_module(model)
    except Exception:  # noqa: BLE001 - a module that cannot be copied: trace the model itself
        return None


@contextlib.contextmanager
def _mode_flags(root: torch.nn.Module, reads: list[str]) -> Iterator[None]:
    modules = list(root.named_modules())
    before = [(m, m.training) for _, m in modules]
    for name, m in modules:
        m.training = _ModeFlag(m.training, name, type(m).__name__, reads)
    try:
        yield
    finally:
        for m, flag in before:
            m.training = bool(flag)


def _read_flags_at_run_time(graph: fx.Graph) -> None:
    """Arguments that were a module's ``training`` flag become a ``get_attr`` of that flag."""
    anchor = next((n for n in graph.nodes if n.op != "placeholder"), None)
    flags: dict[str, fx.Node] = {}

    def flag_node(owner: str) -> fx.Node:
        target = f"{owner}.training" if owner else "training"
        if target not in flags:
            with graph.inserting_before(anchor):
                flags[target] = graph.get_attr(target)
        return flags[target]

    for node in list(graph.nodes):
        found: list[_ModeFlag] = []
        fx.node.map_aggregate((node.args, node.kwargs),
                              lambda a: found.append(a) if isinstance(a, _ModeFlag) else None)
        if not found:
            continue
        swap = (lambda a: flag_node(a.owner) if isinstance(a, _ModeFlag) else a)
        node.args = fx.node.map_aggregate(node.args, swap)
        node.kwargs = fx.node.map_aggregate(node.kwargs, swap)


def trace_module(model: torch.nn.Module, *, leaf_types: tuple[type, ...] = (),
                 leaf_names: Iterable[str] = (), leaf_functions: tuple[Any, ...] = (),
                 kept_functions: tuple[Any, ...] = (), example_inputs: tuple | None = None) -> fx.GraphModule:
    """Trace ``model`` as the module docstring describes; exceptions propagate as torch.fx raises them.

    With ``example_inputs`` (positional, as :func:`~fxprune.analysis.capture.bind_example_inputs`
    gives them), the trace runs from example values (:meth:`_Tracer.from_examples`): what it froze
    is listed under :data:`fxprune.ir.CAPTURE_NOTES` in the GraphModule's ``meta``.

    ``leaf_functions`` are recorded as one call wherever traced code calls them by a global
    name; ``kept_functions`` (functions with a rule) are not traced into where ``torch.fx.wrap``
    wrapped them (every other wrapped Python function is).

    Values are computed on the first of :func:`value_paths` that traces the model: with CPU kernels
    on copies (a small plain-CPU model), on meta tensors (a plain-CPU model), on fake tensors; where
    a trace fails for any reason, the model is traced again on the next.  Every node of the result
    carries :data:`fxprune.ir.SPEC` when all values were known (:meth:`ValueTracing.write_specs`).
    """
    with gc_paused():  # as in the analysis; a collection would also count against a REAL path's time budget
        return _trace_on_paths(model, dict(leaf_types=leaf_types, leaf_names=leaf_names,
                                           leaf_functions=leaf_functions, kept_functions=kept_functions,
                                           example_inputs=example_inputs))


def _trace_on_paths(model: torch.nn.Module, options: dict[str, Any]) -> fx.GraphModule:
    """:func:`trace_module`: a plain trace, or one from example values on the first path that traces the model."""
    example_inputs = options["example_inputs"]
    if example_inputs is None:
        check_root_arguments(model)
        return _trace_module(model, **options)
    *first, last = value_paths(model, example_inputs)
    for values_on in first:
        try:
            return _trace_module(model, **options, values_on=values_on)
        except Exception:  # noqa: BLE001 - this path cannot stand for the model: the next one decides
            pass
    return _trace_module(model, **options, values_on=last)


def value_paths(model: torch.nn.Module, example_inputs: tuple) -> tuple[ValuesOn, ...]:
    """The paths a trace from ``example_inputs`` tries, in order: ``REAL`` where the CPU shape pass
    would run ``model`` with CPU kernels (:func:`~fxprune.analysis.shapes.real_run_applies`),
    ``META`` where :func:`meta_values_apply`, and ``FAKE``."""
    if not meta_values_apply(model, example_inputs):
        return (ValuesOn.FAKE,)
    if real_run_applies(model, example_inputs):
        return (ValuesOn.REAL, ValuesOn.META, ValuesOn.FAKE)
    return (ValuesOn.META, ValuesOn.FAKE)


def meta_values_apply(model: torch.nn.Module, example_inputs: tuple) -> bool:
    """Whether a trace from ``example_inputs`` computes its values on meta tensors: every parameter and
    buffer of ``model`` and every tensor input is a plain (strided, not a subclass) CPU tensor."""
    return all(is_plain_cpu(t) for t in example_inputs if isinstance(t, torch.Tensor)) \
        and all(is_plain_cpu(t) for t in model.parameters()) and all(is_plain_cpu(t) for t in model.buffers())


def _trace_module(model: torch.nn.Module, *, leaf_types: tuple[type, ...], leaf_names: Iterable[str],
                  leaf_functions: tuple[Any, ...], kept_functions: tuple[Any, ...], example_inputs: tuple | None,
                  values_on: ValuesOn = ValuesOn.FAKE) -> fx.GraphModule:
    with CAPTURE_LOCK:
        root = tracing_copy(model)
        guard = contextlib.nullcontext() if root is not None else state_restored(model)
        root = root if root is not None else model
        reads: list[str] = []
        tracer = _Tracer(leaf_types, frozenset(leaf_names), leaf_functions, reads)
        if example_inputs is not None:
            tracer.from_examples(example_inputs, values_on=values_on)
        # real values may draw random numbers (dropout in train mode): the user's generator is left as it was
        rng = torch.random.fork_rng(devices=[]) if values_on is ValuesOn.REAL else contextlib.nullcontext()
        with guard:
            with rng, _mode_flags(root, reads), _autograd_functions_kept(), _inplace_operators_recorded(), \
                    _size_factories_take_proxies(), \
                    _wrapped_functions_traced_into(tuple(leaf_functions) + tuple(kept_functions)):
                _LOCAL.tracer = tracer
                try:
                    graph = tracer.trace(root)
                finally:
                    _LOCAL.tracer = None
            if tracer._failed is not None:  # raised inside and caught by the model's own code
                raise ValuesFailed(tracer._failed)
            _read_flags_at_run_time(graph)
            gm = lazy_graph_module(root, graph, type(model).__name__)  # code generated on first use
            gm.training = bool(root.training)
    if example_inputs is not None:
        keep_unused_state(gm, root)
        tracer.write_specs(gm)
        gm.meta[ir.CAPTURE_NOTES] = (f"fx: traced from the example values ({len(tracer.guards)} value(s) frozen "
                                     "and checked at run time: input ranks and dtypes, branches and sizes"
                                     + (f", e.g. {tracer.guards[-1]}" if tracer.guards else "") + ")",)
    tracer.values, tracer._specs, tracer._fakes, tracer._twins = None, {}, {}, {}
    branches = tuple(dict.fromkeys(reads))
    gm.meta[ir.MODE_BRANCHES] = branches
    if branches:
        warnings.warn(f"{type(model).__name__}: train/eval behaviour frozen at capture "
                      f"({'train' if model.training else 'eval'} mode): " + "; ".join(branches[:3])
                      + (f" (+{len(branches) - 3} more)" if len(branches) > 3 else "")
                      + ". The emitted module runs these branches as traced in both modes; "
                      "keep such modules as leaves (leaf_modules=[...]) or register a leaf rule.",
                      TrainEvalWarning, stacklevel=4)
    return gm
