"""Scoring stage: scorers rank the channels of every coupled group.

Scorers are looked up by name in one table (:data:`SCORERS`); each entry is a
factory taking the scorer's parameters.

Example:
    >>> from fxprune.scoring import get_scorer
    >>> get_scorer("l2").name
    'l2'
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable

from ..errors import ConfigError
from .activation import ActivationScorer
from .base import AGGREGATIONS, ScoreContext, Scorer, aggregate_members
from .hessian import HessianScorer
from .magnitude import MagnitudeScorer
from .random import RandomScorer
from .taylor import TaylorScorer
from .select import GroupInfo, SelectionConfig, choose, select_plan
from .targets import Target, TargetKind, TargetResult, select_for_target

__all__ = [
    "AGGREGATIONS",
    "ActivationScorer",
    "HessianScorer",
    "RandomScorer",
    "SCORERS",
    "ScoreContext",
    "Scorer",
    "TaylorScorer",
    "GroupInfo",
    "SelectionConfig",
    "Target",
    "TargetKind",
    "TargetResult",
    "aggregate_members",
    "choose",
    "get_scorer",
    "select_for_target",
    "select_plan",
]

SCORERS: "MappingProxyType[str, Callable[..., Scorer]]" = MappingProxyType({
    "l1": lambda **kw: MagnitudeScorer(p=1, **kw),
    "l2": lambda **kw: MagnitudeScorer(p=2, **kw),
    "activation": ActivationScorer,
    "hessian": HessianScorer,
    "taylor": TaylorScorer,
    "random": RandomScorer,
})


def get_scorer(name: str | Scorer, **params: Any) -> Scorer:
    """The scorer called ``name`` with ``params`` (a scorer object is returned as is)."""
    if not isinstance(name, str):
        if not callable(name):
            raise ConfigError(f"scorer must be a scorer name ({', '.join(sorted(SCORERS))}) or a scorer object "
                              f"(called as scorer(analysis, ctx)), got {name!r}")
        return name
    if name not in SCORERS:
        raise ConfigError(f"unknown scorer {name!r}; available: {sorted(SCORERS)}")
    try:
        return SCORERS[name](**params)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for scorer {name!r}: {exc}") from exc
