"""Tracing from example values: the part of :mod:`fxprune.analysis.tracer` behind ``example_inputs``.

Where plain symbolic tracing fails (Hugging Face models: a decorated ``forward``
with ``**kwargs``, branches on sizes and dtypes), the tracer runs again with
proxies that carry their values, computed op by op on one of three paths
(:class:`ValuesOn`; :func:`~fxprune.analysis.tracer.trace_module` tries them in this
order, and where one cannot compute a value it aborts the trace with
:class:`ValuesFailed` and the next path traces again):

* ``REAL``, for a small plain-CPU model
  (:func:`~fxprune.analysis.shapes.real_run_applies`, as the CPU shape pass decides):
  CPU kernels on *copies* of the example inputs and of the state the traced code
  reads (a ``get_attr``'s tensor, a leaf module's twin), without autograd, the random
  number generator's state restored afterwards; the fastest by far on small models
  (a Hugging Face forward is ~1 ms on CPU kernels, ~16 ms on meta tensors), and given
  up for meta tensors past a CPU-time budget per node, as the CPU shape pass does.
  A read of tensor data (``bool(t)``, ``.item()``, ``.tolist()``, ``.numpy()``,
  ``nonzero``, a boolean mask...) fails there as it does on meta tensors
  (:func:`~fxprune.analysis.data_reads.data_reads_refused`): a branch on tensor
  values is never frozen from the example's data;
* ``META``, where the model's state and the example inputs are all plain CPU
  tensors: ``meta`` copies; ``.device`` answers ``cpu``, device arguments move to
  ``meta``, tensors created while a value is computed are ``meta`` ones;
* ``FAKE`` otherwise (``FakeTensorMode``: no compute, no weight read, the real devices).

A leaf module runs as a twin holding copies (real, meta or fake) of its state,
so what it writes (a BatchNorm's statistics) stays on them.  Then:

* one placeholder per example input, named after its parameter of ``forward``,
  which is called with keywords (a wrapper's ``*args, **kwargs`` stays as it is);
  the rank and dtype of each tensor input and the value of every other input
  (``None``, a flag) are checked at run time;
* ``.dtype``, ``.device``, ``.dim()``, ``.is_floating_point()`` are answered from
  the value (frozen: the graph's dtypes and devices are those of the example);
* sizes stay graph values (``x.view(b, s, -1)`` follows the batch and sequence);
  a size sliced or concatenated as a tuple (``x.size()[:-1] + (n,)``) becomes one
  proxy per dim, as a reshape takes them;
* a Python ``bool``, ``int``, ``float``, ``len`` or loop over a size or a
  condition on sizes uses the value and records :func:`fxprune.modules.check_traced`
  in the graph: a call where it would go another way raises
  :class:`~fxprune.errors.GuardError` instead of running the traced branch;
* a branch on tensor *values* (``if mask.all():``) is never frozen: it fails as in
  ``torch.fx`` (``frontend="auto"`` then uses ``torch.export``);
* a model output that is not a tuple, list or dict (a ``ModelOutput``) is given
  back as such (a pytree output spec), and parameters the forward does not use
  stay in the GraphModule, as ``torch.export`` keeps them.
"""
from __future__ import annotations

import builtins
import enum
import inspect
import threading
import time
from typing import Any, Callable, Iterator

import torch
import torch.fx as fx

from .. import ir
from ..modules import check_traced
from . import shapes
from .copying import is_plain_cpu, shallow_copy_module
from .data_reads import data_reads_refused
from .tracing_shortcuts import user_frame_line

__all__ = ["ValueTracing", "ValuesFailed", "ValuesOn", "keep_unused_state", "user_frame_line"]


_UNKNOWN = object()  # a traced value that could not be computed
_META = torch.device("meta")
_CPU = torch.device("cpu")


class ValuesOn(enum.Enum):
    """Where a trace from example values computes its values (the module docstring says when each applies)."""

    REAL = "real"  # CPU kernels on copies, reads of tensor data refused
    META = "meta"  # meta copies standing for CPU tensors
    FAKE = "fake"  # FakeTensorMode


