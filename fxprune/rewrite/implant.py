"""Neural Implant (HAP): replace some output channels' k x k filters by a cheap component.

HAP splits channels in three bands by score: kept (original weights), *implanted*
(the channel is still produced, by a cheaper component) and pruned.  This module
emits the implanted band as an :class:`ImplantedConv2d`, which computes

* the kept rows with the original convolution (only those rows are stored), and
* the implanted rows with either

  - ``pointwise``: a 1x1 convolution with the same stride from the layer's input
    channels, initialised to zero (the authors' released code), or
  - ``lowrank``: a rank-``r`` factorisation ``U (V * x)`` of the removed filters,
    initialised from their truncated SVD, so the layer starts close to the
    original (exactly equal at full rank),

and writes both into the original channel positions, so nothing downstream
changes.  :class:`ImplantedConv2d` has a rule in the registry (the ``implant``
family), so an implanted model can be analysed and pruned again.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> from fxprune.rewrite.implant import apply_with_implants
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()
    >>> x = torch.randn(1, 3, 6, 6)
    >>> a = fxprune.analyze(model, (x,))
    >>> gm = apply_with_implants(a, remove={0: [0, 1]}, implant={0: [2, 3, 4]}, kind="lowrank", rank=3)
    >>> type(gm.get_submodule("0")).__name__, gm.get_submodule("0").out_channels
    ('ImplantedConv2d', 6)
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx

from ..analysis.analysis import Analysis
from ..analysis.groups import Group
from ..errors import ConfigError, PlanError
from ..modules import IMPLANT_KINDS, ImplantedConv2d, set_attr
from .channels import apply_plan, kept_indices

__all__ = ["ImplantedConv2d", "apply_with_implants", "implantable", "split_bands", "IMPLANT_KINDS"]


def _implant_rule(analysis: Analysis, node_name: str) -> Any:
    """The producer node's rule if its module can take an implant (its ``Rule.implant``), else None."""
    gm = analysis.graph_module
    node = next((n for n in gm.graph.nodes if n.name == node_name), None)
    if node is None or node.op != "call_module":
        return None
    rule = analysis.registry.lookup(node, gm)
    if rule is None or rule.implant is None or not rule.implant.accepts(gm.get_submodule(str(node.target))):
        return None
    return rule


def implantable(analysis: Analysis, group: Group) -> bool:
    """Whether every producer of ``group`` is the weight of a module whose rule can implant it."""
    producers = group.producers()
    return bool(producers) and all(
        m.dim == 0 and m.param.endswith(".weight") and _implant_rule(analysis, m.node) is not None
        for m in producers)


def split_bands(analysis: Analysis, scores: Mapping[int, np.ndarray], below: Mapping[int, Sequence[int]],
                implant_ratio: float) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """HAP's bands: of the channels ``below`` the prune threshold, the highest-scoring
    ``implant_ratio`` of them (globally, among implantable groups) are implanted, the rest pruned.

    Returns ``(remove, implant)`` plans.
    """
    if not 0.0 <= implant_ratio <= 1.0:
        raise ConfigError(f"implant_ratio must be in [0, 1], got {implant_ratio!r}")
    by_id = {g.id: g for g in analysis.groups}
    entries = sorted((float(scores[gid][c]), gid, c) for gid, chans in below.items() for c in chans)
    n_implant = int(round(implant_ratio * len(entries)))
    implant: dict[int, list[int]] = {}
    ok = {gid: implantable(analysis, by_id[gid]) for gid in below}
    for _, gid, c in reversed(entries):
        if n_implant <= 0:
            break
        if ok[gid]:
            implant.setdefault(gid, []).append(c)
            n_implant -= 1
    remove = {gid: sorted(set(chans) - set(implant.get(gid, ()))) for gid, chans in below.items()}
    remove = {gid: chans for gid, chans in remove.items() if chans}
    return remove, {gid: sorted(c) for gid, c in implant.items()}


def apply_with_implants(analysis: Analysis, remove: Mapping[int, Sequence[int]],
                        implant: Mapping[int, Sequence[int]], *, kind: str = "pointwise",
                        rank: int | None = None) -> fx.GraphModule:
    """Prune ``remove`` and implant ``implant`` (both ``{group id: group channels}``).

    Every producer of an implanted group channel is replaced by its rule's
    implant (``Rule.implant``: an :class:`ImplantedConv2d` for a dense Conv2d);
    channels whose producers cannot take one raise :class:`~fxprune.errors.PlanError`.
    """
    by_id = {g.id: g for g in analysis.groups}
    for gid, chans in implant.items():
        overlap = set(chans) & set(remove.get(gid, ()))
        if overlap:
            raise PlanError(f"group {gid}: channels {sorted(overlap)[:5]} are both removed and implanted")
    gm = apply_plan(analysis, remove)
    kept = kept_indices(analysis, remove)
    per_module: dict[str, set[int]] = {}
    for gid, chans in implant.items():
        if gid not in by_id:
            raise PlanError(f"implant plan names unknown group {gid}")
        g = by_id[gid]
        if not implantable(analysis, g):
            raise PlanError(f"group {gid}: its producers ({', '.join(m.param for m in g.producers())}) "
                            "are not all layers whose rule can take an implant (dense Conv2d)")
        nodes = {n.name: n for n in analysis.graph_module.graph.nodes}
        for m in g.producers():
            original = m.indices(chans)
            survivors = kept[m.param][0]
            pos = original if survivors is None else np.searchsorted(survivors, original)
            per_module.setdefault(str(nodes[m.node].target), (_implant_rule(analysis, m.node), set()))[1].update(
                int(p) for p in pos)
    for target, (rule, positions) in per_module.items():
        conv = gm.get_submodule(target)
        imp = torch.as_tensor(sorted(positions), dtype=torch.long)
        keep = torch.as_tensor([p for p in range(conv.out_channels) if p not in positions], dtype=torch.long)
        new = rule.implant.build(conv, keep, imp, kind, rank)
        set_attr(gm, target, new)
    gm.recompile()
    return gm
