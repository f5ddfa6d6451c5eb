"""The pruning report: what was removed, what it saved, and what could not be pruned.

Parameters are counted physically (``numel`` of every parameter of the
GraphModule); MACs come from each node's rule (``Rule.macs``) applied to the
shapes of the graph, so they follow the emitted architecture exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.fx as fx

from . import meta
from .analysis.analysis import Analysis
from .analysis.atoms import Atoms
from .analysis.capture import TensorSpec, propagate_shapes
from .ops.registry import OpContext, Registry, Value

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


def count_params(module: torch.nn.Module) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters())


def count_macs(gm: fx.GraphModule, registry: Registry) -> int:
    """Multiply-accumulates of one forward, from the rules' ``macs`` and the graph's shapes.

    Requires :data:`fxprune.meta.SPEC` on every node.
    """
    total = 0
    atoms = Atoms()
    for node in gm.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        rule = registry.lookup(node, gm)
        if rule is None or rule.macs is None:
            continue
        wrap = lambda a: fx.node.map_aggregate(
            a, lambda x: Value(x.meta.get(meta.SPEC), None, x) if isinstance(x, fx.Node) else x)
        params: dict[str, Value | None] = {}
        module = None
        if node.op == "call_module":
            module = gm.get_submodule(str(node.target))
            for name, t in module.named_parameters(recurse=False):
                params[name] = Value(TensorSpec(tuple(t.shape), t.dtype), None, None, name)
        ctx = OpContext(node, tuple(wrap(node.args)), dict(wrap(dict(node.kwargs))),
                        node.meta.get(meta.SPEC), atoms, module, params)
        total += int(rule.macs(ctx))
    return total


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
    if any(n.meta.get(meta.SPEC) is None for n in pruned.graph.nodes if n.op != "output"):
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
