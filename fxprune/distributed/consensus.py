"""Every rank must prune the same channels: plan digests compared across ranks.

Each rank computes its plan from the all-reduced scores; :func:`check_same`
all-gathers a sha256 of the plan (of its canonical JSON) and raises
:class:`PlanMismatchError` on every rank when they differ, before any rank
starts the collective rewrite that would otherwise hang or mix two
architectures.  The same check compares the analyses' group signatures (a
meta twin that differs between ranks).

Example:
    >>> plan_digest({1: [3, 0], 0: []}) == plan_digest({0: [], 1: [0, 3]})
    True
    >>> plan_digest({0: [1]}) == plan_digest({0: [2]})
    False
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Sequence

import torch

from ..errors import FxPruneError

__all__ = ["PlanMismatchError", "check_same", "digest", "plan_digest"]


class PlanMismatchError(FxPruneError):
    """The ranks of a distributed prune computed different plans (or analysed different models)."""


def digest(data: Any) -> str:
    """sha256 of ``data``'s canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def plan_digest(plan: Mapping[int, Sequence[int]]) -> str:
    """sha256 of a plan, independent of the order of groups and of channels within a group."""
    return digest([[int(g), sorted(int(c) for c in chans)] for g, chans in sorted(plan.items())])


def check_same(value: str, what: str) -> None:
    """Raise :class:`PlanMismatchError` on every rank unless every rank passes the same hex digest ``value``.

    Without an initialised process group this is a no-op.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return
    mine = torch.tensor(list(bytes.fromhex(value)), dtype=torch.uint8)
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    digests = [bytes(g.tolist()).hex() for g in gathered]
    if len(set(digests)) > 1:
        groups: dict[str, list[int]] = {}
        for rank, d in enumerate(digests):
            groups.setdefault(d, []).append(rank)
        listing = "; ".join(f"ranks {ranks}: {d[:12]}" for d, ranks in groups.items())
        raise PlanMismatchError(
            f"the ranks computed different {what} ({listing}). Every rank must analyse the same meta twin "
            "with the same options and score the same sharded model; scores are all-reduced, so different "
            "plans mean different models, options or fxprune versions on the ranks (or a scorer that is "
            "not deterministic across ranks)")
