"""The op registry: all of fxprune's knowledge about ops, declared as data.

A :class:`Rule` says, for one op family:

* ``propagate`` -- how channel labels map from inputs (and parameters) to
  outputs, like a JAX batching rule.  It receives an :class:`OpContext` whose
  tensor arguments are :class:`Value` objects carrying per-dimension labels, and
  returns the output's labels.  It declares where channels sit in parameters by
  unifying a parameter's dimension labels with a tensor's and tagging the role.
* ``emit`` -- for ``call_function``/``call_method`` nodes, how to rewrite the
  node's constant arguments once channels are removed (view sizes, split sizes,
  slice bounds).  ``None`` means the arguments never change.
* ``resize`` -- for ``call_module`` nodes, which module attributes follow the
  new sizes (``in_channels``, ``num_features``...).  Parameters are sliced
  generically from their labels; no rule slices tensors itself.
* ``macs`` -- multiply-accumulates of one call, from shapes, for the report.

Rules are registered under keys: the function object for ``call_function``
(``torch.add``, ``operator.add``, ``F.conv2d``), :class:`Method` for
``call_method`` (``Method("view")``), the module class for ``call_module``
(looked up along the MRO, so subclasses inherit their base's rule), and ATen
overload packets for the ``torch.export`` front end.  Families share generic
rules (see :mod:`fxprune.ops.generic`).

A node whose key has no rule is a *barrier*: its channels are fixed and the
report names it.  The built-in table is immutable; :func:`default_registry`
returns a fresh, extendable :class:`Registry`, so there is no global state.

Example -- registering a rule for a custom activation module:
    >>> import torch.nn as nn
    >>> from fxprune.ops import default_registry, generic
    >>> class MyAct(nn.Module):
    ...     def forward(self, x):
    ...         return x.clamp(min=0)
    >>> reg = default_registry()
    >>> reg.register(MyAct, rule=generic.UNARY)
    >>> reg.rule_for_key(MyAct).family
    'unary'
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx

from ..analysis.atoms import Atoms

__all__ = [
    "Rule",
    "Method",
    "Registry",
    "Value",
    "OpContext",
    "EmitContext",
    "Unsupported",
    "node_key",
    "default_registry",
    "ROLES",
]

#: Roles of a parameter dimension within a group.
#: ``producer``: rows that create the channel (conv/linear output, embedding dim);
#: ``consumer``: columns that read it; ``bias``: additive per-channel values
#: (biases, norm shifts, running means); ``scale``: multiplicative per-channel
#: values (norm weights, running variances, layer scales); ``coupled``: any other
#: tensor whose dimension is tied to the channel.
ROLES = ("producer", "consumer", "bias", "scale", "coupled")


class Unsupported(Exception):
    """Raised by a rule for a pattern it cannot map exactly; the node becomes a barrier."""


@dataclass(frozen=True)
class Method:
    """Registry key for ``call_method`` nodes, e.g. ``Method("view")``."""

    name: str


@dataclass(frozen=True)
class Rule:
    """One op family's channel behaviour (see the module docstring)."""

    family: str
    propagate: Callable[["OpContext"], Any]
    emit: Callable[["EmitContext"], tuple[Any, tuple, dict]] | None = None
    resize: Callable[[torch.nn.Module, "EmitContext"], None] | None = None
    macs: Callable[["OpContext"], int] | None = None
    doc: str = ""
    leaf: bool = False  # a module rule covering the whole module: tracing does not enter it


def node_key(node: fx.Node, root: torch.nn.Module) -> Any:
    """The registry key of an fx node (see :class:`Registry`)."""
    if node.op == "call_function":
        return node.target
    if node.op == "call_method":
        return Method(str(node.target))
    if node.op == "call_module":
        return type(root.get_submodule(str(node.target)))
    return None


