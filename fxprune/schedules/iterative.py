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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx

from ..errors import ConfigError
from ..report import build_report, count_params
from ..rewrite.channels import apply_plan
from ..scoring import ScoreContext, get_scorer
from .common import (
    STOP_BUDGET,
    Session,
    call_finetune,
    check_analysis_options,
    frozen_mapping,
    compose_index_map,
    jsonable,
    rewind_weights,
    threshold_plan,
)
from .history import History

__all__ = ["IterativeConfig", "iterative", "STOP_TOLERANCE", "STOP_NOTHING"]

#: stop reason: the accuracy drop exceeded the tolerance
STOP_TOLERANCE = "tolerance"
#: stop reason: no group had a channel at or below its percentile that could be removed
STOP_NOTHING = "nothing to prune"


@dataclass(frozen=True)
class IterativeConfig:
    """Settings of :func:`iterative` (validated on construction).

    Attributes:
        scorer: scorer name (see :data:`fxprune.scoring.SCORERS`) or scorer object.
        scorer_params: keyword parameters of the scorer.
        percentile: ``q`` in [0, 100]; channels at or below a group's q-th
            percentile score are removed each round.
        rounds: the round budget (>= 0).
        tolerance: the largest accepted accuracy drop, in points (>= 0).
        min_channels: channels every group keeps at least (>= 1).
        num_batches: calibration batches for data-driven scorers (``None``: all).
        analysis_options: keyword arguments of :func:`fxprune.analyze`.
    """

    scorer: Any = "l1"
    scorer_params: Mapping[str, Any] = field(default_factory=frozen_mapping)
    percentile: float = 20.0
    rounds: int = 10
    tolerance: float = 1.0
    min_channels: int = 1
    num_batches: int | None = None
    analysis_options: Mapping[str, Any] = field(default_factory=frozen_mapping)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scorer_params", frozen_mapping(self.scorer_params))
        object.__setattr__(self, "analysis_options", frozen_mapping(check_analysis_options(self.analysis_options)))
        if isinstance(self.percentile, bool) or not isinstance(self.percentile, (int, float)) \
                or not 0.0 <= self.percentile <= 100.0:
            raise ConfigError(f"percentile must be a number in [0, 100], got {self.percentile!r}")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 0:
            raise ConfigError(f"rounds must be an integer >= 0, got {self.rounds!r}")
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, (int, float)) \
                or not self.tolerance >= 0:
            raise ConfigError(f"tolerance must be a number >= 0 (accuracy points), got {self.tolerance!r}")
        if isinstance(self.min_channels, bool) or not isinstance(self.min_channels, int) or self.min_channels < 1:
            raise ConfigError(f"min_channels must be an integer >= 1, got {self.min_channels!r}")
        if self.num_batches is not None and (not isinstance(self.num_batches, int) or self.num_batches < 1):
            raise ConfigError(f"num_batches must be None or an integer >= 1, got {self.num_batches!r}")

    def fingerprint(self, **extra: Any) -> dict[str, Any]:
        """The settings a resumed run must share (everything but the round budget)."""
        out = {k: jsonable(getattr(self, k)) for k in self.__dataclass_fields__ if k != "rounds"}
        out.update(jsonable(extra))
        return out


