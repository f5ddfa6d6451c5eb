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

Cost targets with default settings (``params`` / ``macs``; the accuracy
target is unchanged):

* ``lambda0=None`` (the default) chooses the step from the scores: round 1
  finds, on the unpruned model and through costs predicted from shapes, the
  threshold ``T_hit`` at which the reduction would reach ``target_value``, and
  steps by ``T_hit / 4``, so ``T`` climbs to the target in about four rounds
  whatever the scale of the scores.  (For ``target="accuracy"``, ``None``
  means 1.0, the released code's CIFAR-scale value.)
* ``finish_exact=True`` (the default): the last round of the budget prunes
  the current model with the threshold found by bisection (predicted costs)
  that brings the reduction as close to ``target_value`` as one channel allows
  without going beyond it.  So the result lands within one channel step of
  the target, unless ``max_drop`` rejects that round or the schedule stopped
  earlier (``no good checkpoint``).

``faithful_to="code"`` runs the released code's loop instead: round 1 at
``T = lambda0`` with the unpruned model as the first good checkpoint, no stop
when a pop empties the stack, convolutions only (``rank_families``); see
:mod:`fxprune.schedules.reading`.

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
    >>> history = adaptive(model, (torch.randn(2, 8),), target="params", target_value=0.5, progress=False)
    >>> history.best.metrics["params"], history.rounds[0].metrics["params"]   # half is 210; a channel costs 13
    (212, 420)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..analysis.analysis import Analysis
from ..errors import ConfigError
from ..scoring.targets import TargetKind, bisect_plans, shape_costs
from .config import ScheduleConfig, is_number, require
from .engine import Decision, Plan, Policy
from .history import History
from .plans import group_shares, threshold_plan
from .reading import AdaptiveReading, ranked_shares

__all__ = ["AdaptiveConfig", "Adaptive", "adaptive", "TARGETS", "STOP_NO_GOOD"]

TARGETS = ("accuracy", "params", "macs")
#: stop reason: a round failed the target and no good checkpoint was left to restore
STOP_NO_GOOD = "no good checkpoint"


@dataclass(frozen=True, kw_only=True)
class AdaptiveConfig(ScheduleConfig):
    """Settings of :func:`adaptive` (validated on construction; shared fields: :class:`ScheduleConfig`).

    Attributes:
        lambda0: the initial step of ``T`` (> 0; 1.0 CIFAR-scale, 0.1 ImageNet-scale
            in the released code, for activation scores); ``None`` (default): 1.0
            for an accuracy target, chosen from the scores for a cost target
            (a quarter of the threshold that reaches it, see the module docstring).
        rounds: the round budget (>= 0).
        target: ``accuracy``, ``params`` or ``macs``.
        target_value: accuracy: the largest drop in points (>= 0);
            params/macs: the reduction fraction to approach, in (0, 1).
        max_drop: with a params/macs target, also require the accuracy drop to
            stay within this many points (``None``: accuracy is only recorded).
        share: ``params`` or ``macs``: how ``T`` is split among groups.
        finish_exact: with a params/macs target, the last round of the budget
            prunes to the target within one channel step (see the module docstring).
        faithful_to: ``spec`` (methods.md's loop) or ``code`` (the released
            code's; :class:`~fxprune.schedules.reading.AdaptiveReading`).
        rank_families: prune (and share ``T`` among) only the groups whose
            producers come from these rule families; ``None``: the reading's
            default (``spec``: every group, ``code``: ``("conv",)``).
    """

    lambda0: float | None = None
    rounds: int = 20
    target: str = "accuracy"
    target_value: float = 1.0
    max_drop: float | None = None
    share: str = "params"
    finish_exact: bool = True
    faithful_to: AdaptiveReading = AdaptiveReading.SPEC
    rank_families: tuple[str, ...] | None = None

    def validate(self) -> None:
        try:
            object.__setattr__(self, "faithful_to", AdaptiveReading(self.faithful_to))
        except ValueError:
            raise ConfigError(f"faithful_to must be one of {[r.value for r in AdaptiveReading]}, "
                              f"got {self.faithful_to!r}") from None
        if isinstance(self.rank_families, str):
            object.__setattr__(self, "rank_families", (self.rank_families,))
        elif self.rank_families is not None:
            object.__setattr__(self, "rank_families", tuple(self.rank_families))
        require(self.lambda0 is None or is_number(self.lambda0) and self.lambda0 > 0, "lambda0",
                "None or a number > 0", self.lambda0)
        require(isinstance(self.finish_exact, bool), "finish_exact", "True or False", self.finish_exact)
        require(self.target in TARGETS, "target", f"one of {TARGETS}", self.target)
        require(is_number(self.target_value), "target_value", "a number", self.target_value)
        if self.target == "accuracy" and not self.target_value >= 0:
            raise ConfigError(f"with target='accuracy', target_value is the largest accuracy drop "
                              f"in points and must be >= 0, got {self.target_value!r}")
        if self.target != "accuracy" and not 0.0 < self.target_value < 1.0:
            raise ConfigError(f"with target={self.target!r}, target_value is a reduction fraction "
                              f"in (0, 1), got {self.target_value!r}")
        require(self.max_drop is None or is_number(self.max_drop) and self.max_drop >= 0, "max_drop",
                "None or a number >= 0", self.max_drop)
        require(self.share in ("params", "macs"), "share", "'params' or 'macs'", self.share)

    @property
    def needs_accuracy(self) -> bool:
        return self.target == "accuracy" or self.max_drop is not None

    @property
    def size_key(self) -> str:
        """The metric the result minimises: ``macs`` for a MAC target, else ``params``."""
        return "macs" if self.target == "macs" else "params"

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


class Adaptive(Policy):
    """A global threshold ``T`` split among groups, grown on success, backed off on failure."""

    name = "adaptive"
    config_class = AdaptiveConfig
    config: AdaptiveConfig

    def check(self) -> None:
        cfg = self.config
        if cfg.needs_accuracy and self.runtime.evaluate is None:
            raise ConfigError(f"adaptive with target={cfg.target!r}"
                              + (" and max_drop" if cfg.target != "accuracy" else "")
                              + " needs evaluate(gm) -> accuracy")

    def initial_state(self) -> dict[str, Any]:
        lambda0 = self.config.lambda0
        if lambda0 is None and self.config.target == "accuracy":
            lambda0 = 1.0
        # step None: chosen from round 1's scores; reference: the unpruned model's cost (cost targets)
        return {**self.config.faithful_to.initial_state(lambda0), "reference": None}

    def plan(self, analysis: Analysis, scores: Mapping[int, Any], state: Mapping[str, Any]) -> Plan:
        cfg = self.config
        families = cfg.rank_families if cfg.rank_families is not None else cfg.faithful_to.default_families
        shares = ranked_shares(analysis, group_shares(analysis, cfg.share), families)
        if not shares and analysis.groups:
            raise ConfigError(f"adaptive(faithful_to={cfg.faithful_to.value!r}) ranks only the groups of rule "
                              f"families {list(families or ())} and this model has none; name the families "
                              f"to rank with rank_families=(...), e.g. ('linear',)")

        def plan_at(T: float) -> Plan:
            return threshold_plan(analysis, scores, {gid: T * s for gid, s in shares.items()},
                                  self.config.min_channels)

        self._chosen: dict[str, Any] = {}
        if self.config.target == "accuracy":
            return plan_at(float(state["T"]))
        kind = TargetKind(self.config.target)
        cost = shape_costs(analysis)
        reference = state.get("reference")
        if reference is None:  # round 1 prunes the unpruned model
            reference = cost({})[kind]
            self._chosen["reference"] = reference
        budget = (1.0 - self.config.target_value) * reference
        T_max = _top_threshold(scores, shares)
        step = state.get("step")
        if step is None or self._finishing(state):
            # where the reduction goes beyond the target: the plans just below are the answer
            bracket = bisect_plans(plan_at, T_max, lambda p: cost(p)[kind] < budget)
            below = bracket.below if bracket.below is not None else (0.0, {})
            if step is None:
                self._chosen["step"] = max(below[0], T_max * 1e-6) / 4
            if self._finishing(state):
                self._chosen["T"] = below[0]
                return below[1]
        return plan_at(float(state["T"]))

    def _finishing(self, state: Mapping[str, Any]) -> bool:
        """Whether this round is the exact last round of a cost target."""
        return self.config.finish_exact and int(state["round"]) + 1 == self.config.budget

    def decide(self, number: int, metrics: Mapping[str, Any], state: Mapping[str, Any],
               history: History) -> Decision:
        chosen = getattr(self, "_chosen", {})
        T = float(chosen.get("T", state["T"]))
        step = float(chosen["step"] if state["step"] is None else state["step"])
        resets = int(state["resets"])
        reference = chosen.get("reference", state.get("reference"))
        good = [list(g) for g in state["good"]]
        info = {"threshold": T, "step": step, "from_round": state["current"]}
        met = self.config.met(metrics, history.rounds[0].metrics)
        current, stop = state["current"], None
        if met:
            good.append([number, T, step])
            T, resets, current = T + step, 0, number
        elif not good:
            stop = STOP_NO_GOOD
        else:
            r_good, t_good, step_good = good[-1]
            current = int(r_good)
            resets += 1
            if resets == 3:
                step, T, resets = step / 2, float(t_good), 0
                good.pop()
                if not good and self.config.faithful_to.stops_when_popped_empty:
                    stop = STOP_NO_GOOD
            else:
                step = float(step_good) / 2 ** resets
                T = float(t_good) + step
        return Decision(accepted=met, current=current, best_round=self._best(number, met, metrics, history),
                        stop=stop, state={"T": T, "step": step, "resets": resets, "good": good,
                                          "reference": reference},
                        metrics={**info, "next_threshold": T, "next_step": step, "resets": resets,
                                 "good": [int(g[0]) for g in good]})

    def _best(self, number: int, met: bool, metrics: Mapping[str, Any], history: History) -> int:
        """The accepted round with the fewest params (MACs for a MAC target), the latest on ties."""
        key = self.config.size_key
        accepted = [r for r in history.rounds if r.accepted]
        best = min(accepted, key=lambda r: (r.metrics[key], -r.round)).round
        if met and metrics[key] <= history.round(best).metrics[key]:
            best = number
        return best


def _top_threshold(scores: Mapping[int, Any], shares: Mapping[int, float]) -> float:
    """A global threshold at which every group's share of it reaches the group's highest score."""
    tops = [float(np.max(scores[gid])) / s for gid, s in shares.items() if s > 0 and len(scores[gid])]
    return max([t for t in tops if np.isfinite(t)] + [0.0]) * (1 + 1e-9) + 1e-12


def adaptive(model: torch.nn.Module, example_inputs: Sequence[Any], config: AdaptiveConfig | None = None,
             **kwargs: Any) -> History:
    """Prune with an adaptive global threshold (AIAP; see the module docstring for the loop).

    ``kwargs``: runtime arguments (:class:`~fxprune.schedules.engine.Runtime`;
    ``evaluate`` is required for an accuracy target or ``max_drop``, else
    only recorded when given) and settings, the fields of
    :class:`AdaptiveConfig` (``lambda0``, ``rounds``, ``target``,
    ``target_value``, ``max_drop``, ``share``, ``scorer`` ...) applied over
    ``config``; ``analysis_options`` (a dict) is accepted for ``analysis``.

    Returns:
        The :class:`~fxprune.schedules.History`; every round's metrics hold the
        ``threshold`` and ``step`` it used, and ``next_threshold``,
        ``next_step``, ``resets`` and ``good`` (rounds of the good stack) after it.
    """
    return Adaptive.run(model, example_inputs, config, **kwargs)


adaptive.__signature__ = Adaptive.signature()  # type: ignore[attr-defined]