class Registry:
    """A mutable table of rules layered over an immutable base table."""

    def __init__(self, base: Mapping[Any, Rule] | None = None) -> None:
        self._base: Mapping[Any, Rule] = base if base is not None else MappingProxyType({})
        self._own: dict[Any, Rule] = {}

    def register(self, *keys: Any, rule: Rule) -> None:
        """Register ``rule`` for each key (function, :class:`Method`, module type, ATen op)."""
        if not isinstance(rule, Rule):
            raise TypeError(f"rule must be an fxprune Rule, got {type(rule).__name__}")
        for key in keys:
            self._own[key] = rule

    def copy(self) -> "Registry":
        new = Registry(self._base)
        new._own = dict(self._own)
        return new

    def keys(self) -> list[Any]:
        return list({**self._base, **self._own}.keys())

    def leaf_types(self) -> tuple[type, ...]:
        """Module types whose rule covers the whole module (kept as leaves when tracing)."""
        table = {**self._base, **self._own}
        return tuple(k for k, r in table.items() if isinstance(k, type) and r.leaf)

    def rule_for_key(self, key: Any) -> Rule | None:
        if key in self._own:
            return self._own[key]
        if key in self._base:
            return self._base[key]
        if isinstance(key, type):
            for base in key.__mro__[1:]:
                if base in self._own:
                    return self._own[base]
                if base in self._base:
                    return self._base[base]
        packet = getattr(key, "overloadpacket", None)
        if packet is not None:
            return self.rule_for_key(packet)
        return None

    def lookup(self, node: fx.Node, root: torch.nn.Module) -> Rule | None:
        """The rule for ``node``, or ``None`` (the node is then a barrier)."""
        return self.rule_for_key(node_key(node, root))


def default_registry() -> Registry:
    """A fresh registry holding every built-in rule; extend it freely."""
    from . import builtin

    return Registry(builtin.TABLE)


def describe_key(key: Any) -> str:
    """A readable name for a registry key (for error messages)."""
    if isinstance(key, Method):
        return f"Tensor.{key.name}"
    if isinstance(key, type):
        return f"{key.__module__}.{key.__qualname__}"
    mod = getattr(key, "__module__", None)
    name = getattr(key, "__qualname__", None) or getattr(key, "__name__", None) or str(key)
    if key in vars(operator).values():
        return f"operator.{name}"
    return f"{mod}.{name}" if mod else str(name)


@dataclass
class Value:
    """A node argument as rules see it.

    ``labels`` is a tuple with one entry per dimension (``None`` or an atom-id
    array) for tensors, a tuple of such tuples for tuple outputs, and ``None`` for
    non-tensors.  ``param`` is the qualified name when the value is a parameter,
    buffer or constant tensor of the model.
    """

    spec: Any
    labels: Any
    node: fx.Node | None = None
    param: str | None = None

    @property
    def is_tensor(self) -> bool:
        from ..analysis.capture import TensorSpec

        return isinstance(self.spec, TensorSpec)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.spec.shape

    @property
    def ndim(self) -> int:
        return len(self.spec.shape)


