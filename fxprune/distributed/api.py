"""``prune_sharded``: prune an FSDP2-sharded model on every rank, without gathering it.

Every rank calls :func:`prune_sharded` with its sharded model, a *meta twin*
(the same architecture built under ``torch.device("meta")``: names and
shapes, no weights) and its own calibration batches:

1. the twin is analysed (:func:`fxprune.analyze` runs on fake tensors, so
   the twin needs no memory); its parameter names are the sharded model's,
   since ``fully_shard`` keeps names;
2. the sharded model is scored from local shards and local batches, with
   all-reduces (:mod:`fxprune.distributed.scoring`);
3. each rank selects the plan from the same scores, and the plans' digests
   are compared across ranks (:mod:`fxprune.distributed.consensus`);
4. the pruned ``GraphModule`` is emitted on the meta device, sharded with
   FSDP2 and filled from the source shards with all-to-alls
   (:mod:`fxprune.distributed.rebuild`).

The result's ``graph_module`` holds ``DTensor`` shards on the source's mesh
and trains under FSDP2 as it is; ``fxprune.save(result, path)`` from every
rank writes a distributed checkpoint (:mod:`fxprune.distributed.checkpoint`).
Processes and data are yours: see ``docs/distributed.md`` for a ``torchrun``
script.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx

from ..analysis.analysis import Analysis, AnalysisConfig, analyze, unknown_names
from ..api import choose_plan
from ..errors import ConfigError
from ..ops.registry import Registry
from ..report import Report, build_report
from ..rewrite.channels import apply_plan, kept_indices
from ..scoring import ScoreContext, SelectionConfig, get_scorer
from ..serialize.fingerprint import group_signatures
from .consensus import check_same, digest, plan_digest
from .rebuild import ShardFn, rebuild
from .scoring import sharded_scores
from .shards import named_tensors, require_process_group

__all__ = ["ShardedPruneResult", "check_twin", "device_mesh", "prune_sharded"]


@dataclass(frozen=True, eq=False)
class ShardedPruneResult:
    """What :func:`prune_sharded` returns on each rank.

    Attributes:
        graph_module: the pruned GraphModule, sharded with FSDP2 (``DTensor``
            parameters on the source's mesh); train it as it is.
        report: decisions, parameters and MACs before and after (from shapes).
        analysis: the analysis of the meta twin.
        plan: ``{group id: removed group channels}``, the same on every rank.
        scores: ``{group id: per-channel scores}``, the same on every rank.
        units: the module paths that are FSDP2 units (``""``, the root, last).
    """

    graph_module: fx.GraphModule
    report: Report
    analysis: Analysis
    plan: dict[int, list[int]]
    scores: dict[int, np.ndarray]
    units: tuple[str, ...]

    @property
    def digest(self) -> str:
        """The sha256 of the plan that every rank checked (:func:`~fxprune.distributed.consensus.plan_digest`)."""
        return plan_digest(self.plan)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The pruned model's state dict with every tensor whole (collective: call it on every rank).

        Each ``DTensor`` is gathered on its own (one parameter in memory at a
        time besides the result), for checks on models that fit one process.
        """
        return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
                for k, v in self.graph_module.state_dict().items()}


def device_mesh(model: torch.nn.Module) -> Any:
    """The device mesh of ``model``'s ``DTensor`` parameters.

    Raises:
        ConfigError: the model has no ``DTensor`` parameter (it is not sharded
            with FSDP2), or its parameters live on several meshes.
    """
    meshes = {id(p.device_mesh): p.device_mesh for p in model.parameters() if hasattr(p, "device_mesh")}
    if not meshes:
        raise ConfigError("the model has no DTensor parameters: shard it with torch.distributed.fsdp.fully_shard "
                          "first (or prune it on one process with fxprune.prune)")
    if len(meshes) > 1:
        raise ConfigError(f"the model's parameters live on {len(meshes)} device meshes; fxprune.distributed "
                          "handles one 1-D mesh (FSDP2)")
    return next(iter(meshes.values()))