def iterative(
    model: torch.nn.Module,
    example_inputs: Sequence[Any],
    *,
    scorer: Any = "l1",
    scorer_params: Mapping[str, Any] | None = None,
    percentile: float = 20.0,
    rounds: int = 10,
    finetune: Callable[[fx.GraphModule], Any] | None = None,
    evaluate: Callable[[fx.GraphModule], float],
    tolerance: float = 1.0,
    rewind_state: Mapping[str, torch.Tensor] | None = None,
    data: Any = None,
    loss_fn: Callable[..., Any] | None = None,
    num_batches: int | None = None,
    min_channels: int = 1,
    analysis_options: Mapping[str, Any] | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
) -> History:
    """Prune iteratively by per-group score percentiles (ILP with ``l1``, IAP with ``activation``).

    Args:
        model: the model to prune (any model :func:`fxprune.analyze` accepts);
            never modified.
        example_inputs: a tuple of positional inputs of ``model.forward``.
        scorer, scorer_params: the scorer (``l1`` for ILP, ``activation`` for IAP).
        percentile: each round removes, per group, the prunable channels whose
            score is at or below this percentile of the group's prunable scores.
        rounds: the round budget.
        finetune: ``finetune(gm) -> gm`` after each prune (may train ``gm`` in
            place and return it or ``None``); ``None``: no fine-tuning.
        evaluate: ``evaluate(gm) -> accuracy`` in percent; called once on the
            unpruned model (the baseline) and once per round.
        tolerance: the largest accepted accuracy drop versus the baseline, in points.
        rewind_state: a state_dict of the original model at an early checkpoint
            (lottery-ticket rewinding): after each prune every surviving
            weight/buffer named in it is reset to its value there, before
            fine-tuning.  ``None``: plain fine-tuning from the pruned weights.
        data, loss_fn, num_batches: calibration inputs of data-driven scorers.
        min_channels: channels every group keeps at least.
        analysis_options: keyword arguments of :func:`fxprune.analyze`
            (``split_policy``, ``ignore``, ``leaf_modules`` ...).
        checkpoint_dir: save every finished round there and resume from it
            (see :mod:`fxprune.schedules.checkpoint`).
        progress: show a progress bar (tqdm if installed, else stderr lines).

    Returns:
        The :class:`~fxprune.schedules.History`; ``history.graph_module`` is the
        last model within tolerance (the unpruned copy if round 1 already fails).

    Raises:
        ScheduleInterrupted: on ``KeyboardInterrupt``; carries the finished rounds.
        ConfigError: invalid settings, or a checkpoint written with other settings.
    """
    cfg = IterativeConfig(scorer, scorer_params, percentile, rounds, tolerance, min_channels,
                          num_batches, analysis_options)
    if evaluate is None:
        raise ConfigError("iterative needs evaluate(gm) -> accuracy to apply the tolerance")
    score_fn = get_scorer(cfg.scorer, **dict(cfg.scorer_params))
    session = Session("iterative", cfg.fingerprint(rewind=rewind_state is not None), model,
                      tuple(example_inputs) if not isinstance(example_inputs, torch.Tensor)
                      else (example_inputs,), dict(cfg.analysis_options), evaluate, checkpoint_dir,
                      progress, cfg.rounds)
    try:
        state = session.start({"round": 0, "current": 0})
        session.reopen_if_budget_grew(state["round"])
        while session.history.stop_reason is None:
            if state["round"] >= cfg.rounds:
                session.stop(STOP_BUDGET)
                break
            number = state["round"] + 1
            current = session.model_of(state["current"])
            analysis = session.analyze(current)
            scores = score_fn(analysis, ScoreContext(model=current, data=data, loss_fn=loss_fn,
                                                     num_batches=cfg.num_batches))
            thresholds = {}
            for g in analysis.groups:
                prunable = list(g.prunable)
                if prunable:
                    s = np.asarray(scores[g.id], dtype=np.float64)[prunable]
                    thresholds[g.id] = float(np.percentile(s, cfg.percentile))
            plan = threshold_plan(analysis, scores, thresholds, cfg.min_channels)
            if not plan:
                session.stop(STOP_NOTHING)
                break
            gm = apply_plan(analysis, plan)
            report = build_report(analysis, plan, gm)
            extra: dict[str, Any] = {}
            if rewind_state is not None:
                index_map = compose_index_map(session.extras[state["current"]].get("index_map", {}),
                                              analysis, plan)
                rewind_weights(gm, rewind_state, index_map)
                extra["index_map"] = index_map
            gm = call_finetune(finetune, gm)
            accuracy = session.measure(gm)
            drop = session.baseline["accuracy"] - accuracy
            accepted = bool(drop <= cfg.tolerance)
            removed = sum(len(c) for c in plan.values())
            alive = sum(len(g.prunable) for g in analysis.groups)
            new_state = {"round": number, "current": number if accepted else state["current"]}
            metrics = {"accuracy": accuracy, "params": count_params(gm), "macs": report.macs_after,
                       "channels_removed": removed, "ratio": removed / alive if alive else 0.0,
                       "groups_pruned": len(plan), "percentile": cfg.percentile, "accepted": accepted}
            session.commit(number, gm, metrics, new_state, best_round=new_state["current"], extra=extra)
            state = new_state
            if not accepted:
                session.stop(STOP_TOLERANCE)
    except KeyboardInterrupt as exc:
        raise session.interrupted() from exc
    finally:
        session.close()
    return session.history
