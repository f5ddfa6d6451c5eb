"""Copies of graphs and of the tensors a GraphModule references, without fxprune's annotations.

Shared by the passes that build a new graph from an analysed one (block
removal, probing a model at another input size): :func:`copy_node` copies one
node into a new graph without fxprune's ``node.meta`` keys,
:func:`clean_copy` copies a whole graph, and :func:`own_copies` makes a
GraphModule own deep copies of what it references, so that changing it never
changes the user's model.

Example:
    >>> import torch, torch.fx as fx
    >>> gm = fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    >>> copy = fx.GraphModule(gm, clean_copy(gm.graph))
    >>> own_copies(copy)
    >>> copy.get_submodule("0").weight is gm.get_submodule("0").weight
    False
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
import torch.fx as fx

from .. import ir
from ..modules import get_attr, set_attr

__all__ = ["clean_copy", "copy_node", "own_copies"]


def copy_node(graph: fx.Graph, node: fx.Node, env: Mapping[fx.Node, fx.Node]) -> fx.Node:
    """``graph.node_copy(node)`` reading ``env`` for its inputs, without fxprune's meta keys."""
    new = graph.node_copy(node, env.__getitem__)
    for key in ir.ALL_KEYS:
        new.meta.pop(key, None)
    if isinstance(new.type, str):  # a string annotation cannot be pickled with the module
        new.type = None
    return new


def clean_copy(graph: fx.Graph) -> fx.Graph:
    """A copy of ``graph`` (same node names and code generator) without fxprune's meta keys."""
    new = fx.Graph()
    new._codegen = graph._codegen  # e.g. torch.export's pytree in/out handling (immutable)
    env: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        env[node] = copy_node(new, node, env)
    return new


def own_copies(gm: fx.GraphModule) -> None:
    """Replace the modules and tensors ``gm`` references by deep copies (one memo: ties kept)."""
    memo: dict[int, Any] = {}
    for name, child in list(gm.named_children()):
        setattr(gm, name, copy.deepcopy(child, memo))
    for name, p in list(gm.named_parameters(recurse=False)):
        gm.register_parameter(name, copy.deepcopy(p, memo))
    for name, b in list(gm.named_buffers(recurse=False)):
        gm.register_buffer(name, copy.deepcopy(b, memo), persistent=name not in gm._non_persistent_buffers_set)
    for node in gm.graph.nodes:
        if node.op == "get_attr" and "." not in str(node.target):
            value = get_attr(gm, str(node.target))
            if isinstance(value, torch.Tensor) and id(value) not in memo:
                set_attr(gm, str(node.target), copy.deepcopy(value, memo))
