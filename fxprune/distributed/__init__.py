"""Pruning models sharded with FSDP2 across processes, never gathering the whole model.

Run on every rank of an initialised process group (``torchrun``):

* :func:`prune_sharded`: analyse the meta twin, score the sharded model from
  local shards and local batches (all-reduced), check that every rank chose
  the same plan, and rebuild the pruned model sharded again;
* :func:`save` / :func:`load`: a distributed checkpoint (JSON metadata, no
  pickle) plus the plan, written from every rank and loadable on any world
  size (:mod:`.checkpoint`);
* :class:`MemoryMeter` and :func:`rank_bytes`: the memory a rank holds, measured
  and accounted from shapes.

See ``docs/distributed.md``.
"""
from .api import ShardedPruneResult, check_twin, device_mesh, prune_sharded
from .checkpoint import load, save
from .consensus import PlanMismatchError, plan_digest
from .memory import MemoryMeter, rank_bytes
from .rebuild import fsdp_units, shard_graph_module
from .scoring import ShardedScorer, sharded_scores

__all__ = [
    "MemoryMeter",
    "PlanMismatchError",
    "ShardedPruneResult",
    "ShardedScorer",
    "check_twin",
    "device_mesh",
    "fsdp_units",
    "load",
    "plan_digest",
    "prune_sharded",
    "rank_bytes",
    "save",
    "shard_graph_module",
    "sharded_scores",
]
