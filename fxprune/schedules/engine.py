"""The schedule engine: one round loop, with schedules as small policies on top.

:meth:`Policy.run` owns a run's lifecycle (a :class:`~.session.Session`:
baseline, resume, checkpoints, progress, ``KeyboardInterrupt``) and the body of
every round::

    analyse the current model -> score -> policy.plan -> policy.rewrite (apply)
    -> rewind (optional) -> finetune -> measure -> policy.decide -> commit

A schedule is a :class:`Policy` subclass: its ``name``, its settings class
(a :class:`~.config.ScheduleConfig`), :meth:`Policy.plan` (which channels go
this round) and, optionally, :meth:`Policy.decide` (accept the round or not,
what the next round starts from, whether to stop, the policy's own state).
``iterative``, ``adaptive`` and ``one_shot`` are written this way.

Example (each round removes the lower-scoring half of every group):
    >>> import dataclasses, torch, torch.nn as nn
    >>> from fxprune.schedules import Policy, ScheduleConfig
    >>> from fxprune.scoring import SelectionConfig, select_plan
    >>> @dataclasses.dataclass(frozen=True, kw_only=True)
    ... class HalvingConfig(ScheduleConfig):
    ...     rounds: int = 2
    >>> class Halving(Policy):
    ...     name, config_class = "halving", HalvingConfig
    ...     def plan(self, analysis, scores, state):
    ...         return select_plan(analysis, scores, SelectionConfig(ratio=0.5))
    >>> model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> history = Halving.run(model, (torch.randn(1, 4),), progress=False)
    >>> [r.graph_module.get_submodule("0").out_features for r in history.rounds], history.stop_reason
    ([16, 8, 4], 'budget')
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
import torch.fx as fx

from ..analysis.analysis import Analysis, AnalysisConfig, unknown_names
from ..analysis.cost import count_params
from ..errors import ConfigError
from ..ops.registry import Registry
from ..report import build_report
from ..rewrite.channels import apply_plan
from ..rewrite.record import RewriteRecord
from ..scoring import ScoreContext, get_scorer
from ..scoring.select import SelectionConfig, uniform_plan
from ..serialize.fingerprint import Fingerprint
from .checkpoint import RoundSource
from .config import ScheduleConfig
from .history import History
from .rewind import check_rewind_state, compose_index_map, rewind_weights
from .session import STOP_BUDGET, Session

__all__ = ["Policy", "Decision", "Runtime", "RUNTIME", "STOP_NOTHING"]

#: stop reason of a policy with ``stops_when_nothing_to_prune``: its plan was empty
STOP_NOTHING = "nothing to prune"

Plan = dict[int, list[int]]


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """What a run needs besides its settings: callbacks, data and where to save.

    Attributes:
        evaluate: ``evaluate(gm) -> accuracy`` in percent, called on the
            unpruned model (round 0) and once per round after fine-tuning.
        finetune: ``finetune(gm) -> gm`` after each prune; it may train ``gm``
            in place and return it or ``None``. ``None``: no fine-tuning.
        data, loss_fn: calibration batches and loss of data-driven scorers.
        rewind_state: a state_dict of the original model to rewind surviving
            weights to after each prune (lottery tickets); ``None``: no rewinding.
        checkpoint_dir: save every finished round there and resume from it.
        progress: show progress (tqdm if installed, else stderr lines).
        registry: the rule registry of the analyses (``None``: the default).
    """

    evaluate: Callable[[fx.GraphModule], float] | None = None
    finetune: Callable[[fx.GraphModule], Any] | None = None
    data: Any = None
    loss_fn: Callable[..., Any] | None = None
    rewind_state: Mapping[str, torch.Tensor] | None = None
    checkpoint_dir: str | Path | None = None
    progress: bool = True
    registry: Registry | None = None


#: the names of the runtime arguments
RUNTIME = tuple(f.name for f in fields(Runtime))


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What a policy decides after a round (see :meth:`Policy.decide`).

    Attributes:
        accepted: whether the round met the policy's criterion.
        current: the round whose model the next round prunes (``None``: this
            round if accepted, else the one this round started from).
        best_round: the result so far (``None``: ``current``).
        stop: a stop reason, or ``None`` to go on.
        state: the policy's own state after the round (JSON values; saved with
            checkpoints and given back to the next round).
        metrics: extra metrics of the round.
    """

    accepted: bool = True
    current: int | None = None
    best_round: int | None = None
    stop: str | None = None
    state: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)


