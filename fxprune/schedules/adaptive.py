"""Adaptive iterative pruning (AIAP): a growing global threshold with back-off.

The loop of methods.md section 3, round by round (``T`` the threshold,
``step`` its increment, ``good`` the stack of good checkpoints)::

    T = 0; step = lambda0; good = []; resets = 0
    each round r (from the current model):
        T_l = T * share_l            # share of group l: its producers' alive params
                                     # (or MACs) / those of all groups
        prune channels with score <= T_l; rewind (optional); fine-tune; measure
        if the target is met: good.append((r, T, step)); T += step; resets = 0
                              (round r's model becomes the current model)
        else:                 restore good[-1] = (r_g, T_good, step_good)
                              (round r_g's model becomes the current model)
                              resets += 1
                              if resets == 3: step /= 2; T = T_good; good.pop(); resets = 0
                              else:           step = step_good / 2**resets; T = T_good + step
        stop when good is empty (after a failure) or the round budget is spent

Reading of the open points (the defaults):

* ``good`` records the threshold ``T_good`` that *produced* the good model
  (the value before ``T += step``); otherwise a back-off would retry a
  threshold above the one that just failed.
* after three resets the model stays the restored (popped) checkpoint and is
  pruned again at ``T_good`` with the halved step; ``good`` then holds the
  checkpoints before it, which later failures fall back to.
* a failure with ``good`` empty (including round 1) stops the schedule.
* a *layer* is a coupled group; ``share="params"`` uses the parameter count of
  the group's producer tensors, ``share="macs"`` the MACs of the nodes that
  apply them.
* targets: ``accuracy``: met while ``baseline - accuracy <= target_value``
  points; ``params`` / ``macs``: met while the reduction (1 - after/before)
  stays ``<= target_value`` (so ``T`` climbs up to the requested reduction and
  the result is the most reduced model not beyond it), and, with ``max_drop``,
  while the accuracy drop stays within ``max_drop`` points.
* the result (:attr:`History.best`) is the accepted round with the fewest
  parameters (MACs for a MAC target), the latest on ties.

Example:
    >>> import torch, torch.nn as nn
    >>> from fxprune.schedules import adaptive
    >>> model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    >>> history = adaptive(model, (torch.randn(2, 8),), target="params", target_value=0.5,
    ...                    lambda0=1.0, rounds=8, progress=False)
    >>> 0.0 < 1 - history.best.metrics["params_ratio"] <= 0.5
    True
    >>> [round(r.metrics["threshold"], 3) for r in history.rounds[1:4]]
    [0.0, 1.0, 2.0]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

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
    group_shares,
    jsonable,
    rewind_weights,
    threshold_plan,
)
from .history import History

__all__ = ["AdaptiveConfig", "adaptive", "TARGETS", "STOP_NO_GOOD"]

TARGETS = ("accuracy", "params", "macs")
#: stop reason: a round failed the target and no good checkpoint was left to restore
STOP_NO_GOOD = "no good checkpoint"


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass(frozen=True)
class AdaptiveConfig:
    """Settings of :func:`adaptive` (validated on construction).

    Attributes:
        scorer, scorer_params: the scorer (``activation`` for AIAP).
        lambda0: the initial step of ``T`` (> 0; 1.0 CIFAR-scale, 0.1 ImageNet-scale
            in the released code, for activation scores).
        rounds: the round budget (>= 0).
        target: ``accuracy``, ``params`` or ``macs``.
        target_value: accuracy: the largest drop in points (>= 0);
            params/macs: the reduction fraction to approach, in (0, 1).
        max_drop: with a params/macs target, also require the accuracy drop to
            stay within this many points (``None``: accuracy is only recorded).
        share: ``params`` or ``macs``: how ``T`` is split among groups.
        min_channels: channels every group keeps at least (>= 1).
        num_batches: calibration batches for data-driven scorers.
        analysis_options: keyword arguments of :func:`fxprune.analyze`.
    """

    scorer: Any = "l1"
    scorer_params: Mapping[str, Any] = field(default_factory=frozen_mapping)
    lambda0: float = 1.0
    rounds: int = 20
    target: str = "accuracy"
    target_value: float = 1.0
    max_drop: float | None = None
    share: str = "params"
    min_channels: int = 1
    num_batches: int | None = None
    analysis_options: Mapping[str, Any] = field(default_factory=frozen_mapping)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scorer_params", frozen_mapping(self.scorer_params))
        object.__setattr__(self, "analysis_options", frozen_mapping(check_analysis_options(self.analysis_options)))
        if not _number(self.lambda0) or not self.lambda0 > 0:
            raise ConfigError(f"lambda0 must be a number > 0, got {self.lambda0!r}")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 0:
            raise ConfigError(f"rounds must be an integer >= 0, got {self.rounds!r}")
        if self.target not in TARGETS:
            raise ConfigError(f"target must be one of {TARGETS}, got {self.target!r}")
        if not _number(self.target_value):
            raise ConfigError(f"target_value must be a number, got {self.target_value!r}")
        if self.target == "accuracy" and not self.target_value >= 0:
            raise ConfigError(f"with target='accuracy', target_value is the largest accuracy drop "
                              f"in points and must be >= 0, got {self.target_value!r}")
        if self.target != "accuracy" and not 0.0 < self.target_value < 1.0:
            raise ConfigError(f"with target={self.target!r}, target_value is a reduction fraction "
                              f"in (0, 1), got {self.target_value!r}")
        if self.max_drop is not None and (not _number(self.max_drop) or not self.max_drop >= 0):
            raise ConfigError(f"max_drop must be None or a number >= 0, got {self.max_drop!r}")
        if self.share not in ("params", "macs"):
            raise ConfigError(f"share must be 'params' or 'macs', got {self.share!r}")
        if isinstance(self.min_channels, bool) or not isinstance(self.min_channels, int) or self.min_channels < 1:
            raise ConfigError(f"min_channels must be an integer >= 1, got {self.min_channels!r}")
        if self.num_batches is not None and (not isinstance(self.num_batches, int) or self.num_batches < 1):
            raise ConfigError(f"num_batches must be None or an integer >= 1, got {self.num_batches!r}")

    @property
    def needs_accuracy(self) -> bool:
        return self.target == "accuracy" or self.max_drop is not None

    def fingerprint(self, **extra: Any) -> dict[str, Any]:
        """The settings a resumed run must share (everything but the round budget)."""
        out = {k: jsonable(getattr(self, k)) for k in self.__dataclass_fields__ if k != "rounds"}
        out.update(jsonable(extra))
        return out

    def met(self, metrics: Mapping[str, Any], baseline: Mapping[str, Any]) -> bool:
        """Whether a round's metrics meet the target."""
        ok = True
        if self.needs_accuracy:
            limit = self.target_value if self.target == "accuracy" else self.max_drop
            ok = bool(float(baseline["accuracy"]) - float(metrics["accuracy"]) <= limit)
        if self.target in ("params", "macs"):
            before = baseline[self.target]
            reduction = 1.0 - metrics[self.target] / before if before else 0.0
            ok = ok and reduction <= self.target_value + 1e-12
        return ok