def check_twin(model: torch.nn.Module, analysis: Analysis) -> None:
    """Refuse a meta twin whose tensors differ from the sharded model's (names, global shapes, dtypes).

    Raises:
        ConfigError: naming up to five differences.
    """
    theirs = named_tensors(model)
    diffs = []
    for name, t in named_tensors(analysis.graph_module).items():
        other = theirs.get(name)
        if other is None:
            diffs.append(f"'{name}' is not in the sharded model")
        elif tuple(other.shape) != tuple(t.shape) or other.dtype != t.dtype:
            diffs.append(f"'{name}': {tuple(t.shape)} {t.dtype} in the twin, {tuple(other.shape)} {other.dtype} "
                         "in the sharded model")
    if diffs:
        raise ConfigError("the meta twin does not describe the sharded model: " + "; ".join(diffs[:5])
                          + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else ""))


def prune_sharded(
    model: torch.nn.Module,
    meta_model: torch.nn.Module,
    example_inputs: Sequence[Any],
    ratio: float | Mapping[str | int, float] = 0.5,
    *,
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
    data: Any = None,
    loss_fn: Any = None,
    num_batches: int | None = None,
    progress: bool = False,
    shard_fn: ShardFn | None = None,
    release_source: bool = False,
    analysis: Analysis | None = None,
    registry: Registry | None = None,
    **analysis_options: Any,
) -> ShardedPruneResult:
    """Prune the FSDP2-sharded ``model`` on every rank of the process group (module docstring).

    Args:
        model: the sharded model (``fully_shard`` applied); never modified
            unless ``release_source``.
        meta_model: the same architecture on the ``meta`` device (no weights).
        example_inputs: positional inputs of ``forward`` for the analysis
            (the same on every rank).
        ratio ... target_params: as for :func:`fxprune.prune`.
        data: *this rank's* calibration batches (each rank a different part of
            the calibration set; every rank the same number of batches).
        loss_fn, num_batches, progress: as for :func:`fxprune.prune`.
        shard_fn: ``shard_fn(graph_module, mesh)`` applies ``fully_shard`` to
            the pruned GraphModule (default:
            :func:`~fxprune.distributed.rebuild.shard_graph_module`).
        release_source: free each source parameter's shard as soon as its
            pruned version is filled, so the rewrite never holds more than
            one model's share per rank; ``model`` is unusable afterwards.
        analysis: an analysis of ``meta_model`` to reuse.
        registry, **analysis_options: as for :func:`fxprune.analyze`.

    Raises:
        ConfigError: no process group, a model that is not sharded with
            FSDP2, a twin that does not match it, an option this function
            does not know, or a scorer it cannot run on shards.
        PlanMismatchError: the ranks computed different plans.

    Example (single process; see ``docs/distributed.md`` for several)::

        result = prune_sharded(sharded, twin, (tokens,), ratio=0.5, scorer="activation", data=my_batches)
    """
    require_process_group("prune_sharded")
    cfg = SelectionConfig(ratio=ratio, global_ranking=global_ranking, min_channels=min_channels,
                          max_ratio=max_ratio, round_to=round_to, normalize=normalize, uniform=uniform)
    score_fn = get_scorer(scorer, **dict(scorer_params or {}))
    unknown = set(analysis_options) - set(AnalysisConfig.option_names())
    if unknown:
        own = [p for p in inspect.signature(prune_sharded).parameters if p not in ("model", "meta_model",
                                                                                  "example_inputs", "analysis_options")]
        raise unknown_names("prune_sharded option", unknown, tuple(own) + AnalysisConfig.option_names())
    if analysis is None:
        analysis = analyze(meta_model, example_inputs, registry=registry, **analysis_options)
    elif analysis_options or registry is not None:
        raise ConfigError("prune_sharded(analysis=...) reuses that analysis: pass analysis options and the "
                          "registry to fxprune.analyze instead")
    mesh = device_mesh(model)
    check_twin(model, analysis)
    check_same(digest(group_signatures(analysis)), "analyses of the meta twin")
    ctx = ScoreContext(data=data, loss_fn=loss_fn, num_batches=num_batches, progress=progress)
    scores = sharded_scores(model, analysis, score_fn, ctx)
    plan, notes, _ = choose_plan(analysis, scores, cfg, target_macs=target_macs, target_params=target_params)
    check_same(plan_digest(plan), "plans")
    pruned = apply_plan(analysis, plan)
    report = build_report(analysis, plan, pruned, notes=notes)
    units = rebuild(pruned, named_tensors(model), kept_indices(analysis, plan), mesh, shard_fn=shard_fn,
                    release_source=release_source)
    return ShardedPruneResult(pruned, report, analysis, plan, scores, units)