class ValuesFailed(Exception):
    """A value the ``REAL`` or ``META`` path could not compute (or a device meta tensors cannot stand
    for, a read of tensor data, a real run over its time budget): the next path traces again."""


def _device_on_meta(device: Any) -> Any:
    """A CPU device (a ``torch.device`` or its name) as ``meta``; any other device aborts the meta trace."""
    kind = device.type if isinstance(device, torch.device) else device.split(":")[0] if isinstance(device, str) else None
    if kind in ("cpu", "meta"):
        return _META
    raise ValuesFailed(f"device {device!r}: only CPU devices are traced on meta tensors")


def _grad_mode_setter() -> Callable[[bool], Any]:
    """What sets autograd's mode: torch's own C setter (``torch.set_grad_enabled`` makes a context object
    each call, twice per value on the REAL path); torch's public function where the private one is gone."""
    setter = getattr(torch._C, "_set_grad_enabled", None)
    return setter if callable(setter) else torch.set_grad_enabled


_set_grad_enabled = _grad_mode_setter()


class _OnReal:
    """While a value is computed with CPU kernels: no autograd (the copies' results need none), and every
    read of tensor data refused (``refused(why)``, then :class:`~fxprune.analysis.data_reads.DataRead`).
    Made once per trace and entered once per value (a generator context per value costs more than the ops)."""

    def __init__(self, refused: Callable[[str], None]) -> None:
        self._refusing = data_reads_refused(refused)
        self._grad: list[bool] = []

    def __enter__(self) -> None:
        self._grad.append(torch.is_grad_enabled())
        _set_grad_enabled(False)
        try:
            self._refusing.__enter__()
        except BaseException:
            _set_grad_enabled(self._grad.pop())
            raise

    def __exit__(self, *exc: Any) -> None:
        try:
            self._refusing.__exit__(*exc)
        finally:
            _set_grad_enabled(self._grad.pop())


def _factories() -> frozenset:
    """The factories that take a ``device`` (torch's own list), read once at import: torch caches its list on
    first use, and a trace wraps some of them (tracer._size_factories_take_proxies), so the list must be made
    before any trace (else ``with torch.device(...)`` would stop working for them afterwards)."""
    from torch.utils._device import _device_constructors

    return frozenset(_device_constructors())


_FACTORIES = _factories()


