"""The pruning report: what was removed, what it saved, and what could not be pruned.

Parameters are counted physically (``numel`` of every parameter of the
GraphModule); MACs come from each node's rule (``Rule.macs``) applied to the
shapes of the graph, so they follow the emitted architecture exactly.  The
report reads as a text table (``str``), and exports to JSON
(:meth:`Report.to_json`) and Markdown (:meth:`Report.to_markdown`), with a
per-layer table (:attr:`Report.layers`: widths, parameters and MACs before and
after).

Example:
    >>> import json, torch, fxprune
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> report = fxprune.prune(model, (torch.randn(2, 4),), ratio=0.5).report
    >>> [(row.name, row.width_before, row.width_after) for row in report.layers]
    [('0', (8,), (4,)), ('2', (2,), (2,))]
    >>> json.loads(report.to_json())["params"]
    {'before': 58, 'after': 30, 'ratio': 0.5172413793103449}
    >>> print(report.to_markdown().splitlines()[0])
    | | before | after | ratio |
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx

from . import ir
from .analysis.analysis import Analysis
from .analysis.shapes import propagate_shapes
from .analysis.cost import count_macs, count_params, node_macs
from .analysis.latency import LatencyRow
from .modules import get_attr, submodule
from .ops.registry import Registry

__all__ = ["GroupDecision", "LayerRow", "Report", "build_report", "count_macs", "count_params", "layer_rows"]


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
class LayerRow:
    """One layer (a node that holds parameters or does multiply-accumulates) before and after.

    ``width_*`` are the sizes of the output's channel dimensions (those that
    carry channel labels), e.g. ``(64,)`` for a conv with 64 output channels.
    """

    name: str
    family: str
    width_before: tuple[int, ...]
    width_after: tuple[int, ...]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int

    @property
    def changed(self) -> bool:
        return (self.width_before, self.params_before, self.macs_before) != \
            (self.width_after, self.params_after, self.macs_after)


@dataclass(frozen=True)
class Report:
    """Per-group decisions, parameter and MAC counts, and barriers.

    ``str(report)`` is a readable table.  ``layers`` is the per-layer table;
    ``latency`` the per-node latency table (measured before, predicted after,
    seconds, slowest first) when a latency table was used
    (``prune(target_latency=...)`` or ``prune(latency=...)``).
    """

    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    groups: tuple[GroupDecision, ...]
    barriers: tuple[tuple[str, str, str], ...]
    notes: tuple[str, ...] = ()
    layers: tuple[LayerRow, ...] = ()
    latency: tuple[LatencyRow, ...] = ()
    #: ops without a rule that touch no channel (mask and index building): counted, not barriers
    inert_ops: int = 0

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
        if self.inert_ops:
            lines.append(f"{_inert_line(self.inert_ops)}")
        for n in self.notes:
            lines.append(n)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Everything in the report as plain JSON-ready data."""
        return {
            "params": {"before": self.params_before, "after": self.params_after, "ratio": self.params_ratio},
            "macs": {"before": self.macs_before, "after": self.macs_after, "ratio": self.macs_ratio},
            "groups": [dict(asdict(d), kept=d.kept) for d in self.groups],
            "layers": [asdict(row) for row in self.layers],
            "barriers": [{"node": n, "op": op, "reason": why} for n, op, why in self.barriers],
            "inert_ops": self.inert_ops,
            "notes": list(self.notes),
            "latency": [asdict(row) for row in self.latency],
        }

    def to_json(self, **dumps: Any) -> str:
        """The report as JSON (``json.dumps`` keywords pass through, e.g. ``indent=2``)."""
        return json.dumps(self.to_dict(), **dumps)

    def to_markdown(self) -> str:
        """The report as Markdown: totals, the per-layer table, groups and barriers."""
        lines = ["| | before | after | ratio |", "|---|---:|---:|---:|",
                 f"| params | {self.params_before:,} | {self.params_after:,} | {self.params_ratio:.1%} |",
                 f"| MACs | {self.macs_before:,} | {self.macs_after:,} | {self.macs_ratio:.1%} |"]
        if self.layers:
            lines += ["", "| layer | op | width | params | MACs |", "|---|---|---|---:|---:|"]
            for r in self.layers:
                width = "x".join(map(str, r.width_before)) + " → " + "x".join(map(str, r.width_after))
                lines.append(f"| `{r.name}` | {r.family} | {width} | {r.params_before:,} → {r.params_after:,} "
                             f"| {r.macs_before:,} → {r.macs_after:,} |")
        lines += ["", "| group | size | kept | removed | fixed | producers |", "|---:|---:|---:|---:|---:|---|"]
        for d in self.groups:
            lines.append(f"| {d.group} | {d.size} | {d.kept} | {d.removed} | {d.fixed} | "
                         + ", ".join(f"`{p}`" for p in d.producers) + (f" ({d.note})" if d.note else "") + " |")
        if self.barriers:
            lines += ["", "Barriers (channels not pruned):", ""]
            lines += [f"- `{n}` ({op}): {why}" for n, op, why in self.barriers]
        if self.inert_ops:
            lines += ["", _inert_line(self.inert_ops)]
        if self.latency:
            lines += ["", "| node | op | ms before | ms after (predicted) |", "|---|---|---:|---:|"]
            lines += [f"| `{r.name}` | {r.op} | {r.before * 1e3:.4f} | {r.after * 1e3:.4f} |" for r in self.latency]
        lines += [f"\n{n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _inert_line(n: int) -> str:
    return f"{n} mask/index ops without channels (no rule, but they touch no channel: not barriers)"


def build_report(analysis: Analysis, plan: Mapping[int, Sequence[int]], pruned: fx.GraphModule,
                 notes: Sequence[str] = (), latency: Sequence[LatencyRow] = ()) -> Report:
    """The report of applying ``plan`` to ``analysis`` (``pruned`` has SPEC meta).

    ``latency``: the per-node latency table (:meth:`~fxprune.analysis.latency.LatencyTable.rows`), if measured.
    """
    before_gm = analysis.graph_module
    decisions = []
    for g in analysis.groups:
        removed = len(set(plan.get(g.id, ())))
        note = "mixing" if g.mixing else ""
        decisions.append(GroupDecision(g.id, g.size, removed, len(g.fixed),
                                       tuple(m.param for m in g.producers()), note))
    # The rewrite's verification annotated every node (a node whose value is None, a traced
    # guard, has the spec None): shapes are propagated again only where it did not run.
    if any(ir.SPEC not in n.meta for n in pruned.graph.nodes if n.op != "output"):
        propagate_shapes(pruned, analysis.example_inputs)
    # every call node's MACs once per graph: the totals (count_macs) and the per-layer table share them
    macs_before = _macs_by_node(before_gm, analysis.registry)
    macs_after = _macs_by_node(pruned, analysis.registry)
    return Report(
        params_before=count_params(before_gm),
        params_after=count_params(pruned),
        macs_before=sum(macs_before.values()),
        macs_after=sum(macs_after.values()),
        groups=tuple(decisions),
        barriers=tuple((b.node, b.op, b.reason) for b in analysis.barriers),
        inert_ops=len(analysis.state.inert),
        notes=tuple(dict.fromkeys(tuple(analysis.notes) + tuple(notes))),  # a reloaded report carries them already
        layers=layer_rows(before_gm, pruned, analysis.registry, macs=(macs_before, macs_after)),
        latency=tuple(latency),
    )


def _node_params(gm: fx.GraphModule, node: fx.Node) -> int:
    """Parameter elements a node applies: its module's, or those of its ``get_attr`` inputs."""
    if node.op == "call_module":
        return sum(p.numel() for p in submodule(gm, str(node.target)).parameters())
    attrs = (get_attr(gm, str(a.target)) for a in node.all_input_nodes if a.op == "get_attr")
    return sum(t.numel() for t in attrs if isinstance(t, torch.nn.Parameter))


def _widths(spec: Any, labels: Any) -> tuple[int, ...]:
    if not isinstance(spec, ir.TensorSpec) or not isinstance(labels, tuple):
        return ()
    return tuple(int(size) for size, lab in zip(spec.shape, labels) if isinstance(lab, np.ndarray))


def _macs_by_node(gm: fx.GraphModule, registry: Registry) -> dict[str, int]:
    """``{node name: MACs}`` of every call node (their sum is :func:`count_macs`)."""
    return {n.name: node_macs(gm, n, registry) for n in gm.graph.nodes
            if n.op in ("call_module", "call_function", "call_method")}


def layer_rows(before: fx.GraphModule, after: fx.GraphModule, registry: Registry, *,
               macs: tuple[Mapping[str, int], Mapping[str, int]] | None = None) -> tuple[LayerRow, ...]:
    """The per-layer table: every node of ``before`` with parameters or MACs, matched by name in ``after``.

    Both graphs need :data:`fxprune.ir.SPEC` on every node; channel widths come
    from ``before``'s labels (:data:`fxprune.ir.CHANNELS`).  ``macs``: every call
    node's MACs in ``before`` and in ``after`` by name, if counted already.
    """
    by_before, by_after = macs if macs is not None else (_macs_by_node(before, registry),
                                                        _macs_by_node(after, registry))
    after_nodes = {n.name: n for n in after.graph.nodes}
    rows = []
    for node in before.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        params, macs = _node_params(before, node), by_before[node.name]
        if not params and not macs:
            continue
        twin = after_nodes.get(node.name)
        labels = node.meta.get(ir.CHANNELS)
        width_before = _widths(node.meta.get(ir.SPEC), labels)
        if twin is None:  # removed from the pruned graph (e.g. a dropped block)
            width_after, params_after, macs_after = tuple(0 for _ in width_before), 0, 0
        else:
            shape = twin.meta.get(ir.SPEC)
            width_after = tuple(int(shape.shape[d]) for d, lab in enumerate(labels or ())
                                if isinstance(lab, np.ndarray)) if isinstance(shape, ir.TensorSpec) else ()
            params_after, macs_after = _node_params(after, twin), by_after.get(twin.name, 0)
        rule = node.meta.get(ir.RULE)
        rows.append(LayerRow(str(node.target) if node.op == "call_module" else node.name,
                             rule.family if rule is not None else "barrier", width_before, width_after,
                             params, params_after, macs, macs_after))
    return tuple(rows)
