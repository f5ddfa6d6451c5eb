"""One-shot global pruning (HAP): one global ranking, one prune, fine-tune, evaluate.

All prunable channels of all groups are ranked together (by default on raw
scores, as HAP's relative Hessian trace scores are comparable across layers);
the lowest ``ratio`` of them are removed, but never more than ``max_ratio``
(95%) of a group, and every group keeps at least one channel.

Example:
    >>> import torch, torch.nn as nn
    >>> from fxprune.schedules import one_shot
    >>> model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> history = one_shot(model, (torch.randn(2, 8),), ratio=0.5, progress=False)
    >>> history.best.metrics["channels_removed"]
    24
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.fx as fx

from ..errors import ConfigError
from ..report import build_report, count_params
from ..analysis.capture import propagate_shapes
from ..rewrite.channels import apply_plan
from ..rewrite.implant import apply_with_implants, split_bands
from ..scoring import ScoreContext, SelectionConfig, get_scorer, select_plan
from .common import (
    Session,
    call_finetune,
    check_analysis_options,
    frozen_mapping,
    compose_index_map,
    jsonable,
    rewind_weights,
)
from .history import History

__all__ = ["OneShotConfig", "one_shot", "STOP_DONE"]

#: stop reason of a finished one-shot run
STOP_DONE = "done"


@dataclass(frozen=True)
class OneShotConfig:
    """Settings of :func:`one_shot` (validated on construction).

    Attributes:
        scorer, scorer_params: the scorer (``hessian`` for HAP).
        ratio: fraction of all prunable channels to remove, in [0, 1).
        max_ratio: at most this fraction of any group is removed (HAP: 0.95).
        global_ranking: rank across groups (HAP) or per group.
        normalize: score normalisation across groups (``none``, ``mean``, ``max``).
        min_channels: channels every group keeps at least.
        round_to: kept counts are rounded up to a multiple of this.
        num_batches: calibration batches for data-driven scorers.
        analysis_options: keyword arguments of :func:`fxprune.analyze`.
        implant_ratio: HAP's Neural Implant ``eta``: of the channels below the prune
            threshold, this top fraction (by score, among dense Conv2d groups) is
            implanted instead of pruned (0: no implant).
        implant_kind: ``pointwise`` (1x1 conv, zero-initialised, the authors' code) or
            ``lowrank`` (truncated-SVD factorisation of the removed filters).
        implant_rank: rank of ``lowrank`` implants (``None``: full rank).
    """

    scorer: Any = "l1"
    scorer_params: Mapping[str, Any] = field(default_factory=frozen_mapping)
    ratio: float = 0.5
    max_ratio: float = 0.95
    global_ranking: bool = True
    normalize: str = "none"
    min_channels: int = 1
    round_to: int = 1
    num_batches: int | None = None
    analysis_options: Mapping[str, Any] = field(default_factory=frozen_mapping)
    implant_ratio: float = 0.0
    implant_kind: str = "pointwise"
    implant_rank: int | None = None

    def __post_init__(self) -> None:
        from ..rewrite.implant import IMPLANT_KINDS

        if not (isinstance(self.implant_ratio, (int, float)) and 0.0 <= self.implant_ratio <= 1.0):
            raise ConfigError(f"implant_ratio must be in [0, 1], got {self.implant_ratio!r}")
        if self.implant_kind not in IMPLANT_KINDS:
            raise ConfigError(f"implant_kind must be one of {IMPLANT_KINDS}, got {self.implant_kind!r}")
        object.__setattr__(self, "scorer_params", frozen_mapping(self.scorer_params))
        object.__setattr__(self, "analysis_options", frozen_mapping(check_analysis_options(self.analysis_options)))
        self.selection()  # validates ratio, max_ratio, min_channels, round_to, normalize
        if not isinstance(self.global_ranking, bool):
            raise ConfigError(f"global_ranking must be True or False, got {self.global_ranking!r}")
        if self.num_batches is not None and (not isinstance(self.num_batches, int) or self.num_batches < 1):
            raise ConfigError(f"num_batches must be None or an integer >= 1, got {self.num_batches!r}")

    def selection(self) -> SelectionConfig:
        return SelectionConfig(ratio=self.ratio, global_ranking=self.global_ranking,
                               min_channels=self.min_channels, max_ratio=self.max_ratio,
                               round_to=self.round_to, normalize=self.normalize)

    def fingerprint(self, **extra: Any) -> dict[str, Any]:
        out = {k: jsonable(getattr(self, k)) for k in self.__dataclass_fields__}
        out.update(jsonable(extra))
        return out


def one_shot(
    model: torch.nn.Module,
    example_inputs: Sequence[Any],
    *,
    scorer: Any = "l1",
    scorer_params: Mapping[str, Any] | None = None,
    ratio: float = 0.5,
    max_ratio: float = 0.95,
    global_ranking: bool = True,
    normalize: str = "none",
    finetune: Callable[[fx.GraphModule], Any] | None = None,
    evaluate: Callable[[fx.GraphModule], float] | None = None,
    rewind_state: Mapping[str, torch.Tensor] | None = None,
    data: Any = None,
    loss_fn: Callable[..., Any] | None = None,
    num_batches: int | None = None,
    min_channels: int = 1,
    round_to: int = 1,
    analysis_options: Mapping[str, Any] | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    implant_ratio: float = 0.0,
    implant_kind: str = "pointwise",
    implant_rank: int | None = None,
) -> History:
    """Prune once with a global ranking capped at ``max_ratio`` per group (HAP).

    Args:
        model, example_inputs: the model to prune (never modified) and its inputs.
        scorer, scorer_params: the scorer (``hessian`` for HAP).
        ratio, max_ratio, global_ranking, normalize, min_channels, round_to:
            the selection (see :class:`OneShotConfig`).
        finetune: ``finetune(gm) -> gm`` after the prune (``None`` return: in place).
        evaluate: ``evaluate(gm) -> accuracy``; when given, the baseline and the
            pruned model are evaluated (accuracy is recorded, never a criterion).
        rewind_state: a state_dict of the original model to rewind surviving
            weights to before fine-tuning (LTH).
        data, loss_fn, num_batches: calibration inputs of data-driven scorers.
        analysis_options: keyword arguments of :func:`fxprune.analyze`.
        checkpoint_dir: save the rounds there; a finished run is returned as saved.
        progress: show progress.
        implant_ratio, implant_kind, implant_rank: HAP's Neural Implant (see
            :class:`OneShotConfig`); not combinable with ``rewind_state``.

    Returns:
        The :class:`~fxprune.schedules.History` with rounds 0 and 1; round 1 is the result.
    """
    cfg = OneShotConfig(scorer, scorer_params, ratio, max_ratio, global_ranking, normalize,
                        min_channels, round_to, num_batches, analysis_options, implant_ratio,
                        implant_kind, implant_rank)
    if cfg.implant_ratio > 0 and rewind_state is not None:
        raise ConfigError("rewind_state cannot be combined with implants (implanted layers have new parameters)")
    score_fn = get_scorer(cfg.scorer, **dict(cfg.scorer_params))
    session = Session("one_shot", cfg.fingerprint(rewind=rewind_state is not None), model,
                      tuple(example_inputs) if not isinstance(example_inputs, torch.Tensor)
                      else (example_inputs,), dict(cfg.analysis_options), evaluate, checkpoint_dir,
                      progress, 1)
    try:
        state = session.start({"round": 0})
        if session.history.stop_reason is None and state["round"] >= 1:
            session.stop(STOP_DONE, best_round=1)
        if session.history.stop_reason is None:
            current = session.model_of(0)
            analysis = session.analyze(current)
            scores = score_fn(analysis, ScoreContext(model=current, data=data, loss_fn=loss_fn,
                                                     num_batches=cfg.num_batches))
            plan = select_plan(analysis, scores, cfg.selection())
            implants: dict[int, list[int]] = {}
            if cfg.implant_ratio > 0:
                plan, implants = split_bands(analysis, scores, plan, cfg.implant_ratio)
                gm = apply_with_implants(analysis, plan, implants, kind=cfg.implant_kind,
                                         rank=cfg.implant_rank)
                propagate_shapes(gm, analysis.example_inputs)
            else:
                gm = apply_plan(analysis, plan)
            report = build_report(analysis, plan, gm)
            extra: dict[str, Any] = {}
            if rewind_state is not None:
                index_map = compose_index_map({}, analysis, plan)
                rewind_weights(gm, rewind_state, index_map)
                extra["index_map"] = index_map
            gm = call_finetune(finetune, gm)
            removed = sum(len(c) for c in plan.values())
            alive = sum(len(g.prunable) for g in analysis.groups)
            metrics = {"accuracy": session.measure(gm), "params": count_params(gm),
                       "macs": report.macs_after, "channels_removed": removed,
                       "ratio": removed / alive if alive else 0.0, "groups_pruned": len(plan),
                       "channels_implanted": sum(len(c) for c in implants.values()),
                       "accepted": True}
            session.commit(1, gm, metrics, {"round": 1}, best_round=1, extra=extra)
            session.stop(STOP_DONE, best_round=1)
    except KeyboardInterrupt as exc:
        raise session.interrupted() from exc
    finally:
        session.close()
    return session.history