def _call_finetune(finetune: Callable[[fx.GraphModule], Any] | None, gm: fx.GraphModule) -> fx.GraphModule:
    """Run the user's ``finetune(gm)``; a ``None`` return means it trained ``gm`` in place."""
    if finetune is None:
        return gm
    out = finetune(gm)
    if out is None:
        return gm
    if not isinstance(out, torch.nn.Module):
        raise ConfigError(f"finetune must return the model (or None), got {type(out).__name__}")
    return out


class Policy:
    """A schedule: what to prune each round and what to make of the result.

    Subclasses set :attr:`name` and :attr:`config_class` and implement
    :meth:`plan`; the others have defaults.  ``state`` (in :meth:`plan` and
    :meth:`decide`) holds the engine's ``round`` (the last finished round) and
    ``current`` (the round whose model is pruned next), plus the policy's own
    keys (:meth:`initial_state`, :attr:`Decision.state`).
    """

    #: the schedule's name (in the history and the checkpoint directory)
    name: ClassVar[str] = "custom"
    #: the settings class
    config_class: ClassVar[type[ScheduleConfig]] = ScheduleConfig
    #: stop (``"nothing to prune"``) instead of running a round whose plan is empty
    stops_when_nothing_to_prune: ClassVar[bool] = False
    #: the stop reason once the round budget is spent
    budget_stop: ClassVar[str] = STOP_BUDGET
    #: the round scores the current model with the configured scorer (``False``: ``plan`` gets ``{}``)
    uses_scores: ClassVar[bool] = True

    def __init__(self, config: ScheduleConfig, runtime: Runtime) -> None:
        self.config, self.runtime = config, runtime
        self.check()

    def check(self) -> None:
        """Check that the runtime arguments fit the settings (raise :class:`ConfigError`)."""

    def initial_state(self) -> dict[str, Any]:
        """The policy's own state before round 1 (JSON values)."""
        return {}

    def plan(self, analysis: Analysis, scores: Mapping[int, Any], state: Mapping[str, Any]) -> Plan:
        """``{group id: channels to remove}`` for this round."""
        raise NotImplementedError(f"{type(self).__name__} must implement plan()")

    def rewrite(self, analysis: Analysis, scores: Mapping[int, Any],
                plan: Plan) -> tuple[fx.GraphModule, RewriteRecord | Plan, dict[str, Any]]:
        """The pruned model, what the rewrite did, and extra metrics (default: :func:`apply_plan`).

        What it did is a :class:`~fxprune.rewrite.record.RewriteRecord` (the
        plan removed, implants), or just the plan removed; checkpoints save it
        and emit it again on resume, so it must describe the returned model.
        """
        return apply_plan(analysis, plan), RewriteRecord(plan), {}

    def finetune(self, gm: fx.GraphModule, number: int, state: Mapping[str, Any]) -> fx.GraphModule:
        """Fine-tune round ``number``'s pruned model (default: the runtime's ``finetune``, once)."""
        return _call_finetune(self.runtime.finetune, gm)

    def view(self, gm: fx.GraphModule) -> torch.nn.Module:
        """The module ``evaluate`` is given for this round's model (default: the model itself)."""
        return gm

    def decide(self, number: int, metrics: Mapping[str, Any], state: Mapping[str, Any],
               history: History) -> Decision:
        """Judge round ``number`` from its metrics (default: accept it and go on)."""
        return Decision()

    # -- running ----------------------------------------------------------------
    @classmethod
    def run(cls, model: torch.nn.Module, example_inputs: Sequence[Any], config: ScheduleConfig | None = None,
            **kwargs: Any) -> History:
        """Run the schedule on ``model`` (never modified); returns its :class:`~.history.History`.

        ``kwargs`` are :class:`Runtime` arguments and fields of
        :attr:`config_class` (applied over ``config``); ``analysis_options``
        (a dict of analysis options, the older form) is accepted for
        ``analysis``.  Unknown names raise :class:`ConfigError` listing the
        valid ones.  :meth:`signature` lists them all.

        Raises:
            ScheduleInterrupted: on ``KeyboardInterrupt``; carries the finished rounds.
            ConfigError: invalid settings, or a checkpoint written with other settings.
        """
        config, runtime = cls._settings(config, kwargs)
        policy = cls(config, runtime)
        session = Session(schedule=cls.name, fingerprint=config.fingerprint(rewind=runtime.rewind_state is not None),
                          model=model, example_inputs=_as_tuple(example_inputs), analysis=config.analysis,
                          registry=runtime.registry, evaluate=runtime.evaluate,
                          checkpoint_dir=runtime.checkpoint_dir, progress=runtime.progress,
                          budget=config.budget)
        return _Loop(policy, session).run()

    @classmethod
    def signature(cls) -> inspect.Signature:
        """The signature of :meth:`run` spelled out: runtime arguments, then every setting with its default."""
        P = inspect.Parameter
        params = [P("model", P.POSITIONAL_OR_KEYWORD), P("example_inputs", P.POSITIONAL_OR_KEYWORD),
                  P("config", P.POSITIONAL_OR_KEYWORD, default=None)]
        for f in fields(Runtime) + fields(cls.config_class):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            params.append(P(f.name, P.KEYWORD_ONLY, default=default))
        params.append(P("analysis_options", P.KEYWORD_ONLY, default=None))
        return inspect.Signature(params, return_annotation="History")

    @classmethod
    def _settings(cls, config: ScheduleConfig | None, kwargs: dict[str, Any]) -> tuple[ScheduleConfig, Runtime]:
        if config is None:
            config = cls.config_class()
        elif not isinstance(config, cls.config_class):
            raise ConfigError(f"{cls.name} takes a {cls.config_class.__name__}, got {type(config).__name__}")
        settings = {k: v for k, v in kwargs.items() if k not in RUNTIME}
        runtime = Runtime(**{k: v for k, v in kwargs.items() if k in RUNTIME})
        legacy = settings.pop("analysis_options", None)
        if legacy is not None:
            if "analysis" in settings:
                raise ConfigError("give the analysis options once: analysis= or analysis_options=, not both")
            legacy = dict(legacy)
            if "registry" in legacy:  # the registry is a runtime argument
                runtime = dataclasses.replace(runtime, registry=legacy.pop("registry"))
            settings["analysis"] = AnalysisConfig.from_options(legacy)
        valid = cls.config_class.field_names()
        unknown = set(settings) - set(valid)
        if unknown:
            raise unknown_names(f"{cls.name} setting", unknown, valid + RUNTIME)
        return config.replace(**settings), runtime