def _best_round(history: History, key: str) -> int:
    accepted = [r for r in history.rounds if r.accepted]
    return min(accepted, key=lambda r: (r.metrics[key], -r.round)).round


def adaptive(
    model: torch.nn.Module,
    example_inputs: Sequence[Any],
    *,
    scorer: Any = "l1",
    scorer_params: Mapping[str, Any] | None = None,
    lambda0: float = 1.0,
    rounds: int = 20,
    target: str = "accuracy",
    target_value: float = 1.0,
    max_drop: float | None = None,
    share: str = "params",
    finetune: Callable[[fx.GraphModule], Any] | None = None,
    evaluate: Callable[[fx.GraphModule], float] | None = None,
    rewind_state: Mapping[str, torch.Tensor] | None = None,
    data: Any = None,
    loss_fn: Callable[..., Any] | None = None,
    num_batches: int | None = None,
    min_channels: int = 1,
    analysis_options: Mapping[str, Any] | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
) -> History:
    """Prune with an adaptive global threshold (AIAP; see the module docstring for the loop).

    Args:
        model, example_inputs: the model to prune (never modified) and its inputs.
        scorer, scorer_params: the scorer (``activation`` for AIAP).
        lambda0: the initial step of the threshold.
        rounds: the round budget.
        target, target_value, max_drop: what "the target is met" means (see
            :class:`AdaptiveConfig`).
        share: ``params`` or ``macs``: each group's share of the threshold.
        finetune: ``finetune(gm) -> gm`` after each prune (``None`` return: in place).
        evaluate: ``evaluate(gm) -> accuracy`` in percent; required for an
            accuracy target or ``max_drop``, else only recorded when given.
        rewind_state: a state_dict of the original model to rewind surviving
            weights to after each prune (LTH); ``None``: plain fine-tuning.
        data, loss_fn, num_batches: calibration inputs of data-driven scorers.
        min_channels: channels every group keeps at least.
        analysis_options: keyword arguments of :func:`fxprune.analyze`.
        checkpoint_dir: save every finished round there and resume from it.
        progress: show a progress bar.

    Returns:
        The :class:`~fxprune.schedules.History`; every round's metrics hold the
        ``threshold`` and ``step`` it used, and ``next_threshold``,
        ``next_step``, ``resets`` and ``good`` (rounds of the good stack) after it.

    Raises:
        ScheduleInterrupted: on ``KeyboardInterrupt``; carries the finished rounds.
        ConfigError: invalid settings, or a checkpoint written with other settings.
    """
    cfg = AdaptiveConfig(scorer, scorer_params, lambda0, rounds, target, target_value, max_drop,
                         share, min_channels, num_batches, analysis_options)
    if cfg.needs_accuracy and evaluate is None:
        raise ConfigError(f"adaptive with target={cfg.target!r}"
                          + (" and max_drop" if cfg.target != "accuracy" else "")
                          + " needs evaluate(gm) -> accuracy")
    score_fn = get_scorer(cfg.scorer, **dict(cfg.scorer_params))
    size_key = "macs" if cfg.target == "macs" else "params"
    session = Session("adaptive", cfg.fingerprint(rewind=rewind_state is not None), model,
                      tuple(example_inputs) if not isinstance(example_inputs, torch.Tensor)
                      else (example_inputs,), dict(cfg.analysis_options), evaluate, checkpoint_dir,
                      progress, cfg.rounds)
    try:
        state = session.start({"round": 0, "current": 0, "T": 0.0, "step": float(cfg.lambda0),
                               "resets": 0, "good": []})
        session.reopen_if_budget_grew(state["round"])
        while session.history.stop_reason is None:
            if state["round"] >= cfg.rounds:
                session.stop(STOP_BUDGET)
                break
            number = state["round"] + 1
            T, step, resets = float(state["T"]), float(state["step"]), int(state["resets"])
            good = [list(g) for g in state["good"]]
            current = session.model_of(state["current"])
            analysis = session.analyze(current)
            scores = score_fn(analysis, ScoreContext(model=current, data=data, loss_fn=loss_fn,
                                                     num_batches=cfg.num_batches))
            shares = group_shares(analysis, cfg.share)
            plan = threshold_plan(analysis, scores, {gid: T * s for gid, s in shares.items()},
                                  cfg.min_channels)
            gm = apply_plan(analysis, plan)
            report = build_report(analysis, plan, gm)
            extra: dict[str, Any] = {}
            if rewind_state is not None:
                index_map = compose_index_map(session.extras[state["current"]].get("index_map", {}),
                                              analysis, plan)
                rewind_weights(gm, rewind_state, index_map)
                extra["index_map"] = index_map
            gm = call_finetune(finetune, gm)
            removed = sum(len(c) for c in plan.values())
            alive = sum(len(g.prunable) for g in analysis.groups)
            metrics: dict[str, Any] = {
                "accuracy": session.measure(gm), "params": count_params(gm), "macs": report.macs_after,
                "channels_removed": removed, "ratio": removed / alive if alive else 0.0,
                "groups_pruned": len(plan), "threshold": T, "step": step, "from_round": state["current"]}
            met = cfg.met(metrics, session.baseline)
            current_round = state["current"]
            stop = None
            if met:
                good.append([number, T, step])
                T, resets, current_round = T + step, 0, number
            elif not good:
                stop = STOP_NO_GOOD
            else:
                r_good, t_good, step_good = good[-1]
                current_round = int(r_good)
                resets += 1
                if resets == 3:
                    step, T, resets = step / 2, float(t_good), 0
                    good.pop()
                    if not good:
                        stop = STOP_NO_GOOD
                else:
                    step = float(step_good) / 2 ** resets
                    T = float(t_good) + step
            metrics.update({"accepted": met, "next_threshold": T, "next_step": step, "resets": resets,
                            "good": [int(g[0]) for g in good]})
            new_state = {"round": number, "current": current_round, "T": T, "step": step,
                         "resets": resets, "good": good}
            best = _best_round(session.history, size_key)
            if met:
                base = session.history.round(best).metrics[size_key]
                best = number if metrics[size_key] <= base else best
            session.commit(number, gm, metrics, new_state, best_round=best, extra=extra)
            state = new_state
            if stop is not None:
                session.stop(stop)
    except KeyboardInterrupt as exc:
        raise session.interrupted() from exc
    finally:
        session.close()
    return session.history
