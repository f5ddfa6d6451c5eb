"""Calibration batches: the batch convention of :mod:`fxprune.scoring.calibration`.

Example:
    >>> import torch
    >>> [len(b.inputs) for b in iter_batches([torch.randn(5, 3), (torch.randn(2, 3), torch.zeros(2))])]
    [1, 1]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch

from ...errors import ConfigError

__all__ = ["NO_TARGET", "Batch", "iter_batches", "num_batches_of", "require_data"]


class _NoTarget:
    """The type of :data:`NO_TARGET`."""

    def __repr__(self) -> str:
        return "NO_TARGET"


NO_TARGET: Any = _NoTarget()
"""The target of a batch that has none (``None`` is a valid target: ``(x, None)``)."""


@dataclass(frozen=True)
class Batch:
    """One calibration batch.

    Attributes:
        inputs: the positional inputs of ``model.forward``.
        target: what ``loss_fn(output, target)`` receives; :data:`NO_TARGET`
            when the batch has none.
    """

    inputs: tuple[Any, ...]
    target: Any = NO_TARGET

    @property
    def has_target(self) -> bool:
        return self.target is not NO_TARGET

    def __post_init__(self) -> None:
        if isinstance(self.inputs, torch.Tensor):
            object.__setattr__(self, "inputs", (self.inputs,))
        elif isinstance(self.inputs, list):
            object.__setattr__(self, "inputs", tuple(self.inputs))

    def to(self, device: torch.device) -> "Batch":
        """The batch with every tensor moved to ``device``."""
        target = self.target if not self.has_target else _to_device(self.target, device)
        return Batch(tuple(_to_device(x, device) for x in self.inputs), target)


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (tuple, list)):
        return type(x)(_to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    return x


def _as_inputs(x: Any) -> tuple[Any, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _to_batch(raw: Any, k: int) -> Batch:
    if isinstance(raw, Batch):
        return raw
    if isinstance(raw, torch.Tensor):
        return Batch((raw,))
    if isinstance(raw, (tuple, list)):
        if len(raw) == 1:
            return Batch(_as_inputs(raw[0]))
        if len(raw) == 2:
            return Batch(_as_inputs(raw[0]), raw[1])
        raise ConfigError(
            f"calibration batch {k} is a sequence of {len(raw)} items; a batch is a tensor, "
            f"(inputs,) or (inputs, target) with inputs a tensor or a tuple of tensors "
            f"(wrap several inputs: ((a, b), target)), or a fxprune.scoring.calibration.Batch")
    raise ConfigError(f"calibration batch {k} has type {type(raw).__name__}; a batch is a tensor, "
                      f"(inputs,) or (inputs, target), or a fxprune.scoring.calibration.Batch")


def iter_batches(data: Any, num_batches: int | None = None, *, need_target: bool = False) -> Iterator[Batch]:
    """The first ``num_batches`` batches of ``data`` (all if ``None``) as :class:`Batch` es.

    Args:
        data: an iterable of batches in the convention of the module docstring
            (a single tensor is one batch).
        num_batches: how many batches to use; ``None`` uses all of them.
        need_target: raise :class:`~fxprune.errors.ConfigError` for a batch without target.
    """
    if num_batches is not None and (isinstance(num_batches, bool) or not isinstance(num_batches, int)
                                    or num_batches < 1):
        raise ConfigError(f"num_batches must be a positive int or None, got {num_batches!r}")
    if data is None:
        raise ConfigError("no calibration data: pass data= (an iterable of batches) to fxprune.prune")
    if isinstance(data, (torch.Tensor, Batch)):
        data = [data]
    for k, raw in enumerate(data):
        if num_batches is not None and k >= num_batches:
            return
        batch = _to_batch(raw, k)
        if need_target and not batch.has_target:
            raise ConfigError(f"calibration batch {k} has no target; this scorer needs a loss: "
                              f"give (inputs, target) batches in data= and pass loss_fn= to fxprune.prune")
        yield batch


def num_batches_of(data: Any, num_batches: int | None = None) -> int | None:
    """How many batches :func:`iter_batches` will yield, if ``data`` has a length."""
    if isinstance(data, (torch.Tensor, Batch)):
        return 1
    try:
        n = len(data)
    except TypeError:
        return num_batches
    return n if num_batches is None else min(n, num_batches)


def require_data(scorer: str, data: Any, loss_fn: Any = None, *, need_loss: bool = False) -> None:
    """Raise a :class:`~fxprune.errors.ConfigError` naming the missing ``prune`` argument."""
    if data is None:
        raise ConfigError(f"scorer {scorer!r} needs calibration data: pass data= (an iterable of "
                          f"batches, see fxprune.scoring.calibration) to fxprune.prune")
    if need_loss and loss_fn is None:
        raise ConfigError(f"scorer {scorer!r} needs a loss: pass loss_fn= (loss_fn(output, target) "
                          f"-> scalar tensor) to fxprune.prune, and (inputs, target) batches in data=")
