"""The analysis stage as one object: capture, shapes, channels, groups.

Example:
    >>> import torch, torch.nn as nn
    >>> import fxprune
    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
    ...         self.head = nn.Conv2d(4, 2, 1)
    ...     def forward(self, x):
    ...         y = self.a(x) + self.b(x)          # a residual-style add couples a and b
    ...         return self.head(torch.relu(y))
    >>> analysis = fxprune.analyze(Block(), (torch.randn(1, 4, 8, 8),))
    >>> print(analysis.groups[0].describe())
    group 0: 4 channels
      producer  a.weight[dim 0] (4)
      bias      a.bias[dim 0] (4)
      producer  b.weight[dim 0] (4)
      bias      b.bias[dim 0] (4)
      consumer  head.weight[dim 1] (4)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import networkx as nx
import torch
import torch.fx as fx

from ..errors import ConfigError
from ..ops.builtin import default_registry
from ..ops.registry import Registry
from .capture import as_example_inputs, export, propagate_shapes, trace
from .channels import Barrier, ChannelState, propagate_channels, resolve_ignore
from .groups import Group, build_groups

__all__ = ["AnalysisConfig", "Analysis", "analyze"]


@dataclass(frozen=True)
class AnalysisConfig:
    """Options of the analysis stage.

    Attributes:
        leaf_modules: module types or qualified names not traced through.
        strict: raise on ops without a rule instead of making them barriers.
        split_policy: which factor of a split channel dim is pruned
            (``inner``: head_dim / channels-per-group; ``outer``: whole heads).
        split_overrides: per-node policy overrides, by fx node name: ``inner``,
            ``outer`` or an int picking which varying factor is pruned (``1``
            prunes whole heads of a fused ``qkv.reshape(B, N, 3, heads, head_dim)``).
        ignore: module or parameter names whose produced channels are kept.
        frontend: ``fx`` (symbolic_trace, the default) or ``export`` (torch.export).
    """

    leaf_modules: tuple[Any, ...] = ()
    strict: bool = False
    split_policy: str = "inner"
    split_overrides: tuple[tuple[str, str], ...] = ()
    ignore: tuple[str, ...] = ()
    frontend: str = "fx"


@dataclass(eq=False)
class Analysis:
    """The result of :func:`analyze`: a traced graph annotated with channel groups.

    Attributes:
        graph_module: the traced GraphModule (shares parameters with the model;
            never written to).
        groups: the coupled channel groups (prunable ones only).
        barriers: nodes whose channels could not be mapped, with the reason.
        state: the raw channel state (atoms, parameter labels, roles).
        example_inputs: the inputs used for shape propagation.
        config: the options used.
    """

    graph_module: fx.GraphModule
    groups: list[Group]
    barriers: list[Barrier]
    state: ChannelState
    example_inputs: tuple
    config: AnalysisConfig
    registry: Registry
    _graph: nx.Graph = field(repr=False)

    def to_networkx(self) -> nx.Graph:
        """The coupling graph: spaces as nodes (``kind``, ``name``, ``dim``, ``size``,
        ``role``, ``group``), an edge where spaces share channels (``shared``)."""
        return self._graph.copy()

    def to_dot(self) -> str:
        """The coupling graph in Graphviz DOT, one cluster per group."""
        lines = ["graph coupling {", "  node [shape=box, fontsize=10];"]
        by_group: dict[Any, list[str]] = {}
        for n, data in self._graph.nodes(data=True):
            by_group.setdefault(data.get("group"), []).append(n)
        for gid, nodes in sorted(by_group.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
            lines.append(f"  subgraph cluster_{gid if gid is not None else 'none'} {{")
            lines.append(f'    label="group {gid}";')
            for n in nodes:
                d = self._graph.nodes[n]
                shape = "box" if d["kind"] == "param" else "ellipse"
                label = f'{d["name"]}[{d["dim"]}]' + (f'\\n{d["role"]}' if "role" in d else "")
                lines.append(f'    "{n}" [label="{label}", shape={shape}];')
            lines.append("  }")
        for a, b, d in self._graph.edges(data=True):
            lines.append(f'  "{a}" -- "{b}" [label="{d.get("shared", "")}"];')
        lines.append("}")
        return "\n".join(lines)

    def to_json(self) -> str:
        """The group listing as JSON (members with index maps, fixed channels, barriers)."""
        return json.dumps({
            "groups": [{
                "id": g.id, "size": g.size, "fixed": sorted(g.fixed), "mixing": g.mixing,
                "fixed_reasons": list(g.fixed_reasons),
                "members": [{"node": m.node, "param": m.param, "dim": m.dim, "role": m.role,
                             "index_map": list(m.index_map)} for m in g.members],
            } for g in self.groups],
            "barriers": [{"node": b.node, "op": b.op, "reason": b.reason} for b in self.barriers],
        })

    def group_of(self, param: str, dim: int | None = None) -> list[Group]:
        """Groups in which ``param`` (optionally at ``dim``) is a member."""
        return [g for g in self.groups
                if any(m.param == param and (dim is None or m.dim == dim) for m in g.members)]

    def summary(self) -> str:
        """A short human-readable listing of groups and barriers."""
        lines = [f"{len(self.groups)} groups, {len(self.barriers)} barriers"]
        for g in self.groups:
            lines.append(g.describe())
        for b in self.barriers:
            lines.append(f"barrier {b.node} ({b.op}): {b.reason}")
        return "\n".join(lines)


def analyze(
    model: torch.nn.Module,
    example_inputs: Sequence[Any],
    *,
    leaf_modules: Iterable[Any] = (),
    strict: bool = False,
    split_policy: str = "inner",
    split_overrides: dict[str, str] | None = None,
    ignore: Iterable[str] = (),
    registry: Registry | None = None,
    frontend: str = "fx",
) -> Analysis:
    """Trace ``model`` and find its coupled channel groups.

    No real computation runs: shapes come from fake tensors, so models on the
    ``meta`` device can be analysed.  The model is never modified.

    Args:
        model: the model (an ``nn.Module``; a ``GraphModule`` is used as is).
        example_inputs: a tuple of the positional inputs of ``model.forward``.
        leaf_modules: module types or qualified names not to trace through.
        strict: raise :class:`~fxprune.errors.UnsupportedOpError` for ops without a rule.
        split_policy: ``inner`` or ``outer`` (see :class:`AnalysisConfig`).
        split_overrides: ``{fx node name: policy}`` for individual reshapes.
        ignore: module/parameter names whose output channels must be kept.
        registry: the rule registry (default: :func:`fxprune.ops.default_registry`).
        frontend: ``fx`` (``torch.fx.symbolic_trace``) or ``export`` (``torch.export``:
            ATen-level, for models symbolic tracing cannot handle; same rules).

    Raises:
        TraceError, ExampleInputError, UnsupportedOpError, ConfigError.
    """
    if frontend not in ("fx", "export"):
        raise ConfigError(f"unknown frontend {frontend!r}; available: 'fx' (symbolic_trace), "
                          "'export' (torch.export, ATen level)")
    example_inputs = as_example_inputs(example_inputs)  # refuses a dict, None or a string clearly
    config = AnalysisConfig(tuple(leaf_modules), strict, split_policy,
                            tuple(sorted((split_overrides or {}).items())), tuple(ignore), frontend)
    registry = registry if registry is not None else default_registry()
    if frontend == "export":
        gm = export(model, example_inputs)
    else:
        gm = trace(model, leaf_modules=tuple(config.leaf_modules) + registry.leaf_types())
    if gm is model:  # a GraphModule given by the user: annotate a shallow copy of its graph
        gm = fx.GraphModule(model, _copy_graph(model.graph), type(model).__name__)
    propagate_shapes(gm, example_inputs)
    state = propagate_channels(gm, registry, strict=strict, split_policy=split_policy,
                               split_overrides=dict(config.split_overrides))
    if config.ignore:
        resolve_ignore(state, [n for n, _ in model.named_modules()], config.ignore)
    groups, graph = build_groups(gm, state)
    return Analysis(gm, groups, state.barriers, state, example_inputs, config, registry, graph)


def _copy_graph(graph: fx.Graph) -> fx.Graph:
    new = fx.Graph()
    out = new.graph_copy(graph, {})
    new.output(out)
    return new
