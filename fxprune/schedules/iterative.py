"""Iterative percentile pruning: ILP (L1 scores) and IAP (activation scores).

Each round re-analyses the current model, scores every group, removes in
every group the prunable channels whose score is at or below the
``percentile``-th percentile of that group's prunable scores (linear
interpolation, :func:`numpy.percentile`), optionally rewinds the surviving
weights (LTH), fine-tunes and evaluates.  The schedule stops after ``rounds``
rounds, when nothing can be pruned any more, or as soon as the accuracy drop
versus the unpruned model exceeds ``tolerance`` points; the result is the last
model within tolerance.

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
    (2, 20)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..analysis.analysis import Analysis
from ..errors import ConfigError
from .config import ScheduleConfig, is_number, require
from .engine import STOP_NOTHING, Decision, Plan, Policy
from .history import History
from .plans import threshold_plan

__all__ = ["IterativeConfig", "Iterative", "iterative", "STOP_TOLERANCE", "STOP_NOTHING"]

#: stop reason: the accuracy drop exceeded the tolerance
STOP_TOLERANCE = "tolerance"


@dataclass(frozen=True, kw_only=True)
class IterativeConfig(ScheduleConfig):
    """Settings of :func:`iterative` (validated on construction; shared fields: :class:`ScheduleConfig`).

    Attributes:
        percentile: ``q`` in [0, 100]; channels at or below a group's q-th
            percentile score are removed each round.
        rounds: the round budget (>= 0).
        tolerance: the largest accepted accuracy drop, in points (>= 0).
    """

    percentile: float = 20.0
    rounds: int = 10
    tolerance: float = 1.0

    def validate(self) -> None:
        require(is_number(self.percentile) and 0.0 <= self.percentile <= 100.0, "percentile",
                "a number in [0, 100]", self.percentile)
        require(is_number(self.tolerance) and self.tolerance >= 0, "tolerance",
                "a number >= 0 (accuracy points)", self.tolerance)


class Iterative(Policy):
    """Per group, remove the channels at or below the percentile; stop beyond the tolerance."""

    name = "iterative"
    config_class = IterativeConfig
    stops_when_nothing_to_prune = True
    config: IterativeConfig

    def check(self) -> None:
        if self.runtime.evaluate is None:
            raise ConfigError("iterative needs evaluate(gm) -> accuracy to apply the tolerance")

    def plan(self, analysis: Analysis, scores: Mapping[int, Any], state: Mapping[str, Any]) -> Plan:
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
                        metrics={"percentile": self.config.percentile})


def iterative(model: torch.nn.Module, example_inputs: Sequence[Any], config: IterativeConfig | None = None,
              **kwargs: Any) -> History:
    """Prune iteratively by per-group score percentiles (ILP with ``l1``, IAP with ``activation``).

    ``kwargs`` are the runtime arguments (:class:`~fxprune.schedules.engine.Runtime`:
    ``evaluate``, required here, ``finetune``, ``data``, ``loss_fn``,
    ``rewind_state``, ``checkpoint_dir``, ``progress``, ``registry``) and
    settings, the fields of :class:`IterativeConfig` (``percentile``,
    ``rounds``, ``tolerance``, ``scorer`` ...) applied over ``config``;
    ``analysis_options`` (a dict) is accepted for ``analysis``.

    Returns:
        The :class:`~fxprune.schedules.History`; ``history.graph_module`` is the
        last model within tolerance (the unpruned copy if round 1 already fails).
        Stops after ``rounds`` rounds (``budget``), when nothing can be removed
        (``nothing to prune``) or beyond the tolerance (``tolerance``).
    """
    return Iterative.run(model, example_inputs, config, **kwargs)


iterative.__signature__ = Iterative.signature()  # type: ignore[attr-defined]
