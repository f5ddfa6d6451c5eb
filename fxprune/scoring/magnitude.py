"""Magnitude scorers (ILP's L1 baseline and L2).

The score of index ``i`` of a member is the L1 (or squared L2) norm of the
member tensor's slice ``i`` along the member's dim.  By default only
*producer* members count (``s_c = sum |W[c, ...]|``, as in ILP); pass
``roles=("producer", "consumer")`` to include the weights that read the
channel too, as DepGraph does.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> from fxprune.scoring import get_scorer, ScoreContext
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> with torch.no_grad():
    ...     _ = model[0].weight.copy_(torch.tensor([[1., 0, 0], [1, 1, 0], [1, 1, 1], [0, 0, 0]]))
    >>> a = fxprune.analyze(model, (torch.randn(1, 3),))
    >>> get_scorer("l1", roles=("producer",))(a, ScoreContext(model=model))[0].round(3).tolist()
    [1.0, 2.0, 3.0, 0.0]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..analysis.analysis import Analysis
from ..modules import get_attr
from .base import ScoreContext, aggregate_members, member_selection

__all__ = ["MagnitudeScorer"]


@dataclass(frozen=True)
class MagnitudeScorer:
    """L1 (``p=1``) or L2 (``p=2``, squared) magnitude of member slices."""

    p: int = 1
    roles: tuple[str, ...] = ("producer",)
    aggregate: str = "sum"

    @property
    def name(self) -> str:
        return f"l{self.p}"

    def __call__(self, analysis: Analysis, ctx: ScoreContext) -> dict[int, np.ndarray]:
        gm = analysis.graph_module
        cache: dict[tuple[str, int], np.ndarray] = {}
        out: dict[int, np.ndarray] = {}
        for g in analysis.groups:
            per_member = {}
            for m in member_selection(g, self.roles):
                key = (m.param, m.dim)
                if key not in cache:
                    t = get_attr(gm, m.param).detach()
                    if t.device.type == "meta":
                        cache[key] = np.zeros(t.shape[m.dim])
                    else:
                        t = t.to(torch.float64).movedim(m.dim, 0).reshape(t.shape[m.dim], -1)
                        v = t.abs().sum(1) if self.p == 1 else (t * t).sum(1)
                        cache[key] = v.numpy()
                per_member[g.members.index(m)] = cache[key]
            out[g.id] = aggregate_members(g, per_member, self.aggregate)
        return out
