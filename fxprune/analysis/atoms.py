"""Channel atoms and their union-find.

Every prunable channel index in the model is an *atom* (an integer id).  A
parameter's dimension gets fresh atoms, one per index; tensors carry the atoms
of the parameter dims they were computed from (their *labels*).  When an op
forces two channel indices to be removed together (a residual add, a matmul's
contraction, a depthwise conv) their atoms are *unified*.  The roots of the
union-find are then the independent pruning units; a connected set of spaces
sharing roots is a *group*.

Flags live on atoms, not roots, so unions never need to merge them: the flags
of a root are the OR of its atoms' flags, computed once in :meth:`Atoms.roots`.

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
"""
from __future__ import annotations

import numpy as np

__all__ = ["Atoms", "Labels"]

#: Per-dimension channel labels of one tensor: ``None`` for a dimension whose
#: size is fixed (batch, spatial, inputs), else an int64 array of atom ids, one
#: per index (ids may repeat: a flattened channel owns several indices).
Labels = tuple  # tuple[np.ndarray | None, ...]


class Atoms:
    """A growable union-find over integer atoms with per-atom flags."""

    def __init__(self) -> None:
        self._parent = np.zeros(1024, dtype=np.int64)
        self._fixed = np.zeros(1024, dtype=bool)
        self._mixing = np.zeros(1024, dtype=bool)
        self._fix_reason = np.full(1024, -1, dtype=np.int64)
        self._mix_reason = np.full(1024, -1, dtype=np.int64)
        self._reasons: list[str] = []
        self._reason_ids: dict[str, int] = {}
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def _grow(self, need: int) -> None:
        cap = len(self._parent)
        if need <= cap:
            return
        new = max(need, 2 * cap)
        for name, fill in (("_parent", 0), ("_fixed", False), ("_mixing", False),
                           ("_fix_reason", -1), ("_mix_reason", -1)):
            old = getattr(self, name)
            arr = np.full(new, fill, dtype=old.dtype)
            arr[:cap] = old
            setattr(self, name, arr)

    def fresh(self, n: int) -> np.ndarray:
        """Allocate ``n`` new atoms, each its own root."""
        self._grow(self._n + n)
        ids = np.arange(self._n, self._n + n, dtype=np.int64)
        self._parent[ids] = ids
        self._n += n
        return ids

    def find(self, ids: np.ndarray) -> np.ndarray:
        """Roots of ``ids`` (vectorised, with path compression)."""
        ids = np.asarray(ids, dtype=np.int64)
        r = self._parent[ids]
        while True:
            p = self._parent[r]
            if np.array_equal(p, r):
                break
            r = p
        self._parent[ids] = r
        return r

    def unify(self, a: np.ndarray, b: np.ndarray) -> None:
        """Unify ``a[i]`` with ``b[i]`` for every i (arrays of equal length)."""
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        if a.shape != b.shape:
            raise ValueError(f"cannot unify label arrays of shapes {a.shape} and {b.shape}")
        while True:
            ra, rb = self.find(a), self.find(b)
            m = ra != rb
            if not m.any():
                return
            lo = np.minimum(ra[m], rb[m])
            hi = np.maximum(ra[m], rb[m])
            # Duplicate ``hi`` entries keep only one assignment; the loop repeats
            # until every pair agrees, each pass strictly lowering some root.
            self._parent[hi] = lo

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

    def fix(self, ids: np.ndarray, reason: str) -> None:
        """Mark atoms as not prunable (a barrier), remembering why."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size == 0:
            return
        rid = self._reason_id(reason)
        fresh = ids[self._fix_reason[ids] < 0]
        self._fix_reason[fresh] = rid
        self._fixed[ids] = True

    def mark_mixing(self, ids: np.ndarray, reason: str) -> None:
        """Mark atoms as flowing through a channel-mixing op (norm statistics, mean)."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size == 0:
            return
        rid = self._reason_id(reason)
        fresh = ids[self._mix_reason[ids] < 0]
        self._mix_reason[fresh] = rid
        self._mixing[ids] = True

    def roots(self) -> np.ndarray:
        """The root of every atom allocated so far."""
        return self.find(np.arange(self._n, dtype=np.int64))

    def _root_flags(self, flags: np.ndarray, reasons: np.ndarray) -> dict[int, str]:
        roots = self.roots()
        sel = flags[: self._n]
        out: dict[int, str] = {}
        for r, why in zip(roots[sel].tolist(), reasons[: self._n][sel].tolist()):
            if r not in out:
                out[r] = self._reasons[why] if why >= 0 else "unknown"
        return out

    def fixed_roots(self) -> dict[int, str]:
        """Roots that may not be pruned, each with the first reason recorded."""
        return self._root_flags(self._fixed, self._fix_reason)

    def mixing_roots(self) -> dict[int, str]:
        """Roots that pass through a channel-mixing op, each with its reason."""
        return self._root_flags(self._mixing, self._mix_reason)