@dataclass
class OpContext:
    """What a rule's ``propagate`` sees for one node."""

    node: fx.Node
    args: tuple
    kwargs: dict
    out: Any
    atoms: Atoms
    module: torch.nn.Module | None = None
    params: dict[str, Value | None] = field(default_factory=dict)
    roles: dict[tuple[str, int], str] = field(default_factory=dict)
    split_policy: str = "inner"

    # -- argument access -------------------------------------------------
    def arg(self, index: int, name: str | None = None, default: Any = None) -> Any:
        """Positional argument ``index`` or keyword ``name``."""
        if index < len(self.args):
            return self.args[index]
        if name is not None and name in self.kwargs:
            return self.kwargs[name]
        return default

    def param(self, name: str) -> Value | None:
        """A parameter/buffer of the called module (``None`` if absent, e.g. no bias)."""
        return self.params.get(name)

    @property
    def out_labels_fixed(self) -> tuple:
        return tuple(None for _ in self.out.shape)

    # -- label algebra -----------------------------------------------------
    def fresh(self, n: int) -> np.ndarray:
        return self.atoms.fresh(n)

    def unify(self, a: np.ndarray | None, b: np.ndarray | None, what: str = "") -> np.ndarray | None:
        """Unify two dimension labels; a fixed (``None``) side fixes the other.

        Returns the labels to use for the result (``a`` if present, else ``b``).
        """
        if a is None and b is None:
            return None
        if a is None or b is None:
            present = a if a is not None else b
            self.atoms.fix(present, f"{self.describe()}: tied to a fixed-size dimension{what}")
            return present
        if len(a) != len(b):
            raise Unsupported(f"cannot tie dimensions of sizes {len(a)} and {len(b)}")
        self.atoms.unify(a, b)
        return a

    def fix(self, labels: np.ndarray | None, why: str) -> None:
        if labels is not None:
            self.atoms.fix(labels, f"{self.describe()}: {why}")

    def fix_value(self, value: Any, why: str) -> None:
        """Fix every labelled dimension of a value (tensor or nested tuple)."""
        for arr in iter_label_arrays(value.labels if isinstance(value, Value) else value):
            self.fix(arr, why)

    def mixing(self, labels: np.ndarray | None, why: str) -> None:
        if labels is not None:
            self.atoms.mark_mixing(labels, f"{self.describe()}: {why}")

    def role(self, value: Value | None, dim: int, role: str) -> None:
        """Declare the role of a parameter's dimension (see :data:`ROLES`)."""
        if value is None or value.param is None:
            return
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles are {ROLES}")
        self.roles.setdefault((value.param, dim % value.ndim), role)

    def describe(self) -> str:
        t = self.node.target
        name = getattr(t, "__name__", None) or str(t)
        if self.module is not None:
            name = type(self.module).__name__
        return f"node '{self.node.name}' ({name})"


def iter_label_arrays(labels: Any) -> Iterable[np.ndarray]:
    """All atom arrays inside a (possibly nested) labels structure."""
    if labels is None:
        return
    if isinstance(labels, np.ndarray):
        yield labels
        return
    for item in labels:
        yield from iter_label_arrays(item)


@dataclass
class EmitContext:
    """What a rule's ``emit``/``resize`` sees when the graph is rewritten.

    ``new_shape(x)`` gives the pruned shape of an input value or of the output;
    ``kept(labels)`` the boolean keep-mask of a labels array; ``value_changed(n)``
    tells whether a non-tensor node (a size read, arithmetic on sizes) may
    compute a different value in the pruned graph.  Arguments are given twice:
    ``args`` mapped into the new graph, ``old_args`` as in the analysed graph.
    """

    node: fx.Node
    args: tuple
    kwargs: dict
    old_args: tuple
    old_kwargs: dict
    new_shape: Callable[[Any], tuple[int, ...]]
    labels_of: Callable[[Any], Any]
    kept: Callable[[np.ndarray], np.ndarray]
    module: torch.nn.Module | None = None
    value_changed: Callable[[Any], bool] = lambda node: False

    def out_labels(self) -> Any:
        return self.labels_of(self.node)

    def out_shape(self) -> Any:
        return self.new_shape(self.node)

    def arg(self, index: int, name: str | None = None, default: Any = None) -> Any:
        if index < len(self.args):
            return self.args[index]
        if name is not None and name in self.kwargs:
            return self.kwargs[name]
        return default

    def old_arg(self, index: int, name: str | None = None, default: Any = None) -> Any:
        if index < len(self.old_args):
            return self.old_args[index]
        if name is not None and name in self.old_kwargs:
            return self.old_kwargs[name]
        return default


def normalize_dim(dim: int, ndim: int) -> int:
    if ndim == 0:
        return 0
    if not -ndim <= dim < ndim:
        raise Unsupported(f"dimension {dim} out of range for a {ndim}-d tensor")
    return dim % ndim


def dims_arg(value: Any) -> Sequence[int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value,)
    return tuple(value)
