"""Plans of the threshold schedules: per-group thresholds and each group's share of a global one.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> from fxprune.schedules.plans import group_shares, threshold_plan
    >>> model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    >>> a = fxprune.analyze(model, (torch.randn(1, 2),))
    >>> threshold_plan(a, {0: [3.0, 1.0, 2.0, 0.5]}, {0: 1.0})
    {0: [1, 3]}
    >>> group_shares(a)
    {0: 1.0}
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..analysis.analysis import Analysis
from ..analysis.cost import node_macs
from ..errors import ConfigError
from ..scoring.select import GroupInfo, check_scores

__all__ = ["threshold_plan", "group_shares"]


def threshold_plan(analysis: Analysis, scores: Mapping[int, Sequence[float]],
                   thresholds: Mapping[int, float], min_channels: int = 1) -> dict[int, list[int]]:
    """Remove, in every group, the prunable channels whose score is ``<=`` the group's threshold.

    Channels go lowest score first; a channel is skipped when removing it would
    empty a member of the group (a concat input keeps one channel), and every
    group keeps at least ``min_channels`` channels.  Scores that cannot be
    ranked (NaN, infinite) raise :class:`~fxprune.errors.ScoreError` naming the
    group.  Groups missing from ``thresholds`` are left alone.
    """
    plan: dict[int, list[int]] = {}
    for g in analysis.groups:
        if g.id not in thresholds:
            continue
        if g.id not in scores:
            raise ConfigError(f"the scorer returned no scores for group {g.id}")
        s = np.asarray(scores[g.id], dtype=np.float64)
        check_scores({g.id: s}, {g.id: GroupInfo(g.size, g.fixed, g.member_counts())})
        thr = float(thresholds[g.id])
        cands = sorted((c for c in g.prunable if s[c] <= thr), key=lambda c: (s[c], c))
        n = min(len(cands), g.size - min_channels)
        if n <= 0:
            continue
        chosen = g.take(cands, n)
        if chosen:
            plan[g.id] = sorted(int(c) for c in chosen)
    return plan


def _producer_params(analysis: Analysis, group: Any) -> int:
    gm = analysis.graph_module
    seen: set[str] = set()
    total = 0
    for m in group.producers() or group.members:
        if m.param in seen:
            continue
        seen.add(m.param)
        obj: Any = gm
        for part in m.param.split("."):
            obj = getattr(obj, part)
        total += int(obj.numel())
    return total


def group_shares(analysis: Analysis, by: str = "params") -> dict[int, float]:
    """Each group's share of the alive prunable layers (shares sum to 1).

    ``by="params"``: the parameter count of the group's producers over the sum
    of all groups'; ``by="macs"``: the MACs of the nodes that apply the
    producers (falls back to parameters if no group has MACs).
    """
    if by not in ("params", "macs"):
        raise ConfigError(f"share must be 'params' or 'macs', got {by!r}")
    weights: dict[int, float] = {}
    if by == "macs":
        gm = analysis.graph_module
        nodes = {n.name: n for n in gm.graph.nodes}
        cache: dict[str, int] = {}
        for g in analysis.groups:
            names: set[str] = set()
            for m in g.producers() or g.members:
                n = nodes.get(m.node)
                if n is None:
                    continue
                if n.op == "get_attr":
                    names.update(u.name for u in n.users if u.op != "output")
                else:
                    names.add(n.name)
            for name in names:
                if name not in cache:
                    cache[name] = node_macs(gm, nodes[name], analysis.registry)
            weights[g.id] = float(sum(cache[n] for n in names))
    if by == "params" or not sum(weights.values()):
        weights = {g.id: float(_producer_params(analysis, g)) for g in analysis.groups}
    total = sum(weights.values())
    if total <= 0:
        return {g.id: 1.0 / len(analysis.groups) for g in analysis.groups}
    return {gid: w / total for gid, w in weights.items()}
