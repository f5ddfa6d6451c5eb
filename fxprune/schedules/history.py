"""The record of a schedule run: one :class:`RoundRecord` per finished round.

Round 0 is the unpruned baseline (a GraphModule copy of the input model and
its metrics); round ``r >= 1`` is the model after the ``r``-th prune,
rewind and fine-tune, with the metrics measured on it.  Rounds that failed
their schedule's criterion stay in the history (``accepted`` is False) so
they can be inspected; :attr:`History.best` is the round the schedule
returns as its result.

Example:
    >>> import torch, torch.nn as nn
    >>> from fxprune.schedules import one_shot
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> history = one_shot(model, (torch.randn(1, 4),), ratio=0.5, progress=False)
    >>> [r.round for r in history.rounds], history.best.round
    ([0, 1], 1)
    >>> history.graph_module.get_submodule("0").out_features
    4
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import torch
import torch.fx as fx

from ..errors import LoadError
from ..ops.registry import Registry
from .checkpoint import CheckpointStore, SavedRound

__all__ = ["RoundRecord", "History", "ScheduleInterrupted"]


@dataclass(frozen=True, eq=False)
class RoundRecord:
    """One finished round.

    Attributes:
        round: the round number (0 is the unpruned baseline).
        graph_module: the model at the end of the round (after fine-tuning).
        metrics: JSON-serialisable measurements: ``round``, ``accuracy``
            (``None`` without an ``evaluate`` callback), ``drop`` (baseline
            minus accuracy, points), ``params``, ``macs``, ``params_ratio`` and
            ``macs_ratio`` (versus the baseline), ``compression`` (baseline
            params / params), ``channels_removed`` and ``ratio`` (channels
            removed this round / prunable channels before it), ``accepted``,
            plus schedule-specific keys (``percentile``, ``threshold``,
            ``step``, ``resets``, ``good`` ...).
    """

    round: int
    graph_module: fx.GraphModule
    metrics: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))

    @property
    def accepted(self) -> bool:
        """Whether the round met its schedule's criterion."""
        return bool(self.metrics.get("accepted", True))

    @property
    def accuracy(self) -> float | None:
        return self.metrics.get("accuracy")


class ScheduleInterrupted(KeyboardInterrupt):
    """A ``KeyboardInterrupt`` raised during a schedule, carrying the finished rounds.

    The interrupt propagates (so a script stops as usual); catch it to inspect
    what was finished: ``exc.history`` holds every round completed before the
    interrupt (``history.interrupted`` is True).  With a ``checkpoint_dir``
    those rounds are also on disk, and calling the schedule again with the same
    directory resumes after the last of them.
    """

    def __init__(self, history: "History") -> None:
        super().__init__(f"{history.schedule} interrupted after round "
                         f"{history.rounds[-1].round if history.rounds else 'none'}")
        self.history = history