class _OnMeta(torch.overrides.TorchFunctionMode):
    """While a value is computed on meta tensors: device arguments (``torch.device`` values, a ``device=``
    keyword) move to ``meta`` and factories without one create meta tensors (no data: a value read
    fails as on fake tensors)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if device is not None:
            kwargs["device"] = _device_on_meta(device)
        elif func in _FACTORIES:
            kwargs["device"] = _META
        if any(isinstance(a, torch.device) for a in args):
            args = tuple(_device_on_meta(a) if isinstance(a, torch.device) else a for a in args)
        return func(*args, **kwargs)


#: what a meta value answers for the CPU tensor it stands for (the rest is the same on both devices)
_ON_CPU = {"device": _CPU, "is_cpu": True, "is_meta": False}
#: tensor attributes and methods answered from the traced value (not recorded): they read no size
_FROZEN_ATTRIBUTES = frozenset({"dtype", "device", "ndim", "is_cuda", "is_meta", "is_cpu", "layout", "is_sparse",
                                "is_quantized", "dim", "ndimension", "is_floating_point", "is_complex",
                                "element_size", "get_device"})


class _ValueProxy(fx.Proxy):
    """A proxy of a trace from example values (:meth:`ValueTracing.value_of` knows what it held).

    ``.dtype``, ``.device``, ``.dim()``... are answered from the value (the rank and dtype of
    every input are guarded); sizes stay graph nodes; where Python needs a size as a ``bool``
    or an ``int`` the value is used and checked at run time (:func:`fxprune.modules.check_traced`).
    """

    def __getattr__(self, k: str) -> Any:
        tracer = self.__dict__.get("tracer")
        if k in _FROZEN_ATTRIBUTES and isinstance(tracer, ValueTracing) and tracer.values is not None:
            value = tracer.value_of(self)
            if isinstance(value, torch.Tensor):
                if tracer._values_on is ValuesOn.META and k in _ON_CPU:
                    return _ON_CPU[k]
                return getattr(value, k)
        return _ValueAttribute(self, k)

    def __len__(self) -> int:
        return self.tracer.length(self)

    def _elements(self) -> tuple | None:
        """A size (``torch.Size``) as a tuple of one proxy per dim (its rank is fixed), else ``None``."""
        tracer = self.tracer
        value = tracer.value_of(self) if isinstance(tracer, ValueTracing) and tracer.values is not None else _UNKNOWN
        if isinstance(value, (torch.Size, tuple)) and not isinstance(value, fx.Proxy):
            return tuple(fx.Proxy.__getitem__(self, i) for i in range(len(value)))
        return None

    def __getitem__(self, key: Any) -> Any:
        # x.size()[:-1] + (n,): the sizes a reshape gets one by one, as in x.view(b, s, n)
        if isinstance(key, slice) and all(k is None or type(k) is int for k in (key.start, key.stop, key.step)):
            elements = self._elements()
            if elements is not None:
                return elements[key]
        return fx.Proxy.__getitem__(self, key)

    def __add__(self, other: Any) -> Any:
        if isinstance(other, tuple):
            elements = self._elements()
            if elements is not None:
                return elements + other
        elif isinstance(other, _ValueProxy):
            mine, theirs = self._elements(), other._elements()
            if mine is not None and theirs is not None:
                return mine + theirs
        return fx.Proxy.__add__(self, other)

    def __radd__(self, other: Any) -> Any:
        if isinstance(other, tuple):
            elements = self._elements()
            if elements is not None:
                return other + elements
        return fx.Proxy.__radd__(self, other)

    def __index__(self) -> int:
        return self.tracer.to_number(self, int)

    def __int__(self) -> int:
        return self.tracer.to_number(self, int)

    def __float__(self) -> float:
        return self.tracer.to_number(self, float)


class _OutputTreeCodeGen(fx.graph._PyTreeCodeGen):
    """Inputs as they are, the output rebuilt as the model's own output type (a ``ModelOutput``)."""

    def process_inputs(self, *inputs: Any) -> Any:
        return inputs

    def gen_fn_def(self, free_vars: list[str], maybe_return_annotation: str, **kwargs: Any) -> str:
        return fx.graph.CodeGen.gen_fn_def(self, free_vars, maybe_return_annotation, **kwargs)


class _ValueAttribute(fx.proxy.Attribute, _ValueProxy):
    """``proxy.name`` of a :class:`_ValueProxy` (recorded on first use, as ``torch.fx`` does)."""



