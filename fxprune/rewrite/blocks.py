"""Depth rewrite: emit a new GraphModule without chosen residual blocks.

:func:`remove_blocks` copies the analysed graph node by node (``Graph.node_copy``)
into a new graph, skipping each removed block's branch and mapping its add to
the skip (or to the projection, see :class:`~fxprune.analysis.blocks.ProjectionPolicy`),
so whatever followed the add (a post-add activation) now reads the skip.  Dead
code and the submodules nothing references any more are dropped, the graph is
linted and recompiled, and the result is fake-propagated on the analysis'
example inputs: every surviving node must have the shape it had before, or
:class:`~fxprune.errors.RewriteError` is raised.  The referenced modules and
tensors are deep copies (tied parameters stay tied): neither the analysed graph
nor the user's model is modified.

Invariant (checked by :func:`fxprune.testing.check_block_removal`): removing a
block equals the original with the block's branch output replaced by zeros.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> from fxprune.rewrite.blocks import remove_blocks
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.body, self.head = nn.Linear(4, 4), nn.Linear(4, 2)
    ...     def forward(self, x):
    ...         return self.head(torch.relu(x + self.body(x)))
    >>> net, x = Net(), torch.randn(3, 4)
    >>> gm = remove_blocks(fxprune.analyze(net, (x,)), [0])
    >>> [n.name for n in gm.graph.nodes], hasattr(gm, "body")
    (['x', 'relu', 'head', 'output'], False)
    >>> torch.equal(gm(x), net.head(torch.relu(x)))
    True
"""
from __future__ import annotations

from typing import Iterable

import torch.fx as fx

from .. import ir
from ..analysis.analysis import Analysis
from ..analysis.blocks import Block, ProjectionPolicy, blocks_of, removed_nodes
from ..analysis.shapes import propagate_shapes
from ..analysis.copying import copy_node, own_copies
from ..errors import PlanError, RewriteError
from .codegen import use_module_dict_codegen

__all__ = ["remove_blocks", "select_blocks"]


def select_blocks(analysis: Analysis, block_ids: Iterable[int],
                  projection: ProjectionPolicy = ProjectionPolicy.KEEP) -> list[Block]:
    """The blocks named by ``block_ids``, checked against ``projection``.

    Raises:
        PlanError: an unknown id, or a projection block under ``ProjectionPolicy.KEEP``.
    """
    policy = ProjectionPolicy(projection)
    blocks = {b.id: b for b in blocks_of(analysis)}
    chosen = []
    for i in sorted({int(i) for i in block_ids}):
        if i not in blocks:
            raise PlanError(f"no block {i}: the analysis has {len(blocks)} removable blocks "
                            f"(ids 0..{len(blocks) - 1}; see fxprune.analysis.blocks.find_blocks)")
        if not blocks[i].removable(policy):
            raise PlanError(f"block {i} ({blocks[i].add}) has a projection shortcut "
                            f"({blocks[i].skip}); ProjectionPolicy.KEEP keeps such blocks: pass "
                            "projection=ProjectionPolicy.REPLACE to replace it by its projection")
        chosen.append(blocks[i])
    return chosen


def remove_blocks(analysis: Analysis, block_ids: Iterable[int], *,
                  projection: ProjectionPolicy = ProjectionPolicy.KEEP,
                  verify: bool = True) -> fx.GraphModule:
    """A new GraphModule with the branches of ``block_ids`` removed (see the module docstring).

    Args:
        analysis: the analysis whose blocks (:func:`~fxprune.analysis.blocks.find_blocks`) are meant.
        block_ids: ids of the blocks to remove (a block nested in another removed one goes with it).
        projection: :class:`~fxprune.analysis.blocks.ProjectionPolicy` for projection blocks.
        verify: fake-propagate the result and compare every shape with the analysis.

    Raises:
        PlanError: an unknown block, or a projection block under ``ProjectionPolicy.KEEP``.
        RewriteError: the result's shapes differ from the original's (an fxprune bug).
    """
    gm = analysis.graph_module
    chosen = select_blocks(analysis, block_ids, projection)
    by_name = {n.name: n for n in gm.graph.nodes}
    replace = {by_name[b.add]: by_name[b.skip] for b in chosen}
    removed = removed_nodes(gm.graph, replace)

    graph = fx.Graph()
    graph._codegen = gm.graph._codegen  # e.g. torch.export's pytree in/out handling (immutable)
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        if node in removed:
            continue
        if node in replace:  # the add becomes its skip: its users read the skip
            env[node] = env[replace[node]]
            continue
        env[node] = copy_node(graph, node, env)
    new_gm = fx.GraphModule(gm, graph, gm.__class__.__name__)
    own_copies(new_gm)
    new_gm.graph.eliminate_dead_code()
    new_gm.delete_all_unused_submodules()
    new_gm.graph.lint()
    use_module_dict_codegen(new_gm.graph)   # submodules through _modules: no __getattr__ per call
    new_gm.recompile()
    if verify:
        _verify(analysis, new_gm)
    return new_gm


def _verify(analysis: Analysis, new_gm: fx.GraphModule) -> None:
    try:
        propagate_shapes(new_gm, analysis.example_inputs)
    except Exception as exc:
        raise RewriteError(f"the graph without the blocks does not run on the example inputs: {exc}\n"
                           "This is an fxprune bug; please report it with the model.") from exc
    before = {n.name: n.meta.get(ir.SPEC) for n in analysis.graph_module.graph.nodes}
    for node in new_gm.graph.nodes:
        if node.op == "output" or node.name not in before:
            continue
        got, want = node.meta.get(ir.SPEC), before[node.name]
        if got != want:
            raise RewriteError(f"node '{node.name}': shape {got} after removing blocks differs from "
                               f"{want} before. This is an fxprune bug; please report it.")
