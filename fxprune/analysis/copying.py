"""Copies of graphs and of the tensors a GraphModule references, without fxprune's annotations.

Shared by the passes that build a new graph from an analysed one (block
removal, probing a model at another input size): :func:`copy_node` copies one
node into a new graph without fxprune's ``node.meta`` keys,
:func:`clean_copy` copies a whole graph, and :func:`own_copies` makes a
GraphModule own deep copies of what it references, so that changing it never
changes the user's model; :func:`deepcopy_module` is ``copy.deepcopy`` of a
module tree, without its generic dispatch where a module class copies plainly;
:func:`lazy_graph_module` builds a GraphModule whose Python code is generated
on first use (the analysis reads only the graph).

Example:
    >>> import torch, torch.fx as fx
    >>> gm = fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    >>> copy = fx.GraphModule(gm, clean_copy(gm.graph))
    >>> own_copies(copy)
    >>> copy.get_submodule("0").weight is gm.get_submodule("0").weight
    False
"""
from __future__ import annotations

import contextlib
import copy
import copyreg
from collections import OrderedDict
from typing import Any, Iterator, Mapping

import torch
import torch.fx as fx

from .. import ir
from ..modules import get_attr, set_attr

try:  # torch >= 2.3; the private class torch.fx builds its own passes' modules with
    from torch.fx._lazy_graph_module import _LazyGraphModule
except ImportError:  # pragma: no cover - an older or changed torch: code generated at once
    _LazyGraphModule = fx.GraphModule

__all__ = ["clean_copy", "code_generated", "copy_container", "copy_node", "deepcopy_module", "is_plain_cpu",
           "lazy_graph_module", "own_copies", "shallow_copy_module", "state_restored"]


def lazy_graph_module(root: torch.nn.Module, graph: fx.Graph, class_name: str = "GraphModule") -> fx.GraphModule:
    """``fx.GraphModule(root, graph, class_name)``, generating its Python code on first use, not now.

    The analysis passes read the graph and never run the module's code, and
    :func:`fxprune.prune` emits a new module: generating (and compiling) the
    traced module's code is a fifth of a small model's capture, spent for
    nothing.  The module is a ``torch.fx`` ``_LazyGraphModule``: calling it,
    reading ``code``, printing, copying or pickling it generates the code
    first, so it behaves as the plain GraphModule would; ``forward``'s
    signature reads ``(*args, **kwargs)`` until then (:func:`code_generated`).

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> gm = lazy_graph_module(m, fx.Tracer().trace(m))
        >>> isinstance(gm, fx.GraphModule), "def forward(self, input)" in gm.code
        (True, True)
    """
    return _LazyGraphModule(root, graph, class_name)


def code_generated(gm: torch.nn.Module) -> torch.nn.Module:
    """``gm`` with its Python code generated (a :func:`lazy_graph_module` defers it), so ``gm.forward`` is the real one."""
    real_recompile = getattr(gm, "real_recompile", None)
    if isinstance(gm, fx.GraphModule) and callable(real_recompile):
        real_recompile()
    return gm


def copy_node(graph: fx.Graph, node: fx.Node, env: Mapping[fx.Node, fx.Node]) -> fx.Node:
    """``graph.node_copy(node)`` reading ``env`` for its inputs, without fxprune's meta keys."""
    new = graph.node_copy(node, env.__getitem__)
    for key in ir.ALL_KEYS:
        new.meta.pop(key, None)
    if isinstance(new.type, str):  # a string annotation cannot be pickled with the module
        new.type = None
    return new


def clean_copy(graph: fx.Graph) -> fx.Graph:
    """A copy of ``graph`` (same node names and code generator) without fxprune's meta keys."""
    new = fx.Graph()
    new._codegen = graph._codegen  # e.g. torch.export's pytree in/out handling (immutable)
    env: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        env[node] = copy_node(new, node, env)
    return new


