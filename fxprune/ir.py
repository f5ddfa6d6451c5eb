"""The ground floor: fxprune's IR value types.  Imports nothing from fxprune.

Every other part of fxprune speaks in these types:

* :class:`TensorSpec` -- the shape and dtype of one tensor value of the graph;
* channel *labels* -- per tensor dimension, ``None`` (a fixed dimension: batch,
  spatial, the model's inputs) or an ``int64`` array of *atom* ids, one per
  index (ids may repeat: a flattened channel owns several indices);
* :class:`Atoms` -- the union-find over atoms, with per-atom flags (``fixed``:
  may not be pruned; ``mixing``: flows through a channel-mixing op);
* :class:`Role` -- the role a parameter dimension plays in a group;
* :class:`Zeros` -- what an op does to removed channels that hold zeros;
* the ``node.meta`` keys through which passes communicate (:data:`SPEC`,
  :data:`CHANNELS`, :data:`RULE`, :data:`BARRIER`, :data:`ZEROS`; all in
  :data:`ALL_KEYS`), the capture key :data:`KEPT_CALL` and the GraphModule
  ``meta`` key :data:`MODE_BRANCHES`;
* :class:`AutogradFunction` -- the one call a custom ``torch.autograd.Function``
  stays in a captured graph (its ``backward`` survives).

Every prunable channel index in the model is an *atom*.  A parameter's
dimension gets fresh atoms, one per index; tensors carry the atoms of the
parameter dims they were computed from.  When an op forces two channel indices
to be removed together (a residual add, a matmul's contraction, a depthwise
conv) their atoms are *unified*.  The roots of the union-find are then the
independent pruning units.  Flags live on atoms, not roots, so unions never
need to merge them: the flags of a root are the OR of its atoms' flags.

Example:
    >>> import numpy as np
    >>> a = Atoms()
    >>> x, y = a.fresh(3), a.fresh(3)
    >>> a.unify(x, y)
    >>> bool((a.find(x) == a.find(y)).all())
    True
    >>> a.fix(x[:1], "output")
    >>> sorted(a.fixed_roots()) == [int(a.find(x[:1])[0])]
    True
    >>> Role("producer") is Role.PRODUCER, f"{Role.SCALE:<6}|"
    (True, 'scale |')
    >>> Zeros("probe") is Zeros.PROBE
    True
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

__all__ = [
    "ALL_KEYS",
    "Algebra",
    "Atoms",
    "AutogradFunction",
    "BARRIER",
    "KEPT_CALL",
    "KeepMask",
    "CAPTURE_NOTES",
    "CHANNELS",
    "Labels",
    "MODE_BRANCHES",
    "RULE",
    "Role",
    "SPEC",
    "TensorSpec",
    "ZEROS",
    "Zeros",
    "fixed_labels",
    "iter_label_arrays",
    "sorted_unique",
]

# ---------------------------------------------------------------------------
# node.meta keys
# ---------------------------------------------------------------------------
#: :class:`TensorSpec`, a tuple of them for multi-output nodes, or the plain
#: Python value for non-tensor nodes (ints from ``x.size(1)``).
SPEC = "fxprune.spec"
#: the node's channel labels: one entry per output dim (see the module docstring),
#: a tuple of such tuples for tuple outputs, ``None`` for non-tensors.
CHANNELS = "fxprune.channels"
#: the ``fxprune.ops.Rule`` that handled the node, or ``None`` (a barrier).
RULE = "fxprune.rule"
#: a string naming why the node made its channels a barrier.
BARRIER = "fxprune.barrier"
#: per output dim, ``True`` when the removed channels of that dim are exactly
#: zero in the masked original (see :class:`Zeros`), ``False`` when they may hold
#: anything; nested like :data:`CHANNELS`, ``None`` for non-tensors.
ZEROS = "fxprune.zeros"
#: every key fxprune writes; no pass writes any other key.
ALL_KEYS = (SPEC, CHANNELS, RULE, BARRIER, ZEROS)
#: in a captured ``GraphModule.meta``: the Python branches on a module's
#: ``training`` flag that capture froze (one line each, naming the source line).
MODE_BRANCHES = "fxprune.mode_branches"
#: on a ``call_function`` node of a plain Python function that capture tried to
#: trace into (a ``torch.fx.wrap``-ped helper) and kept as one call: why it was
#: kept (it branches on ``self.training``, on tensor values, ...).  Written at
#: capture, so copies of the graph keep it.
KEPT_CALL = "fxprune.kept_call"
#: in a captured ``GraphModule.meta``: what capture has to say (which input dims
#: ``torch.export`` captured as dynamic, a fall-back to static shapes).
CAPTURE_NOTES = "fxprune.capture_notes"


# ---------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one tensor value in the graph."""

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


