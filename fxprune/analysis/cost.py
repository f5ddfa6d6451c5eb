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
    >>> from fxprune.rewrite.channels import plan_mask
    >>> plan_costs(a.graph_module, a.registry, plan_mask(a, {}), a.state.param_labels)
    (16, 24)
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
import torch.fx as fx

from .. import ir
from ..ir import Atoms, KeepMask, TensorSpec
from ..modules import submodule
from ..ops.context import OpContext, Value
from ..ops.registry import Registry, node_key

__all__ = ["count_macs", "count_params", "node_macs", "plan_costs", "plan_node_macs", "plan_specs"]


def count_params(module: torch.nn.Module) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters())


def node_macs(gm: fx.GraphModule, node: fx.Node, registry: Registry,
              spec_of: Callable[[fx.Node], Any] | None = None,
              param_spec: Callable[[str, torch.Tensor], TensorSpec] | None = None) -> int:
    """Multiply-accumulates of one call node (0 for nodes whose rule counts none).

    ``spec_of(node)`` gives the spec of a node (default its :data:`fxprune.ir.SPEC`)
    and ``param_spec(qualname, tensor)`` the spec of a module parameter (default its
    shape): :func:`plan_costs` passes the shapes a plan would produce.
    """
    if node.op not in ("call_module", "call_function", "call_method"):
        return 0
    module = submodule(gm, str(node.target)) if node.op == "call_module" else None
    rule = registry.rule_for_key(node_key(node, gm, module))
    if rule is None or rule.macs is None:
        return 0
    spec_of = spec_of or (lambda n: n.meta.get(ir.SPEC))
    params: dict[str, Value | None] = {}
    if module is not None:
        for name, t in module.named_parameters():
            spec = param_spec(f"{node.target}.{name}", t) if param_spec else TensorSpec(tuple(t.shape), t.dtype)
            params[name] = Value(spec, None, None, name)
    wrap = lambda a: fx.node.map_aggregate(  # noqa: E731
        a, lambda x: Value(spec_of(x), None, x) if isinstance(x, fx.Node) else x)
    ctx = OpContext(node=node, args=tuple(wrap(node.args)), kwargs=dict(wrap(dict(node.kwargs))),
                    out=spec_of(node), atoms=Atoms(), module=module, params=params)
    return int(rule.macs(ctx))


def count_macs(gm: fx.GraphModule, registry: Registry) -> int:
    """Multiply-accumulates of one forward.  Requires :data:`fxprune.ir.SPEC` on every node."""
    return sum(node_macs(gm, node, registry) for node in gm.graph.nodes)


def plan_specs(mask: KeepMask, param_labels: Mapping[str, tuple]) -> tuple[
        Callable[[fx.Node], Any], Callable[[str, torch.Tensor], TensorSpec]]:
    """``(spec_of, param_spec)``: the shapes an analysed graph's values and parameters take under ``mask``.

    ``spec_of(node)`` is the node's :data:`fxprune.ir.SPEC` resized by the plan,
    ``param_spec(qualname, tensor)`` a parameter's; both as :func:`node_macs` takes them.
    """
    def spec_of(n: fx.Node) -> Any:
        spec = n.meta.get(ir.SPEC)
        return _resized(spec, mask.shape(spec, n.meta.get(ir.CHANNELS)))

    def param_spec(name: str, t: torch.Tensor) -> TensorSpec:
        spec = TensorSpec(tuple(t.shape), t.dtype)
        return TensorSpec(mask.shape(spec, param_labels.get(name)), t.dtype)

    return spec_of, param_spec


def plan_costs(gm: fx.GraphModule, registry: Registry, mask: KeepMask,
               param_labels: Mapping[str, tuple]) -> tuple[int, int]:
    """``(params, macs)`` the pruned model would have, predicted from shapes without rewriting.

    ``gm`` is an analysed graph (SPEC and CHANNELS meta), ``mask`` a plan's
    :class:`~fxprune.ir.KeepMask` and ``param_labels`` the analysis' labels of every
    parameter (``analysis.state.param_labels``).  Exact for every rule's ``macs``:
    they read only shapes.
    """
    _, param_spec = plan_specs(mask, param_labels)
    params = sum(math.prod(param_spec(name, p).shape) for name, p in gm.named_parameters())
    return int(params), sum(plan_node_macs(gm, registry, mask, param_labels).values())


def plan_node_macs(gm: fx.GraphModule, registry: Registry, mask: KeepMask,
                   param_labels: Mapping[str, tuple]) -> dict[str, int]:
    """``{node name: MACs}`` of every call node as the pruned model would have them (see :func:`plan_costs`).

    Summing a subset gives the MACs of a graph from which the other nodes are
    removed (e.g. residual branches, :mod:`fxprune.analysis.blocks`) while the
    survivors keep their shapes.
    """
    spec_of, param_spec = plan_specs(mask, param_labels)
    return {node.name: node_macs(gm, node, registry, spec_of, param_spec) for node in gm.graph.nodes
            if node.op in ("call_module", "call_function", "call_method")}


def _resized(spec: Any, shape: Any) -> Any:
    if isinstance(spec, TensorSpec):
        return TensorSpec(tuple(shape), spec.dtype)
    if isinstance(spec, tuple) and isinstance(shape, tuple) and len(spec) == len(shape):
        return tuple(_resized(s, n) for s, n in zip(spec, shape))
    return spec
