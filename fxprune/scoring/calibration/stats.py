"""Float64 statistics of calibration, all-reducible across data-parallel ranks.

Example:
    >>> acc = Accumulator()
    >>> acc.add("x", [1.0, 2.0], count=2); acc.add("x", [3.0, 4.0], count=2); acc.reduce()
    >>> acc.mean("x").tolist(), acc.count("x")
    ([1.0, 1.5], 4)
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...errors import ConfigError

__all__ = ["Accumulator", "distributed_rank", "is_distributed"]


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and initialised."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def distributed_rank() -> int:
    """This process's rank (0 when not distributed)."""
    return torch.distributed.get_rank() if is_distributed() else 0


class Accumulator:
    """Named float64 sums with counts, all-reducible across data-parallel ranks.

    ``add(key, value, count)`` adds ``value`` (a tensor or array, cast to
    float64) to the sum of ``key`` and ``count`` to its count.  After
    :meth:`reduce`, :meth:`mean` is ``sum / count`` over all ranks.
    """

    def __init__(self) -> None:
        self._sums: dict[Any, torch.Tensor] = {}
        self._counts: dict[Any, float] = {}
        self._batches = 0

    def add(self, key: Any, value: torch.Tensor | np.ndarray | float, count: float = 1) -> None:
        v = torch.as_tensor(value).detach().to(torch.float64)
        if key in self._sums:
            if self._sums[key].shape != v.shape:
                raise ConfigError(f"calibration statistic {key!r} changed shape from "
                                  f"{tuple(self._sums[key].shape)} to {tuple(v.shape)} between batches; "
                                  f"give batches whose shapes differ only in the batch size")
            self._sums[key] = self._sums[key] + v.to(self._sums[key].device)
            self._counts[key] += count
        else:
            self._sums[key] = v.clone()
            self._counts[key] = count

    def step(self) -> None:
        """Count one calibration batch (used to detect ranks without data)."""
        self._batches += 1

    def keys(self) -> list[Any]:
        return list(self._sums)

    def sum(self, key: Any) -> np.ndarray:
        return self._sums[key].cpu().numpy()

    def count(self, key: Any) -> float:
        return self._counts[key]

    def mean(self, key: Any) -> np.ndarray:
        return self.sum(key) / self._counts[key]

    def reduce(self) -> None:
        """All-reduce (SUM) sums and counts across ranks when distributed; else check data was seen.

        Every rank must have seen at least one batch, and the same statistics
        with the same shapes; otherwise every rank raises the same
        :class:`~fxprune.errors.ConfigError` (no rank hangs).
        """
        if not is_distributed():
            if self._batches == 0 and not self._sums:
                raise ConfigError("the calibration data yielded no batch")
            return
        dist = torch.distributed
        keys = sorted(self._sums, key=repr)
        flat = (torch.cat([self._sums[k].reshape(-1).cpu() for k in keys]) if keys
                else torch.zeros(0, dtype=torch.float64))
        flat = torch.cat([flat, torch.tensor([self._counts[k] for k in keys], dtype=torch.float64)])
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
            else torch.device("cpu")
        n_seen = max(self._batches, 1 if keys else 0)
        check = torch.tensor([-float(n_seen), float(flat.numel()), -float(flat.numel())],
                             dtype=torch.float64, device=device)
        dist.all_reduce(check, op=dist.ReduceOp.MAX)
        if check[0].item() >= 0:
            raise ConfigError(f"a data-parallel rank got no calibration batch "
                              f"(world size {dist.get_world_size()}); give every rank at least one batch")
        if check[1].item() != -check[2].item():
            raise ConfigError("the ranks collected calibration statistics of different shapes; "
                              "give every rank batches of the same non-batch shape")
        flat = flat.to(device)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat = flat.cpu()
        offset = 0
        for k in keys:
            n = self._sums[k].numel()
            self._sums[k] = flat[offset:offset + n].reshape(self._sums[k].shape)
            offset += n
        for k, c in zip(keys, flat[offset:].tolist()):
            self._counts[k] = c