#: Per-dimension channel labels of one tensor: ``None`` for a dimension whose
#: size is fixed, else an int64 array of atom ids, one per index.
Labels = tuple  # tuple[np.ndarray | None, ...]


def iter_label_arrays(labels: Any) -> Iterator[np.ndarray]:
    """All atom arrays inside a (possibly nested) labels structure."""
    if labels is None:
        return
    if isinstance(labels, np.ndarray):
        yield labels
        return
    for item in labels:
        yield from iter_label_arrays(item)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` of a 1-d array by sorting (numpy 2's hash-based unique is ten times slower
    on thousands of atom ids).

    Example:
        >>> sorted_unique(np.array([3, 1, 3, 0])).tolist()
        [0, 1, 3]
    """
    s = np.sort(values)
    return s[np.concatenate(([True], s[1:] != s[:-1]))] if s.size > 1 else s


def fixed_labels(spec: Any) -> Any:
    """Labels with every dimension fixed, shaped like ``spec`` (nested tuples of specs)."""
    if isinstance(spec, TensorSpec):
        return tuple(None for _ in spec.shape)
    if isinstance(spec, (tuple, list)):
        return tuple(fixed_labels(s) for s in spec)
    return None


class Role(str, enum.Enum):
    """The role of a parameter dimension within a group.

    ``producer``: rows that create the channel (conv/linear output, embedding
    dim); ``consumer``: columns that read it; ``bias``: additive per-channel
    values (biases, norm shifts, running means); ``scale``: multiplicative
    per-channel values (norm weights, running variances, layer scales);
    ``coupled``: any other tensor whose dimension is tied to the channel.
    """

    PRODUCER = "producer"
    BIAS = "bias"
    SCALE = "scale"
    COUPLED = "coupled"
    CONSUMER = "consumer"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def rank(self) -> int:
        """Listing order within a group: producers first, consumers last."""
        return _ROLE_RANKS[self]


#: :attr:`Role.rank` of each role (a lookup: group building sorts every member by it)
_ROLE_RANKS = {role: i for i, role in enumerate(Role)}


class Algebra(str, enum.Enum):
    """What an op computes, for passes that reason about values (a rule declares it).

    The channel pass needs only labels; a few passes need to know more about a
    call than how its channels map.  The stochastic-depth recogniser
    (:mod:`fxprune.analysis.mode_calls`) proves that a function scales its input
    by noise that does not vary over channels: it asks the registry, never an
    op's name, which calls multiply, divide, read sizes or build fresh tensors;
    block removal (:mod:`fxprune.analysis.blocks`) asks it which calls are sums.

    ``NONE``: nothing declared (the default; such a call is opaque to those passes).
    ``SUM``: the elementwise sum of its two operands (``a + b``; residual blocks).
    ``PRODUCT``: the elementwise product of its two operands (``x * y``).
    ``QUOTIENT``: the first operand divided by the second (``x / y``).
    ``SIZES``: reads only its first argument's metadata (``x.size(d)``, ``x.dim()``).
    ``ATTRIBUTE``: ``getattr(x, name)``: what it reads depends on ``name``
    (``x.shape`` reads the sizes).
    ``FRESH``: a new tensor with its first argument's dtype and device, sizes
    from the other arguments, values independent of it (``x.new_empty(...)``).
    """

    NONE = "none"
    SUM = "sum"
    PRODUCT = "product"
    QUOTIENT = "quotient"
    SIZES = "sizes"
    ATTRIBUTE = "attribute"
    FRESH = "fresh"


class Zeros(str, enum.Enum):
    """What an op does to removed channels that hold zeros (a rule declares it).

    A removed channel is *dead* in the masked original: its producer rows,
    biases and consumer columns are zero.  A parameterised consumer (conv,
    linear) ignores whatever a dead channel holds, but a parameter-free sum
    over channels (``x.sum(1)``, ``a @ b``) ignores it only where it is zero:
    after ``sigmoid`` (``sigmoid(0) = 0.5``), ``+ 1`` or ``x < 1`` it is not.
    The channel pass tracks, per tensor dimension, whether its removed
    channels are zero (:data:`ZEROS`) from these declarations, and marks the
    channels *mixing* where a parameter-free sum reads non-zero dead channels.

    ``KEEP``: zeros stay zeros: an output dim is zero where every input dim
    sharing its channels is (multiplicative ``scale`` parameters aside) and no
    additive ``bias`` parameter is broadcast along it: layout ops, sums,
    conv/linear/norm outputs.
    ``PROBE``: an elementwise op, evaluated at zero to find out: ``relu(0) = 0``
    but ``sigmoid(0) = 0.5``; ``x * y`` is zero where either operand is,
    ``x + y`` where both are, ``x + 1`` nowhere.
    ``LOSE``: removed channels may hold anything after the op (softmax,
    LayerNorm); the default for a rule of your own.
    """

    KEEP = "keep"
    PROBE = "probe"
    LOSE = "lose"

    def __str__(self) -> str:
        return self.value


# ---------------------------------------------------------------------------
# atoms
# ---------------------------------------------------------------------------
#: unions of at least this many atoms are applied at once, smaller ones in batches (:meth:`Atoms.unify`)
_BATCHED_UNION = 512
#: atoms per slice of :meth:`Atoms.roots` (8 MiB of int64 temporaries)
_ROOTS_SLICE = 1 << 20


#: per kind of flag, the :class:`Atoms` arrays holding it: (flags, reason ids)
_FLAG_ARRAYS = {"fixed": ("_fixed", "_fix_reason"), "mixing": ("_mixing", "_mix_reason")}


class Atoms:
    """A growable union-find over integer atoms with per-atom flags."""

    def __init__(self) -> None:
        # every array starts as zeros (``np.zeros`` asks the OS for zeroed pages, touched only when
        # written), so growing costs one copy of what is there; reasons are stored as id + 1 (0: none)
        self._parent = np.zeros(1024, dtype=np.int64)
        self._fixed = np.zeros(1024, dtype=bool)
        self._mixing = np.zeros(1024, dtype=bool)
        self._fix_reason = np.zeros(1024, dtype=np.int64)
        self._mix_reason = np.zeros(1024, dtype=np.int64)
        self._reasons: list[str] = []
        self._reason_ids: dict[str, int] = {}
        self._n = 0
        self._flag_hi = 0  # one past the highest atom ever flagged (fixed or mixing)
        # what the whole-array queries computed, valid while ``_version`` stays: large graphs ask
        # for every root several times between changes (each pass a gather over every atom)
        self._version = 0
        self._roots: np.ndarray | None = None   # every atom's root (read-only), for ``_version``
        self._flag_cache: dict[str, tuple[int, dict[int, str]]] = {}
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []  # unions not yet applied (:meth:`unify`)
        self._pending_flags: dict[str, list] = {kind: [] for kind in _FLAG_ARRAYS}  # kind -> [(atoms, reason id)]

    def __len__(self) -> int:
        return self._n

    def reserve(self, n: int) -> None:
        """Make room for ``n`` atoms in all (growing copies every array, each copy touching new pages)."""
        self._grow(n, exact=True)

    def _grow(self, need: int, exact: bool = False) -> None:
        cap = len(self._parent)
        if need <= cap:
            return
        new = need if exact else max(need, 2 * cap)
        for name in ("_parent", "_fixed", "_mixing", "_fix_reason", "_mix_reason"):
            old = getattr(self, name)
            # the flag arrays are zero past the last flagged atom: copying those zeros would touch
            # every page of the new array
            keep = self._n if name == "_parent" else min(self._flag_hi, cap)
            arr = np.zeros(new, dtype=old.dtype)
            arr[:keep] = old[:keep]
            setattr(self, name, arr)

    def fresh(self, n: int) -> np.ndarray:
        """Allocate ``n`` new atoms, each its own root."""
        self._grow(self._n + n)
        ids = np.arange(self._n, self._n + n, dtype=np.int64)
        self._parent[self._n: self._n + n] = ids
        self._n += n
        self._changed()
        return ids

    def _changed(self) -> None:
        self._version += 1
        self._roots = None

    def find(self, ids: np.ndarray) -> np.ndarray:
        """Roots of ``ids`` (vectorised, with path compression)."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._pending:
            self._flush()
        if self._roots is not None:  # nothing changed since every root was computed
            return self._roots[ids]
        return self._find(ids)

    def _find(self, ids: np.ndarray) -> np.ndarray:
        """Roots of ``ids`` through the parent pointers as they stand (unions not yet applied aside)."""
        parent = self._parent
        r = parent[ids]
        while True:
            p = parent[r]
            if (p == r).all():  # ``np.array_equal`` costs several times more on small arrays
                break
            r = p
        parent[ids] = r
        return r

    def unify(self, a: np.ndarray, b: np.ndarray) -> None:
        """Unify ``a[i]`` with ``b[i]`` for every i (arrays of equal length).

        Fewer than :data:`_BATCHED_UNION` atoms are recorded and applied in one batch with the
        others when roots are next read (a numpy round per small union cost more than a rule);
        more are applied at once.  Roots read are the same: a root is the smallest atom of its set.
        """
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        if a.shape != b.shape:
            raise ValueError(f"cannot unify label arrays of shapes {a.shape} and {b.shape}")
        if not a.size:
            return
        if a.size >= _BATCHED_UNION:
            self._union(a.ravel(), b.ravel(), batch=False)
        else:  # copies: a caller may reuse its arrays before the union is applied
            self._pending.append((a.ravel().copy(), b.ravel().copy()))
            self._changed()

    def _flush(self) -> None:
        """Apply every recorded union (:meth:`unify`) at once."""
        pending, self._pending = self._pending, []
        if len(pending) == 1:
            self._union(*pending[0], batch=True)
        else:
            self._union(np.concatenate([p[0] for p in pending]), np.concatenate([p[1] for p in pending]),
                        batch=True)

    def _union(self, a: np.ndarray, b: np.ndarray, batch: bool) -> None:
        """Unify ``a[i]`` with ``b[i]`` now: each pass points the larger root of every disagreeing pair
        to the smaller (strictly lowering roots) until all agree; a ``batch`` points a root paired
        several times to its smallest partner in one pass, a single union (rarely so) assigns plainly."""
        parent = self._parent
        while True:
            ra, rb = self._find(a), self._find(b)
            m = ra != rb
            if not m.any():
                break
            a, b, ra, rb = a[m], b[m], ra[m], rb[m]
            if batch:
                np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
            else:
                parent[np.maximum(ra, rb)] = np.minimum(ra, rb)
        self._changed()

    def unify_all(self, ids: np.ndarray) -> None:
        """Unify every atom in ``ids`` with every other."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size > 1:
            self.unify(ids[1:], np.full(ids.size - 1, ids[0], dtype=np.int64))

    def _reason_id(self, reason: str) -> int:
        if reason not in self._reason_ids:
            self._reason_ids[reason] = len(self._reasons)
            self._reasons.append(reason)
        return self._reason_ids[reason]

    def _flag(self, kind: str, ids: np.ndarray, reason: str) -> None:
        """Record flags of ``kind`` (``fixed``, ``mixing``), applied when flags are next read (in a batch)."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size == 0:
            return
        # a copy: a caller may reuse its array before the flags are applied
        self._pending_flags[kind].append((ids.copy(), self._reason_id(reason)))
        self._version += 1  # the roots stand; the flagged roots change

    def _apply_flags(self) -> None:
        """Apply every recorded flag, each atom keeping the first reason recorded for it."""
        for kind, (flags_name, reasons_name) in _FLAG_ARRAYS.items():
            pending = self._pending_flags[kind]
            if not pending:
                continue
            self._pending_flags[kind] = []
            flags, reasons = getattr(self, flags_name), getattr(self, reasons_name)
            ids = np.concatenate([p[0] for p in pending]) if len(pending) > 1 else pending[0][0]
            rids = np.repeat(np.fromiter((p[1] for p in pending), dtype=np.int64, count=len(pending)),
                             [len(p[0]) for p in pending])
            self._flag_hi = max(self._flag_hi, int(ids.max()) + 1 if ids.min() >= 0 else len(flags))
            atoms, first = np.unique(ids, return_index=True)  # each atom's first recorded reason
            fresh = reasons[atoms] == 0
            reasons[atoms[fresh]] = rids[first[fresh]] + 1
            flags[ids] = True

    def fix(self, ids: np.ndarray, reason: str) -> None:
        """Mark atoms as not prunable (a barrier), remembering why."""
        self._flag("fixed", ids, reason)

    def mark_mixing(self, ids: np.ndarray, reason: str) -> None:
        """Mark atoms as flowing through a channel-mixing op (norm statistics, mean)."""
        self._flag("mixing", ids, reason)

    def roots(self) -> np.ndarray:
        """The root of every atom allocated so far (a read-only array, shared until atoms change)."""
        if self._pending:
            self._flush()
        if self._roots is None:
            # find() of every atom, a slice at a time: the temporaries stay small (one the size of
            # every atom costs fresh pages, and page faults, on each call) and the compression is
            # one slice write at the end
            parent = self._parent[: self._n]
            roots = np.empty(self._n, dtype=np.int64)
            for start in range(0, self._n, _ROOTS_SLICE):
                r = parent[start: start + _ROOTS_SLICE]
                while True:
                    p = parent[r]
                    if np.array_equal(p, r):
                        break
                    r = p
                roots[start: start + _ROOTS_SLICE] = r
            parent[:] = roots
            roots.flags.writeable = False
            self._roots = roots
        return self._roots

    def _root_flags(self, name: str) -> dict[int, str]:
        self._apply_flags()
        flags_name, reasons_name = _FLAG_ARRAYS[name]
        flags, reasons = getattr(self, flags_name), getattr(self, reasons_name)
        hit = self._flag_cache.get(name)
        if hit is None or hit[0] != self._version:
            roots = self.roots()
            sel = np.flatnonzero(flags[: self._n])
            r = roots[sel]
            # each root's first flagged atom (np.unique's first occurrences), in atom order
            first = np.sort(np.unique(r, return_index=True)[1])
            out = {root: self._reasons[why - 1] if why > 0 else "unknown"
                   for root, why in zip(r[first].tolist(), reasons[sel[first]].tolist())}
            hit = self._flag_cache[name] = (self._version, out)
        return dict(hit[1])

    def fixed_roots(self) -> dict[int, str]:
        """Roots that may not be pruned, each with the first reason recorded."""
        return self._root_flags("fixed")

    def mixing_roots(self) -> dict[int, str]:
        """Roots that pass through a channel-mixing op, each with its reason."""
        return self._root_flags("mixing")

    def root_masks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(roots, fixed, mixing)``: every atom's root, and boolean masks over roots."""
        roots = self.roots()
        self._apply_flags()
        fixed = np.zeros(len(roots), dtype=bool)
        mixing = np.zeros(len(roots), dtype=bool)
        fixed[roots[self._fixed[: self._n]]] = True
        mixing[roots[self._mixing[: self._n]]] = True
        return roots, fixed, mixing


# ---------------------------------------------------------------------------
# keep masks
# ---------------------------------------------------------------------------
class KeepMask:
    """Which atoms survive a removal: a flag per union-find root, read through ``roots``.

    Shared by the rewrite (slicing parameters, predicting shapes) and the
    checkers (slicing and zero-masking values).

    Example:
        >>> import numpy as np, torch
        >>> mask = KeepMask(np.arange(3), np.array([False, True, False]))
        >>> labels = (None, np.arange(3))
        >>> mask.kept(labels[1]).tolist(), mask.shape(TensorSpec((2, 3)), labels)
        ([True, False, True], (2, 2))
        >>> mask.slice(torch.ones(2, 3), labels).shape, mask.mask(torch.ones(2, 3), labels)[0].tolist()
        (torch.Size([2, 2]), [1.0, 0.0, 1.0])
    """

    def __init__(self, roots: np.ndarray, removed: np.ndarray) -> None:
        self.roots = roots
        self.removed = removed

    def kept(self, labels: np.ndarray) -> np.ndarray:
        """The boolean keep-mask of a labels array."""
        return ~self.removed[self.roots[labels]]

    def shape(self, spec: Any, labels: Any) -> Any:
        """The pruned shape of a (possibly nested) spec; non-tensor values are returned as they are."""
        if isinstance(spec, TensorSpec):
            return tuple(s if lab is None else int(self.kept(lab).sum())
                         for s, lab in zip(spec.shape, labels or (None,) * len(spec.shape)))
        if isinstance(spec, (tuple, list)):
            labs = labels if isinstance(labels, tuple) else (None,) * len(spec)
            return tuple(self.shape(s, lab) for s, lab in zip(spec, labs))
        return spec

    def _dims(self, t: Any, labels: Any) -> Iterator[tuple[int, np.ndarray]]:
        if isinstance(t, torch.Tensor) and isinstance(labels, tuple):
            for d, lab in enumerate(labels):
                if isinstance(lab, np.ndarray):
                    keep = self.kept(lab)
                    if not keep.all():
                        yield d, keep

    def slice(self, t: Any, labels: Any) -> Any:
        """``t`` with the removed indices of its labelled dims dropped (nested tuples follow their labels)."""
        if isinstance(t, (tuple, list)) and isinstance(labels, tuple) and len(labels) == len(t):
            return type(t)(self.slice(x, lab) for x, lab in zip(t, labels))
        for d, keep in self._dims(t, labels):
            n = int(keep.sum())
            if t.device.type == "meta":
                t = t.narrow(d, 0, n)
            else:
                t = t.index_select(d, torch.as_tensor(np.nonzero(keep)[0], dtype=torch.long, device=t.device))
        return t

    def mask(self, t: Any, labels: Any) -> Any:
        """A copy of ``t`` with the removed indices of its labelled dims set to zero."""
        if isinstance(t, (tuple, list)) and isinstance(labels, tuple) and len(labels) == len(t):
            return type(t)(self.mask(x, lab) for x, lab in zip(t, labels))
        dims = list(self._dims(t, labels))
        if not dims:
            return t
        t = t.clone()
        for d, keep in dims:
            t.index_fill_(d, torch.as_tensor(np.nonzero(~keep)[0], dtype=torch.long, device=t.device), 0)
        return t


# ---------------------------------------------------------------------------
# calls kept whole
# ---------------------------------------------------------------------------
class AutogradFunction(torch.nn.Module):
    """One call of a custom ``torch.autograd.Function``, as capture keeps it.

    Tracing through ``Fn.apply`` would inline ``Fn.forward`` and lose
    ``Fn.backward`` (a straight-through estimator would get zero gradient);
    capture records this module instead.  Its registry key is ``Fn.apply``.

    Example:
        >>> class Round(torch.autograd.Function):
        ...     @staticmethod
        ...     def forward(ctx, x):
        ...         return torch.round(x)
        ...     @staticmethod
        ...     def backward(ctx, g):
        ...         return g
        >>> x = torch.tensor([0.4, 1.6], requires_grad=True)
        >>> AutogradFunction(Round)(x).sum().backward()
        >>> x.grad.tolist()
        [1.0, 1.0]
    """

    def __init__(self, function: type) -> None:
        super().__init__()
        self.function = function

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.function.apply(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"{self.function.__module__}.{self.function.__qualname__}"