def own_copies(gm: fx.GraphModule) -> None:
    """Replace the modules and tensors ``gm`` references by deep copies (one memo: ties kept)."""
    memo: dict[int, Any] = {}
    for name, child in list(gm.named_children()):
        setattr(gm, name, copy.deepcopy(child, memo))
    for name, p in list(gm.named_parameters(recurse=False)):
        gm.register_parameter(name, copy.deepcopy(p, memo))
    for name, b in list(gm.named_buffers(recurse=False)):
        gm.register_buffer(name, copy.deepcopy(b, memo), persistent=name not in gm._non_persistent_buffers_set)
    for node in gm.graph.nodes:
        if node.op == "get_attr" and "." not in str(node.target):
            value = get_attr(gm, str(node.target))
            if isinstance(value, torch.Tensor) and id(value) not in memo:
                set_attr(gm, str(node.target), copy.deepcopy(value, memo))


#: values ``copy.deepcopy`` returns as they are
_ATOMIC = frozenset({type(None), bool, int, float, complex, str, bytes})
_PLAIN: dict[type, bool] = {}


def _copies_plainly(cls: type) -> bool:
    """Whether ``copy.deepcopy`` / ``copy.copy`` of a ``cls`` instance is ``cls.__new__(cls)`` given
    (a deep copy of) its ``__getstate__()`` through ``__setstate__`` (a module class without
    ``__deepcopy__``, ``__copy__``, reduce hook, new-args or slots)."""
    plain = _PLAIN.get(cls)
    if plain is None:
        plain = (issubclass(cls, torch.nn.Module) and getattr(cls, "__deepcopy__", None) is None
                 and getattr(cls, "__copy__", None) is None and cls not in copyreg.dispatch_table
                 and cls.__reduce_ex__ is object.__reduce_ex__ and cls.__reduce__ is object.__reduce__
                 and getattr(cls, "__getnewargs_ex__", None) is None and getattr(cls, "__getnewargs__", None) is None
                 and not copyreg._slotnames(cls))  # type: ignore[attr-defined]
        _PLAIN[cls] = plain
    return plain


def _keep_alive(x: Any, memo: dict[int, Any]) -> None:
    memo.setdefault(id(memo), []).append(x)  # as copy.deepcopy does: ids stay unique while the memo lives


def _deepcopy_value(v: Any, memo: dict[int, Any]) -> Any:
    """``copy.deepcopy(v, memo)``, taking the common values of a module's ``__dict__`` directly."""
    cls = type(v)
    if cls in _ATOMIC:
        return v
    found = memo.get(id(v), memo)
    if found is not memo:
        return found
    if cls is dict or (cls is OrderedDict and not vars(v)):
        new = cls()
        memo[id(v)] = new
        _keep_alive(v, memo)
        for k, x in v.items():
            new[_deepcopy_value(k, memo)] = _deepcopy_value(x, memo)
        return new
    if cls is tuple and all(type(x) in _ATOMIC for x in v):
        return v
    if cls is set and all(type(x) in _ATOMIC for x in v):
        new = set(v)
        memo[id(v)] = new
        _keep_alive(v, memo)
        return new
    if _copies_plainly(cls):
        return deepcopy_module(v, memo)
    return copy.deepcopy(v, memo)


