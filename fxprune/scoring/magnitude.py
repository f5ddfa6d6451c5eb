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
    >>> get_scorer("l1", roles=("producer",))(a, ScoreContext())[0].round(3).tolist()
    [1.0, 2.0, 3.0, 0.0]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..analysis.analysis import Analysis
from ..modules import get_attr
from ..errors import ConfigError
from .base import Key, ScoreContext, aggregate_members, check_roles, member_keys, slice_sums

__all__ = ["MagnitudeScorer"]


@dataclass(frozen=True)
class MagnitudeScorer:
    """L1 (``p=1``) or L2 (``p=2``, squared) magnitude of member slices."""

    p: int = 1
    roles: tuple[str, ...] = ("producer",)
    aggregate: str = "sum"

    def __post_init__(self) -> None:
        if self.p not in (1, 2):
            raise ConfigError(f"p must be 1 (L1) or 2 (squared L2), got {self.p!r}")
        object.__setattr__(self, "roles", check_roles(self.roles, self.aggregate))

    @property
    def name(self) -> str:
        return f"l{self.p}"

    def __call__(self, analysis: Analysis, ctx: ScoreContext) -> dict[int, np.ndarray]:
        per_group, keys = member_keys(analysis, self.roles)
        norms: dict[Key, np.ndarray] = {}
        for name, dim in keys:
            t = get_attr(analysis.graph_module, name).detach()
            if t.device.type == "meta":
                norms[(name, dim)] = np.zeros(t.shape[dim])
                continue
            t = t.to(torch.float64)
            norms[(name, dim)] = slice_sums(t.abs() if self.p == 1 else t * t, dim).cpu().numpy()
        return {g.id: aggregate_members(g, {pos: norms[k] for pos, k in per_group[g.id]}, self.aggregate)
                for g in analysis.groups}
