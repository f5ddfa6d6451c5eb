"""IAP activation scorer: the mean activation that a group's consumers read.

For a tensor ``A`` of shape ``(B, C, *positions)`` (channel dim ``d``; dim 0 is
the batch) and the whole calibration set of ``N`` samples::

    M_c = (1/N) * sum over samples n of A[n, c]        # a map over the positions
    s_c = mean over the positions of M_c ** power      # power = 1 by default

This is the IAP statistic (mean over the batch, then the power, then the
spatial mean).  For tokens ``(B, T, C)`` the positions are the tokens, so with
``power=1`` the score is the mean over batch and tokens; for ``(B, C)`` there
are no positions.  Sums are taken in float64 over all samples, so the result
is exact for batches of equal or unequal sizes.  A tensor whose channel dim is
0 (no batch dim) is treated as a batch of one per calibration batch.  For a
non-integer power ``|M_c| ** power`` is used (activations read by a consumer
after a ReLU are non-negative, where both are the same).

**Which activation.**  A group's statistic is taken on the activations its
*consumers read*: for every consumer member (role ``consumer``) the inputs of
the op that applies the consumer parameter which are activation tensors of the
group (conv -> BN -> ReLU -> conv: the ReLU's output; a residual block: the
ReLU after the add; conv -> ReLU -> flatten -> linear: the flattened tensor).
Channels that no consumer reads (a group without consumer) take the last
activation tensor of the group in graph order that carries them.  The positions
come only from the analysis (the group's tensor members and the graph edges).

**Before pooling** (``point="activation"``, :class:`ActivationPoint`).  The
default point, ``consumed``, is the tensor the consumers read: after a pooling
layer that is the pooled tensor.  The authors' IAP code scores the output of
the nonlinearity itself (a hook on the ReLU), before pooling.  With
``point="activation"`` each tensor read is walked back through the ops that
change its shape but keep its channels (pooling, flatten, reshape: a node with
one input carrying the group's channels whose shape differs from its output's),
stopping at the first shape-preserving op, the nonlinearity (conv -> ReLU ->
max-pool -> conv: the ReLU's output at full resolution).  Where no pooling or
reshaping sits between the nonlinearity and the consumer (conv -> BN -> ReLU ->
conv, the ReLU after a residual add, pooling *before* the ReLU) both points are
the same tensor, and after a flatten both give the same statistic.

**Index maps.**  A tensor index belongs to one group channel by the tensor
member's ``index_map`` (``-1``: a fixed index, ignored).  The score of a
channel owning several indices is the *mean* of their scores, so a flattened
``(C*H*W)`` tensor gives the same score as the ``(C, H, W)`` tensor it came
from.  Several tensors read for one channel are combined by their mean.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> from fxprune.scoring import ScoreContext
    >>> from fxprune.scoring.activation import ActivationScorer
    >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> with torch.no_grad():
    ...     _ = model[0].weight.copy_(torch.tensor([[1., 0], [0, 1], [-1, 0]]))
    ...     _ = model[0].bias.zero_()
    >>> a = fxprune.analyze(model, (torch.randn(1, 2),))
    >>> data = [torch.tensor([[1., 2.], [3., 4.]])]
    >>> ActivationScorer()(a, ScoreContext(data=data))[0].tolist()
    [2.0, 3.0, 0.0]
"""
from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.fx as fx

from ..analysis.analysis import Analysis
from ..analysis.groups import Group, TensorMember
from ..errors import ConfigError
from ..ir import SPEC, Role, TensorSpec
from .base import AGGREGATIONS, ScoreContext
from .calibration import (Accumulator, Batch, iter_batches, num_batches_of, progress, record_activations,
                          require_data)

__all__ = ["ActivationPoint", "ActivationScorer", "collect_activation", "read_tensors", "statistic_keys"]


class ActivationPoint(str, enum.Enum):
    """Which tensor scores a group (see the module docstring).

    ``consumed``: the tensor the group's consumers read (after any pooling or
    flattening).  ``activation``: that tensor taken before the ops that change
    its shape, i.e. the output of the nonlinearity before pooling, as the
    authors' IAP code scores it.
    """

    CONSUMED = "consumed"
    ACTIVATION = "activation"

    def __str__(self) -> str:
        return self.value


def _activation_nodes(graph: fx.Graph) -> set[str]:
    """Names of the nodes whose value depends on a graph input (activations, not weights)."""
    live: set[str] = set()
    for n in graph.nodes:
        if n.op == "placeholder" or any(a.name in live for a in n.all_input_nodes):
            live.add(n.name)
    return live


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    spec = node.meta.get(SPEC)
    return tuple(spec.shape) if isinstance(spec, TensorSpec) else None