@dataclass(eq=False)
class History:
    """Every finished round of a schedule run, and which one is the result.

    Attributes:
        schedule: ``iterative``, ``adaptive`` or ``one_shot``.
        rounds: the finished rounds, round 0 (baseline) first.
        best_round: the round number of the result (see :attr:`best`).
        stop_reason: why the schedule stopped (``None`` while running).
        interrupted: True if a ``KeyboardInterrupt`` ended the run.
        checkpoint_dir: where rounds are saved, if anywhere.
    """

    schedule: str
    rounds: list[RoundRecord] = field(default_factory=list)
    best_round: int | None = None
    stop_reason: str | None = None
    interrupted: bool = False
    checkpoint_dir: str | None = None

    @property
    def best(self) -> RoundRecord | None:
        """The round the schedule returns (``None`` before the baseline is measured).

        ``iterative``: the last round within tolerance; ``adaptive``: the
        accepted round with the fewest parameters (MACs for a MAC target; the
        latest on ties); ``one_shot``: round 1.
        """
        if self.best_round is None:
            return None
        for r in self.rounds:
            if r.round == self.best_round:
                return r
        return None

    @property
    def graph_module(self) -> fx.GraphModule | None:
        """The resulting model (``history.best.graph_module``)."""
        best = self.best
        return None if best is None else best.graph_module

    @property
    def baseline(self) -> float | None:
        """The accuracy of the unpruned model (round 0)."""
        return self.rounds[0].metrics.get("accuracy") if self.rounds else None

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """The metrics of every round, as plain dicts."""
        return [dict(r.metrics) for r in self.rounds]

    def round(self, number: int) -> RoundRecord:
        """The record of round ``number``."""
        for r in self.rounds:
            if r.round == number:
                return r
        raise KeyError(f"no round {number}; finished rounds: {[r.round for r in self.rounds]}")

    def to_json(self) -> str:
        """The history without models, as JSON."""
        return json.dumps({"schedule": self.schedule, "best_round": self.best_round,
                           "stop_reason": self.stop_reason, "interrupted": self.interrupted,
                           "rounds": self.metrics})

    def plot(self, path: str | Path) -> str:
        """Write accuracy versus compression and MACs over the rounds to ``path`` (a PNG; needs matplotlib).

        See :func:`fxprune.plot.plot_history`; returns the path written.
        """
        from ..plot import plot_history

        return plot_history(self, path)

    def summary(self) -> str:
        """A table of the rounds (``*`` marks the result, ``x`` a rejected round)."""
        lines = [f"{self.schedule}: {len(self.rounds)} rounds, stopped: {self.stop_reason}"
                 + (" (interrupted)" if self.interrupted else ""),
                 f"{'':1} {'round':>5}  {'accuracy':>8}  {'params':>12}  {'macs':>14}  {'compr':>6}"]
        for r in self.rounds:
            m = r.metrics
            acc = "-" if m.get("accuracy") is None else f"{m['accuracy']:.2f}"
            mark = "*" if r.round == self.best_round else (" " if r.accepted else "x")
            lines.append(f"{mark} {r.round:>5}  {acc:>8}  {m.get('params', 0):>12,}  "
                         f"{m.get('macs', 0):>14,}  {m.get('compression', 1.0):>5.2f}x")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"History(schedule={self.schedule!r}, rounds={len(self.rounds)}, "
                f"best_round={self.best_round}, stop_reason={self.stop_reason!r}, "
                f"interrupted={self.interrupted})")

    @classmethod
    def load(cls, checkpoint_dir: str | Path, model: torch.nn.Module, *, registry: Registry | None = None,
             check_weights: bool = True) -> "History":
        """The history saved in ``checkpoint_dir`` by a run on ``model``.

        Nothing is unpickled: every round's model is rebuilt from ``model``
        (the run's original model, or with ``check_weights=False`` any model of
        its architecture) by re-applying the saved plans, and its saved
        tensors are copied in.  ``registry``: the rule registry of the run, if
        it had one.

        Raises:
            LoadError: no checkpoint, or a missing, corrupt, altered or swapped file (named).
            ConfigError: ``model`` differs from the run's model (the message says how).
        """
        saved = CheckpointStore(checkpoint_dir).load(model, registry=registry, check_weights=check_weights)
        if saved is None:
            raise LoadError(f"{checkpoint_dir}: no schedule checkpoint (state.json is missing)")
        header, rounds, _ = saved
        return cls.restore(header, rounds, checkpoint_dir)

    @classmethod
    def restore(cls, header: Mapping[str, Any], rounds: list[SavedRound],
                checkpoint_dir: str | Path | None = None) -> "History":
        """The history of a checkpoint's header and rounds (see :meth:`CheckpointStore.load`)."""
        return cls(header["schedule"], [RoundRecord(*r) for r in rounds], header.get("best_round"),
                   header.get("stop_reason"), bool(header.get("interrupted", False)),
                   None if checkpoint_dir is None else str(checkpoint_dir))
