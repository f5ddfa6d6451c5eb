"""Side effects: which calls write to an argument (in-place ops), and which may be dropped when unused.

Declared once, generically, from how PyTorch itself marks in-place ops (no
list of ops to keep up to date):

* a Tensor method or a function whose name ends in ``_`` (``y.clamp_(min=0)``,
  ``torch.relu_(y)``, ``F.relu_(y)``), and the in-place ``operator`` functions
  and dunders (``operator.iadd``, ``y.__imul__(s)``) write their first argument;
* ``operator.setitem`` (``y[:, :2] = z``) writes its first argument;
* a call with ``inplace=True`` (keyword, or positional where the signature
  names it: ``F.relu(y, True)``) writes its first argument; ``out=t`` writes ``t``;
* a module with ``inplace = True`` (``nn.ReLU(inplace=True)``) writes its input;
* an ATen overload writes the arguments its schema marks as written
  (``aten.add_.Tensor(Tensor(a!) self, ...)``).

:func:`removable` says whether an unused node may be deleted by dead-code
elimination: only pure calls may; a call that writes an argument, draws
random numbers, or calls a module (modules hold state: BatchNorm statistics,
counters) always stays.

Example:
    >>> import torch, torch.fx as fx
    >>> class M(torch.nn.Module):
    ...     def forward(self, y):
    ...         y.clamp_(min=0)
    ...         n = y.size(1)
    ...         return torch.nn.functional.relu(y, inplace=True)
    >>> gm = fx.symbolic_trace(M())
    >>> [(n.name, [a.name for a in mutated_args(n, gm)], removable(n, gm))
    ...  for n in gm.graph.nodes if n.op.startswith("call")]
    [('clamp_', ['y'], False), ('size', [], True), ('relu', ['y'], False)]
"""
from __future__ import annotations

import functools
import inspect
import operator
from typing import Any, Callable

import torch
import torch.fx as fx

from ..modules import submodule

__all__ = ["is_inplace_name", "mutated_args", "removable"]


def is_inplace_name(name: str) -> bool:
    """Whether a method or function name is PyTorch's in-place spelling.

    ``add_``, ``relu_`` (trailing underscore, not private) and the in-place
    operators ``iadd``/``__iadd__`` (an ``operator`` function ``iX`` next to ``X``).

    Example:
        >>> [is_inplace_name(n) for n in ("add_", "add", "__iadd__", "iadd", "__index__", "_foo_")]
        [True, False, True, True, False, False]
    """
    if name.endswith("_") and not name.startswith("_"):
        return True
    bare = name[2:-2] if name.startswith("__") and name.endswith("__") else name
    return bare.startswith("i") and hasattr(operator, bare) and hasattr(operator, bare[1:])


@functools.lru_cache(maxsize=None)
def _inplace_position(target: Callable[..., Any]) -> int | None:
    """The positional index of a callable's ``inplace`` parameter, or ``None``."""
    try:
        params = list(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return None
    return params.index("inplace") if "inplace" in params else None


def _first_node(args: tuple) -> list[fx.Node]:
    return [args[0]] if args and isinstance(args[0], fx.Node) else []


def _schema_writes(target: Any, node: fx.Node) -> list[fx.Node]:
    overload = target if isinstance(target, torch._ops.OpOverload) else getattr(target, "default", None)
    schema = getattr(overload, "_schema", None)
    if schema is None or not schema.is_mutable:
        return []
    out = []
    for i, arg in enumerate(schema.arguments):
        if arg.alias_info is None or not arg.alias_info.is_write:
            continue
        value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
        if isinstance(value, fx.Node):
            out.append(value)
    return out


def _inplace_flag(module: torch.nn.Module) -> bool:
    """``getattr(module, "inplace", False) is True``, without raising (and catching) an
    ``AttributeError`` inside ``nn.Module.__getattr__`` for the modules that have no such attribute:
    that costs more than the rest of the question."""
    flag = vars(module).get("inplace")
    if flag is not None:
        return flag is True
    if hasattr(type(module), "inplace") or type(module).__getattr__ is not torch.nn.Module.__getattr__:
        return getattr(module, "inplace", False) is True  # a property, a class attribute, a __getattr__
    return False  # nn.Module.__getattr__ finds parameters, buffers and submodules: never True


def mutated_args(node: fx.Node, root: torch.nn.Module | None = None,
                 module: torch.nn.Module | None = None) -> tuple[fx.Node, ...]:
    """The argument nodes a call writes to (in place), in order; ``()`` for a pure call.

    ``module``: the module a ``call_module`` node calls, where the caller has looked it up already.
    """
    written: list[fx.Node] = []
    out = node.kwargs.get("out")
    if isinstance(out, fx.Node):
        written.append(out)
    if node.op == "call_method":
        if is_inplace_name(str(node.target)):
            written += _first_node(node.args)
    elif node.op == "call_function":
        target = node.target
        if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
            written += _schema_writes(target, node)
        else:
            name = getattr(target, "__name__", "")
            pos = _inplace_position(target) if callable(target) else None
            inplace = node.kwargs.get("inplace", node.args[pos] if pos is not None and pos < len(node.args)
                                      else False)
            if is_inplace_name(name) or target in (operator.setitem, operator.delitem) or inplace is True:
                written += _first_node(node.args)
    elif node.op == "call_module" and (root is not None or module is not None):
        module = module if module is not None else submodule(root, str(node.target))
        if _inplace_flag(module):
            written += _first_node(node.args)
    return tuple(dict.fromkeys(written))


def removable(node: fx.Node, root: torch.nn.Module | None = None) -> bool:
    """Whether ``node`` may be deleted when nothing uses its result (a pure call or a read)."""
    if node.op in ("placeholder", "output", "call_module"):
        return False
    if node.op == "get_attr":
        return True
    if mutated_args(node, root):
        return False
    try:
        return not node.is_impure()
    except Exception:  # noqa: BLE001 - fx's purity check needs an owning module; be safe
        return False
