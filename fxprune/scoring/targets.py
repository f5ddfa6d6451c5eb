"""Cost targets: the plan that removes the fewest channels while the pruned model stays within a budget.

A target is a MACs or parameter budget, as a fraction of the original
(``0.5``: half) or an absolute number (``2_000_000``: a value above 1), or a
latency budget as a fraction of the original latency.  :func:`select_for_target`
searches the selection's ratio by bisection: the plans of increasing ratios are
nested (channels leave in score order), so the cost falls monotonically, and
the search returns the least-pruned plan that meets the budget: one channel
step less would exceed it, so the result is within one channel step of the
budget (per group, one step can be a channel in each of several groups of the
same size; with a global ranking it is one channel).

The search is generic (:func:`search_target`): it takes a family of plans
(``plan_at(x)``, more pruned as ``x`` grows) and a cost function
(``cost(plan) -> {TargetKind: value}``).  :func:`shape_costs` gives parameters
and MACs from :func:`fxprune.analysis.cost.plan_costs` (predicted from shapes,
exact, without rewriting the model); a latency cost comes from a
:class:`~fxprune.analysis.latency.LatencyTable` (``prune(target_latency=...)``
adds it).

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
    >>> from fxprune.scoring.targets import TargetKind
    >>> cost = lambda plan: {TargetKind.LATENCY: 64.0 - len(plan.get(0, ()))}   # any cost function
    >>> plan, hit = select_for_target(a, scores, SelectionConfig(), Target.parse("latency", 0.75), cost=cost)
    >>> len(plan[0]), hit.after[TargetKind.LATENCY]
    (16, 48.0)
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Callable, Collection, Mapping, Sequence

import numpy as np

from ..analysis.analysis import Analysis
from ..analysis.cost import plan_costs
from ..analysis.groups import plan_mask
from ..errors import ConfigError
from ..progress import Progress
from .select import SelectionConfig, select_plan

__all__ = ["Bracket", "CostFn", "Target", "TargetKind", "TargetResult", "bisect_plans", "search_target",
           "select_for_target", "shape_costs"]

#: the largest ratio the selection accepts (it removes at most this fraction of prunable channels)
_MAX_RATIO = 1.0 - 1e-9

Plan = dict[int, list[int]]


class TargetKind(str, enum.Enum):
    """What a target budgets."""

    MACS = "macs"
    PARAMS = "params"
    LATENCY = "latency"


#: the costs of one plan, by kind
CostFn = Callable[[Mapping[int, Sequence[int]]], Mapping[TargetKind, float]]


@dataclass(frozen=True)
class Target:
    """A budget: ``kind`` at most ``value`` (a fraction of the original if <= 1, else an absolute count).

    A latency budget is a fraction of the original latency only (``0 < value <= 1``).
    """

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
        if kind is TargetKind.LATENCY and value > 1:
            raise ConfigError(f"target_latency is a fraction of the measured original latency, in (0, 1], "
                              f"got {value!r}")
        return cls(kind, float(value))

    def budget(self, original: float) -> float:
        """The allowed cost, for an original cost ``original``."""
        return self.value * original if self.value <= 1 else self.value


def _format(kind: TargetKind, value: float) -> str:
    return f"{value * 1e3:.3f} ms" if kind is TargetKind.LATENCY else f"{value:,.0f}"


@dataclass(frozen=True)
class TargetResult:
    """Where a target search landed.

    Attributes:
        targets: every budget that had to be met.
        ratio: the searched parameter of the plan found (the selection ratio
            for :func:`select_for_target`).
        before, after: ``{kind: cost}`` of the unpruned model and of the plan
            found, for every kind the cost function gives.
        reached: whether every budget is met.
    """

    targets: tuple[Target, ...]
    ratio: float
    before: Mapping[TargetKind, float]
    after: Mapping[TargetKind, float]
    reached: bool

    params_before = property(lambda self: int(self.before[TargetKind.PARAMS]))
    params_after = property(lambda self: int(self.after[TargetKind.PARAMS]))
    macs_before = property(lambda self: int(self.before[TargetKind.MACS]))
    macs_after = property(lambda self: int(self.after[TargetKind.MACS]))

    @property
    def note(self) -> str:
        """A one-line summary for the report."""
        parts = []
        for t in self.targets:
            before, after = self.before[t.kind], self.after[t.kind]
            share = f"{after / before:.1%} of {_format(t.kind, before)}" if before else "of 0"
            parts.append(f"{t.kind.value} <= {_format(t.kind, t.budget(before))}: {_format(t.kind, after)} ({share})")
        text = "target " + "; ".join(parts) + f" (ratio {self.ratio:.4f})"
        return text if self.reached else text + " -- not reachable: every prunable channel that can go is gone"


def shape_costs(analysis: Analysis) -> CostFn:
    """``cost(plan) -> {TargetKind.PARAMS: ..., TargetKind.MACS: ...}`` of ``analysis``'s model, from shapes."""
    gm, roots = analysis.graph_module, analysis.state.atoms.roots()

    def cost(plan: Mapping[int, Sequence[int]]) -> dict[TargetKind, float]:
        params, macs = plan_costs(gm, analysis.registry, plan_mask(analysis.groups, roots, plan),
                                  analysis.state.param_labels)
        return {TargetKind.PARAMS: float(params), TargetKind.MACS: float(macs)}

    return cost


