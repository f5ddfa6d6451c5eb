"""The methods of the seeds benchmark, each run through its shipped recipe, and the matched comparison.

Three ways of running a method:

* ``iterative`` (ILP, IAP): the recipe with its tolerance switched off
  (``tolerance=100``) for the whole round budget; the method's result is the
  schedule's own rule applied to the validation accuracies (the last round
  before the first round more than 1 point below the baseline), which is the
  model ``tolerance=1.0`` returns, because no round depends on later ones.
  The rounds after it continue the same path, so the matched comparison can
  read the accuracy at a compression the 1-point result does not reach.
* ``adaptive`` (AIAP and its ``faithful_to="code"`` variant): the recipe as
  is (accuracy target 1 point, decided on validation); its result is the
  schedule's.  For the matched comparison a second run with a parameter
  target (``target="params"``, ``target_value = 1 - 1/match``) prunes to the
  matched size with the same round budget.
* ``sweep`` (HAP, with or without Neural Implant): one independent one-shot
  run from the baseline per ratio; the result is the most compressed ratio
  within 1 point on validation.

Matched compression: the test accuracy at ``match`` x compression,
interpolated linearly in log-compression between the two models of a run's
path that bracket it (ILP/IAP: consecutive rounds; HAP: consecutive ratios);
AIAP's is its parameter-target run's result, at the compression it reached.

Example:
    >>> interpolate([{"compression": 1.0, "test": 98.0}, {"compression": 4.0, "test": 96.0}], 2.0)
    97.0
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import torch.nn as nn
import torch.nn.functional as F

import fxprune
from fxprune.schedules import AdaptiveConfig
from seeds_common import TOLERANCE, Budget, Trainer

__all__ = ["METHODS", "Method", "Outcome", "interpolate", "run_method"]

NO_STOP = 100.0  # an iterative tolerance no drop exceeds: the whole round budget runs


@dataclass(frozen=True)
class Method:
    """A method of the table: how it runs (``iterative``, ``adaptive``, ``sweep``) and its recipe overrides."""

    name: str
    kind: str
    recipe: str
    overrides: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    label: str = ""


_LOWRANK = {"rank_families": None, "implant_kind": "lowrank", "implant_families": ("conv", "linear"),
            "implant_rank": 2}
METHODS: Mapping[str, Method] = MappingProxyType({m.name: m for m in (
    Method("ILP", "iterative", "l1", label="l1"),
    Method("IAP", "iterative", "iap", label="iap"),
    Method("AIAP", "adaptive", "aiap", label="aiap (spec)"),
    Method("AIAP-code", "adaptive", "aiap", MappingProxyType({"faithful_to": "code"}), "aiap faithful_to=code"),
    Method("HAP", "sweep", "hap", label="hap (sweep)"),
    # the authors' implant setting: the recipe as shipped, ranking the convolutions only (a global ranking
    # of every group leaves LeNet-5's 22 conv channels so few below the threshold that 10% of them
    # rounds to no implant at all); HAP-conv is the same ranking without implants, its comparator
    Method("HAP-conv", "sweep", "hap", MappingProxyType({"rank_families": ("conv",)}), "hap rank_families=conv"),
    Method("HAP+NI-pw", "sweep", "hap_implant", label="hap_implant pointwise"),
    Method("HAP+NI-lr", "sweep", "hap_implant", MappingProxyType(_LOWRANK), "hap_implant lowrank r=2"),
)})


@dataclass
class Outcome:
    """One method's run on one seed."""

    method: str
    label: str
    curve: list[dict] = field(default_factory=list)   # points: round, params, compression, macs_red, val, test, accepted
    result: int = 0                                   # index of the result in ``curve``
    matched: dict | None = None                       # compression, test, how
    rounds: int = 0
    epochs: int = 0                                   # fine-tuning epochs spent for the result
    stop: str = ""
    wall: float = 0.0

    @property
    def best(self) -> dict:
        return self.curve[self.result]


def interpolate(path: list[dict], target: float) -> float | None:
    """Test accuracy at ``target`` compression along ``path``, linear in log-compression (``None``: not reached)."""
    for a, b in zip(path, path[1:]):
        lo, hi = a["compression"], b["compression"]
        if lo <= target <= hi and hi > lo:
            w = (math.log(target) - math.log(lo)) / (math.log(hi) - math.log(lo))
            return a["test"] + w * (b["test"] - a["test"])
    exact = [p["test"] for p in path if abs(p["compression"] - target) < 1e-9]
    return exact[0] if exact else None


def _point(metrics: Mapping[str, Any], gm: nn.Module, trainer: Trainer, **extra: Any) -> dict:
    return {"round": metrics["round"], "params": metrics["params"], "compression": metrics["compression"],
            "macs_red": 1.0 / metrics["macs_ratio"], "val": metrics["accuracy"], "test": trainer.test(gm),
            "accepted": bool(metrics.get("accepted", True)), **extra}


