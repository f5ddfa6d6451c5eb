"""What a rule sees: :class:`Value`, :class:`OpContext` (propagate) and :class:`EmitContext` (emit/resize).

Rules never touch fx graphs or the model directly: arguments come wrapped as
:class:`Value` objects carrying their :class:`~fxprune.ir.TensorSpec` and
channel labels, and the label algebra (``unify``, ``fix``, ``mixing``,
``role``) is reached through the context.  A rule that meets a use it cannot
map exactly raises :class:`Unsupported`; the node then becomes a barrier.

Example:
    >>> import numpy as np
    >>> from fxprune.ir import Atoms, TensorSpec
    >>> atoms = Atoms()
    >>> x = Value(TensorSpec((2, 3)), (None, atoms.fresh(3)))
    >>> ctx = OpContext(node=None, args=(x,), kwargs={}, out=TensorSpec((2, 3)), atoms=atoms)
    >>> first_tensor(ctx) is x, check_labels(ctx, x.labels) is not None
    (True, True)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.fx as fx

from ..ir import SPEC, Atoms, Role, TensorSpec, iter_label_arrays

__all__ = [
    "EmitContext",
    "OpContext",
    "Split",
    "Unsupported",
    "Value",
    "check_labels",
    "dims_arg",
    "first_tensor",
    "normalize_dim",
    "static_value",
    "tensor_values",
]


class Unsupported(Exception):
    """Raised by a rule for a pattern it cannot map exactly; the node becomes a barrier."""


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
        return isinstance(self.spec, TensorSpec)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.spec.shape

    @property
    def ndim(self) -> int:
        return len(self.spec.shape)

    def part(self, dims: slice) -> "Value":
        """The value restricted to some dims (e.g. the batch dims ``[:-2]`` of a matmul operand)."""
        return Value(TensorSpec(tuple(self.shape[dims]), self.spec.dtype), tuple(self.labels[dims]))


@dataclass(frozen=True, eq=False)
class Split:
    """Where a split policy chose, in one node: which factor of a channel dim split into several
    varying ones is pruned (or which of several labelled dims merged into one keeps its channels).

    Attributes:
        labels: the chosen factor's labels (the others' atoms were unified along it, or fixed).
        factors: the sizes of the factors (of the merged dims, for a merge).
        axis: the index of the chosen factor in ``factors``.
        varying: the indices of the factors that varied (the labelled dims, for a merge).
        dim: the output dim of the node holding the chosen factor (``None`` for a merge).

    Example:
        >>> import numpy as np
        >>> s = Split(np.arange(4), (3, 4, 8), 1, (0, 1, 2), dim=3)
        >>> s.heads, Split(np.arange(8), (4, 8), 1, (0, 1), dim=3).heads
        (True, False)
    """

    labels: np.ndarray
    factors: tuple[int, ...]
    axis: int
    varying: tuple[int, ...]
    dim: int | None = None

    @property
    def heads(self) -> bool:
        """Whether the chosen factor is an outer one (whole heads), not the innermost varying one (head_dim)."""
        return self.axis != self.varying[-1]


def _arg(args: Sequence[Any], kwargs: dict, index: int, name: str | None, default: Any) -> Any:
    if index < len(args):
        return args[index]
    if name is not None and name in kwargs:
        return kwargs[name]
    return default


@dataclass
class OpContext:
    """What a rule's ``propagate`` sees for one node (build it with keywords)."""

    node: fx.Node | None
    args: tuple
    kwargs: dict
    out: Any
    atoms: Atoms
    module: torch.nn.Module | None = None
    params: dict[str, Value | None] = field(default_factory=dict)
    roles: dict[tuple[str, int], Role] = field(default_factory=dict)
    #: the node's split policy, as the channel pass resolved it (``inner``, ``outer``, ``heads`` or an
    #: int; ``auto`` is resolved per node before rules see it: :class:`~fxprune.ops.layout.SplitPolicy`)
    split_policy: Any = "inner"
    sums: list[tuple[tuple[tuple["Value", int], ...], str]] = field(default_factory=list)
    #: where the split policy chose among the factors of a split channel dim (or among merged dims)
    splits: list[Split] = field(default_factory=list)
    #: labels of dims an attention op computes one head at a time (declared with :meth:`per_head`)
    heads: list[np.ndarray] = field(default_factory=list)

    def replace(self, **changes: Any) -> "OpContext":
        """A copy with some fields changed (adapters re-dispatch with new arguments)."""
        return dataclasses.replace(self, **changes)

    # -- argument access -------------------------------------------------
    def arg(self, index: int, name: str | None = None, default: Any = None) -> Any:
        """Positional argument ``index`` or keyword ``name``."""
        return _arg(self.args, self.kwargs, index, name, default)

    def param(self, name: str) -> Value | None:
        """A parameter/buffer of the called module (``None`` if absent, e.g. no bias)."""
        return self.params.get(name)

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

    def contract(self, *operands: tuple[Value | None, int], why: str = "sum over channels") -> None:
        """Declare a parameter-free sum over a channel dimension (``x.sum(1)``, ``a @ b``).

        ``operands`` are ``(value, dim)`` pairs holding the summed channels: one
        for a reduction, two for a contraction.  Removing a channel there is
        exact only if it is zero (dead) in at least one operand; the channel
        pass decides that once every tensor's zeros are known, and otherwise
        marks the channels mixing.  Operands that are ``None``, not tensors
        or unlabelled at ``dim`` are left out.
        """
        kept = tuple((v, dim % v.ndim) for v, dim in operands
                     if isinstance(v, Value) and v.is_tensor and v.ndim and v.labels[dim % v.ndim] is not None)
        if kept:
            self.sums.append((kept, why))

    def per_head(self, *labels: np.ndarray | None) -> None:
        """Declare dims an attention op computes one index at a time: its heads.

        ``q @ k.transpose(-2, -1)`` over ``[B, heads, L, head_dim]`` computes a
        separate softmax per head: its batch dims are declared so.  Under
        ``split_policy="auto"`` a channel dim split into ``(heads, head_dim)``
        whose heads factor reaches such a dim is pruned by whole heads (see
        :class:`~fxprune.ops.layout.SplitPolicy`); a split reaching none is
        pruned by its inner factor.  ``None`` entries are skipped.
        """
        self.heads.extend(lab for lab in labels if lab is not None)

    def role(self, value: Value | None, dim: int, role: Role | str) -> None:
        """Declare the role of a parameter's dimension (see :class:`~fxprune.ir.Role`)."""
        if value is None or value.param is None:
            return
        key = (value.param, dim % len(value.spec.shape))
        if key not in self.roles:
            self.roles[key] = role if type(role) is Role else Role(role)

    def describe(self) -> str:
        if self.node is None:
            return "an op"
        t = self.node.target
        name = getattr(t, "__name__", None) or str(t)
        if self.module is not None:
            name = type(self.module).__name__
        return f"node '{self.node.name}' ({name})"


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

    def old_shape(self, node: fx.Node | None = None) -> tuple[int, ...]:
        """The analysed (unpruned) shape of ``node`` (default: this node's output)."""
        return (node if node is not None else self.node).meta[SPEC].shape

    def arg(self, index: int, name: str | None = None, default: Any = None) -> Any:
        return _arg(self.args, self.kwargs, index, name, default)

    def old_arg(self, index: int, name: str | None = None, default: Any = None) -> Any:
        return _arg(self.old_args, self.old_kwargs, index, name, default)