class ValueTracing:
    """The value-tracing half of fxprune's tracer (a mixin before ``torch.fx.Tracer``): inactive until
    :meth:`from_examples`.  Expects ``_thread``, ``_reads`` and ``root`` of the tracer."""

    #: the proxy classes of a trace from example values (an argument of one of them is its node)
    PROXY_TYPES: tuple[type, ...] = (_ValueProxy, _ValueAttribute)

    def _init_values(self) -> None:
        self.values: dict[fx.Node, Any] | None = None  # a trace from example values: each node's value
        self._specs: dict[fx.Node, Any] = {}  # each node's spec, taken when its value was computed
        self._example: tuple | None = None
        self._fake_mode: Any = None
        self._fakes: dict[int, Any] = {}
        self._values_on = ValuesOn.FAKE
        self._failed: str | None = None  # why the REAL or META values failed (the next path traces again)
        self._real_budget = (0.0, 0.0)  # REAL: (CPU seconds computing so far, seconds allowed so far)
        self._twins: dict[int, tuple[torch.nn.Module, torch.nn.Module]] = {}  # leaf modules holding copied state
        self._computing = False
        self.guards: list[str] = []  # what the trace froze, and checks at run time
        self._guarded: set[tuple] = set()

    def from_examples(self, example_inputs: tuple, values_on: ValuesOn = ValuesOn.FAKE) -> None:
        """Trace from ``example_inputs``: every proxy carries its value, computed on the path ``values_on``
        (the caller checks that it applies: see the module docstring); a value the ``REAL`` or ``META``
        path cannot compute raises :class:`ValuesFailed` (and :attr:`_failed` says why, should the
        model's code catch it)."""
        self.values = {}
        self._example = tuple(example_inputs)
        self._values_on = values_on
        self._real_budget = (0.0, shapes.REAL_RUN_MIN_SECONDS)
        if values_on is ValuesOn.FAKE:
            from torch._subclasses.fake_tensor import FakeTensorMode

            self._fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        elif values_on is ValuesOn.META:
            self._fake_mode = _OnMeta()
        else:
            self._fake_mode = _OnReal(self._refused)  # not fake: the context values are computed in

    def _refused(self, why: str) -> None:
        """A read of tensor data on the REAL path: the trace fails even if the model's code catches it."""
        self._failed = self._failed or f"real values: {why}"

    # -- values ---------------------------------------------------------------------------------

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ValueProxy(node, self) if self.values is not None else super().proxy(node)

    def value_of(self, proxy: fx.Proxy) -> Any:
        return self.values.get(proxy.node, _UNKNOWN) if self.values is not None else _UNKNOWN

    def _fake(self, t: torch.Tensor) -> Any:
        """``t``'s stand-in on this path (a real, meta or fake copy), made once per tensor: what a value
        is computed from, never the user's tensor."""
        if self._values_on is ValuesOn.META:
            if t.is_meta:
                return t
        elif self._values_on is ValuesOn.FAKE:
            from torch._subclasses.fake_tensor import FakeTensor

            if isinstance(t, FakeTensor):
                return t
        if id(t) not in self._fakes:
            self._fakes[id(t)] = (t, self._copy(t))
        return self._fakes[id(t)][1]  # the tensor kept above: its id stays unique

    def _copy(self, t: torch.Tensor) -> Any:
        if self._values_on is ValuesOn.FAKE:
            return self._fake_mode.from_tensor(t)
        return self._meta_copy(t) if self._values_on is ValuesOn.META else self._real_copy(t)

    @staticmethod
    def _meta_copy(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "cpu":
            raise ValuesFailed(f"a tensor on {t.device} in a trace on meta tensors")
        with torch.no_grad():
            copy_ = torch.empty_like(t, device=_META)
        copy_.requires_grad_(t.requires_grad)
        return torch.nn.Parameter(copy_, t.requires_grad) if isinstance(t, torch.nn.Parameter) else copy_

    @staticmethod
    def _real_copy(t: torch.Tensor) -> torch.Tensor:
        """A CPU copy of ``t`` (a parameter stays a parameter): in-place ops of the traced code land on it."""
        if not is_plain_cpu(t):  # a tensor the code reached that the check before the trace did not see
            raise ValuesFailed(f"a {type(t).__name__} on {t.device} in a trace on real CPU tensors")
        with torch.no_grad():
            copy_ = t.detach().clone()
        return torch.nn.Parameter(copy_, t.requires_grad) if isinstance(t, torch.nn.Parameter) else copy_

    def _twin(self, module: torch.nn.Module) -> torch.nn.Module:
        """A copy of ``module``'s tree holding real, meta or fake copies of its parameters and buffers (made once)."""
        if id(module) in self._twins:
            return self._twins[id(module)][1]
        twin = shallow_copy_module(module)  # its own attribute dict: what the run writes stays on it
        attrs = vars(twin)
        attrs["_parameters"] = {k: None if v is None else self._fake(v) for k, v in module._parameters.items()}
        attrs["_buffers"] = {k: None if v is None else self._fake(v) for k, v in module._buffers.items()}
        attrs["_modules"] = {k: None if c is None else self._twin(c) for k, c in module._modules.items()}
        self._twins[id(module)] = (module, twin)  # the module kept: its id stays unique
        return twin

    def create_proxy(self, kind: str, target: Any, args: tuple, kwargs: dict, name: str | None = None,
                     type_expr: Any = None, proxy_factory_fn: Any = None) -> fx.Proxy:
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        if self.values is not None and kind != "placeholder" and not self._computing \
                and threading.get_ident() == self._thread:
            self._set_value(proxy.node, self._compute(kind, target, args, kwargs))
        return proxy

    def _set_value(self, node: fx.Node, value: Any) -> None:
        """``node``'s value, and its spec as shape propagation would take it (now: a later in-place op
        may change the value's shape)."""
        self.values[node] = value
        if value is not _UNKNOWN:
            self._specs[node] = shapes.spec_of(value)

    def constant_value(self, a: Any) -> Any:
        """What a non-tensor argument is when a value is computed (the tracer maps its mode flags to bools)."""
        return a

    def _compute(self, kind: str, target: Any, args: tuple, kwargs: dict) -> Any:
        """The value of a new node, run on fake tensors (``_UNKNOWN`` where that fails)."""
        unknown = []

        def value(a: Any) -> Any:
            if isinstance(a, fx.Proxy):
                v = self.value_of(a)
                if v is _UNKNOWN:
                    unknown.append(a)
                return v
            return self._fake(a) if isinstance(a, torch.Tensor) else self.constant_value(a)

        args = fx.node.map_aggregate(args, value)
        kwargs = fx.node.map_aggregate(kwargs, value)
        if unknown:
            return _UNKNOWN
        reads = len(self._reads)
        self._computing = True
        started = time.thread_time() if self._values_on is ValuesOn.REAL else 0.0
        try:
            if self._values_on is ValuesOn.META:
                return self._on_meta_values(self._compute_in_mode(kind, target, args, kwargs))
            return self._compute_in_mode(kind, target, args, kwargs)
        except ValuesFailed as exc:
            self._failed = self._failed or str(exc)
            raise
        except Exception as exc:  # noqa: BLE001 - a value fake tensors cannot give: branches on it fail as in torch.fx
            if self._values_on is not ValuesOn.FAKE:  # real and meta tensors are not fake ones: the next path decides
                self._failed = self._failed or f"{kind} {target}: {type(exc).__name__}: {exc}"
                raise ValuesFailed(self._failed) from exc
            return _UNKNOWN
        finally:
            self._computing = False
            del self._reads[reads:]  # a module run for its value reads its flag: not a branch of the trace
            if self._values_on is ValuesOn.REAL:
                self._charge(time.thread_time() - started)

    def _charge(self, seconds: float) -> None:
        """Count a REAL value's CPU time against the budget the CPU shape pass has (per node, at least a
        minimum): a model whose kernels cost more than meta dispatch would is traced on meta tensors."""
        spent, allowed = self._real_budget
        per_node = shapes.REAL_RUN_SECONDS_PER_NODE  # read per value: tests and users may change it
        self._real_budget = (spent + seconds, allowed + per_node)
        if spent + seconds > allowed + per_node:
            self._failed = self._failed or f"real values over their time budget ({spent + seconds:.3f} s)"
            raise ValuesFailed(self._failed)

    def _on_meta_values(self, result: Any) -> Any:
        """A computed value on meta tensors: a CPU tensor it holds (made from Python numbers) as a meta copy."""
        if isinstance(result, torch.Tensor):
            return result if result.is_meta else self._meta_copy(result)
        if isinstance(result, torch.device) and result.type == "meta":
            raise ValuesFailed("a device computed on meta tensors")
        if type(result) in (tuple, list):
            return type(result)(self._on_meta_values(v) for v in result)
        if type(result) is dict:
            return {k: self._on_meta_values(v) for k, v in result.items()}
        return result

    def _compute_in_mode(self, kind: str, target: Any, args: tuple, kwargs: dict) -> Any:
        # the copies of the state (a get_attr's tensor, a leaf's twin) are made outside the mode: on the
        # REAL path its guard would inspect every copying op, and copying reads no data the trace can use
        if kind == "get_attr":
            obj = self.root
            for part in target.split("."):
                obj = getattr(obj, part)
            return self._fake(obj) if isinstance(obj, torch.Tensor) else obj
        if kind == "call_module":
            # a twin holding real, meta or fake copies of the state (what the run writes, a BatchNorm's
            # num_batches_tracked, stays on the copies), with the module's flags as plain bools
            module = self.root.get_submodule(target)
            twin = self._twin(module)
            for m, t in zip(module.modules(), twin.modules()):
                t.training = int(m.training) != 0
            with self._fake_mode:
                return twin(*args, **kwargs)
        with self._fake_mode:
            if kind == "call_function":
                return target(*args, **kwargs)
            if kind == "call_method":
                return getattr(args[0], target)(*args[1:], **kwargs)
        return _UNKNOWN

    def write_specs(self, gm: fx.GraphModule) -> bool:
        """Annotate every node of ``gm`` (traced from example values) with :data:`fxprune.ir.SPEC`, as
        :func:`~fxprune.analysis.shapes.propagate_shapes` would at the same inputs: the spec each value
        had when it was computed, the output's from the values it returns, and for a ``get_attr`` added
        after the trace (a ``training`` flag, state the forward does not use) the attribute's; the
        analysis then skips that second run.  Nothing is written (False) where a value is unknown."""
        specs: dict[fx.Node, Any] = {}
        for node in gm.graph.nodes:
            if node in self._specs:
                specs[node] = self._specs[node]
            elif node.op == "get_attr":
                obj: Any = gm
                for part in str(node.target).split("."):
                    obj = getattr(obj, part)
                specs[node] = shapes.spec_of(obj)
            elif node.op == "output":
                value = fx.node.map_arg(node.args[0], lambda n: self.values.get(n, _UNKNOWN))
                found: list[Any] = []
                fx.node.map_aggregate(value, lambda v: found.append(v) if v is _UNKNOWN else None)
                if found:
                    return False
                specs[node] = shapes.spec_of(value)
            else:
                return False
        for node, spec in specs.items():
            node.meta[ir.SPEC] = spec
        return True

    def _guard(self, proxy: fx.Proxy, expected: Any, what: str) -> None:
        """Record ``check_traced(proxy, expected, ...)``: the frozen value is checked at run time."""
        key = (proxy.node, repr(expected))
        if key in self._guarded:
            return
        self._guarded.add(key)
        self.guards.append(what)
        self.create_proxy("call_function", check_traced, (proxy, expected, what), {})

    def _frozen(self, proxy: fx.Proxy, kinds: tuple[type, ...], use: str) -> Any:
        value = self.value_of(proxy)
        if value is _UNKNOWN or isinstance(value, torch.Tensor) or not isinstance(value, kinds):
            why = ("its value is unknown" if value is _UNKNOWN else "it is a tensor (a branch on tensor values)"
                   if isinstance(value, torch.Tensor) else f"it is a {type(value).__name__}")
            raise fx.proxy.TraceError(f"{proxy.node.name} is used as a Python {use} and {why}: "
                                      "symbolically traced variables cannot be used as inputs to control flow")
        return value

    def to_bool(self, obj: fx.Proxy) -> bool:
        if self.values is None:
            return super().to_bool(obj)
        value = bool(self._frozen(obj, (bool, int, float, torch.Size, tuple, list, torch.dtype, torch.device,
                                        str, type(None)), "bool"))
        self._guard(obj, value, f"the condition {obj.node.name} at {user_frame_line()}")
        return value

    def to_number(self, obj: fx.Proxy, kind: type) -> Any:
        value = self._frozen(obj, (bool, int, float) if kind is float else (bool, int), kind.__name__)
        self._guard(obj, value, f"the size {obj.node.name} at {user_frame_line()}")
        return kind(value)

    def length(self, obj: fx.Proxy) -> int:
        value = self.value_of(obj) if self.values is not None else _UNKNOWN
        if isinstance(value, (torch.Size, tuple, list)):
            return len(value)  # a rank or a fixed structure
        if isinstance(value, torch.Tensor) and value.ndim:
            n = self.create_proxy("call_function", builtins.len, (obj,), {})
            return self.to_number(n, int)
        return fx.Proxy.__len__(obj)

    def iter(self, obj: fx.Proxy) -> Iterator:
        value = self.value_of(obj) if self.values is not None else _UNKNOWN
        if isinstance(value, (torch.Size, tuple, list)):
            return iter([obj[i] for i in range(len(value))])
        return super().iter(obj)

    def create_args_for_root(self, root_fn: Any, is_module: bool, concrete_args: Any = None) -> Any:
        """From example values: one placeholder per example input, named after its parameter of
        ``forward``, which is called with keywords (wrappers with ``**kwargs`` stay as they are);
        the ranks and dtypes of tensor inputs, and the other inputs' values, are guarded."""
        if self.values is None:
            return super().create_args_for_root(root_fn, is_module, concrete_args)
        params = list(inspect.signature(root_fn).parameters.values())[1:]
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(self._example) > len(names):
            raise fx.proxy.TraceError(f"{len(self._example)} example inputs for a forward with "
                                      f"{len(names)} positional parameters")
        proxies, call = [], {}
        for name, value in zip(names, self._example):
            proxy = self.create_proxy("placeholder", name, (), {})
            proxies.append(proxy)
            if isinstance(value, torch.Tensor):
                self._set_value(proxy.node, self._fake(value))
                call[name] = proxy
                self._guard(self.create_proxy("call_method", "dim", (proxy,), {}), value.ndim, f"the rank of input {name!r}")
                dtype = self.create_proxy("call_function", builtins.getattr, (proxy, "dtype"), {})
                self._guard(dtype, value.dtype, f"the dtype of input {name!r}")
            elif value is None or isinstance(value, (bool, int, float, str)):
                self._set_value(proxy.node, value)
                call[name] = value
                self._guard(proxy, value, f"input {name!r}")
            else:
                raise fx.proxy.TraceError(f"example input {name!r} is a {type(value).__name__}: tracing from "
                                          "example values takes tensors and Python constants")

        def flat_forward(root: Any, *_: Any) -> Any:
            out = root_fn(root, **call)
            if isinstance(out, fx.Proxy) or type(out) in (tuple, list, dict):
                return out
            leaves, spec = torch.utils._pytree.tree_flatten(out)  # a ModelOutput...: given back as such
            self.graph._codegen = _OutputTreeCodeGen(fx.graph._PyTreeInfo(names[:len(proxies)], None, spec))
            return leaves

        return flat_forward, [self.root, *proxies]



def keep_unused_state(gm: fx.GraphModule, root: torch.nn.Module) -> None:
    """Parameters and buffers the forward does not use (a ``mask_token`` for an input not given) are
    kept at their places, as ``torch.export`` keeps them: the module has the model's parameters."""
    have = {n for n, _ in gm.named_parameters(remove_duplicate=False)} | \
        {n for n, _ in gm.named_buffers(remove_duplicate=False)}
    anchor = next((n for n in gm.graph.nodes if n.op != "placeholder"), None)
    added = False
    for name, _ in [*root.named_parameters(remove_duplicate=False), *root.named_buffers(remove_duplicate=False)]:
        if name not in have:
            fx.graph_module._copy_attr(root, gm, name)
            with gm.graph.inserting_before(anchor):
                gm.graph.get_attr(name)  # no user: what the rewrite emits keeps it too
            added = True
    if added:
        gm.recompile()

