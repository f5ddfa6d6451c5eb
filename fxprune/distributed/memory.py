"""Per-rank memory: a meter of the tensor storage a process holds, and the formula it is checked against.

:class:`MemoryMeter` is a ``TorchDispatchMode``: every storage an op
allocates while it is active is counted until it is freed (a weak reference
on the storage), on top of a baseline (the storages of the tensors given to
it, e.g. the sharded model's).  Storage that fxprune frees outside an op (a
consumed source parameter, see ``prune_sharded(release_source=True)``) is
reported with :func:`note_freed`.  ``meter.peak`` is the largest number of
bytes held at once: parameters, buffers, temporaries and, while a forward
runs, activations.

:func:`rank_bytes` is the accounting of one rank's parameter storage from
shapes alone (FSDP2's ``torch.chunk`` split, padded to the largest chunk as
FSDP2 stores it), so a 70B model can be accounted on the ``meta`` device.

Example:
    >>> import torch
    >>> with MemoryMeter() as meter:
    ...     a = torch.zeros(1000)          # 4000 bytes
    ...     b = a + 1                      # 4000 more
    ...     del a, b
    >>> meter.peak, meter.current
    (8000, 0)
    >>> rank_bytes([(10, 4), (3,)], world=2, itemsize=4)     # ceil(10/2)*4 + ceil(3/2) elements
    88
"""
from __future__ import annotations

import math
import weakref
from typing import Any, Iterable, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["MemoryMeter", "note_freed", "padded_local_numel", "rank_bytes"]

_ACTIVE: list["MemoryMeter"] = []


def _local(t: torch.Tensor) -> torch.Tensor | None:
    """The plain tensor holding ``t``'s storage (a DTensor's local piece); ``None`` on the meta device."""
    local = getattr(t, "_local_tensor", t)
    return None if local.device.type == "meta" else local


def _key(t: torch.Tensor) -> tuple[int, int] | None:
    """``(data pointer, bytes)`` of the storage behind ``t``, or ``None`` (no storage, or empty)."""
    try:
        st = t.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None
    n = st.nbytes()
    return (st.data_ptr(), n) if n else None


class MemoryMeter(TorchDispatchMode):
    """Bytes of tensor storage held by this process: a baseline plus everything allocated while active.

    A storage is identified by its data pointer and counted while a tensor
    an op returned on it (or a view of it) is alive.

    Args:
        baseline: tensors already held (counted once per storage).
    """

    def __init__(self, baseline: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self._live: dict[int, list[int]] = {}          # data pointer -> [bytes, live tensors]
        self._base: set[int] = set()
        self.baseline = 0
        for t in baseline:
            local = _local(t)
            key = None if local is None else _key(local)
            if key is not None and key[0] not in self._base:
                self._base.add(key[0])
                self.baseline += key[1]
        self.current = self.baseline
        self.peak = self.baseline

    def __enter__(self) -> "MemoryMeter":
        _ACTIVE.append(self)
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        _ACTIVE.remove(self)
        return super().__exit__(*exc)

    def freed(self, nbytes: int, ptr: int | None = None) -> None:
        """Baseline storage freed outside an op (see :func:`note_freed`)."""
        if ptr is None or ptr in self._base:
            self._base.discard(ptr)  # type: ignore[arg-type]
            self.current -= nbytes

    def _track(self, t: torch.Tensor) -> None:
        key = _key(t)
        if key is None or key[0] in self._base:
            return
        ptr, n = key
        entry = self._live.get(ptr)
        if entry is None:
            entry = self._live[ptr] = [n, 0]
            self.current += n
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        weakref.finalize(t, self._drop, ptr, entry)

    def _drop(self, ptr: int, entry: list[int]) -> None:
        entry[1] -= 1
        if entry[1] == 0 and self._live.get(ptr) is entry:
            del self._live[ptr]
            self.current -= entry[0]

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for x in tree_leaves(out):
            if isinstance(x, torch.Tensor):
                local = _local(x)
                if local is not None:
                    self._track(local)
        return out


def note_freed(nbytes: int, ptr: int | None = None) -> None:
    """Tell the active :class:`MemoryMeter` s that ``nbytes`` of baseline storage (at ``ptr``) were freed."""
    for meter in _ACTIVE:
        meter.freed(nbytes, ptr)


def padded_local_numel(shape: Sequence[int], world: int, dim: int = 0) -> int:
    """Elements FSDP2 stores per rank for a parameter of ``shape`` sharded on ``dim``: ``ceil(n / world)`` rows."""
    if not shape:
        return 1
    n = int(shape[dim])
    rows = -(-n // world) if n else 0
    return rows * math.prod(int(s) for i, s in enumerate(shape) if i != dim)


def rank_bytes(shapes: Iterable[Sequence[int]], world: int, itemsize: int) -> int:
    """Bytes of parameter storage on the fullest rank: the sum of :func:`padded_local_numel` times ``itemsize``."""
    return itemsize * sum(padded_local_numel(s, world) for s in shapes)