# ---------------------------------------------------------------------------
# helpers shared by rules


def normalize_dim(dim: int, ndim: int) -> int:
    """``dim`` in ``[0, ndim)``; :class:`Unsupported` when out of range."""
    if ndim == 0:
        return 0
    if not isinstance(dim, int) or not -ndim <= dim < ndim:
        raise Unsupported(f"dimension {dim!r} out of range for a {ndim}-d tensor")
    return dim % ndim


def dims_arg(value: Any) -> Sequence[int] | None:
    """A ``dim`` argument (int, sequence or ``None``) as a tuple (or ``None``)."""
    if value is None:
        return None
    if isinstance(value, int):
        return (value,)
    return tuple(value)


def tensor_values(ctx: OpContext) -> list[Value]:
    """Every tensor argument of the call, positional then keyword."""
    out = [a for a in ctx.args if isinstance(a, Value) and isinstance(a.spec, TensorSpec)]
    if ctx.kwargs:
        out += [a for a in ctx.kwargs.values() if isinstance(a, Value) and isinstance(a.spec, TensorSpec)]
    return out


def first_tensor(ctx: OpContext) -> Value:
    """The first tensor argument (:class:`Unsupported` if there is none)."""
    for a in tensor_values(ctx):
        return a
    raise Unsupported("no tensor argument")


def check_labels(ctx: OpContext, labels: tuple, spec: Any = None) -> tuple:
    """``labels`` after checking they fit ``spec`` (default: the node's output)."""
    spec = ctx.out if spec is None else spec
    if len(labels) != len(spec.shape):
        raise Unsupported(f"rule produced {len(labels)} dims for a {len(spec.shape)}-d output")
    for lab, size in zip(labels, spec.shape):
        if lab is not None and len(lab) != size:
            raise Unsupported("rule produced labels that do not match the output shape")
    return tuple(labels)


def static_value(v: Any) -> Any:
    """The analysis-time value of an argument: a :class:`Value`'s or an fx node's spec, else ``v``."""
    if isinstance(v, Value):
        return v.spec
    if isinstance(v, fx.Node):
        return v.meta.get(SPEC)
    return v
