"""Turning group-channel scores into a pruning plan.

Two modes:

* per-group (default): every group loses ``floor(ratio * prunable)`` of its
  lowest-scoring prunable channels;
* global ranking: all prunable channels of all groups compete; the lowest
  ``ratio`` of them are removed, with each group capped at ``max_ratio`` and
  scores optionally normalised by the group's mean so groups of different
  scales compete fairly.

In both modes a group keeps at least ``min_channels`` channels, no member of a
group is emptied (a concat input keeps one channel), and with ``round_to=N``
the kept count is rounded up to a multiple of N where the group is big enough.

Example:
    >>> import numpy as np
    >>> from fxprune.scoring.select import GroupInfo, SelectionConfig, choose
    >>> info = {0: GroupInfo(size=4, fixed=frozenset(), counts=np.ones((1, 4), dtype=int))}
    >>> choose({0: np.array([3., 1., 2., 4.])}, info, SelectionConfig(ratio=0.5))
    {0: [1, 2]}
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Collection, Mapping

import numpy as np

from ..analysis.analysis import Analysis
from ..analysis.groups import take_channels
from ..errors import ConfigError

__all__ = ["SelectionConfig", "GroupInfo", "choose", "select_plan"]


@dataclass(frozen=True)
class SelectionConfig:
    """How scores become a plan (see the module docstring)."""

    ratio: float = 0.5
    global_ranking: bool = False
    min_channels: int = 1
    max_ratio: float = 1.0
    round_to: int = 1
    normalize: str = "mean"

    def __post_init__(self) -> None:
        if isinstance(self.ratio, bool) or not (isinstance(self.ratio, (int, float)) and 0.0 <= self.ratio < 1.0):
            raise ConfigError(f"ratio must be a number in [0, 1), got {self.ratio!r}")
        if isinstance(self.max_ratio, bool) or not (isinstance(self.max_ratio, (int, float))
                                                    and 0.0 < self.max_ratio <= 1.0):
            raise ConfigError(f"max_ratio must be a number in (0, 1], got {self.max_ratio!r}")
        for name in ("min_channels", "round_to"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if self.normalize not in ("mean", "max", "none"):
            raise ConfigError(f"normalize must be 'mean', 'max' or 'none', got {self.normalize!r}")


@dataclass(frozen=True, eq=False)
class GroupInfo:
    """What selection needs of a group: size, fixed channels, per-member index counts."""

    size: int
    fixed: frozenset
    counts: np.ndarray


def _remove_count(size: int, n_fixed: int, want: int, cfg: SelectionConfig) -> int:
    """How many channels to remove after floors, caps and rounding."""
    prunable = size - n_fixed
    cap = min(prunable, int(math.floor(cfg.max_ratio * size + 1e-9)), size - cfg.min_channels)
    remove = max(0, min(want, cap))
    keep = size - remove
    if cfg.round_to > 1 and size >= cfg.round_to:
        keep = min(size, int(math.ceil(keep / cfg.round_to) * cfg.round_to))
    return size - keep


def _take(order: list[int], n: int, info: GroupInfo) -> list[int]:
    return take_channels(order, n, info.counts)


def choose(scores: Mapping[int, np.ndarray], groups: Mapping[int, GroupInfo],
           cfg: SelectionConfig) -> dict[int, list[int]]:
    """The plan for given scores (a pure function of its inputs)."""
    plan: dict[int, list[int]] = {}
    if cfg.ratio == 0:
        return plan
    if not cfg.global_ranking:
        for gid, s in scores.items():
            info = groups[gid]
            prunable = [c for c in range(info.size) if c not in info.fixed]
            n = _remove_count(info.size, len(info.fixed),
                              int(math.floor(cfg.ratio * len(prunable) + 1e-9)), cfg)
            if n > 0:
                order = sorted(prunable, key=lambda c: (s[c], c))
                chosen = _take(order, n, info)
                if chosen:
                    plan[gid] = sorted(chosen)
        return plan
    entries = []
    for gid, s in scores.items():
        info = groups[gid]
        s = np.asarray(s, dtype=np.float64)
        prunable = [c for c in range(info.size) if c not in info.fixed]
        if not prunable:
            continue
        if cfg.normalize == "mean":
            denom = float(np.mean(np.abs(s[prunable]))) or 1.0
        elif cfg.normalize == "max":
            denom = float(np.max(np.abs(s[prunable]))) or 1.0
        else:
            denom = 1.0
        entries.extend((float(s[c]) / denom, gid, c) for c in prunable)
    target = int(math.floor(cfg.ratio * len(entries) + 1e-9))
    entries.sort()
    limits = {gid: _remove_count(groups[gid].size, len(groups[gid].fixed), groups[gid].size, cfg)
              for gid in scores}
    wanted: dict[int, list[int]] = {}
    count = 0
    for _, gid, c in entries:
        if count >= target:
            break
        if len(wanted.get(gid, [])) < limits[gid]:
            wanted.setdefault(gid, []).append(c)
            count += 1
    for gid, chans in wanted.items():
        info = groups[gid]
        n = _remove_count(info.size, len(info.fixed), len(chans), cfg)
        chosen = _take(chans, n, info)
        if chosen:
            plan[gid] = sorted(chosen)
    return plan


def select_plan(analysis: Analysis, scores: Mapping[int, np.ndarray], cfg: SelectionConfig,
                groups: Collection[int] | None = None) -> dict[int, list[int]]:
    """The plan for an analysis: ``{group id: group channels to remove}``.

    ``groups`` restricts the selection (and a global ranking) to those group ids;
    the others keep every channel.
    """
    chosen = [g for g in analysis.groups if groups is None or g.id in set(groups)]
    missing = [g.id for g in chosen if g.id not in scores]
    if missing:
        raise ConfigError(f"the scorer returned no scores for groups {missing[:5]}")
    infos = {g.id: GroupInfo(g.size, g.fixed, g.member_counts()) for g in chosen}
    return choose({gid: scores[gid] for gid in infos}, infos, cfg)
