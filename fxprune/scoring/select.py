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

With ``uniform=True`` the groups that repeat one block's width (see
:mod:`fxprune.analysis.repeats`: ``layers.0.mlp`` ... ``layers.N.mlp``) all
remove the same number of channels: the count is the family's pooled choice
(the channels its groups lost together, divided by the number of groups, within
every group's floors, caps and rounding), and each group then removes its own
lowest-scoring channels.  The pruned blocks keep identical widths, so the
result is expressible as a configuration of the model's class.

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
from typing import Collection, Mapping, Sequence

import numpy as np

from ..analysis.analysis import Analysis
from ..analysis.groups import take_channels
from ..analysis.repeats import repeats
from ..errors import ConfigError, ScoreError

__all__ = ["SelectionConfig", "GroupInfo", "check_scores", "choose", "equalize", "select_plan", "uniform_plan"]


@dataclass(frozen=True)
class SelectionConfig:
    """How scores become a plan (see the module docstring)."""

    ratio: float = 0.5
    global_ranking: bool = False
    min_channels: int = 1
    max_ratio: float = 1.0
    round_to: int = 1
    normalize: str = "mean"
    uniform: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.ratio, bool) or not (isinstance(self.ratio, (int, float)) and 0.0 <= self.ratio < 1.0):
            raise ConfigError(f"ratio must be a number in [0, 1), got {self.ratio!r}")
        if not 0.0 < self.max_ratio <= 1.0:
            raise ConfigError(f"max_ratio must be in (0, 1], got {self.max_ratio!r}")
        if self.min_channels < 1:
            raise ConfigError(f"min_channels must be >= 1, got {self.min_channels!r}")
        if self.round_to < 1:
            raise ConfigError(f"round_to must be >= 1, got {self.round_to!r}")
        if self.normalize not in ("mean", "max", "none"):
            raise ConfigError(f"normalize must be 'mean', 'max' or 'none', got {self.normalize!r}")
        if not isinstance(self.uniform, bool):
            raise ConfigError(f"uniform must be True or False, got {self.uniform!r}")


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
           cfg: SelectionConfig, families: Sequence[Sequence[int]] = ()) -> dict[int, list[int]]:
    """The plan for given scores (a pure function of its inputs).

    ``families``: groups that must remove equally many channels (used with ``cfg.uniform``).

    Raises:
        ScoreError: a group's scores have the wrong length, or a prunable channel's
            score is NaN or infinite (it would rank anywhere: with global ranking
            the plan would remove the best channels).
    """
    check_scores(scores, groups)
    plan = _choose(scores, groups, cfg)
    return equalize(plan, scores, groups, families, cfg) if cfg.uniform else plan


def _choose(scores: Mapping[int, np.ndarray], groups: Mapping[int, GroupInfo],
            cfg: SelectionConfig) -> dict[int, list[int]]:
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


def check_scores(scores: Mapping[int, np.ndarray], groups: Mapping[int, GroupInfo]) -> None:
    """Raise :class:`~fxprune.errors.ScoreError` naming the first group whose scores cannot be ranked.

    Example:
        >>> info = {3: GroupInfo(size=2, fixed=frozenset(), counts=np.ones((1, 2), dtype=int))}
        >>> check_scores({3: np.array([1.0, np.nan])}, info)
        Traceback (most recent call last):
        ...
        fxprune.errors.ScoreError: group 3: the scores of channels [1] are not finite ([nan]); ...
    """
    for gid, s in scores.items():
        info = groups[gid]
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        if s.shape[0] != info.size:
            raise ScoreError(f"group {gid}: the scorer returned {s.shape[0]} scores for {info.size} channels")
        bad = [c for c in range(info.size) if c not in info.fixed and not np.isfinite(s[c])]
        if bad:
            raise ScoreError(
                f"group {gid}: the scores of channels {bad[:8]} are not finite ({s[bad[:8]].tolist()}); "
                "NaN or infinite scores cannot be ranked. Check the scorer's inputs (calibration data, "
                "loss, weights with NaN/inf) or its normalisation")


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
    families = [r.groups for r in repeats(chosen)] if cfg.uniform else []
    return choose({gid: scores[gid] for gid in infos}, infos, cfg, families)


def equalize(plan: Mapping[int, Sequence[int]], scores: Mapping[int, np.ndarray], groups: Mapping[int, GroupInfo],
             families: Sequence[Sequence[int]], cfg: SelectionConfig) -> dict[int, list[int]]:
    """``plan`` with every family's groups removing the same count (their pooled mean, floored).

    Each group removes its own lowest-scoring prunable channels (NaN scores last);
    the count is lowered until every group of the family can remove it (floors,
    caps, rounding, no member emptied).

    Example:
        >>> import numpy as np
        >>> info = GroupInfo(size=4, fixed=frozenset(), counts=np.ones((1, 4), dtype=int))
        >>> equalize({0: [0, 1, 2], 1: [3]}, {0: np.arange(4.), 1: -np.arange(4.)}, {0: info, 1: info},
        ...          [(0, 1)], SelectionConfig())
        {0: [0, 1], 1: [2, 3]}
    """
    out = {gid: list(chans) for gid, chans in plan.items()}
    for family in families:
        infos = [groups[gid] for gid in family]
        count = sum(len(plan.get(gid, ())) for gid in family) // len(family)
        chosen: list[list[int]] = []
        while True:
            count = min(_remove_count(i.size, len(i.fixed), count, cfg) for i in infos)
            chosen = [_take(_order(scores[gid], info), count, info) for gid, info in zip(family, infos)]
            if all(len(c) == count for c in chosen):
                break
            count = min(len(c) for c in chosen)
        for gid, chans in zip(family, chosen):
            if chans:
                out[gid] = sorted(chans)
            else:
                out.pop(gid, None)
    return out


def _order(scores: np.ndarray, info: GroupInfo) -> list[int]:
    s = np.asarray(scores, dtype=np.float64)
    prunable = [c for c in range(info.size) if c not in info.fixed]
    return sorted(prunable, key=lambda c: (bool(np.isnan(s[c])), s[c], c))


def uniform_plan(analysis: Analysis, scores: Mapping[int, np.ndarray], plan: Mapping[int, Sequence[int]],
                 cfg: SelectionConfig | None = None) -> dict[int, list[int]]:
    """``plan`` made uniform over the analysis' repeating groups (:func:`equalize`).

    For plans not made by :func:`select_plan` (the schedules' threshold plans);
    ``cfg`` gives the floors and rounding (default: :class:`SelectionConfig`).
    """
    infos = {g.id: GroupInfo(g.size, g.fixed, g.member_counts()) for g in analysis.groups}
    families = [r.groups for r in repeats(analysis.groups)]
    return equalize(plan, scores, infos, families, cfg or SelectionConfig())
