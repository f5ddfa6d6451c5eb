"""The public API: ``analyze``, ``apply`` and ``prune``.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
    ...                       nn.Conv2d(16, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    >>> result = fxprune.prune(model, (torch.randn(2, 3, 8, 8),), ratio=0.5)
    >>> result.graph_module(torch.randn(2, 3, 8, 8)).shape
    torch.Size([2, 10])
    >>> result.graph_module.get_submodule("0").out_channels, model[0].out_channels
    (8, 16)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx

from .analysis.analysis import Analysis, analyze
from .analysis.capture import check_analysis_of
from .ops.registry import Registry
from .report import Report, build_report
from .rewrite.channels import apply_plan
from .scoring import ScoreContext, SelectionConfig, get_scorer, select_plan

__all__ = ["PruneResult", "apply", "prune", "analyze"]


@dataclass(frozen=True, eq=False)
class PruneResult:
    """What :func:`prune` returns.

    Attributes:
        graph_module: the new, physically smaller GraphModule.
        report: decisions, params/MACs before and after, barriers.
        analysis: the analysis of the original model.
        plan: ``{group id: removed group channels}``.
        scores: ``{group id: per-channel scores}`` used for the plan.
    """

    graph_module: fx.GraphModule
    report: Report
    analysis: Analysis
    plan: dict[int, list[int]]
    scores: dict[int, np.ndarray]


def apply(analysis: Analysis, plan: Mapping[int, Sequence[int]], *, verify: bool = True) -> fx.GraphModule:
    """Emit the pruned GraphModule for ``plan`` (``{group id: channels to remove}``)."""
    return apply_plan(analysis, plan, verify=verify)


def prune(
    model: torch.nn.Module,
    example_inputs: Sequence[Any],
    ratio: float = 0.5,
    *,
    scorer: Any = "l1",
    scorer_params: Mapping[str, Any] | None = None,
    global_ranking: bool = False,
    min_channels: int = 1,
    max_ratio: float = 1.0,
    round_to: int = 1,
    normalize: str = "mean",
    ignore: Iterable[str] = (),
    leaf_modules: Iterable[Any] = (),
    strict: bool = False,
    split_policy: str = "inner",
    registry: Registry | None = None,
    data: Any = None,
    loss_fn: Any = None,
    num_batches: int | None = None,
    progress: bool = False,
    analysis: Analysis | None = None,
) -> PruneResult:
    """Analyse, score, select and rewrite in one call.

    Args:
        model: the model to prune; never modified.
        example_inputs: a tuple of positional inputs of ``model.forward``.
        ratio: fraction of each group's prunable channels to remove, in [0, 1)
            (with ``global_ranking``, of all prunable channels).
        scorer: a scorer name (``l1``, ``l2``, ...; see :data:`fxprune.scoring.SCORERS`)
            or a scorer object.
        scorer_params: keyword parameters of the scorer.
        global_ranking: rank channels across groups instead of per group.
        min_channels: channels every group keeps at least.
        max_ratio: at most this fraction of a group is removed.
        round_to: kept counts are rounded up to a multiple of this.
        normalize: score normalisation for global ranking (``mean``, ``max``, ``none``).
        ignore: module or parameter names whose output channels are kept.
        leaf_modules, strict, split_policy, registry: see :func:`fxprune.analyze`.
        data, loss_fn, num_batches, progress: calibration inputs of data-driven scorers.
        analysis: reuse an existing analysis of ``model``.
    """
    cfg = SelectionConfig(ratio=ratio, global_ranking=global_ranking, min_channels=min_channels,
                          max_ratio=max_ratio, round_to=round_to, normalize=normalize)
    score_fn = get_scorer(scorer, **dict(scorer_params or {}))
    if analysis is None:
        analysis = analyze(model, example_inputs, leaf_modules=leaf_modules, strict=strict,
                           split_policy=split_policy, ignore=ignore, registry=registry)
    check_analysis_of(model, analysis)  # an analysis of another model would prune its weights
    ctx = ScoreContext(model=model, data=data, loss_fn=loss_fn, num_batches=num_batches,
                       progress=progress)
    scores = score_fn(analysis, ctx)
    plan = select_plan(analysis, scores, cfg)
    gm = apply_plan(analysis, plan)
    report = build_report(analysis, plan, gm)
    return PruneResult(gm, report, analysis, plan, scores)