def deepcopy_module(module: torch.nn.Module, memo: dict[int, Any] | None = None) -> torch.nn.Module:
    """``copy.deepcopy(module, memo)``: the same copy, memo entries included.

    ``copy.deepcopy`` reaches every attribute of every module through its generic
    dispatch (a dozen hook dicts per module, each reconstructed through
    ``__reduce_ex__``); here a module class that copies plainly (no ``__deepcopy__``,
    reduce hook or slots: see :func:`_copies_plainly`) is copied as ``copy`` would
    copy it, with its plain containers (dicts, ordered dicts, sets and tuples of
    scalars) copied directly.  Anything else, tensors included, goes through
    ``copy.deepcopy`` with the same memo.

    Example:
        >>> import torch.nn as nn
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        >>> twin = deepcopy_module(model)
        >>> twin[0].weight is model[0].weight, bool((twin[0].weight == model[0].weight).all())
        (False, True)
    """
    memo = {} if memo is None else memo
    found = memo.get(id(module), memo)
    if found is not memo:
        return found
    cls = type(module)
    if not _copies_plainly(cls):
        return copy.deepcopy(module, memo)
    state = module.__getstate__()
    if type(state) is not dict:
        return copy.deepcopy(module, memo)
    new = cls.__new__(cls)
    memo[id(module)] = new
    new.__setstate__({k: _deepcopy_value(v, memo) for k, v in state.items()})
    _keep_alive(module, memo)
    return new


def shallow_copy_module(module: torch.nn.Module, containers: bool = False) -> torch.nn.Module:
    """``copy.copy(module)`` (a new module object with a copy of its attribute dict), without the
    generic dispatch where the class copies plainly; with ``containers``, each dict, list or set
    attribute of the copy is a copy too (:func:`copy_container`, one level deep).

    Where the class keeps ``torch.nn.Module``'s own ``__getstate__`` and ``__setstate__`` (which
    only stores the state and adds missing hook dicts), the containers are copied in the state
    before it is stored, in one pass; otherwise in the copy's attribute dict afterwards.
    """
    cls = type(module)
    if _copies_plainly(cls):
        state = module.__getstate__()
        if type(state) is dict:
            new = cls.__new__(cls)
            if containers and cls.__getstate__ is _MODULE_GETSTATE and cls.__setstate__ is _MODULE_SETSTATE:
                for k, v in state.items():
                    if isinstance(v, _CONTAINER_TYPES):
                        state[k] = copy_container(v)
                new.__setstate__(state)
                return new
            new.__setstate__(state)
            return _containers_copied(new) if containers else new
    new = copy.copy(module)
    return _containers_copied(new) if containers else new


_MODULE_GETSTATE = torch.nn.Module.__getstate__
_MODULE_SETSTATE = torch.nn.Module.__setstate__
_CONTAINER_TYPES = (dict, list, set)


def _containers_copied(module: torch.nn.Module) -> torch.nn.Module:
    attrs = vars(module)
    for k, v in list(attrs.items()):
        if isinstance(v, _CONTAINER_TYPES):
            attrs[k] = copy_container(v)
    return module


def copy_container(value: Any) -> Any:
    """``copy.copy(value)`` of a dict, list or set, directly for the plain types (an ``OrderedDict``
    goes through ``__reduce_ex__`` and an uncached slot-name lookup in ``copy.copy``)."""
    cls = type(value)
    if cls is dict or cls is list or cls is set or (cls is OrderedDict and not vars(value)):
        return value.copy()
    return copy.copy(value)


def is_plain_cpu(t: torch.Tensor) -> bool:
    """A dense CPU tensor or parameter, no subclass: safe to copy and to run CPU kernels on."""
    return t.device.type == "cpu" and type(t) in (torch.Tensor, torch.nn.Parameter) and t.layout == torch.strided


@contextlib.contextmanager
def state_restored(model: torch.nn.Module) -> Iterator[None]:
    """Every module attribute (and the contents of dict/list/set attributes) as before, afterwards."""
    saved = []
    for m in model.modules():
        attrs = dict(vars(m))
        contents = {k: (copy.copy(v)) for k, v in attrs.items() if type(v) in (dict, list, set)}
        saved.append((m, attrs, contents))
    try:
        yield
    finally:
        for m, attrs, contents in saved:
            vars(m).clear()
            vars(m).update(attrs)
            for k, v in contents.items():
                attrs[k].clear()
                attrs[k].update(v) if isinstance(v, (dict, set)) else attrs[k].extend(v)
