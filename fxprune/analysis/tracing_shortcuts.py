"""Cheaper ways to what torch.fx (and ``traceback``) do while fxprune traces, giving the same results.

A capture spends most of its time in torch.fx's generic machinery, per argument and
per node; :class:`Shortcuts` (a mixin of fxprune's tracer) takes shortcuts that leave
every graph as torch.fx makes it (tests/test_tracer_shortcuts.py compares each one
with torch.fx's own path):

* :meth:`Shortcuts.create_arg` lowers the common argument types (proxies, scalars,
  dtypes, tuples, lists, string-keyed dicts, slices) by their type, where torch.fx
  tries a dozen checks on each (:func:`arg_handlers`);
* :meth:`Shortcuts.create_node` makes a call's node without its arguments and sets
  them through the public ``Node.args`` / ``Node.kwargs`` setters, skipping
  ``Graph.create_node``'s pytree walk for raw ``SymInt`` values (none in a symbolic
  trace of eager code);
* the module stack each node records is copied as a plain ``OrderedDict``
  (:class:`ModuleStack`), without ``copy.copy``'s reduce round trip;
* :func:`user_frame_line` reads the one frame a guard quotes instead of summarising
  the whole stack;
* :func:`check_root_arguments` fails a plain trace that cannot make the placeholders
  of ``forward`` (a decorated ``forward(*args, **kwargs)``: Hugging Face) before the
  model is copied for it.

Example:
    >>> import torch.fx as fx
    >>> handlers = arg_handlers(())
    >>> handlers[int] is handlers[str], fx.Proxy in handlers
    (True, True)
"""
from __future__ import annotations

import collections
import inspect
import linecache
import logging
import sys
import traceback
import types
from typing import Any

import torch
import torch.fx as fx
import torch.fx._symbolic_trace as fx_trace

__all__ = ["ModuleStack", "Shortcuts", "arg_handlers", "check_root_arguments", "user_frame_line"]


class ModuleStack(collections.OrderedDict):
    """torch.fx's module call stack (an ``OrderedDict``), copied for every node it records
    (``copy.copy`` in ``TracerBase.create_node``): copied here as the ``OrderedDict`` that
    ``copy.copy`` makes of one (same items, same type), without its ``__reduce_ex__`` round trip."""

    def __copy__(self) -> collections.OrderedDict:
        return collections.OrderedDict(self)


#: the node kinds whose arguments ``Graph.create_node`` walks (see :meth:`Shortcuts.create_node`)
_CALL_OPS = frozenset({"call_function", "call_method", "call_module"})
#: torch.fx's tracer log (``TracerBase.create_node`` logs each new node at debug level)
_FX_LOG = logging.getLogger("torch.fx.proxy")


#: argument types torch.fx's ``Tracer.create_arg`` gives back as they are (no tensor, module or tuple)
_AS_IS_TYPES = (bool, int, float, complex, str, type(None), type(...), torch.dtype, torch.device, torch.layout,
                torch.memory_format)


def arg_handlers(proxy_types: tuple[type, ...]) -> dict[type, Any]:
    """Per argument type, how torch.fx's ``Tracer.create_arg`` lowers an argument of exactly that type
    (:meth:`Shortcuts.create_arg` takes these directly; any other type goes through torch.fx).

    Left out: a type registered as an opaque type or made proxyable (torch.fx stores those as
    constants).  Both registries are private to torch; where either cannot be read (a torch
    without them, or that moved them) the table is empty and every argument goes through torch.fx.
    """
    try:
        from torch._library.opaque_object import is_opaque_type
        proxyable = fx_trace._proxyable_classes
    except (ImportError, AttributeError):  # pragma: no cover - another torch: no shortcut
        return {}
    handlers: dict[type, Any] = {t: _as_is for t in _AS_IS_TYPES}
    handlers.update({t: _node_of for t in (fx.Proxy, fx.proxy.Attribute, *proxy_types)})
    handlers.update({tuple: _tuple_arg, list: _list_arg, dict: _dict_arg, slice: _slice_arg})
    return {t: h for t, h in handlers.items() if t not in proxyable and not is_opaque_type(t)}


def _as_is(tracer: fx.Tracer, a: Any) -> Any:
    return a


def _node_of(tracer: fx.Tracer, a: fx.Proxy) -> fx.Node:
    return a.node  # an Attribute's node is recorded now, as torch.fx does


def _tuple_arg(tracer: fx.Tracer, a: tuple) -> tuple:
    return tuple([tracer.create_arg(x) for x in a])


def _list_arg(tracer: fx.Tracer, a: list) -> list:
    return [tracer.create_arg(x) for x in a]


def _dict_arg(tracer: fx.Tracer, a: dict) -> dict:
    if all(type(k) is str for k in a):
        return {k: tracer.create_arg(v) for k, v in a.items()}
    return fx.Tracer.create_arg(tracer, a)  # keys that are not strings: torch.fx checks them


def _slice_arg(tracer: fx.Tracer, a: slice) -> slice:
    return slice(tracer.create_arg(a.start), tracer.create_arg(a.stop), tracer.create_arg(a.step))


