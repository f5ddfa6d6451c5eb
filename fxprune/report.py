"""The pruning report: what was removed, what it saved, and what could not be pruned.

Parameters are counted physically (``numel`` of every parameter of the
GraphModule); MACs come from each node's rule (``Rule.macs``) applied to the
shapes of the graph, so they follow the emitted architecture exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch.fx as fx

from . import ir
from .analysis.analysis import Analysis
from .analysis.capture import propagate_shapes
from .analysis.cost import count_macs, count_params

__all__ = ["GroupDecision", "Report", "count_params", "count_macs", "build_report"]


@dataclass(frozen=True)
class GroupDecision:
    """What happened to one group."""

    group: int
    size: int
    removed: int
    fixed: int
    producers: tuple[str, ...]
    note: str = ""

    @property
    def kept(self) -> int:
        return self.size - self.removed


@dataclass(frozen=True)
class Report:
    """Per-group decisions, parameter and MAC counts, and barriers.

    ``str(report)`` is a readable table.
    """

    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    groups: tuple[GroupDecision, ...]
    barriers: tuple[tuple[str, str, str], ...]
    notes: tuple[str, ...] = ()

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    def __str__(self) -> str:
        lines = [
            f"params: {self.params_before:,} -> {self.params_after:,} ({self.params_ratio:.1%})",
            f"MACs:   {self.macs_before:,} -> {self.macs_after:,} ({self.macs_ratio:.1%})",
            "",
            f"{'group':>5}  {'size':>6}  {'kept':>6}  {'removed':>7}  {'fixed':>5}  producers",
        ]
        for d in self.groups:
            prods = ", ".join(d.producers[:3]) + (" ..." if len(d.producers) > 3 else "")
            lines.append(f"{d.group:>5}  {d.size:>6}  {d.kept:>6}  {d.removed:>7}  {d.fixed:>5}  {prods}"
                         + (f"  [{d.note}]" if d.note else ""))
        if self.barriers:
            lines.append("")
            lines.append("barriers (channels not pruned):")
            for node, op, reason in self.barriers:
                lines.append(f"  {node} ({op}): {reason}")
        for n in self.notes:
            lines.append(n)
        return "\n".join(lines)


def build_report(analysis: Analysis, plan: Mapping[int, Sequence[int]], pruned: fx.GraphModule,
                 notes: Sequence[str] = ()) -> Report:
    """The report of applying ``plan`` to ``analysis`` (``pruned`` has SPEC meta)."""
    before_gm = analysis.graph_module
    decisions = []
    for g in analysis.groups:
        removed = len(set(plan.get(g.id, ())))
        note = "mixing" if g.mixing else ""
        decisions.append(GroupDecision(g.id, g.size, removed, len(g.fixed),
                                       tuple(m.param for m in g.producers()), note))
    if any(n.meta.get(ir.SPEC) is None for n in pruned.graph.nodes if n.op != "output"):
        propagate_shapes(pruned, analysis.example_inputs)
    return Report(
        params_before=count_params(before_gm),
        params_after=count_params(pruned),
        macs_before=count_macs(before_gm, analysis.registry),
        macs_after=count_macs(pruned, analysis.registry),
        groups=tuple(decisions),
        barriers=tuple((b.node, b.op, b.reason) for b in analysis.barriers),
        notes=tuple(notes),
    )
