"""Scorer interface and aggregation of per-index scores into group-channel scores.

A scorer returns, for every group, one float64 score per group channel (higher
means more important).  Most scorers compute per-index scores for some member
tensors and let :func:`aggregate_members` fold them into channels through the
members' index maps, so they never need to know which op produced a member.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch

import numpy as np

from ..analysis.analysis import Analysis
from ..analysis.groups import Group, Member
from ..errors import ConfigError
from ..ir import Role

__all__ = ["AGGREGATIONS", "Key", "ScoreContext", "Scorer", "Scores", "aggregate_members", "check_roles", "member_keys",
           "member_selection", "slice_sums"]

#: a scored parameter dimension: ``(qualified parameter name, dim)``
Key = tuple[str, int]

AGGREGATIONS = ("sum", "mean", "max")


@dataclass(frozen=True)
class ScoreContext:
    """Inputs a scorer may use besides the analysis.

    Attributes:
        data: an iterable of calibration batches (each a tuple of model inputs, or
            ``(inputs, target)`` for scorers that need a loss).
        loss_fn: ``loss_fn(output, target) -> scalar`` for gradient-based scorers.
        num_batches: how many batches of ``data`` to use (``None``: all).
        progress: show progress bars.
    """

    data: Any = None
    loss_fn: Callable[..., Any] | None = None
    num_batches: int | None = None
    progress: bool = False


class Scores(dict):
    """``{group id: per-channel scores}`` with a scorer's ``diagnostics`` (a plain, JSON-ready dict).

    A scorer may return one to report how good its estimate is (the Hessian
    scorer's probe counts and errors); the schedules record it in each round's
    metrics under ``"scorer"``.
    """

    diagnostics: dict[str, Any]


class Scorer(Protocol):
    """``scorer(analysis, ctx) -> {group id: per-channel scores}``."""

    name: str

    def __call__(self, analysis: Analysis, ctx: ScoreContext) -> dict[int, np.ndarray]:
        ...


def member_selection(group: Group, roles: Sequence[str]) -> list[Member]:
    """Members of ``group`` with one of ``roles``; falls back to all members."""
    chosen = [m for m in group.members if m.role in roles]
    return chosen or list(group.members)


def aggregate_members(group: Group, per_member: Mapping[int, np.ndarray], how: str = "sum") -> np.ndarray:
    """Fold per-index scores of members (by position in ``group.members``) into channels.

    A channel owning several indices of a member (a flattened channel, a head)
    gets the sum of their scores; members are then combined with ``how``.
    """
    if how not in AGGREGATIONS:
        raise ConfigError(f"unknown aggregation {how!r}; choose one of {AGGREGATIONS}")
    rows = []
    for pos, scores in per_member.items():
        m = group.members[pos]
        idx = np.asarray(m.index_map, dtype=np.int64)
        ch = np.zeros(group.size, dtype=np.float64)
        ok = idx >= 0
        np.add.at(ch, idx[ok], np.asarray(scores, dtype=np.float64)[ok])
        rows.append(ch)
    if not rows:
        return np.zeros(group.size, dtype=np.float64)
    stack = np.stack(rows)
    if how == "sum":
        return stack.sum(0)
    if how == "mean":
        return stack.mean(0)
    return stack.max(0)


def slice_sums(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Float64 sums of ``t`` over every dim but ``dim`` (one value per index along ``dim``)."""
    return t.detach().to(torch.float64).movedim(dim, 0).reshape(t.shape[dim], -1).sum(1)


def check_roles(roles: Any, aggregate: str) -> tuple[Role, ...]:
    """``roles`` as a tuple of :class:`~fxprune.ir.Role` (one name is accepted); checks ``aggregate`` too."""
    roles = (roles,) if isinstance(roles, str) else tuple(roles)
    known = {r.value for r in Role}
    if not roles or set(roles) - known:
        raise ConfigError(f"roles must be a non-empty subset of {sorted(known)}, got {roles!r}")
    roles = tuple(Role(r) for r in roles)
    if aggregate not in AGGREGATIONS:
        raise ConfigError(f"unknown aggregation {aggregate!r}; choose one of {AGGREGATIONS}")
    return roles


def member_keys(analysis: Analysis, roles: Sequence[str]) -> tuple[dict[int, list[tuple[int, Key]]], list[Key]]:
    """Per group, the (member position, (param, dim)) pairs scored; and the distinct keys."""
    per_group: dict[int, list[tuple[int, Key]]] = {}
    keys: dict[Key, None] = {}
    for g in analysis.groups:
        rows = []
        for m in member_selection(g, roles):
            key = (m.param, m.dim)
            rows.append((g.members.index(m), key))
            keys.setdefault(key)
        per_group[g.id] = rows
    return per_group, list(keys)
