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

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.fx as fx

from ..analysis.analysis import Analysis
from ..errors import ConfigError
from ..rewrite.implant import IMPLANT_KINDS, family_groups, split_bands
from ..rewrite.record import RewriteRecord
from ..scoring import SelectionConfig, select_plan
from ..scoring.targets import Target, select_for_target
from .config import ScheduleConfig, is_number, require
from .engine import Decision, Plan, Policy
from .history import History

__all__ = ["OneShotConfig", "OneShot", "one_shot", "STOP_DONE"]

#: stop reason of a finished one-shot run
STOP_DONE = "done"


@dataclass(frozen=True, kw_only=True)
class OneShotConfig(ScheduleConfig):
    """Settings of :func:`one_shot` (validated on construction; shared fields: :class:`ScheduleConfig`).

    Attributes:
        ratio: fraction of all prunable channels to remove, in [0, 1).
        max_ratio: at most this fraction of any group is removed (HAP: 0.95).
        global_ranking: rank across groups (HAP) or per group.
        normalize: score normalisation across groups (``none``, ``mean``, ``max``).
        round_to: kept counts are rounded up to a multiple of this.
        implant_ratio: HAP's Neural Implant ``eta``: of the channels below the prune
            threshold, this top fraction (by score, among the groups of
            ``implant_families`` that can take an implant) is implanted instead of
            pruned (0: no implant).
        implant_kind: ``pointwise`` (1x1 conv, zero-initialised, the authors' code),
            ``lowrank`` (truncated-SVD factorisation of the removed filters; conv and
            linear) or ``dwpw`` (depthwise k x k + pointwise; conv).
        implant_rank: rank of ``lowrank`` implants, multiplier of ``dwpw`` (``None``:
            full rank / 1).
        implant_families: rule families whose layers may be implanted (the authors'
            code: convolutions only; add ``"linear"`` with ``implant_kind="lowrank"``).
        rank_families: rank (and prune) only the groups whose producers come from
            these rule families, e.g. ``("conv",)`` as HAP's code does when it
            implants; ``None`` ranks every group.
        target_macs, target_params: budgets instead of ``ratio`` (a fraction <= 1
            of the original, or an absolute count), as in :func:`fxprune.prune`:
            the ratio is searched to the least-pruned plan within every budget,
            one channel step from it, through the same ranking, caps and
            ``round_to``.  Not with implants (an implant adds parameters the
            search does not see).
    """

    ratio: float = 0.5
    max_ratio: float = 0.95
    global_ranking: bool = True
    normalize: str = "none"
    round_to: int = 1
    implant_ratio: float = 0.0
    implant_kind: str = "pointwise"
    implant_rank: int | None = None
    implant_families: tuple[str, ...] = ("conv",)
    rank_families: tuple[str, ...] | None = None
    target_macs: float | None = None
    target_params: float | None = None

    def validate(self) -> None:
        require(is_number(self.implant_ratio) and 0.0 <= self.implant_ratio <= 1.0, "implant_ratio",
                "in [0, 1]", self.implant_ratio)
        require(self.implant_kind in IMPLANT_KINDS, "implant_kind", f"one of {IMPLANT_KINDS}", self.implant_kind)
        self.selection()  # validates ratio, max_ratio, round_to, normalize
        targets = self.targets()  # validates the budgets
        if targets and self.implant_ratio > 0:
            raise ConfigError("one_shot: target_macs/target_params cannot be combined with implant_ratio > 0 "
                              "(implants add parameters and MACs the target search does not see); "
                              "set implant_ratio=0 or prune by ratio")
        require(isinstance(self.global_ranking, bool), "global_ranking", "True or False", self.global_ranking)
        for name in ("implant_families", "rank_families"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, (value,))
            elif value is not None:
                object.__setattr__(self, name, tuple(value))

    def targets(self) -> list[Target]:
        """The cost budgets (empty: prune by ``ratio``)."""
        return [Target.parse(kind, value) for kind, value in (("macs", self.target_macs),
                                                               ("params", self.target_params)) if value is not None]

    def selection(self) -> SelectionConfig:
        return SelectionConfig(ratio=self.ratio, global_ranking=self.global_ranking,
                               min_channels=self.min_channels, max_ratio=self.max_ratio,
                               round_to=self.round_to, normalize=self.normalize)


class OneShot(Policy):
    """One global ranking, one prune (with optional Neural Implants), then done."""

    name = "one_shot"
    config_class = OneShotConfig
    budget_stop = STOP_DONE
    config: OneShotConfig

    def check(self) -> None:
        if self.config.implant_ratio > 0 and self.runtime.rewind_state is not None:
            raise ConfigError("rewind_state cannot be combined with implants (implanted layers have new parameters)")

    def plan(self, analysis: Analysis, scores: Mapping[int, Any], state: Mapping[str, Any]) -> Plan:
        families = self.config.rank_families
        groups = None if families is None else family_groups(analysis, families)
        targets = self.config.targets()
        if not targets:
            return select_plan(analysis, scores, self.config.selection(), groups)
        plan, _ = select_for_target(analysis, scores, self.config.selection(), targets, groups=groups,
                                    progress=self.runtime.progress)
        return plan

    def rewrite(self, analysis: Analysis, scores: Mapping[int, Any],
                plan: Plan) -> tuple[fx.GraphModule, RewriteRecord | Plan, dict[str, Any]]:
        cfg = self.config
        if cfg.implant_ratio <= 0:
            gm, plan, metrics = super().rewrite(analysis, scores, plan)
            return gm, plan, {**metrics, "channels_implanted": 0}
        plan, implants = split_bands(analysis, scores, plan, cfg.implant_ratio, kind=cfg.implant_kind,
                                     families=cfg.implant_families)
        record = RewriteRecord(plan, implants, cfg.implant_kind, cfg.implant_rank)
        return record.emit(analysis), record, {"channels_implanted": sum(len(c) for c in implants.values())}

    def decide(self, number: int, metrics: Mapping[str, Any], state: Mapping[str, Any],
               history: History) -> Decision:
        return Decision(stop=STOP_DONE)


def one_shot(model: torch.nn.Module, example_inputs: Sequence[Any], config: OneShotConfig | None = None,
             **kwargs: Any) -> History:
    """Prune once with a global ranking capped at ``max_ratio`` per group (HAP).

    ``kwargs``: runtime arguments (:class:`~fxprune.schedules.engine.Runtime`;
    with ``evaluate`` the baseline and the pruned model are evaluated, never
    as a criterion; ``rewind_state`` cannot be combined with implants) and
    settings, the fields of :class:`OneShotConfig` (``ratio``,
    ``max_ratio``, ``global_ranking``, ``normalize``, ``round_to``,
    ``implant_ratio``, ``target_macs``, ``target_params`` ...) applied over ``config``; ``analysis_options`` (a
    dict) is accepted for ``analysis``.

    Returns:
        The :class:`~fxprune.schedules.History` with rounds 0 and 1; round 1 is
        the result (a finished run in ``checkpoint_dir`` is returned as saved).
    """
    return OneShot.run(model, example_inputs, config, **kwargs)


one_shot.__signature__ = OneShot.signature()  # type: ignore[attr-defined]
