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

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..analysis.analysis import Analysis
from ..analysis.groups import Group
from ..errors import ConfigError, PlanError
from .channels import apply_plan, kept_indices

__all__ = ["ImplantedConv2d", "apply_with_implants", "implantable", "split_bands", "IMPLANT_KINDS"]

IMPLANT_KINDS = ("pointwise", "lowrank")


class ImplantedConv2d(nn.Module):
    """A Conv2d whose channels ``implant_pos`` come from a cheap implant.

    Attributes:
        weight: ``[len(kept_pos), in/groups, kh, kw]``, the original filters kept.
        bias: ``[out_channels]`` or ``None`` (all positions).
        implant_v: ``lowrank``: ``[rank, in, kh, kw]``; ``pointwise``: ``None``.
        implant_u: ``[len(implant_pos), rank or in, 1, 1]``.
        kept_pos, implant_pos: output positions of the two parts (buffers);
        order: the permutation putting ``[kept..., implanted...]`` back in place.
    """

    def __init__(self, conv: nn.Conv2d, kept_pos: torch.Tensor, implant_pos: torch.Tensor,
                 kind: str, rank: int | None = None) -> None:
        super().__init__()
        if kind not in IMPLANT_KINDS:
            raise ConfigError(f"implant kind must be one of {IMPLANT_KINDS}, got {kind!r}")
        if conv.groups != 1 or tuple(conv.dilation) != (1, 1):
            raise ConfigError("implants need a dense (groups=1, dilation=1) Conv2d")
        self.kind = kind
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.stride, self.padding = conv.stride, conv.padding
        self.kernel_size = conv.kernel_size
        w = conv.weight.detach()
        self.register_buffer("kept_pos", kept_pos.clone().long())
        self.register_buffer("implant_pos", implant_pos.clone().long())
        self.register_buffer("order", torch.argsort(torch.cat([self.kept_pos, self.implant_pos])))
        self.weight = nn.Parameter(w[kept_pos].clone())
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())
        removed = w[implant_pos]  # [I, in, kh, kw]
        if kind == "pointwise":
            self.implant_v = None
            self.implant_u = nn.Parameter(torch.zeros(len(implant_pos), conv.in_channels, 1, 1,
                                                      dtype=w.dtype, device=w.device))
        else:
            flat = removed.reshape(len(implant_pos), -1).double()
            full = min(flat.shape)
            r = full if rank is None else max(1, min(int(rank), full))
            u, s, vh = torch.linalg.svd(flat, full_matrices=False)
            self.implant_v = nn.Parameter((vh[:r] * s[:r, None]).reshape(r, *removed.shape[1:]).to(w.dtype))
            self.implant_u = nn.Parameter(u[:, :r].reshape(len(implant_pos), r, 1, 1).to(w.dtype))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={tuple(self.kernel_size)}, "
                f"stride={tuple(self.stride)}, kind={self.kind}, kept={len(self.kept_pos)}, "
                f"implanted={len(self.implant_pos)}"
                + (f", rank={self.implant_v.shape[0]}" if self.implant_v is not None else ""))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = F.conv2d(x, self.weight, None, self.stride, self.padding)
        if self.implant_v is None:
            imp = F.conv2d(x, self.implant_u, None, self.stride, 0)
        else:
            imp = F.conv2d(F.conv2d(x, self.implant_v, None, self.stride, self.padding), self.implant_u)
        # channels [kept..., implanted...] back into their original positions
        out = torch.cat([main, imp], 1).index_select(1, self.order)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


def implantable(analysis: Analysis, group: Group) -> bool:
    """Whether every producer of ``group`` is a dense Conv2d weight (so channels can be implanted)."""
    nodes = {n.name: n for n in analysis.graph_module.graph.nodes}
    for m in group.producers():
        node = nodes.get(m.node)
        if node is None or node.op != "call_module" or m.dim != 0 or not m.param.endswith(".weight"):
            return False
        mod = analysis.graph_module.get_submodule(str(node.target))
        if type(mod) is not nn.Conv2d or mod.groups != 1 or tuple(mod.dilation) != (1, 1):
            return False
    return bool(group.producers())


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

    Every Conv2d producer of an implanted group channel gets an
    :class:`ImplantedConv2d`; channels whose producers are not dense Conv2d
    modules cannot be implanted and raise :class:`~fxprune.errors.PlanError`.
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
                            "are not all dense Conv2d weights; only Conv2d layers can take an implant")
        nodes = {n.name: n for n in analysis.graph_module.graph.nodes}
        for m in g.producers():
            node = nodes[m.node]
            original = m.indices(chans)
            survivors = kept[m.param][0]
            pos = original if survivors is None else np.searchsorted(survivors, original)
            per_module.setdefault(str(node.target), set()).update(int(p) for p in pos)
    for target, positions in per_module.items():
        conv = gm.get_submodule(target)
        imp = torch.as_tensor(sorted(positions), dtype=torch.long)
        keep = torch.as_tensor([p for p in range(conv.out_channels) if p not in positions], dtype=torch.long)
        new = ImplantedConv2d(conv, keep, imp, kind, rank)
        parent_name, _, child = target.rpartition(".")
        parent = gm.get_submodule(parent_name) if parent_name else gm
        setattr(parent, child, new)
    gm.recompile()
    return gm