def _as_tuple(example_inputs: Any) -> tuple:
    return (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)


class _Loop:
    """The round loop of one run of ``policy``."""

    def __init__(self, policy: Policy, session: Session) -> None:
        self.policy, self.session = policy, session
        self.runtime, self.config = policy.runtime, policy.config
        self.score = get_scorer(self.config.scorer, **dict(self.config.scorer_params))

    def run(self) -> History:
        session = self.session
        if self.runtime.rewind_state is not None:
            check_rewind_state(session.model, self.runtime.rewind_state)
        try:
            state = session.start({"round": 0, "current": 0, **self.policy.initial_state()})
            session.reopen_if_budget_grew(state["round"])
            while session.history.stop_reason is None:
                if state["round"] >= self.config.budget:
                    session.stop(self.policy.budget_stop)
                    break
                state = self.round(state)
        except KeyboardInterrupt as exc:
            raise session.interrupted() from exc
        finally:
            session.close()
        return session.history

    def round(self, state: dict[str, Any]) -> dict[str, Any]:
        """Run round ``state["round"] + 1``; returns the state after it."""
        session, policy, runtime = self.session, self.policy, self.runtime
        number, current = state["round"] + 1, state["current"]
        analysis = session.analyze(session.model_of(current))
        scores = self.score(analysis, ScoreContext(data=runtime.data, loss_fn=runtime.loss_fn,
                                                   num_batches=self.config.num_batches, progress=runtime.progress)
                            ) if policy.uses_scores else {}
        plan = policy.plan(analysis, scores, state)
        if self.config.uniform:
            plan = uniform_plan(analysis, scores, plan, SelectionConfig(min_channels=self.config.min_channels))
        if not plan and policy.stops_when_nothing_to_prune:
            session.stop(STOP_NOTHING)
            return state
        gm, record, metrics = policy.rewrite(analysis, scores, plan)
        record = record if isinstance(record, RewriteRecord) else RewriteRecord(record)
        plan = {g: list(c) for g, c in record.plan.items()}
        report = build_report(analysis, plan, gm)
        extra: dict[str, Any] = {}
        if runtime.rewind_state is not None:
            index_map = compose_index_map(session.extras[current].get("index_map", {}), analysis, plan)
            rewind_weights(gm, runtime.rewind_state, index_map)
            extra["index_map"] = index_map
        emitted = Fingerprint.of(gm, values=False) if session.store is not None else None
        gm = policy.finetune(gm, number, state)
        if emitted is not None:
            self.check_rebuildable(analysis, record, emitted, gm)
        removed = sum(len(c) for c in plan.values())
        alive = sum(len(g.prunable) for g in analysis.groups)
        metrics.update({"accuracy": session.measure(policy.view(gm), number), "params": count_params(gm), "macs": report.macs_after,
                        "channels_removed": removed, "ratio": removed / alive if alive else 0.0,
                        "groups_pruned": len(plan)})
        diagnostics = getattr(scores, "diagnostics", None)
        if diagnostics is not None:
            metrics["scorer"] = diagnostics
        decision = policy.decide(number, metrics, state, session.history)
        metrics.update(decision.metrics)
        metrics["accepted"] = bool(decision.accepted)
        if decision.current is not None:
            current = decision.current
        elif decision.accepted:
            current = number
        new_state = {**state, **decision.state, "round": number, "current": current}
        best = current if decision.best_round is None else decision.best_round
        session.commit(number, gm, metrics, new_state, best_round=best, extra=extra,
                       source=RoundSource.of(state["current"], record, analysis))
        if decision.stop is not None:
            session.stop(decision.stop)
        return new_state

    def check_rebuildable(self, analysis: Analysis, record: RewriteRecord, emitted: Fingerprint,
                          gm: torch.nn.Module) -> None:
        """Checkpoints save a round as its rewrite record and tensors: refuse a round they cannot rebuild.

        Raises:
            ConfigError: ``finetune`` returned a model of another structure, or
                a policy's ``rewrite`` returned a model its record does not emit.
        """
        if type(self.policy).rewrite is not Policy.rewrite:
            again = Fingerprint.of(record.emit(analysis, verify=False), values=False)
            diffs = again.differences(emitted, values=False, labels=("as its record emits it", "as returned"))
            if diffs:
                raise ConfigError(f"{self.policy.name}: rewrite returned a model its RewriteRecord does not emit "
                                  f"again ({'; '.join(diffs)}); checkpoints rebuild rounds from the record")
        diffs = emitted.differences(Fingerprint.of(gm, values=False), values=False,
                                    labels=("as pruned", "after finetune"))
        if diffs:
            raise ConfigError(f"finetune changed the model's structure ({'; '.join(diffs)}); with a checkpoint_dir "
                              "every round is saved as its plan and tensors, so finetune must keep the pruned "
                              "model's structure (train it in place, or return a model of the same structure)")
