"""Cost targets: the plan that removes the most channels while the pruned model stays within a budget.

A target is a MACs or parameter budget, as a fraction of the original
(``0.5``: half) or an absolute number (``2_000_000``: a value above 1).
:func:`select_for_target` searches the selection's ratio by bisection: the
plans of increasing ratios are nested (channels leave in score order), so the
cost falls monotonically, and the search returns the least-pruned plan that
meets the budget: one channel step less would exceed it, so the result is
within one channel step of the budget.  Costs come from
:func:`fxprune.analysis.cost.plan_costs`: predicted from shapes, exact, without
rewriting the model.

Example:
    >>> import torch, fxprune
    >>> from fxprune.scoring import SelectionConfig, get_scorer, ScoreContext
    >>> from fxprune.scoring.targets import Target, select_for_target
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    >>> a = fxprune.analyze(model, (torch.randn(2, 8),))
    >>> scores = get_scorer("l1")(a, ScoreContext())
    >>> plan, hit = select_for_target(a, scores, SelectionConfig(), Target.parse("macs", 0.5))
    >>> hit.macs_after / hit.macs_before, len(plan[0])
    (0.5, 32)
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..analysis.analysis import Analysis
from ..analysis.cost import plan_costs
from ..analysis.groups import plan_mask
from ..errors import ConfigError
from .select import SelectionConfig, select_plan

__all__ = ["Target", "TargetKind", "TargetResult", "select_for_target"]

#: the largest ratio the selection accepts (it removes at most this fraction of prunable channels)
_MAX_RATIO = 1.0 - 1e-9


class TargetKind(str, enum.Enum):
    """What a target budgets."""

    MACS = "macs"
    PARAMS = "params"


@dataclass(frozen=True)
class Target:
    """A budget: ``kind`` at most ``value`` (a fraction of the original if <= 1, else an absolute count)."""

    kind: TargetKind
    value: float

    @classmethod
    def parse(cls, kind: str | TargetKind, value: float) -> "Target":
        """A validated target (``ConfigError`` naming the bad value)."""
        try:
            kind = TargetKind(kind)
        except ValueError:
            raise ConfigError(f"unknown target {kind!r}; choose one of {[k.value for k in TargetKind]}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
            raise ConfigError(f"target_{kind.value} must be a positive number (a fraction <= 1 of the "
                              f"original, or an absolute count), got {value!r}")
        return cls(kind, float(value))

    def budget(self, original: int) -> float:
        """The allowed cost, for an original cost ``original``."""
        return self.value * original if self.value <= 1 else self.value


@dataclass(frozen=True)
class TargetResult:
    """Where a target search landed (``targets``: every budget that had to be met)."""

    targets: tuple[Target, ...]
    ratio: float
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    reached: bool

    @property
    def note(self) -> str:
        """A one-line summary for the report."""
        parts = []
        for t in self.targets:
            before, after = ((self.macs_before, self.macs_after) if t.kind is TargetKind.MACS
                             else (self.params_before, self.params_after))
            parts.append(f"{t.kind.value} <= {t.budget(before):,.0f}: {after:,} ({after / before:.1%} of {before:,})")
        text = "target " + "; ".join(parts) + f" (ratio {self.ratio:.4f})"
        return text if self.reached else text + " -- not reachable: every prunable channel that can go is gone"


def select_for_target(analysis: Analysis, scores: Mapping[int, np.ndarray], cfg: SelectionConfig,
                      target: Target | Sequence[Target], *,
                      iterations: int = 48) -> tuple[dict[int, list[int]], TargetResult]:
    """The plan of the smallest selection ratio whose pruned model meets ``target`` (see the module docstring).

    Several targets (a MACs and a parameter budget) must all be met.

    ``cfg`` fixes everything but the ratio (per-group or global ranking, floors,
    caps, ``round_to``).  When even the largest ratio misses the budget, that
    plan is returned with ``reached=False``.
    """
    gm, roots = analysis.graph_module, analysis.state.atoms.roots()

    def cost(ratio: float) -> tuple[dict[int, list[int]], tuple[int, int]]:
        plan = select_plan(analysis, scores, dataclasses.replace(cfg, ratio=ratio))
        return plan, plan_costs(gm, analysis.registry, plan_mask(analysis.groups, roots, plan),
                                analysis.state.param_labels)

    targets = (target,) if isinstance(target, Target) else tuple(target)
    if not targets:
        raise ConfigError("select_for_target needs at least one target")
    if isinstance(cfg.ratio, Mapping):
        raise ConfigError("a cost target searches one ratio for every group: it cannot be combined with a "
                          "mapping of ratios (give per-layer round_to, ignore or a single ratio)")
    plan, before = cost(0.0)
    budgets = [(t.kind is TargetKind.MACS, t.budget(before[1] if t.kind is TargetKind.MACS else before[0]))
               for t in targets]

    def fits(costs: tuple[int, int]) -> bool:
        return all((costs[1] if macs else costs[0]) <= budget for macs, budget in budgets)

    lo, hi = 0.0, _MAX_RATIO
    best = (0.0, plan, before)
    if not fits(before):
        top_plan, top = cost(hi)
        if fits(top):
            for _ in range(iterations):  # invariant: cost(lo) misses the budget, cost(hi) meets it
                mid = (lo + hi) / 2
                mid_plan, mid_costs = cost(mid)
                if fits(mid_costs):
                    hi, top_plan, top = mid, mid_plan, mid_costs
                else:
                    lo = mid
        best = (hi, top_plan, top)
    ratio, plan, after = best
    return plan, TargetResult(targets, ratio, before[0], after[0], before[1], after[1], fits(after))
