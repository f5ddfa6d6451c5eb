"""Testing tools for fxprune and for users' own passes and rules.

* :func:`check_pruning` -- the invariant checker (identity, dead channels,
  shapes, re-trace, input untouched) for any model;
* :func:`check_block_removal` -- the depth invariant: removing residual blocks
  equals zeroing their branch outputs (float64), re-analysis, input untouched;
* :mod:`fxprune.testing.strategies` -- hypothesis strategies generating random
  valid architectures (``architectures``; needs the ``hypothesis`` package);
* :mod:`fxprune.testing.zoo` -- small faithful reference architectures.

Example:
    >>> import torch, torch.nn as nn
    >>> from fxprune.testing import check_pruning
    >>> check_pruning(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
    ...               (torch.randn(3, 4),)).groups
    1
"""
from __future__ import annotations

from typing import Any

from . import zoo
from .blocks import BlockCheckSummary, check_block_removal, mask_blocks, zero_branches
from .check import CheckSummary, InvariantError, check_pruning, mask_original, random_plan

__all__ = [
    "BlockCheckSummary",
    "CheckSummary",
    "check_block_removal",
    "InvariantError",
    "check_pruning",
    "mask_blocks",
    "mask_original",
    "random_plan",
    "zero_branches",
    "zoo",
    "architectures",
    "Arch",
]


def __getattr__(name: str) -> Any:
    # The strategies need hypothesis (a test dependency): import them on first use.
    if name in ("architectures", "Arch", "strategies"):
        import importlib

        strategies = importlib.import_module(f"{__name__}.strategies")
        return strategies if name == "strategies" else getattr(strategies, name)
    raise AttributeError(f"module 'fxprune.testing' has no attribute {name!r}")