def _before_reshaping(t: TensorMember, chans: frozenset[int], nodes: dict[str, fx.Node],
                      by_node: dict[str, list[TensorMember]]) -> TensorMember:
    """``t`` walked back through the ops that change its shape but keep its channels (pooling, flatten).

    A step goes from a node to its only input that carries the group's
    channels, while the node's output shape differs from that input's; the
    walk stops at a shape-preserving op (the nonlinearity) or at a fork.
    """
    while True:
        node = nodes[t.node]
        ins = [i for i in node.all_input_nodes if i.name in by_node]
        if len(ins) != 1 or _shape(node) is None or _shape(ins[0]) in (None, _shape(node)):
            return t
        prev = next((m for m in by_node[ins[0].name]
                     if chans & _channels_of(m)), None)
        if prev is None:
            return t
        t = prev


def read_tensors(analysis: Analysis, group: Group, point: ActivationPoint | str = ActivationPoint.CONSUMED,
                 ) -> list[tuple[TensorMember, frozenset[int]]]:
    """The activation tensors that score ``group``, each with the channels it scores.

    First the tensors read by the group's consumers (see the module
    docstring); then, for channels none of them carries, the last activation
    tensor member in graph order that carries them, and so on backwards.
    With ``point="activation"`` each is taken before the ops that change its
    shape (:class:`ActivationPoint`).
    """
    graph = analysis.graph_module.graph
    nodes = {n.name: n for n in graph.nodes}
    live = _activation_nodes(graph)
    by_node: dict[str, list[TensorMember]] = {}
    for t in group.tensors:
        if t.node in live:
            by_node.setdefault(t.node, []).append(t)

    chosen: dict[tuple[str, int], TensorMember] = {}
    for m in group.members:
        if m.role is not Role.CONSUMER or m.node not in nodes:
            continue
        # walk from the parameter's node through weight-only nodes (get_attr -> transpose ...)
        # to the ops that combine it with activations; their activation inputs are read.
        frontier, seen = [nodes[m.node]], set()
        while frontier:
            n = frontier.pop()
            if n.name in seen:
                continue
            seen.add(n.name)
            if n.name in live:
                for inp in n.all_input_nodes:
                    for t in by_node.get(inp.name, ()):
                        chosen.setdefault((t.node, t.dim), t)
            else:
                frontier.extend(n.users)

    out: list[tuple[TensorMember, frozenset[int]]] = []
    covered: set[int] = set()
    for t in chosen.values():
        chans = _channels_of(t)
        out.append((t, chans))
        covered |= chans
    for t in reversed([t for ts in by_node.values() for t in ts]):
        if len(covered) >= group.size:
            break
        new = _channels_of(t) - covered
        if new:
            out.append((t, new))
            covered |= new
    if ActivationPoint(point) is ActivationPoint.CONSUMED:
        return out
    merged: dict[tuple[str, int], tuple[TensorMember, frozenset[int]]] = {}
    for t, chans in out:
        t = _before_reshaping(t, chans, nodes, by_node)
        chans = chans & _channels_of(t)
        old = merged.get((t.node, t.dim))
        merged[(t.node, t.dim)] = (t, chans | old[1] if old else chans)
    return list(merged.values())


def _key(t: TensorMember) -> tuple[str, bool]:
    """Statistic key of a tensor member: (node, whether dim 0 is a batch dim)."""
    return (t.node, t.dim != 0)


def statistic_keys(plan: dict[int, list[tuple[TensorMember, frozenset[int]]]]) -> set[tuple[str, bool]]:
    """The statistics a plan of :func:`read_tensors` needs: ``(node, whether dim 0 is a batch dim)``."""
    return {_key(t) for reads in plan.values() for t, _ in reads}


def collect_activation(acc: Accumulator, keys: set[tuple[str, bool]], node: str, value: object) -> None:
    """Add ``value``, the output of ``node`` on one batch, to the statistics ``keys`` in ``acc``."""
    if not isinstance(value, torch.Tensor):
        return
    if (node, True) in keys:
        acc.add((node, True), value.detach().to(torch.float64).sum(0), count=value.shape[0])
    if (node, False) in keys:
        acc.add((node, False), value.detach().to(torch.float64), count=1)


