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

import inspect
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx

from .analysis.analysis import Analysis, AnalysisConfig, analyze, unknown_names
from .errors import ConfigError
from .analysis.capture import check_analysis_of
from .ops.registry import Registry
from .analysis.latency import LatencyConfig, LatencyTable
from .latency import latency_cost, latency_note, latency_table
from .report import Report, build_report
from .rewrite.channels import apply_plan
from .rewrite.materialize import materialize
from .scoring import ScoreContext, SelectionConfig, get_scorer, select_plan
from .scoring.targets import CostFn, Target, TargetResult, select_for_target

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
        target: where a target search landed (``target_macs``, ``target_params``,
            ``target_latency``; ``None`` without one): the ratio, the costs before
            and after (the predicted latency, in seconds), whether it was reached.
    """

    graph_module: fx.GraphModule
    report: Report
    analysis: Analysis
    plan: dict[int, list[int]]
    scores: dict[int, np.ndarray]
    target: TargetResult | None = None

    def materialize(self, *, hf_config: bool = True, rtol: float = 1e-4, atol: float = 1e-5) -> torch.nn.Module:
        """The pruned model as an instance of the original class (see :func:`fxprune.rewrite.materialize`).

        A deep copy of the model, parameters sliced and module attributes
        resized, checked against :attr:`graph_module` on the example inputs; a
        Hugging Face model comes back rebuilt from an updated ``config``.

        Raises:
            MaterializeError: naming the module and attribute whose size the eager
                code hard-codes, or why a Hugging Face config cannot express the
                widths; :attr:`graph_module` remains the answer.
        """
        return materialize(self.analysis, self.plan, graph_module=self.graph_module, hf_config=hf_config,
                           rtol=rtol, atol=atol)


def apply(analysis: Analysis, plan: Mapping[int, Sequence[int]], *, verify: bool = True) -> fx.GraphModule:
    """Emit the pruned GraphModule for ``plan`` (``{group id: channels to remove}``)."""
    return apply_plan(analysis, plan, verify=verify)


def prune(
    model: torch.nn.Module,
    example_inputs: Sequence[Any] | None = (),
    ratio: float | Mapping[str | int, float] = 0.5,
    *,
    example_kwargs: Mapping[str, Any] | None = None,
    scorer: Any = "l1",
    scorer_params: Mapping[str, Any] | None = None,
    global_ranking: bool = False,
    min_channels: int = 1,
    max_ratio: float = 1.0,
    round_to: int | Mapping[str | int, int] = 1,
    normalize: str = "mean",
    uniform: bool = False,
    target_macs: float | None = None,
    target_params: float | None = None,
    target_latency: float | None = None,
    latency: LatencyConfig | LatencyTable | None = None,
    data: Any = None,
    loss_fn: Any = None,
    num_batches: int | None = None,
    progress: bool = False,
    analysis: Analysis | None = None,
    registry: Registry | None = None,
    **analysis_options: Any,
) -> PruneResult:
    """Analyse, score, select and rewrite in one call.

    Args:
        model: the model to prune; never modified.
        example_inputs: a tuple of positional inputs of ``model.forward``.
        example_kwargs: keyword inputs of ``model.forward`` (``input_ids``,
            ``attention_mask``... of a Hugging Face model), see :func:`fxprune.analyze`.
        ratio: fraction of each group's prunable channels to remove, in [0, 1)
            (with ``global_ranking``, of all prunable channels); or a mapping from
            module-name prefixes (``""`` matches everything) or group ids to
            ratios: each group takes its longest matching prefix, unmatched groups
            keep all their channels (see :class:`~fxprune.scoring.SelectionConfig`).
        scorer: a scorer name (``l1``, ``l2``, ...; see :data:`fxprune.scoring.SCORERS`)
            or a scorer object.
        scorer_params: keyword parameters of the scorer.
        global_ranking: rank channels across groups instead of per group.
        min_channels: channels every group keeps at least.
        max_ratio: at most this fraction of a group is removed.
        round_to: kept counts are rounded up to a multiple of this; or a mapping of
            prefixes (or group ids) to multiples, like ``ratio``.
        normalize: score normalisation for global ranking (``mean``, ``max``, ``none``).
        uniform: groups that repeat one block's width (``layers.0.mlp`` ...
            ``layers.N.mlp``, see :mod:`fxprune.analysis.repeats`) keep identical
            widths, so the result is expressible as a config of the model's class.
        target_macs, target_params: budgets instead of ``ratio``: the pruned model's
            MACs / parameters at most this (a fraction <= 1 of the original, or an
            absolute count).  The selection's ratio is searched (monotone bisection)
            to the least-pruned plan within budget, one channel step from it; the
            report's notes say where it landed.
        target_latency: a latency budget, a fraction in (0, 1] of the original model's
            latency on this machine: searched like the other targets through a
            :class:`~fxprune.analysis.latency.LatencyTable` (measured once and
            cached, see :func:`fxprune.latency_table`); the pruned model is then
            measured once and the report's notes give predicted and measured latency.
        latency: how the latency table is measured (a :class:`~fxprune.analysis.latency.LatencyConfig`),
            or a table already measured for this model; given without
            ``target_latency``, the report still gives the plan's predicted and
            measured latency and the per-layer latency table.
        data, loss_fn, num_batches: calibration inputs of data-driven scorers.
        progress: show progress displays (calibration batches, the latency
            measurement, the target search) on stderr.
        analysis: reuse an existing analysis of ``model`` (then no analysis
            option or registry may be given: they would be ignored).
        registry: the rule registry (see :func:`fxprune.analyze`).
        **analysis_options: options of :class:`~fxprune.analysis.analysis.AnalysisConfig`,
            as for :func:`fxprune.analyze`: ``ignore`` (module or parameter
            names, or module types, whose output channels are kept), ``leaf_modules``,
            ``strict``, ``split_policy``, ``split_overrides``, ``frontend`` (``fx``,
            ``export`` or ``auto``).

    Raises:
        ConfigError: invalid options, or ``analysis`` given with options it would ignore.

    Example:
        >>> import torch, torch.nn as nn, fxprune
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> gm = fxprune.prune(model, (torch.randn(1, 4),), ratio=0.5, ignore="0").graph_module
        >>> gm.get_submodule("0").out_features, gm.get_submodule("2").out_features
        (8, 4)
    """
    cfg = SelectionConfig(ratio=ratio, global_ranking=global_ranking, min_channels=min_channels,
                          max_ratio=max_ratio, round_to=round_to, normalize=normalize, uniform=uniform)
    score_fn = get_scorer(scorer, **dict(scorer_params or {}))
    unknown = set(analysis_options) - set(AnalysisConfig.option_names())
    if unknown:
        raise unknown_names("prune option", unknown, _options())
    if analysis is None:
        analysis = analyze(model, example_inputs, example_kwargs=example_kwargs, registry=registry,
                           **analysis_options)
    elif analysis_options or registry is not None or example_kwargs:
        ignored = sorted(analysis_options) + (["registry"] if registry is not None else []) \
            + (["example_kwargs"] if example_kwargs else [])
        raise ConfigError(f"prune(analysis=...) reuses that analysis, so {ignored} would be ignored; "
                          "pass them to fxprune.analyze instead (or drop analysis=)")
    check_analysis_of(model, analysis)  # an analysis of another model would prune its weights
    ctx = ScoreContext(data=data, loss_fn=loss_fn, num_batches=num_batches, progress=progress)
    scores = score_fn(analysis, ctx)
    table = None
    if target_latency is not None or latency is not None:
        table = latency if isinstance(latency, LatencyTable) else latency_table(analysis, latency, progress=progress)
    cost = None if table is None else latency_cost(analysis, table)
    plan, found, hit = choose_plan(analysis, scores, cfg, target_macs=target_macs, target_params=target_params,
                                   target_latency=target_latency, cost=cost, progress=progress)
    notes = list(found)
    gm = apply_plan(analysis, plan)
    rows: tuple = ()
    if table is not None:
        notes.append(latency_note(table, analysis, plan, gm))
        rows = table.rows(analysis, plan)
    report = build_report(analysis, plan, gm, notes=notes, latency=rows)
    return PruneResult(gm, report, analysis, plan, scores, hit)


def choose_plan(analysis: Analysis, scores: Mapping[int, np.ndarray], cfg: SelectionConfig, *,
                target_macs: float | None = None, target_params: float | None = None,
                target_latency: float | None = None, cost: CostFn | None = None, progress: bool = False,
                ) -> tuple[dict[int, list[int]], tuple[str, ...], TargetResult | None]:
    """The plan :func:`prune` selects from ``scores``, the report's notes, and the target search's result.

    With a budget the selection ratio is searched to the least-pruned plan within every
    budget (``cost`` prices a plan, default params and MACs from shapes; a latency budget
    needs a latency ``cost``); without, ``cfg``'s ratio is used as it is and the result is ``None``.
    """
    targets = [Target.parse(kind, value) for kind, value in
               (("macs", target_macs), ("params", target_params), ("latency", target_latency)) if value is not None]
    if targets:
        plan, hit = select_for_target(analysis, scores, cfg, targets, cost=cost, progress=progress)
        return plan, (hit.note,), hit
    return select_plan(analysis, scores, cfg), (), None


def _options() -> tuple[str, ...]:
    """The keyword options of :func:`prune`, the analysis options included."""
    own = [p.name for p in inspect.signature(prune).parameters.values()
           if p.kind != p.VAR_KEYWORD and p.name not in ("model", "example_inputs")]
    return tuple(own) + AnalysisConfig.option_names()
