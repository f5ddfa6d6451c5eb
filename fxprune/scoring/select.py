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

import dataclasses
import difflib
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Collection, Mapping, Sequence

import numpy as np

from ..analysis.analysis import Analysis
from ..analysis.groups import Group, take_channels
from ..analysis.repeats import repeats
from ..errors import ConfigError, ScoreError

__all__ = ["SelectionConfig", "GroupInfo", "check_scores", "choose", "equalize", "per_group_configs", "select_plan",
           "uniform_plan"]


def _is_ratio(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and 0.0 <= v < 1.0


def _is_round_to(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int) and v >= 1


def _per_layer(name: str, value: Any, valid: Callable[[Any], bool], what: str) -> Any:
    """A scalar, or a mapping of layer prefixes / group ids to values, validated and frozen."""
    if not isinstance(value, Mapping):
        if not valid(value):
            raise ConfigError(f"{name} must be {what} or a mapping of module-name prefixes (or group ids) "
                              f"to such values, got {value!r}")
        return value
    if not value:
        raise ConfigError(f"{name}: an empty mapping prunes nothing; give at least one prefix")
    for key, v in value.items():
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise ConfigError(f"{name}: keys are module-name prefixes (str) or group ids (int), got {key!r}")
        if not valid(v):
            raise ConfigError(f"{name}[{key!r}] must be {what}, got {v!r}")
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class SelectionConfig:
    """How scores become a plan (see the module docstring).

    ``ratio`` and ``round_to`` may be mappings from module-name prefixes
    (``"layer4"``, ``"model.layers.3.mlp"``; ``""`` matches everything) or group
    ids to values: each group takes the value of the longest prefix matching one
    of its producers' parameter names (its id, if listed, first); a group no key
    matches keeps all its channels (``ratio``) or is not rounded (``round_to``).
    A mapping of ratios needs per-group selection (not ``global_ranking``).
    """

    ratio: float | Mapping[str | int, float] = 0.5
    global_ranking: bool = False
    min_channels: int = 1
    max_ratio: float = 1.0
    round_to: int | Mapping[str | int, int] = 1
    normalize: str = "mean"
    uniform: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", _per_layer("ratio", self.ratio, _is_ratio, "a number in [0, 1)"))
        object.__setattr__(self, "round_to", _per_layer("round_to", self.round_to, _is_round_to, "an int >= 1"))
        if isinstance(self.ratio, Mapping) and self.global_ranking:
            raise ConfigError("a mapping of ratios needs per-group selection: global_ranking ranks every "
                              "group against one ratio")
        if isinstance(self.max_ratio, bool) or not (isinstance(self.max_ratio, (int, float))
                                                    and 0.0 < self.max_ratio <= 1.0):
            raise ConfigError(f"max_ratio must be a number in (0, 1], got {self.max_ratio!r}")
        if isinstance(self.min_channels, bool) or not isinstance(self.min_channels, int) or self.min_channels < 1:
            raise ConfigError(f"min_channels must be an int >= 1, got {self.min_channels!r}")
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


def _prunable(info: GroupInfo) -> np.ndarray:
    """The group's prunable channels, ascending."""
    keep = np.ones(info.size, dtype=bool)
    keep[list(info.fixed)] = False
    return np.nonzero(keep)[0]


def _take(order: Any, n: int, info: GroupInfo) -> list[int]:
    return take_channels(order, n, info.counts)


def choose(scores: Mapping[int, np.ndarray], groups: Mapping[int, GroupInfo],
           cfg: SelectionConfig, families: Sequence[Sequence[int]] = (),
           per_group: Mapping[int, SelectionConfig] | None = None) -> dict[int, list[int]]:
    """The plan for given scores (a pure function of its inputs).

    ``families``: groups that must remove equally many channels (used with ``cfg.uniform``).
    ``per_group``: each group's own config (scalar ``ratio`` and ``round_to``) when
    ``cfg`` maps layers to values (see :func:`per_group_configs`).

    Raises:
        ScoreError: a group's scores have the wrong length, or a prunable channel's
            score is NaN or infinite (it would rank anywhere: with global ranking
            the plan would remove the best channels).
    """
    check_scores(scores, groups)
    if per_group is None and (isinstance(cfg.ratio, Mapping) or isinstance(cfg.round_to, Mapping)):
        raise ConfigError("a config mapping layers to ratios or round_to needs per_group configs "
                          "(select_plan resolves them from the analysis)")
    plan = _choose(scores, groups, cfg, per_group)
    return equalize(plan, scores, groups, families, cfg, per_group) if cfg.uniform else plan


def _choose(scores: Mapping[int, np.ndarray], groups: Mapping[int, GroupInfo],
            cfg: SelectionConfig, per_group: Mapping[int, SelectionConfig] | None = None) -> dict[int, list[int]]:
    plan: dict[int, list[int]] = {}
    if cfg.ratio == 0:
        return plan
    if not cfg.global_ranking:
        for gid, s in scores.items():
            info = groups[gid]
            own = (per_group or {}).get(gid, cfg)
            prunable = _prunable(info)
            n = _remove_count(info.size, len(info.fixed),
                              int(math.floor(own.ratio * len(prunable) + 1e-9)), own)
            if n > 0:
                s = np.asarray(s, dtype=np.float64).reshape(-1)
                order = prunable[np.lexsort((prunable, s[prunable]))]  # by score, then channel
                chosen = _take(order, n, info)
                if chosen:
                    plan[gid] = sorted(chosen)
        return plan
    entries = []
    for gid, s in scores.items():
        info = groups[gid]
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        prunable = _prunable(info)
        if not len(prunable):
            continue
        if cfg.normalize == "mean":
            denom = float(np.mean(np.abs(s[prunable]))) or 1.0
        elif cfg.normalize == "max":
            denom = float(np.max(np.abs(s[prunable]))) or 1.0
        else:
            denom = 1.0
        entries.extend(zip((s[prunable] / denom).tolist(), [gid] * len(prunable), prunable.tolist()))
    target = int(math.floor(cfg.ratio * len(entries) + 1e-9))
    entries.sort()
    own = per_group or {}
    limits = {gid: _remove_count(groups[gid].size, len(groups[gid].fixed), groups[gid].size, own.get(gid, cfg))
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
        n = _remove_count(info.size, len(info.fixed), len(chans), own.get(gid, cfg))
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
        bad = [c for c in np.nonzero(~np.isfinite(s))[0].tolist() if c not in info.fixed]
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
    return choose({gid: scores[gid] for gid in infos}, infos, cfg, families, per_group_configs(chosen, cfg))


def _value_for(group: Group, value: Any, unmatched: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    if group.id in value:
        return value[group.id]
    names = [m.param for m in (group.producers() or group.members)]
    best = max(((len(k), k) for k in value if isinstance(k, str)
                for n in names if k == "" or n == k or n.startswith(k + ".")), default=None)
    return unmatched if best is None else value[best[1]]


def per_group_configs(groups: Sequence[Group], cfg: SelectionConfig) -> dict[int, SelectionConfig] | None:
    """Each group's config with a scalar ``ratio`` and ``round_to`` (``None`` if ``cfg`` maps nothing).

    Example:
        >>> import torch, fxprune
        >>> m = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8),
        ...                         torch.nn.ReLU(), torch.nn.Linear(8, 1))
        >>> a = fxprune.analyze(m, (torch.randn(1, 2),))
        >>> cfgs = per_group_configs(a.groups, SelectionConfig(ratio={"2": 0.5, "": 0.25}, round_to={"0": 4}))
        >>> [(c.ratio, c.round_to) for c in cfgs.values()]
        [(0.25, 4), (0.5, 1)]
    """
    if not isinstance(cfg.ratio, Mapping) and not isinstance(cfg.round_to, Mapping):
        return None
    names = sorted({m.param for g in groups for m in g.members})
    ids = {g.id for g in groups}
    for option in ("ratio", "round_to"):
        value = getattr(cfg, option)
        for key in value if isinstance(value, Mapping) else ():
            if isinstance(key, int) and key not in ids:
                raise ConfigError(f"{option}: group {key} is not a prunable group (ids: {sorted(ids)[:20]})")
            if isinstance(key, str) and key and not any(n == key or n.startswith(key + ".") for n in names):
                prefixes = {n.rsplit(".", k)[0] for n in names for k in range(1, n.count(".") + 1)}
                close = difflib.get_close_matches(key, sorted(prefixes), n=5)
                raise ConfigError(f"{option}: no prunable layer's name starts with {key!r}"
                                  + (f"; did you mean {close}?" if close else ""))
    return {g.id: dataclasses.replace(cfg, ratio=_value_for(g, cfg.ratio, 0.0),
                                      round_to=_value_for(g, cfg.round_to, 1)) for g in groups}


def equalize(plan: Mapping[int, Sequence[int]], scores: Mapping[int, np.ndarray], groups: Mapping[int, GroupInfo],
             families: Sequence[Sequence[int]], cfg: SelectionConfig,
             per_group: Mapping[int, SelectionConfig] | None = None) -> dict[int, list[int]]:
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
            count = min(_remove_count(i.size, len(i.fixed), count, (per_group or {}).get(gid, cfg))
                        for gid, i in zip(family, infos))
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
    cfg = cfg or SelectionConfig()
    return equalize(plan, scores, infos, families, cfg, per_group_configs(analysis.groups, cfg))
