"""Measuring a model's latency table: :func:`latency_table` (see :mod:`fxprune.analysis.latency`).

The table is measured on the pruned models of the ratios of
:attr:`LatencyConfig.ratios` (each group's lowest-index channels removed: which
channels go does not change the time, only how many), and cached: a second call
for the same graph, device, torch version, thread count and grid reads the
cache instead of measuring.  ``prune(..., target_latency=F)`` uses it.

Example:
    >>> import tempfile, torch, fxprune
    >>> from fxprune.latency import LatencyConfig, latency_table
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    >>> a = fxprune.analyze(model, (torch.randn(16, 8),))
    >>> cfg = LatencyConfig(repeat=3, min_time=0, model_min_time=0, cache_dir=tempfile.mkdtemp())
    >>> table = latency_table(a, cfg)
    >>> [n.name for n in table.nodes], table.ratios, table.threads
    (['_0', '_1', '_2'], (0.0, 0.25, 0.5, 0.75), 1)
    >>> latency_table(a, cfg) == table                           # read from the cache
    True
    >>> table.predict(a, {0: list(range(32))}) > 0               # seconds, half of the hidden layer gone
    True
    >>> sorted(row.name for row in table.rows(a, {0: list(range(32))}))   # measured and predicted per node
    ['_0', '_1', '_2']
"""
from __future__ import annotations

import numpy as np
import torch

from typing import Mapping, Sequence

import torch.fx as fx

from .analysis.analysis import Analysis
from .analysis.latency import (LatencyConfig, LatencyRow, LatencyTable, NodeLatency, cached_table, device_of,
                               node_op, plan_work, store_table, table_key, time_model,
                               time_nodes)
from .errors import ConfigError
from .progress import Progress
from .rewrite.channels import apply_plan
from .scoring.select import SelectionConfig, select_plan
from .scoring.targets import CostFn, TargetKind, shape_costs

__all__ = ["LatencyConfig", "LatencyRow", "LatencyTable", "latency_cost", "latency_note", "latency_table"]


def latency_table(analysis: Analysis, config: LatencyConfig | None = None, *,
                  progress: bool = False) -> LatencyTable:
    """The latency table of ``analysis``'s model on its device: from the cache, else measured and cached.

    Args:
        analysis: an analysis of a model with real weights (on the CPU or a CUDA device).
        config: how to measure (:class:`LatencyConfig`; default: ratios 0, 0.25,
            0.5, 0.75, one thread, cached under :func:`~fxprune.analysis.latency.cache_dir`).
        progress: show a progress display over the timed nodes.

    Raises:
        ConfigError: the model lives on the meta device.
    """
    config = config or LatencyConfig()
    gm, inputs = analysis.graph_module, analysis.example_inputs
    device = device_of(gm, inputs)
    key = table_key(analysis, device, config)
    cached = cached_table(key, config)
    if cached is not None:
        return cached
    calls = [n for n in gm.graph.nodes if n.op in ("call_module", "call_function", "call_method")]
    zeros = {g.id: np.zeros(g.size) for g in analysis.groups}  # the count matters, not which channels
    seconds, works, model = [], [], []
    with Progress("latency table", total=len(calls) * len(config.ratios), enabled=progress, unit="node",
                  transient=True) as bar:
        for ratio in config.ratios:
            plan = select_plan(analysis, zeros, SelectionConfig(ratio=ratio)) if ratio else {}
            pruned = apply_plan(analysis, plan)
            seconds.append(time_nodes(pruned, inputs, config, tick=bar.update))
            model.append(time_model(pruned, inputs, config))
            works.append(plan_work(analysis, plan))
    nodes = tuple(NodeLatency(n.name, node_op(gm, n), tuple(w[n.name] for w in works),
                              tuple(s.get(n.name, 0.0) for s in seconds)) for n in calls)
    table = LatencyTable(key=key, device=str(device), torch_version=str(torch.__version__), threads=config.thread_count,
                         ratios=config.ratios, nodes=nodes, model_seconds=tuple(model), config=config)
    store_table(table)
    return table




def latency_cost(analysis: Analysis, table: LatencyTable) -> CostFn:
    """Params, MACs (:func:`~fxprune.scoring.targets.shape_costs`) and the predicted latency of a plan.

    Raises:
        ConfigError: ``table`` was measured for another graph or device.
    """
    key = table_key(analysis, device_of(analysis.graph_module, analysis.example_inputs), table.config)
    if key != table.key:
        raise ConfigError("the latency table was measured for another graph, device, torch version or "
                          "thread count: measure one for this model with fxprune.latency_table(analysis)")
    shapes = shape_costs(analysis)

    def cost(plan: Mapping[int, Sequence[int]]) -> dict[TargetKind, float]:
        return {**shapes(plan), TargetKind.LATENCY: table.predict(analysis, plan)}

    return cost


def latency_note(table: LatencyTable, analysis: Analysis, plan: Mapping[int, Sequence[int]],
                 pruned: fx.GraphModule) -> str:
    """A report line: the plan's predicted latency and the pruned model's, measured once now."""
    original, predicted = table.predict(analysis, {}), table.predict(analysis, plan)
    measured = time_model(pruned, analysis.example_inputs, table.config)
    ms = lambda s: f"{s * 1e3:.3f} ms"  # noqa: E731
    return (f"latency on {table.device} ({table.threads} thread{'s' if table.threads != 1 else ''}): "
            f"predicted {ms(predicted)} ({predicted / original:.1%} of {ms(original)}), "
            f"measured {ms(measured)} ({measured / table.original_seconds:.1%} of {ms(table.original_seconds)} "
            f"measured with the table); prediction error {predicted / measured - 1:+.1%}")
