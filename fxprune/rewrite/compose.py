"""Depth x width x resolution in one plan and one call: :func:`apply_3d`.

A :class:`Plan3D` names, against **one** analysis, the residual blocks to
remove (depth) and the channels to remove (width: ``{group id: channels}``, as
for :func:`fxprune.apply`).  Resolution is the analysis itself: analyse the
model at the chosen input size (:func:`fxprune.analysis.resolution.at_resolution`)
and plan on that analysis; the result records the input size it was built for.

:func:`apply_3d` removes the blocks first (:func:`~fxprune.rewrite.blocks.remove_blocks`),
re-analyses the smaller graph, carries the channel plan over to it through the
parameters (:func:`translate_plan`: each parameter index keeps its fate) and
slices it (:func:`~fxprune.rewrite.channels.apply_plan`, with its shape
verification).  Removing blocks only loosens channel coupling, so every channel
of the new analysis is either wholly removed or wholly kept by the plan.

Example:
    >>> import torch, fxprune
    >>> from fxprune.rewrite.compose import Plan3D, apply_3d
    >>> from fxprune.testing import zoo
    >>> model, inputs = zoo.resnet_basic()
    >>> analysis = fxprune.analyze(model, inputs)
    >>> plan = Plan3D(channels={0: [0, 1, 2, 3]}, blocks=(0, 1))
    >>> result = apply_3d(analysis, plan)
    >>> result.graph_module(*inputs).shape, result.input_shapes, result.removed_blocks
    (torch.Size([1, 10]), ((1, 3, 32, 32),), ('add', 'add_1'))
    >>> result.params < result.params_before and result.macs < result.macs_before
    True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx

from ..analysis.analysis import Analysis, analyze
from ..analysis.blocks import ProjectionPolicy
from ..analysis.cost import count_macs, count_params
from ..analysis.resolution import input_shapes
from ..errors import PlanError
from ..modules import ResizeInputs
from .blocks import remove_blocks, select_blocks
from .channels import apply_plan, plan_mask

__all__ = ["Plan3D", "Result3D", "analysis_at_size", "apply_3d", "reanalyze", "translate_plan"]


@dataclass(frozen=True)
class Plan3D:
    """What to remove, against one analysis (made at the chosen input size).

    Attributes:
        channels: ``{group id: group channels to remove}`` (width).
        blocks: ids of the residual blocks to remove (depth).
        projection: :class:`~fxprune.analysis.blocks.ProjectionPolicy` for projection blocks.
    """

    channels: Mapping[int, Sequence[int]] = field(default_factory=dict)
    blocks: tuple[int, ...] = ()
    projection: ProjectionPolicy = ProjectionPolicy.KEEP


@dataclass(frozen=True, eq=False)
class Result3D:
    """What :func:`apply_3d` returns.

    Attributes:
        graph_module: the new GraphModule.
        input_shapes: the input shapes it was analysed and verified for (the resolution).
        plan: the plan applied.
        removed_blocks: the adds of the removed blocks (node names of the analysis).
        params, params_before, macs, macs_before: sizes after and before, at ``input_shapes``.
    """

    graph_module: fx.GraphModule
    input_shapes: tuple
    plan: Plan3D
    removed_blocks: tuple[str, ...]
    params: int
    params_before: int
    macs: int
    macs_before: int

    def wrapped(self, mode: str = "bilinear") -> "ResizeInputs":
        """The module behind a resize of its inputs to :attr:`input_shapes` (see :class:`ResizeInputs`)."""
        return ResizeInputs(self.graph_module, self.input_shapes, mode=mode)


def reanalyze(analysis: Analysis, module: torch.nn.Module) -> Analysis:
    """``module`` analysed like ``analysis`` (same inputs, registry and options).

    ``ignore`` entries and leaf-module names (strings) that no longer exist in ``module`` are dropped.
    """
    cfg = analysis.config
    names = [n for n, _ in module.named_modules()] + [n for n, _ in module.named_parameters()]
    present = lambda e: not isinstance(e, str) or any(n == e or n.startswith(e + ".") for n in names)  # noqa: E731
    config = cfg.replace(leaf_modules=tuple(m for m in cfg.leaf_modules if present(m)),
                         ignore=tuple(e for e in cfg.ignore if present(e)))
    return analyze(module, analysis.example_inputs, config, registry=analysis.registry)


def analysis_at_size(analysis: Analysis, size: Sequence[int]) -> Analysis:
    """``analysis``' model analysed like it at the spatial input size ``size``.

    :func:`~fxprune.analysis.resolution.at_resolution` of ``analysis.graph_module``
    (positional embeddings interpolated in a copy, baked sizes reported as
    :class:`~fxprune.errors.ResolutionError`), with the same options and registry.
    Group and block ids are those of ``analysis``: the graph is the same.
    """
    from ..analysis.resolution import at_resolution

    return at_resolution(analysis.graph_module, analysis.example_inputs, size=tuple(size),
                         config=analysis.config, registry=analysis.registry).analysis


def translate_plan(old: Analysis, plan: Mapping[int, Sequence[int]], new: Analysis) -> dict[int, list[int]]:
    """``plan`` (against ``old``) as a plan against ``new``, through the parameters both share.

    A channel of ``new`` is removed when the indices its members own were removed
    by ``plan``; parameters only ``new`` has keep their channels.

    Raises:
        PlanError: a channel of ``new`` would be partly removed (``new`` couples what
            ``old`` did not), or the plan is invalid for ``old``.
    """
    mask = plan_mask(old, plan)
    out: dict[int, list[int]] = {}
    for g in new.groups:
        removed = np.zeros(g.size, dtype=bool)
        kept = np.zeros(g.size, dtype=bool)
        for m in g.members:
            labels = old.state.param_labels.get(m.param)
            if labels is None or m.dim >= len(labels) or labels[m.dim] is None:
                continue
            keep = mask.kept(labels[m.dim])
            chans = np.asarray(m.index_map, dtype=np.int64)
            if len(keep) != len(chans):
                continue
            ok = chans >= 0
            removed[chans[ok & ~keep]] = True
            kept[chans[ok & keep]] = True
        split = np.nonzero(removed & kept)[0]
        if len(split):
            raise PlanError(f"group {g.id} of the new analysis: channels {split[:5].tolist()} are "
                            "partly removed by the plan (the new graph couples what the old did not)")
        if removed.any():
            out[g.id] = np.nonzero(removed)[0].tolist()
    return out


def apply_3d(analysis: Analysis, plan: Plan3D) -> Result3D:
    """Remove ``plan.blocks`` and ``plan.channels`` from the analysed model in one call.

    Raises:
        PlanError: an unknown block or group, a projection block under ``ProjectionPolicy.KEEP``,
            or an invalid channel plan.
        RewriteError: a rewrite whose shapes differ from the prediction (an fxprune bug).
    """
    plan_mask(analysis, plan.channels)  # validate the channel plan against this analysis first
    chosen = select_blocks(analysis, plan.blocks, plan.projection)
    if chosen:
        gm = remove_blocks(analysis, [b.id for b in chosen], projection=plan.projection)
        if plan.channels:
            smaller = reanalyze(analysis, gm)
            gm = apply_plan(smaller, translate_plan(analysis, plan.channels, smaller))
    else:
        gm = apply_plan(analysis, plan.channels)
    # both rewrites verify by propagating shapes, which annotates ``gm`` for counting
    return Result3D(gm, input_shapes(analysis.example_inputs), plan, tuple(b.add for b in chosen),
                    count_params(gm), count_params(analysis.graph_module), count_macs(gm, analysis.registry),
                    count_macs(analysis.graph_module, analysis.registry))
