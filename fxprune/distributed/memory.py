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


def _storage(t: torch.Tensor) -> Any:
    """The storage behind ``t`` (a DTensor's local piece), or ``None`` on the meta device."""
    local = getattr(t, "_local_tensor", t)
    if local.device.type == "meta":
        return None
    try:
        return local.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None


class MemoryMeter(TorchDispatchMode):
    """Bytes of tensor storage held by this process: a baseline plus everything allocated while active.

    Args:
        baseline: tensors already held (counted once per storage).
    """

    def __init__(self, baseline: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self._sizes: dict[int, int] = {}
        seen: set[int] = set()
        self.baseline = 0
        for t in baseline:
            st = _storage(t)
            if st is not None and id(st) not in seen:
                seen.add(id(st))
                self.baseline += st.nbytes()
        self.current = self.baseline
        self.peak = self.baseline

    def __enter__(self) -> "MemoryMeter":
        _ACTIVE.append(self)
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        _ACTIVE.remove(self)
        return super().__exit__(*exc)

    def freed(self, nbytes: int) -> None:
        """Storage freed outside an op (see :func:`note_freed`)."""
        self.current -= nbytes

    def _track(self, st: Any) -> None:
        key = id(st)
        if key in self._sizes:
            return
        n = st.nbytes()
        if n == 0:
            return
        self._sizes[key] = n
        self.current += n
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._release, key)

    def _release(self, key: int) -> None:
        self.current -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for x in tree_leaves(out):
            if isinstance(x, torch.Tensor):
                st = _storage(x)
                if st is not None:
                    self._track(st)
        return out


def note_freed(nbytes: int) -> None:
    """Tell the active :class:`MemoryMeter` s that ``nbytes`` of baseline storage were freed."""
    for meter in _ACTIVE:
        meter.freed(nbytes)


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
