"""One schedule run's bookkeeping: baseline, finished rounds, checkpoints, resume, progress.

A :class:`Session` measures the baseline (round 0), re-analyses models,
commits finished rounds to the :class:`~.history.History` and to the
checkpoint directory, resumes from it and shows progress.  The round loop
that uses it is :mod:`fxprune.schedules.engine`.

Example:
    >>> import torch, torch.nn as nn
    >>> from fxprune.schedules.session import Session
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> s = Session(schedule="demo", fingerprint={}, model=model, example_inputs=(torch.randn(1, 4),),
    ...             progress=False, budget=1)
    >>> s.start({"round": 0})
    {'round': 0}
    >>> s.history.rounds[0].metrics["params"], s.history.best_round
    (58, 0)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.fx as fx

from ..analysis.analysis import Analysis, AnalysisConfig, analyze
from ..analysis.cost import count_macs, count_params
from ..errors import ConfigError
from ..ops.registry import Registry
from ..progress import Progress
from ..rewrite.record import RewriteRecord
from .checkpoint import CheckpointStore, RoundSource
from .config import jsonable
from .history import History, RoundRecord, ScheduleInterrupted

__all__ = ["Session", "STOP_BUDGET"]

#: stop reason when the round budget is spent (a resumed run with a larger budget goes on)
STOP_BUDGET = "budget"


def round_postfix(metrics: Mapping[str, Any]) -> dict[str, str]:
    """What the progress display shows of a round's metrics."""
    acc = "-" if metrics.get("accuracy") is None else f"{metrics['accuracy']:.2f}"
    info = {"acc": acc, "params": f"{metrics.get('params_ratio', 1.0):.1%}",
            "macs": f"{metrics.get('macs_ratio', 1.0):.1%}"}
    if "threshold" in metrics:
        info["T"] = f"{metrics['threshold']:.4g}"
    if not metrics.get("accepted", True):
        info["rejected"] = "yes"
    return info