@dataclass(frozen=True)
class Bracket:
    """Where a monotone predicate over a nested plan family turns true (:func:`bisect_plans`).

    ``below`` is the most pruned plan found for which it is false (``None``
    when it holds already at ``x = 0``), ``above`` the least pruned one for
    which it is true (``None`` when it is false even at the top), each as
    ``(x, plan)``; between them the family has no other plan the bisection
    could tell apart: they are one channel step apart.
    """

    below: tuple[float, Plan] | None
    above: tuple[float, Plan] | None


def bisect_plans(plan_at: Callable[[float], Plan], hi: float, done: Callable[[Plan], bool], *,
                 iterations: int = 48, progress: bool = False, desc: str = "target search") -> Bracket:
    """Bisection over ``x`` in ``[0, hi]`` for where ``done(plan_at(x))`` turns true.

    ``plan_at`` must be monotone (plans of larger ``x`` remove more) and
    ``done`` monotone along it (false, then true).  ``done`` is called once per
    distinct plan probed.  ``progress`` shows a display over the steps.
    """
    lo_plan = plan_at(0.0)
    if done(lo_plan):
        return Bracket(None, (0.0, lo_plan))
    top_plan = plan_at(hi)
    if not done(top_plan):
        return Bracket((hi, top_plan), None)
    lo = 0.0
    with Progress(desc, total=iterations, enabled=progress, unit="step", transient=True) as bar:
        for _ in range(iterations):  # invariant: done(plan_at(lo)) is false, done(plan_at(hi)) true
            mid = (lo + hi) / 2
            mid_plan = plan_at(mid)
            if mid_plan == top_plan:
                hi = mid
            elif mid_plan == lo_plan:
                lo = mid
            elif done(mid_plan):
                hi, top_plan = mid, mid_plan
            else:
                lo, lo_plan = mid, mid_plan
            bar.update(1, postfix={"x": f"{hi:.4g}"})
    return Bracket((lo, lo_plan), (hi, top_plan))


def search_target(plan_at: Callable[[float], Plan], hi: float, cost: CostFn, target: Target | Sequence[Target], *,
                  iterations: int = 48, progress: bool = False,
                  desc: str = "target search") -> tuple[Plan, TargetResult]:
    """The least-pruned plan ``plan_at(x)``, ``x`` in ``[0, hi]``, whose costs meet ``target`` (by bisection).

    ``plan_at`` must be monotone (plans of larger ``x`` remove more, so every
    cost falls) and ``plan_at(0)`` is the reference the fractions refer to.
    When even ``plan_at(hi)`` misses a budget, that plan is returned with
    ``reached=False``.  ``progress`` shows a display over the bisection steps.
    """
    targets = (target,) if isinstance(target, Target) else tuple(target)
    if not targets:
        raise ConfigError("a target search needs at least one target")
    costs: dict[int, tuple[Plan, dict[TargetKind, float]]] = {}

    def cost_of(plan: Plan) -> dict[TargetKind, float]:
        if id(plan) not in costs:
            costs[id(plan)] = (plan, dict(cost(plan)))   # the plan is kept so its id stays its own
        return costs[id(plan)][1]

    start = plan_at(0.0)
    before = cost_of(start)
    missing = [t.kind.value for t in targets if t.kind not in before]
    if missing:
        raise ConfigError(f"the cost function gives {sorted(TargetKind(k).value for k in before)}, not {missing}")
    budgets = [(t.kind, t.budget(before[t.kind])) for t in targets]

    def fits(plan: Plan) -> bool:
        c = cost_of(plan)
        return all(c[kind] <= budget for kind, budget in budgets)

    bracket = bisect_plans(lambda x: start if x == 0.0 else plan_at(x), hi, fits, iterations=iterations,
                           progress=progress, desc=desc)
    x, plan = bracket.above if bracket.above is not None else bracket.below  # type: ignore[misc]
    return plan, TargetResult(targets, x, before, cost_of(plan), bracket.above is not None)


def select_for_target(analysis: Analysis, scores: Mapping[int, np.ndarray], cfg: SelectionConfig,
                      target: Target | Sequence[Target], *, cost: CostFn | None = None, iterations: int = 48,
                      progress: bool = False, groups: Collection[int] | None = None) -> tuple[Plan, TargetResult]:
    """The plan of the smallest selection ratio whose pruned model meets ``target`` (see the module docstring).

    Several targets (a MACs and a parameter budget) must all be met.

    ``cfg`` fixes everything but the ratio (per-group or global ranking, floors,
    caps, ``round_to``).  ``cost`` gives a plan's costs (default
    :func:`shape_costs`: params and MACs); it must give every target's kind.
    When even the largest ratio misses the budget, that plan is returned with
    ``reached=False``.  ``groups``: only these groups are pruned (as in
    :func:`~fxprune.scoring.select_plan`).
    """
    if isinstance(cfg.ratio, Mapping):
        raise ConfigError("a cost target searches one ratio for every group: it cannot be combined with a "
                          "mapping of ratios (give per-layer round_to, ignore or a single ratio)")
    return search_target(lambda r: select_plan(analysis, scores, dataclasses.replace(cfg, ratio=r), groups),
                         _MAX_RATIO,
                         cost or shape_costs(analysis), target, iterations=iterations, progress=progress)