class Shortcuts:
    """The shortcuts of fxprune's tracer (a mixin before ``torch.fx.Tracer``); :meth:`_init_shortcuts`
    is called from the tracer's ``__init__``, after ``torch.fx.Tracer``'s."""

    def _init_shortcuts(self, proxy_types: tuple[type, ...]) -> None:
        self.module_stack = ModuleStack()
        self._arg_handlers = arg_handlers(proxy_types)

    def create_node(self, kind: str, target: Any, args: tuple, kwargs: dict, name: str | None = None,
                    type_expr: Any = None) -> fx.Node:
        """torch.fx's ``create_node`` (the same node), a call's arguments set on it once it is made.

        ``Graph.create_node`` walks the arguments of every call with pytree for raw
        ``SymInt`` values to warn about (a symbolic trace of eager code has none), the
        largest single cost per node; the node is made without arguments here and
        they are set through the public ``Node.args`` / ``Node.kwargs`` setters, which
        do what ``Node.__init__`` does with them.  Where something could see the node
        before its arguments (the graph's owner's node hooks, torch.fx's debug log,
        the mutable-operation check) torch.fx makes it as it does.
        """
        if kind not in _CALL_OPS or type(args) is not tuple or not isinstance(kwargs, dict) \
                or not (args or kwargs) or not self._arguments_set_after():
            return super().create_node(kind, target, args, kwargs, name, type_expr)
        node = super().create_node(kind, target, (), {}, name, type_expr)
        node.args = args
        if kwargs:
            node.kwargs = kwargs
        return node

    def _arguments_set_after(self) -> bool:
        """Whether nothing sees a new node before :meth:`create_node` sets its arguments."""
        return not self.check_mutable_operations and self.graph.owning_module is None \
            and not _FX_LOG.isEnabledFor(logging.DEBUG)

    def create_arg(self, a: Any) -> Any:
        """torch.fx's ``create_arg`` (the same result), taking the common argument types directly
        (:func:`arg_handlers`): torch.fx tries a dozen checks on every argument first."""
        handler = self._arg_handlers.get(type(a))
        return handler(self, a) if handler is not None else super().create_arg(a)


#: frames in files under these paths are not the user's (the first frame outside them is quoted)
_CAPTURE_PATHS = ("/torch/", "/fxprune/analysis/")


def user_frame_line() -> str:
    """``file:line: code`` of the innermost frame outside torch and fxprune's capture (the caller of
    this function and its caller are skipped: they are the capture's own).

    Walks the frames up from the caller's caller and reads one source line, instead of
    ``traceback.extract_stack()`` (a summary, a ``linecache`` check and a source line per frame
    of a deep stack, for each frozen branch of a trace); the result is the same, and the
    same way is taken where ``sys.tracebacklimit`` cuts the stack.
    """
    if getattr(sys, "tracebacklimit", None) is not None:
        return _quoted(traceback.extract_stack()[:-2])
    try:
        frame = sys._getframe(2)
    except ValueError:  # called from the outermost frames: nothing of the user's above
        return "an unknown line"
    while frame is not None:
        filename = frame.f_code.co_filename
        if not _in_capture(filename):
            return _frame_line(frame)
        frame = frame.f_back
    return "an unknown line"


def _in_capture(filename: str) -> bool:
    return any(p in filename.replace("\\", "/") for p in _CAPTURE_PATHS)


def _frame_line(frame: Any) -> str:
    """``file:line: code`` of ``frame``, the source line read as ``traceback.FrameSummary.line`` reads it."""
    filename, lineno = frame.f_code.co_filename, frame.f_lineno
    linecache.lazycache(filename, frame.f_globals)
    linecache.checkcache(filename)
    line = linecache.getline(filename, lineno).strip() if lineno is not None else None
    return f"{filename}:{lineno}: {line}"


def _quoted(frames: list) -> str:
    """``file:line: code`` of the innermost of ``frames`` (a ``traceback`` summary) outside the capture."""
    frames = [f for f in frames if not _in_capture(f.filename)]
    return f"{frames[-1].filename}:{frames[-1].lineno}: {frames[-1].line}" if frames else "an unknown line"


def check_root_arguments(model: torch.nn.Module) -> None:
    """Raise what a plain trace of ``model`` raises while it makes the placeholders of ``forward``, if it does.

    torch.fx makes the placeholders (``Tracer.create_args_for_root``) after it has set
    up the trace, and fxprune after it has copied the module tree and set its flags: a
    decorated ``forward(*args, **kwargs)`` around a forward with more parameters (a
    Hugging Face model) fails there (``co_varnames is too small``), a millisecond spent
    before the trace from example values.  This runs the same step first, on a scratch
    tracer (:class:`_PlaceholderCheck`), where it can fail: for a ``forward`` with
    keyword-only or ``*``/``**`` parameters (unwrapped, as torch.fx reads them).  Where
    it fails the trace fails too (the step is the same, on the same function); the
    exception quoted is then this one, where the trace might first have failed on a
    default value it cannot record.
    """
    forward = getattr(type(model), "forward", None)
    code = getattr(inspect.unwrap(forward), "__code__", None) if isinstance(forward, types.FunctionType) else None
    if code is None or not (code.co_kwonlyargcount or code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS)):
        return
    scratch = _PlaceholderCheck()
    scratch.root, scratch.graph = model, fx.Graph()
    scratch.create_args_for_root(forward, True)


class _PlaceholderCheck(fx.Tracer):
    """A tracer that only makes placeholders, in a scratch graph: their default values are not recorded
    (recording one may add it to the root as a constant), so nothing of the model is read or changed."""

    def create_proxy(self, kind: str, target: Any, args: tuple, kwargs: dict, name: str | None = None,
                     type_expr: Any = None, proxy_factory_fn: Any = None) -> fx.Proxy:
        return fx.Proxy(self.graph.create_node(kind, target, name=name), self)