@dataclass(frozen=True)
class ActivationScorer:
    """IAP: ``s_c = mean over positions of (mean over samples of A[:, c]) ** power``.

    Args:
        power: the exponent ``p`` applied to the per-position mean map (default 1).
        aggregate: how the scores of the several tensors read for one channel
            are combined: ``mean`` (default), ``sum`` or ``max``.  Only tensors
            that carry the channel count, so with ``mean`` a channel read by two
            consumers and one read by a single consumer stay comparable.
        point: ``"consumed"`` (default): the tensor the consumers read;
            ``"activation"``: that tensor before pooling/flattening, the
            nonlinearity's output as in the authors' code (:class:`ActivationPoint`).
    """

    power: float = 1.0
    aggregate: str = "mean"
    point: ActivationPoint = ActivationPoint.CONSUMED

    name = "activation"

    def __post_init__(self) -> None:
        if isinstance(self.power, bool) or not isinstance(self.power, (int, float)) or self.power <= 0:
            raise ConfigError(f"power must be a positive number, got {self.power!r}")
        if self.aggregate not in AGGREGATIONS:
            raise ConfigError(f"unknown aggregation {self.aggregate!r}; choose one of {AGGREGATIONS}")
        try:
            object.__setattr__(self, "point", ActivationPoint(self.point))
        except ValueError:
            raise ConfigError(f"point must be one of {[p.value for p in ActivationPoint]}, "
                              f"got {self.point!r}") from None

    def __call__(self, analysis: Analysis, ctx: ScoreContext) -> dict[int, np.ndarray]:
        require_data(self.name, ctx.data)
        plan = {g.id: read_tensors(analysis, g, self.point) for g in analysis.groups}
        keys = statistic_keys(plan)
        acc = Accumulator()

        def collect(node: str, value: object) -> None:
            collect_activation(acc, keys, node, value)

        batches = progress(iter_batches(ctx.data, ctx.num_batches),
                           total=num_batches_of(ctx.data, ctx.num_batches),
                           desc="activation scores", enabled=ctx.progress)

        def counted() -> Iterator[Batch]:
            for batch in batches:
                acc.step()
                yield batch

        record_activations(analysis.graph_module, {k[0] for k in keys}, counted(), collect)
        acc.reduce()
        return self.scores_from(analysis, plan, acc)

    def scores_from(self, analysis: Analysis, plan: dict[int, list[tuple[TensorMember, frozenset[int]]]],
                    acc: Accumulator) -> dict[int, np.ndarray]:
        """The scores from reduced statistics: ``plan`` is :func:`read_tensors` per group id, ``acc``
        holds the sums :func:`collect_activation` collected (``fxprune.distributed`` collects them
        with module hooks under FSDP2)."""
        out: dict[int, np.ndarray] = {}
        for g in analysis.groups:
            rows = []
            for t, chans in plan[g.id]:
                key = _key(t)
                if key not in acc.keys():
                    continue
                per_index = self._per_index(acc.mean(key), t.dim - 1 if key[1] else t.dim)
                row = np.full(g.size, np.nan)
                row[sorted(chans)] = _mean_by_channel(per_index, t.index_map, g.size)[sorted(chans)]
                rows.append(row)
            if not rows:
                warnings.warn(f"activation scorer: group {g.id} has no recorded activation; "
                              f"its channels all score 0", stacklevel=2)
                out[g.id] = np.zeros(g.size, dtype=np.float64)
                continue
            stack = np.stack(rows)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns -> 0 below
                combined = {"mean": np.nanmean, "sum": np.nansum, "max": np.nanmax}[self.aggregate](stack, axis=0)
            out[g.id] = np.nan_to_num(combined, nan=0.0).astype(np.float64)
        return out

    def _per_index(self, m: np.ndarray, dim: int) -> np.ndarray:
        """Per-index score along ``dim`` of the sample-mean map ``m``."""
        p = float(self.power)
        powered = m if p == 1.0 else (m ** int(p) if p.is_integer() else np.abs(m) ** p)
        moved = np.moveaxis(powered, dim, 0)
        return moved.reshape(moved.shape[0], -1).mean(axis=1)


def _channels_of(member: Any) -> frozenset[int]:
    """The group channels a member's indices belong to (``-1``, a fixed index, excluded)."""
    idx = member.index_map
    return frozenset(np.unique(idx[idx >= 0]).tolist())


def _mean_by_channel(per_index: np.ndarray, index_map: tuple[int, ...], size: int) -> np.ndarray:
    idx = np.asarray(index_map, dtype=np.int64)
    ok = idx >= 0
    sums = np.bincount(idx[ok], weights=per_index[ok], minlength=size)[:size]
    counts = np.bincount(idx[ok], minlength=size)[:size]
    return np.divide(sums, counts, out=np.zeros(size), where=counts > 0)
