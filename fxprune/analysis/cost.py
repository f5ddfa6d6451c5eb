"""Costs of a shape-annotated graph: parameter counts and MACs from the rules.

Parameters are counted physically (``numel`` of every parameter, shared ones
once); MACs come from each node's rule (``Rule.macs``) applied to the shapes of
the graph (:data:`fxprune.ir.SPEC`), so they follow the emitted architecture
exactly.

Example:
    >>> import torch, fxprune
    >>> from fxprune.analysis.cost import count_macs, count_params
    >>> a = fxprune.analyze(torch.nn.Sequential(torch.nn.Linear(3, 4)), (torch.randn(2, 3),))
    >>> count_params(a.graph_module), count_macs(a.graph_module, a.registry)
    (16, 24)
"""
from __future__ import annotations

import torch
import torch.fx as fx

from .. import ir
from ..ir import Atoms, TensorSpec
from ..ops.context import OpContext, Value
from ..ops.registry import Registry

__all__ = ["count_macs", "count_params", "node_macs"]


def count_params(module: torch.nn.Module) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters())


def _value(x: fx.Node) -> Value:
    return Value(x.meta.get(ir.SPEC), None, x)


def node_macs(gm: fx.GraphModule, node: fx.Node, registry: Registry) -> int:
    """Multiply-accumulates of one call node (0 for nodes whose rule counts none)."""
    if node.op not in ("call_module", "call_function", "call_method"):
        return 0
    rule = registry.lookup(node, gm)
    if rule is None or rule.macs is None:
        return 0
    params: dict[str, Value | None] = {}
    module = None
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        for name, t in module.named_parameters(recurse=False):
            params[name] = Value(TensorSpec(tuple(t.shape), t.dtype), None, None, name)
    wrap = lambda a: fx.node.map_aggregate(a, lambda x: _value(x) if isinstance(x, fx.Node) else x)  # noqa: E731
    ctx = OpContext(node=node, args=tuple(wrap(node.args)), kwargs=dict(wrap(dict(node.kwargs))),
                    out=node.meta.get(ir.SPEC), atoms=Atoms(), module=module, params=params)
    return int(rule.macs(ctx))


def count_macs(gm: fx.GraphModule, registry: Registry) -> int:
    """Multiply-accumulates of one forward.  Requires :data:`fxprune.ir.SPEC` on every node."""
    return sum(node_macs(gm, node, registry) for node in gm.graph.nodes)
