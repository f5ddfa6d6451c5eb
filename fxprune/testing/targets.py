"""Checking that a result lands within one channel step of a cost target.

Example:
    >>> import torch, torch.nn as nn
    >>> from fxprune.scoring.targets import TargetKind
    >>> from fxprune.testing.targets import largest_channel_step
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> largest_channel_step(model, (torch.randn(1, 4),), TargetKind.PARAMS)     # 4 + 1 in, 2 out
    7.0
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..analysis.analysis import analyze
from ..errors import PlanError
from ..scoring.targets import TargetKind, shape_costs

__all__ = ["largest_channel_step"]


def largest_channel_step(model: torch.nn.Module, example_inputs: Sequence[Any], kind: TargetKind) -> float:
    """The most that removing one prunable channel of ``model`` saves of ``kind`` (params or MACs).

    A result within one channel step of a budget is at most this far from it.
    Channels that cannot go alone (they would empty a member) are skipped.
    """
    analysis = analyze(model, example_inputs)
    cost = shape_costs(analysis)
    full = cost({})[kind]
    steps = [0.0]
    for g in analysis.groups:
        for c in g.prunable:
            try:
                steps.append(full - cost({g.id: [c]})[kind])
            except PlanError:
                pass
    return max(steps)
