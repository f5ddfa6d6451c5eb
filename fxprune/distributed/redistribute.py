"""Kept channels moved between shards: each rank slices what it holds and sends rows where they now belong.

A pruned parameter keeps, along each dimension ``d``, the original indices
``kept[d]`` (``None``: all; see :func:`fxprune.rewrite.kept_indices`).  With
the source and the target sharded on the same dimension ``s`` (FSDP2:
``Shard(0)``), every rank

1. slices its local rows along every other dimension (local work),
2. keeps its rows whose index is in ``kept[s]``: kept row ``j`` (its position
   in ``kept[s]``) belongs to the target rank whose ``torch.chunk`` range
   holds ``j``,
3. exchanges rows with one ``all_to_all_single`` whose split sizes every rank
   computes from the shapes alone, receiving straight into its target shard.

No rank ever holds more than its own source piece and its own target piece
of a parameter: there is no gather.  Rows travel as raw bytes, so any dtype
is moved exactly.  A replicated source is sliced locally; a source and target
sharded on different dimensions fall back to gathering that one parameter
(``full_tensor``), which the memory bound (one parameter) still covers.

Example:
    >>> import numpy as np, torch
    >>> take(torch.arange(12.).reshape(3, 4), (np.array([0, 2]), None)).tolist()
    [[0.0, 1.0, 2.0, 3.0], [8.0, 9.0, 10.0, 11.0]]
    >>> moves(np.array([0, 1, 2, 5]), Layout((6,), 0, 2), Layout((4,), 0, 2), rank=0)   # (send, receive) rows
    ([2, 1], [2, 0])
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigError
from .shards import Layout, local_part, world_and_rank

__all__ = ["fill", "moves", "take"]


def take(t: torch.Tensor, kept: Sequence[np.ndarray | None], skip: int | None = None) -> torch.Tensor:
    """``t`` with only the indices ``kept[d]`` along each dimension ``d`` (``None``: all; ``skip``: left whole)."""
    for d, idx in enumerate(kept):
        if idx is not None and d != skip:
            t = t.index_select(d, torch.as_tensor(idx, dtype=torch.long, device=t.device))
    return t


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def moves(kept: np.ndarray, src: Layout, dst: Layout, rank: int) -> tuple[list[int], list[int]]:
    """Rows ``rank`` sends to, and receives from, each rank along the shard dimension.

    ``kept`` is the sorted original indices kept along that dimension; source
    rank ``r``'s kept rows are the positions ``searchsorted(kept, range(r))``,
    and kept row ``j`` goes to the target rank whose range holds ``j``.
    """
    def kept_range(r: int) -> tuple[int, int]:
        start, stop = src.range(r)
        return int(np.searchsorted(kept, start)), int(np.searchsorted(kept, stop))

    send = [_overlap(kept_range(rank), dst.range(d)) for d in range(dst.world)]
    receive = [_overlap(kept_range(r), dst.range(rank)) for r in range(src.world)]
    return send, receive


def fill(target: torch.Tensor, source: torch.Tensor, kept: Sequence[np.ndarray | None]) -> None:
    """Write ``take(source, kept)`` into ``target``, each rank only its own piece (called on every rank).

    ``source`` and ``target`` are DTensors of the same mesh or plain tensors.

    Raises:
        ConfigError: ``target`` does not have the kept shape.
    """
    src_local, src = local_part(source)
    dst_local, dst = local_part(target)
    kept = tuple(kept) + (None,) * (len(src.shape) - len(kept))
    want = tuple(len(k) if k is not None else n for k, n in zip(kept, src.shape))
    if want != dst.shape:
        raise ConfigError(f"cannot fill a tensor of shape {dst.shape} with {want} kept indices of {src.shape}")
    _, rank = world_and_rank()
    with torch.no_grad():
        if src.dim is not None and src.dim == dst.dim:
            _exchange(dst_local, dst, src_local, src, kept, rank)
            return
        # a replicated source is all here; one sharded on another dim is gathered (this parameter only)
        piece = take(src_local if src.dim is None else source.full_tensor(), kept)
        if dst.dim is not None:
            start, stop = dst.range(rank)
            piece = piece.narrow(dst.dim, start, stop - start)
        dst_local.copy_(piece)


def _exchange(dst_local: torch.Tensor, dst: Layout, src_local: torch.Tensor, src: Layout,
              kept: Sequence[np.ndarray | None], rank: int) -> None:
    """Steps 1-3 of the module docstring for a source and target sharded on the same dimension."""
    s = int(src.dim)  # type: ignore[arg-type]
    rows_kept = kept[s] if kept[s] is not None else np.arange(src.shape[s])
    start, stop = src.range(rank)
    lo, hi = int(np.searchsorted(rows_kept, start)), int(np.searchsorted(rows_kept, stop))
    mine = take(src_local, kept, skip=s)
    mine = mine.index_select(s, torch.as_tensor(rows_kept[lo:hi] - start, dtype=torch.long))
    send, receive = moves(rows_kept, src, dst, rank)
    row_bytes = int(np.prod([n for d, n in enumerate(dst.shape) if d != s], dtype=np.int64)) * dst_local.element_size()
    out_rows = dst_local.movedim(s, 0)
    direct = out_rows.is_contiguous()
    out = out_rows if direct else torch.empty_like(out_rows, memory_format=torch.contiguous_format)
    payload = mine.movedim(s, 0).contiguous().reshape(-1).view(torch.uint8)
    inbox = out.reshape(-1).view(torch.uint8)
    torch.distributed.all_to_all_single(inbox, payload, [r * row_bytes for r in receive],
                                        [r * row_bytes for r in send])
    if not direct:
        out_rows.copy_(out)