@dataclass(kw_only=True)
class Session:
    """One schedule run: baseline, rounds, checkpoints, resume, progress.

    Attributes:
        schedule: the schedule's name.
        fingerprint: the settings a resumed run must share (saved as the
            header's ``config``; the round budget is not part of it, so a
            resumed run may extend it).
        model, example_inputs: the input model and its example inputs.
        analysis: the analysis options; ``registry``: the rule registry (``None``: default).
        evaluate: ``evaluate(gm) -> accuracy`` (may be ``None``).
        checkpoint_dir: where to save rounds (``None``: nowhere).
        progress: show progress.
        budget: the number of pruning rounds allowed (for the progress display).
    """

    schedule: str
    fingerprint: dict[str, Any]
    model: torch.nn.Module
    example_inputs: tuple
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    registry: Registry | None = None
    evaluate: Callable[[fx.GraphModule], float] | None = None
    checkpoint_dir: str | Path | None = None
    progress: bool = True
    budget: int = 1

    def __post_init__(self) -> None:
        self.history = History(self.schedule, checkpoint_dir=None if self.checkpoint_dir is None
                               else str(self.checkpoint_dir))
        self.store = None if self.checkpoint_dir is None else CheckpointStore(self.checkpoint_dir)
        self.extras: dict[int, dict[str, Any]] = {}
        self.state: dict[str, Any] = {}
        self._progress: Progress | None = None

    # -- helpers for the engine ------------------------------------------------
    def analyze(self, model: torch.nn.Module) -> Analysis:
        return analyze(model, self.example_inputs, self.analysis, registry=self.registry)

    def measure(self, gm: torch.nn.Module, number: int = 0) -> float | None:
        """``evaluate(gm)`` as a float (``None`` without ``evaluate``).

        Raises:
            ConfigError: ``evaluate`` returned ``None``, a non-number or a NaN/infinity.
        """
        if self.evaluate is None:
            return None
        value = self.evaluate(gm)
        try:
            accuracy = None if isinstance(value, (str, bytes, bool)) else float(value)
        except (TypeError, ValueError, RuntimeError):
            accuracy = None
        if accuracy is None or not math.isfinite(accuracy):
            raise ConfigError(f"evaluate returned {value!r} for round {number}; it must return the accuracy "
                              "in percent as a finite number")
        return accuracy

    @property
    def baseline(self) -> dict[str, Any]:
        return dict(self.history.rounds[0].metrics)

    def model_of(self, number: int) -> fx.GraphModule:
        return self.history.round(number).graph_module

    # -- lifecycle -----------------------------------------------------------
    def start(self, initial_state: dict[str, Any]) -> dict[str, Any]:
        """Resume from the checkpoint directory, or measure the baseline; returns the state."""
        header = self.store.header() if self.store is not None else None
        if header is not None:
            self._check_header(header)
            header, rounds, extras = self.store.load(self.model, example_inputs=self.example_inputs,
                                                     registry=self.registry, progress=self.progress)
            self.history = History.restore(header, rounds, self.checkpoint_dir)
            self.extras = extras
            self.state = header["state"]
            self._progress = self._display(initial=len(rounds) - 1)
            self._progress.message(f"resumed from {self.checkpoint_dir} after round {rounds[-1][0]}")
            return self.state
        self._progress = self._display()
        analysis = self.analyze(self.model)
        if self.store is not None:
            self.store.start(analysis)
        record = RewriteRecord()
        gm0 = record.emit(analysis)  # an independent GraphModule copy of the model
        accuracy = self.measure(gm0)
        metrics = {"params": count_params(gm0), "macs": count_macs(analysis.graph_module, analysis.registry),
                   "accuracy": accuracy, "drop": 0.0 if accuracy is not None else None,
                   "channels_removed": 0, "ratio": 0.0, "accepted": True}
        self.commit(0, gm0, metrics, dict(initial_state), best_round=0, extra={"index_map": {}},
                    source=RoundSource.of(None, record, analysis))
        return self.state

    def _display(self, initial: int = 0) -> Progress:
        return Progress(self.schedule, self.budget, enabled=self.progress, initial=initial, unit="round")

    def _check_header(self, header: dict[str, Any]) -> None:
        where = f"checkpoint directory {self.checkpoint_dir}"
        if header.get("schedule") != self.schedule:
            raise ConfigError(f"{where} holds a {header.get('schedule')!r} run, not {self.schedule!r}; "
                              "use another directory")
        old = header.get("config", {})
        new = jsonable(self.fingerprint)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            details = "; ".join(f"{k}: saved {old.get(k)!r}, now {new.get(k)!r}" for k in diff)
            raise ConfigError(f"{where} was written with other settings ({details}); "
                              "use the same settings to resume, or another directory")

    def commit(self, number: int, gm: torch.nn.Module, metrics: dict[str, Any], state: dict[str, Any],
               *, best_round: int | None, extra: dict[str, Any] | None = None,
               source: RoundSource | None = None) -> RoundRecord:
        """Record a finished round: complete its metrics, save it, then append it.

        ``source`` (how the round's model was made) is saved with it; a
        checkpointed run needs it.
        """
        metrics = dict(metrics)
        metrics["round"] = number
        base = metrics if number == 0 else self.baseline
        params = int(metrics["params"])
        macs = int(metrics["macs"])
        metrics["params_ratio"] = params / base["params"] if base["params"] else 1.0
        metrics["macs_ratio"] = macs / base["macs"] if base["macs"] else 1.0
        metrics["compression"] = base["params"] / params if params else float("inf")
        if number > 0 and metrics.get("accuracy") is not None and base.get("accuracy") is not None:
            metrics["drop"] = float(base["accuracy"]) - float(metrics["accuracy"])
        metrics = jsonable(metrics)
        extra = dict(extra or {})
        if self.store is not None:
            header = self._header(state, best_round, stop_reason=None,
                                  rounds=[r.round for r in self.history.rounds] + [number])
            if source is None:
                raise ConfigError(f"round {number} cannot be checkpointed without its source (how it was made)")
            self.store.save_round(number, gm, metrics, extra, header, source)
        record = RoundRecord(number, gm, metrics)
        self.history.rounds.append(record)
        self.history.best_round = best_round
        self.extras[number] = extra
        self.state = state
        if self._progress is not None:
            self._progress.update(1 if number > 0 else 0, postfix=round_postfix(metrics))
        return record

    def _header(self, state: dict[str, Any], best_round: int | None, stop_reason: str | None,
                rounds: list[int] | None = None) -> dict[str, Any]:
        return {"schedule": self.schedule, "config": jsonable(self.fingerprint),
                "rounds": rounds if rounds is not None else [r.round for r in self.history.rounds],
                "state": jsonable(state), "best_round": best_round, "stop_reason": stop_reason}

    def stop(self, reason: str, best_round: int | None = None) -> None:
        """Mark the run finished (saved, so a later call returns at once)."""
        if best_round is not None:
            self.history.best_round = best_round
        self.history.stop_reason = reason
        if self.store is not None:
            self.store.save_header(self._header(self.state, self.history.best_round, reason))
        if self._progress is not None:
            self._progress.message(f"stopped ({reason}); result: round {self.history.best_round}")

    def reopen_if_budget_grew(self, rounds_done: int) -> None:
        """A run stopped by its round budget goes on when called with a larger one."""
        if self.history.stop_reason == STOP_BUDGET and rounds_done < self.budget:
            self.history.stop_reason = None

    def interrupted(self) -> ScheduleInterrupted:
        self.history.interrupted = True
        self.history.stop_reason = "interrupted"
        return ScheduleInterrupted(self.history)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.close()
