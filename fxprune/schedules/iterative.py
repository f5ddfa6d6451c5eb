"""Iterative percentile pruning: ILP (L1 scores) and IAP (activation scores).

Each round re-analyses the current model, scores every group, removes in
every group the lowest-scoring ``percentile`` percent of its prunable channels,
optionally rewinds the surviving weights (LTH), fine-tunes and evaluates.  The
schedule stops after ``rounds`` rounds, when nothing can be pruned any more, or
as soon as the accuracy drop versus the unpruned model exceeds ``tolerance``
points; the result is the last model within tolerance.

Which channels a round removes (``percentile_rule``, :class:`PercentileRule`):

* ``count`` (the default): exactly ``round(q/100 * n)`` of the group's ``n``
  prunable channels (halves round up), the lowest first, ordered by
  ``(score, L1 norm of the producer weights, channel index)``.  Ties in the
  score (dead ReLU units all score 0 under the activation scorer) cannot make
  a round remove more than ``q`` percent; a group with ``q/100 * n < 0.5``
  loses nothing that round.
* ``threshold``: every prunable channel whose score is at or below the
  ``q``-th percentile of the group's prunable scores (:func:`numpy.percentile`,
  linear interpolation): ``methods.md``'s literal wording.  Channels tied with
  the percentile all go, and with distinct scores a round removes
  ``floor(q/100 * (n - 1)) + 1`` channels (2 of 6 at ``q = 20``).

In both, a group keeps ``min_channels`` channels and no member of a group is
emptied (a channel that would empty a concat input is skipped; ``count``
takes the next one instead).

Example:
    >>> import torch, torch.nn as nn
    >>> from fxprune.schedules import iterative
    >>> model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    >>> widths = iter([100.0, 100.0, 99.5, 98.0])   # a fake evaluate: accuracy per call
    >>> history = iterative(model, (torch.randn(2, 8),), evaluate=lambda gm: next(widths),
    ...                     percentile=20.0, rounds=5, tolerance=1.0, progress=False)
    >>> [r.metrics["accuracy"] for r in history.rounds], history.stop_reason
    ([100.0, 100.0, 99.5, 98.0], 'tolerance')
    >>> history.best.round, history.graph_module.get_submodule("0").out_features
    (2, 21)
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..analysis.analysis import Analysis
from ..errors import ConfigError
from ..scoring import ScoreContext
from ..scoring.magnitude import MagnitudeScorer
from ..scoring.select import GroupInfo, check_scores
from .config import ScheduleConfig, is_number, require
from .engine import STOP_NOTHING, Decision, Plan, Policy
from .history import History
from .plans import threshold_plan

__all__ = ["IterativeConfig", "Iterative", "PercentileRule", "count_plan", "iterative", "STOP_TOLERANCE",
           "STOP_NOTHING"]

#: stop reason: the accuracy drop exceeded the tolerance
STOP_TOLERANCE = "tolerance"


class PercentileRule(str, enum.Enum):
    """How :func:`iterative` reads "the ``q``-th percentile" (see the module docstring).

    ``count``: exactly ``round(q% of n)`` channels per group and round, ties
    broken by the producers' L1 norm, then the channel index.  ``threshold``:
    every channel scoring at or below :func:`numpy.percentile` of the group's
    scores, ties included.
    """

    COUNT = "count"
    THRESHOLD = "threshold"

    def __str__(self) -> str:
        return self.value


def _remove_count(percentile: float, n: int) -> int:
    """``round(percentile / 100 * n)``, halves rounded up (float noise ignored)."""
    return int(np.floor(percentile / 100.0 * n + 0.5 + 1e-9))


def count_plan(analysis: Analysis, scores: Mapping[int, Any], percentile: float,
               min_channels: int = 1) -> dict[int, list[int]]:
    """Remove, in every group, exactly ``round(percentile% of its prunable channels)`` channels.

    The channels go in the order ``(score, L1 norm of the producer weights,
    channel index)``; a channel that would empty a member of the group (a
    concat input's last channel) is skipped for the next one, and every group
    keeps ``min_channels`` channels.

    Example (four tied zeros: 20% of 10 channels is 2, the two with the smallest L1 norm):
        >>> import torch, torch.nn as nn, fxprune
        >>> model = nn.Sequential(nn.Linear(1, 10), nn.ReLU(), nn.Linear(10, 1))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.arange(10.0, 0.0, -1.0).reshape(10, 1))
        >>> a = fxprune.analyze(model, (torch.randn(1, 1),))
        >>> count_plan(a, {0: [0, 0, 0, 0, 5, 6, 7, 8, 9, 10]}, 20.0)
        {0: [2, 3]}
    """
    l1: dict[int, np.ndarray] | None = None
    plan: dict[int, list[int]] = {}
    for g in analysis.groups:
        prunable = list(g.prunable)
        n = min(_remove_count(percentile, len(prunable)), g.size - min_channels)
        if n <= 0:
            continue
        if g.id not in scores:
            raise ConfigError(f"the scorer returned no scores for group {g.id}")
        s = np.asarray(scores[g.id], dtype=np.float64)
        check_scores({g.id: s}, {g.id: GroupInfo(g.size, g.fixed, g.member_counts())})
        if l1 is None:
            l1 = MagnitudeScorer(p=1)(analysis, ScoreContext())
        norms = np.asarray(l1[g.id], dtype=np.float64)
        order = sorted(prunable, key=lambda c: (s[c], norms[c], c))
        chosen = g.take(order, n)
        if chosen:
            plan[g.id] = sorted(int(c) for c in chosen)
    return plan


@dataclass(frozen=True, kw_only=True)
class IterativeConfig(ScheduleConfig):
    """Settings of :func:`iterative` (validated on construction; shared fields: :class:`ScheduleConfig`).

    Attributes:
        percentile: ``q`` in [0, 100]; the share of every group's prunable
            channels removed each round (see ``percentile_rule``).
        rounds: the round budget (>= 0).
        tolerance: the largest accepted accuracy drop, in points (>= 0).
        percentile_rule: ``count`` (default: exactly ``round(q% of n)``
            channels, ties broken by L1 norm) or ``threshold`` (every channel at
            or below the ``q``-th percentile score, ties included); a string is
            converted to :class:`PercentileRule`.
    """

    percentile: float = 20.0
    rounds: int = 10
    tolerance: float = 1.0
    percentile_rule: PercentileRule = PercentileRule.COUNT

    def validate(self) -> None:
        require(is_number(self.percentile) and 0.0 <= self.percentile <= 100.0, "percentile",
                "a number in [0, 100]", self.percentile)
        require(is_number(self.tolerance) and self.tolerance >= 0, "tolerance",
                "a number >= 0 (accuracy points)", self.tolerance)
        try:
            object.__setattr__(self, "percentile_rule", PercentileRule(self.percentile_rule))
        except ValueError:
            raise ConfigError(f"percentile_rule must be one of {[r.value for r in PercentileRule]}, "
                              f"got {self.percentile_rule!r}") from None


class Iterative(Policy):
    """Per group, remove the lowest ``percentile`` percent of the channels; stop beyond the tolerance."""

    name = "iterative"
    config_class = IterativeConfig
    stops_when_nothing_to_prune = True
    config: IterativeConfig

    def check(self) -> None:
        if self.runtime.evaluate is None:
            raise ConfigError("iterative needs evaluate(gm) -> accuracy to apply the tolerance")

    def plan(self, analysis: Analysis, scores: Mapping[int, Any], state: Mapping[str, Any]) -> Plan:
        if self.config.percentile_rule is PercentileRule.COUNT:
            return count_plan(analysis, scores, self.config.percentile, self.config.min_channels)
        thresholds = {}
        for g in analysis.groups:
            prunable = list(g.prunable)
            if prunable:
                s = np.asarray(scores[g.id], dtype=np.float64)[prunable]
                thresholds[g.id] = float(np.percentile(s, self.config.percentile))
        return threshold_plan(analysis, scores, thresholds, self.config.min_channels)

    def decide(self, number: int, metrics: Mapping[str, Any], state: Mapping[str, Any],
               history: History) -> Decision:
        accepted = bool(history.baseline - metrics["accuracy"] <= self.config.tolerance)
        return Decision(accepted=accepted, stop=None if accepted else STOP_TOLERANCE,
                        metrics={"percentile": self.config.percentile,
                                 "percentile_rule": self.config.percentile_rule.value})


def iterative(model: torch.nn.Module, example_inputs: Sequence[Any], config: IterativeConfig | None = None,
              **kwargs: Any) -> History:
    """Prune iteratively by per-group score percentiles (ILP with ``l1``, IAP with ``activation``).

    ``kwargs`` are the runtime arguments (:class:`~fxprune.schedules.engine.Runtime`:
    ``evaluate``, required here, ``finetune``, ``data``, ``loss_fn``,
    ``rewind_state``, ``checkpoint_dir``, ``progress``, ``registry``) and
    settings, the fields of :class:`IterativeConfig` (``percentile``,
    ``rounds``, ``tolerance``, ``percentile_rule``, ``scorer`` ...) applied over ``config``;
    ``analysis_options`` (a dict) is accepted for ``analysis``.

    Returns:
        The :class:`~fxprune.schedules.History`; ``history.graph_module`` is the
        last model within tolerance (the unpruned copy if round 1 already fails).
        Stops after ``rounds`` rounds (``budget``), when nothing can be removed
        (``nothing to prune``) or beyond the tolerance (``tolerance``).
    """
    return Iterative.run(model, example_inputs, config, **kwargs)


iterative.__signature__ = Iterative.signature()  # type: ignore[attr-defined]