def _run(method: Method, model: nn.Module, example: tuple, trainer: Trainer, progress: bool,
         **overrides: Any):
    recipe = fxprune.recipe(method.recipe)
    if trainer.budget.max_probes is not None and "max_probes" in recipe.scorer_params:
        overrides["scorer_params"] = {**recipe.scorer_params, "max_probes": trainer.budget.max_probes,
                                      "warn_error": None}
    return recipe.run(model, example, evaluate=trainer.evaluate, finetune=trainer.finetune,
                      data=trainer.calibration(), loss_fn=F.cross_entropy, progress=progress,
                      **{**method.overrides, **overrides})


def _iterative(method: Method, model: nn.Module, example: tuple, trainer: Trainer, budget: Budget,
               stream: int, progress: bool) -> Outcome:
    trainer.reset(stream)
    history = _run(method, model, example, trainer, progress, rounds=budget.rounds, tolerance=NO_STOP)
    out = Outcome(method.name, method.label, [_point(r.metrics, r.graph_module, trainer) for r in history.rounds])
    base = out.curve[0]["val"]
    fail = next((i for i, p in enumerate(out.curve) if base - p["val"] > TOLERANCE + 1e-9), None)
    for i, p in enumerate(out.curve):
        p["accepted"] = fail is None or i < fail
    out.result = len(out.curve) - 1 if fail is None else fail - 1
    out.rounds = len(out.curve) - 1 if fail is None else fail
    out.epochs = out.rounds * budget.ft_epochs
    out.stop = f"tolerance, round {fail}" if fail is not None else history.stop_reason
    test = interpolate(out.curve, budget.match)
    out.matched = None if test is None else {"compression": budget.match, "test": test, "how": "interpolated"}
    return out


def _adaptive(method: Method, model: nn.Module, example: tuple, trainer: Trainer, budget: Budget,
              stream: int, progress: bool) -> Outcome:
    trainer.reset(stream)
    history = _run(method, model, example, trainer, progress, rounds=budget.aiap_rounds)
    out = Outcome(method.name, method.label, [_point(r.metrics, r.graph_module, trainer) for r in history.rounds],
                  rounds=len(history.rounds) - 1, epochs=trainer.epochs_spent, stop=history.stop_reason)
    out.result = [r.round for r in history.rounds].index(history.best.round)
    # the matched size: a parameter target (1 - 1/match) with the same round budget, accuracy only recorded
    trainer.reset(stream)
    target = {"target": "params", "target_value": 1.0 - 1.0 / budget.match}
    if "finish_exact" in AdaptiveConfig.field_names():   # the step chosen from the scores for a cost target
        target["lambda0"] = None
    sized = _run(method, model, example, trainer, progress, rounds=budget.aiap_rounds, **target)
    best = _point(sized.best.metrics, sized.graph_module, trainer)
    out.matched = {"compression": best["compression"], "test": best["test"], "how": "params target"}
    return out


def _sweep(method: Method, model: nn.Module, example: tuple, trainer: Trainer, budget: Budget,
           stream: int, progress: bool) -> Outcome:
    out = Outcome(method.name, method.label, stop="swept")
    for k, ratio in enumerate(budget.hap_ratios):
        trainer.reset(stream, ft_epochs=budget.hap_epochs)   # every one-shot run: the same fine-tuning
        history = _run(method, model, example, trainer, progress, ratio=ratio)
        if not out.curve:
            out.curve.append(_point(history.rounds[0].metrics, history.rounds[0].graph_module, trainer))
        m = history.rounds[1].metrics
        point = _point(m, history.graph_module, trainer, ratio=ratio,
                       implanted=int(m.get("channels_implanted", 0)))
        point["round"] = k + 1
        point["accepted"] = out.curve[0]["val"] - point["val"] <= TOLERANCE + 1e-9
        out.curve.append(point)
    ok = [i for i, p in enumerate(out.curve) if p["accepted"]]
    out.result = max(ok, key=lambda i: (out.curve[i]["compression"], i))
    out.rounds = len(budget.hap_ratios)
    out.epochs = budget.hap_epochs                 # the result is one prune and one fine-tuning
    test = interpolate(out.curve, budget.match)
    out.matched = None if test is None else {"compression": budget.match, "test": test, "how": "interpolated"}
    return out


_RUNNERS = {"iterative": _iterative, "adaptive": _adaptive, "sweep": _sweep}


def run_method(method: Method, model: nn.Module, example: tuple, trainer: Trainer, budget: Budget,
               stream: int, progress: bool = False) -> Outcome:
    """Run ``method`` from the trained ``model`` (never modified); test accuracies are measured at the end."""
    t0 = time.perf_counter()
    out = _RUNNERS[method.kind](method, model, example, trainer, budget, stream, progress)
    out.wall = time.perf_counter() - t0
    return out
