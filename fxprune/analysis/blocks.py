"""Depth: the removable residual blocks of an analysed graph, found by dominators.

A *block* is a residual add ``y = branch + skip`` whose branch can be removed,
leaving ``y = skip``.  Blocks are found from the graph structure alone:

* the dataflow graph gets a virtual root feeding every placeholder, and
  immediate dominators are computed (parameters and constants are not reached
  from the root, so they never break dominance);
* an **identity block** is an add whose one operand ``s`` dominates the add:
  every path from the inputs to the other operand (the branch output) passes
  through ``s``, so the branch is a region fed only by the skip;
* a **projection block** is an add whose immediate dominator ``x`` (the block
  input) is neither operand.  Its projection shortcut (a ResNet ``downsample``)
  is an operand side that has the add's shape and applies a parameterised op
  to ``x`` itself (if both sides do, the cheaper one in MACs, then nodes; the
  right operand on a tie); the other side, the branch, must hold parameters.  (Two branches of a split
  added together, or a rotary embedding's ``q * cos + rotate_half(q) * sin``,
  are therefore not blocks.)  Removing such a block
  keeps the projection (see :class:`ProjectionPolicy`).

A block's *branch* is exactly what removing it deletes: the nodes that were
needed for the outputs and no longer are once the add is replaced by its skip
(plus assertion-like sinks reading them).  Its parameters are those used only by
the branch, its MACs come from the rules (:func:`fxprune.analysis.cost.node_macs`).
In every block the replacement (skip or projection) has the add's shape and
dtype, so removal never changes another shape.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> from fxprune.analysis.blocks import find_blocks
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.stem, self.body, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 2, 1)
    ...     def forward(self, x):
    ...         x = self.stem(x)
    ...         return self.head(torch.relu(x + self.body(x)))
    >>> [b.describe() for b in find_blocks(fxprune.analyze(Net(), (torch.randn(1, 3, 6, 6),)))]
    ['block 0: add = stem + [body]; 1 nodes, 148 params, 5184 MACs']
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable, Mapping, Protocol

import networkx as nx
import torch
import torch.fx as fx

from .. import ir
from ..ir import TensorSpec
from ..modules import get_attr
from ..ops.registry import Registry, node_key
from .cost import node_macs

__all__ = ["Analysed", "Block", "ProjectionPolicy", "blocks_of", "find_blocks", "is_add", "removed_nodes"]


class Analysed(Protocol):
    """What finding blocks reads of an :class:`~fxprune.analysis.analysis.Analysis` (no import of it,
    so that ``Analysis`` can list its own blocks)."""

    graph_module: fx.GraphModule
    registry: Registry


class ProjectionPolicy(str, enum.Enum):
    """What removing a block with a projection shortcut does.

    ``keep``: such blocks are not removable (asking to remove one is a
    :class:`~fxprune.errors.PlanError`); ``replace``: the branch is removed and
    the add is replaced by the projection (``y = downsample(x)``).
    """

    KEEP = "keep"
    REPLACE = "replace"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Block:
    """One removable residual block (node names refer to ``analysis.graph_module``).

    Attributes:
        id: position among the blocks, in graph order of their adds.
        add: the residual add node.
        skip: what the add becomes: the skip (identity) or the projection's output.
        output: the branch output (the add's other operand).
        source: the block input (equals ``skip`` for identity blocks).
        nodes: the branch: nodes removed with the block (graph order, the add excluded).
        params: parameters used only by the branch (qualified names).
        num_params: their element count.
        macs: multiply-accumulates of the branch and the add at the analysed input size.
        projection: whether the skip is a projection shortcut rather than the identity.
    """

    id: int
    add: str
    skip: str
    output: str
    source: str
    nodes: tuple[str, ...]
    params: tuple[str, ...]
    num_params: int
    macs: int
    projection: bool = False

    def removable(self, policy: ProjectionPolicy = ProjectionPolicy.KEEP) -> bool:
        """Whether ``policy`` allows removing this block."""
        return not self.projection or ProjectionPolicy(policy) is ProjectionPolicy.REPLACE

    def describe(self) -> str:
        """One line: ``block i: add = skip + [branch output]; sizes``."""
        kind = " (projection)" if self.projection else ""
        return (f"block {self.id}: {self.add} = {self.skip} + [{self.output}]{kind}; "
                f"{len(self.nodes)} nodes, {self.num_params} params, {self.macs} MACs")


def is_add(node: fx.Node, registry: Registry, root: torch.nn.Module) -> bool:
    """Whether ``node`` (of a graph of ``root``) computes ``a + b``: its rule declares :attr:`~fxprune.ir.Algebra.SUM`.

    ``alpha``, if given, must be 1.
    """
    if node.op not in ("call_function", "call_method"):
        return False
    rule = registry.rule_for_key(node_key(node, root))
    if rule is None or rule.algebra is not ir.Algebra.SUM:
        return False
    alpha = node.kwargs.get("alpha", node.args[2] if len(node.args) > 2 else 1)
    return isinstance(alpha, (int, float)) and alpha == 1


# --- graph helpers ------------------------------------------------------------
_ROOT = "__fxprune_root__"


def _dataflow(graph: fx.Graph) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_node(_ROOT)
    for node in graph.nodes:
        g.add_node(node.name)
        if node.op == "placeholder":
            g.add_edge(_ROOT, node.name)
        for src in node.all_input_nodes:
            g.add_edge(src.name, node.name)
    return g


def _needed(graph: fx.Graph, replace: Mapping[fx.Node, fx.Node]) -> set[fx.Node]:
    """Nodes the outputs depend on when each key of ``replace`` reads its value only."""
    out = next(n for n in reversed(graph.nodes) if n.op == "output")
    seen: set[fx.Node] = set()
    stack = [out]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend([replace[node]] if node in replace else node.all_input_nodes)
    return seen


def removed_nodes(graph: fx.Graph, replace: Mapping[fx.Node, fx.Node],
                  needed: set[fx.Node] | None = None) -> set[fx.Node]:
    """The nodes deleted when every add in ``replace`` becomes its replacement.

    Nodes the outputs needed before and no longer need, plus the nodes that
    read them without being needed (assertion sinks); the replaced adds that
    are still needed are not included (they become aliases).  ``needed``: what the
    outputs need without replacements, if already known.
    """
    before = needed if needed is not None else _needed(graph, {})
    after = _needed(graph, replace)
    removed = {n for n in before - after if n.op != "placeholder"}
    for node in graph.nodes:  # graph order: inputs first
        if node not in after and node.op != "placeholder" and any(i in removed for i in node.all_input_nodes):
            removed.add(node)
    return removed


def _param_names(gm: fx.GraphModule, node: fx.Node) -> dict[int, tuple[str, int]]:
    """``id(parameter) -> (qualified name, numel)`` for the parameters a node reads directly.

    A module call reads its module's parameters; a ``get_attr`` reads its
    target; any other call reads the parameters of its ``get_attr`` inputs.
    """
    found: dict[int, tuple[str, int]] = {}
    if node.op == "call_module":
        prefix = str(node.target)
        for name, p in gm.get_submodule(prefix).named_parameters():
            found[id(p)] = (f"{prefix}.{name}", p.numel())
    elif node.op == "get_attr":
        value = get_attr(gm, str(node.target))
        if isinstance(value, torch.nn.Parameter):
            found[id(value)] = (str(node.target), value.numel())
        elif isinstance(value, torch.nn.Module):
            for name, p in value.named_parameters():
                found[id(p)] = (f"{node.target}.{name}", p.numel())
    else:
        for src in node.all_input_nodes:
            if src.op == "get_attr":
                found.update(_param_names(gm, src))
    return found


def _exclusive_params(gm: fx.GraphModule, removed: set[fx.Node]) -> dict[int, tuple[str, int]]:
    used_by_removed: dict[int, tuple[str, int]] = {}
    used_elsewhere: set[int] = set()
    for node in gm.graph.nodes:
        params = _param_names(gm, node)
        if node in removed:
            used_by_removed.update(params)
        else:
            used_elsewhere.update(params)
    return {k: v for k, v in used_by_removed.items() if k not in used_elsewhere}


def _tensor_operands(node: fx.Node) -> list[fx.Node] | None:
    ops = [a for a in node.args[:2] if isinstance(a, fx.Node)]
    if len(ops) != 2 or ops[0] is ops[1]:
        return None
    if not all(isinstance(a.meta.get(ir.SPEC), TensorSpec) for a in ops):
        return None
    return ops


# --- finding blocks -------------------------------------------------------------
def _side(analysis: Analysed, add: fx.Node, keep: fx.Node, needed: set[fx.Node]) -> tuple[set[fx.Node], int]:
    """The nodes removed when ``add`` becomes ``keep`` (``needed``: what the outputs need), and their MACs."""
    gm = analysis.graph_module
    removed = removed_nodes(gm.graph, {add: keep}, needed) & needed
    macs = sum(node_macs(gm, n, analysis.registry) for n in removed | {add})
    return removed - {add}, macs


def _has_params(gm: fx.GraphModule, nodes: Iterable[fx.Node]) -> bool:
    return any(_param_names(gm, n) for n in nodes)


def _is_projection(gm: fx.GraphModule, side: Iterable[fx.Node], source: fx.Node) -> bool:
    """A projection shortcut: a parameterised op applied to the block input itself."""
    return any(source in n.all_input_nodes and _param_names(gm, n) for n in side)


def find_blocks(analysis: Analysed) -> tuple[Block, ...]:
    """The removable residual blocks of ``analysis.graph_module`` (see the module docstring).

    Only blocks whose replacement has the add's exact shape and dtype are
    listed, and whose branch output is computed from the block input.
    """
    gm = analysis.graph_module
    graph = gm.graph
    flow = _dataflow(graph)
    idom = nx.immediate_dominators(flow, _ROOT)
    by_name = {n.name: n for n in graph.nodes}
    order = {n: i for i, n in enumerate(graph.nodes)}
    needed = _needed(graph, {})
    found: list[Block] = []
    for node in graph.nodes:
        if node.name not in idom or not is_add(node, analysis.registry, gm):
            continue
        operands = _tensor_operands(node)
        if operands is None or any(a.name not in idom for a in operands):
            continue
        spec = node.meta.get(ir.SPEC)
        dom = by_name.get(idom[node.name])
        if dom is None:  # dominated only by the virtual root: two model inputs
            continue
        if dom in operands:
            skip = dom
            out = operands[1] if operands[0] is dom else operands[0]
            projection = False
            nodes, macs = _side(analysis, node, skip, needed)
        else:
            # each operand's side (what removing it deletes); the projection is a side applying
            # a parameterised op to the block input, the cheaper one if both do (the right
            # operand on a tie); the other side, the branch, must hold parameters
            cut = {op: _side(analysis, node, keep, needed)
                   for op, keep in ((operands[0], operands[1]), (operands[1], operands[0]))}
            shortcuts = [op for op in operands
                         if op.meta.get(ir.SPEC) == spec and _is_projection(gm, cut[op][0], dom)]
            if not shortcuts:
                continue
            skip = min(shortcuts, key=lambda op: (cut[op][1], len(cut[op][0]), op is operands[0]))
            out = operands[1] if skip is operands[0] else operands[0]
            nodes, macs = cut[out]
            if not _has_params(gm, nodes):
                continue
            projection = True
        if skip.meta.get(ir.SPEC) != spec or out not in nodes:
            continue
        params = _exclusive_params(gm, nodes | {node})
        found.append(Block(
            id=len(found), add=node.name, skip=skip.name, output=out.name, source=dom.name,
            nodes=tuple(n.name for n in sorted(nodes, key=order.__getitem__)),
            params=tuple(sorted(name for name, _ in params.values())),
            num_params=sum(k for _, k in params.values()), macs=macs, projection=projection))
    return tuple(found)


def blocks_of(analysis: Analysed) -> tuple[Block, ...]:
    """``analysis.blocks`` where ``Analysis`` caches them, else :func:`find_blocks` (same ids)."""
    cached = getattr(type(analysis), "blocks", None)
    return analysis.blocks if cached is not None else find_blocks(analysis)
