"""The rule of :class:`fxprune.modules.ImplantedConv2d` (HAP's Neural Implant), so implanted models re-analyse.

The kept rows of the original filters and the implant's rows are written to
fixed output positions; both read all input channels, so pruning an input
channel slices the kept filters and the implant alike, and pruning an output
channel slices whichever part produces it.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> from fxprune.modules import ImplantedConv2d
    >>> conv = nn.Conv2d(3, 4, 3, padding=1)
    >>> m = nn.Sequential(ImplantedConv2d(conv, torch.tensor([0, 2]), torch.tensor([1, 3]), "pointwise"),
    ...                   nn.ReLU(), nn.Conv2d(4, 2, 1))
    >>> fxprune.analyze(m, (torch.randn(1, 3, 5, 5),)).groups[0].size
    4
"""
from __future__ import annotations

import numpy as np
import torch

from ..ir import Role, Zeros
from ..modules import ImplantedConv2d
from .context import EmitContext, OpContext, first_tensor
from .registry import Keys, Rule

__all__ = ["IMPLANTED_CONV_MODULE", "RULES"]


def _implant(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    m = ctx.module
    w, b = ctx.param("weight"), ctx.param("bias")
    u, v = ctx.param("implant_u"), ctx.param("implant_v")
    ctx.fix_value(ctx.param("kept_pos"), "implant position table")
    ctx.fix_value(ctx.param("implant_pos"), "implant position table")
    ctx.fix_value(ctx.param("order"), "implant position table")
    for p in (w, u, v):
        if p is not None:
            for d in range(2, p.ndim):
                ctx.fix(p.labels[d], "kernel dimension")
    for d in range(2, x.ndim):
        ctx.fix(x.labels[d], "convolved (spatial) dimension")
    out = ctx.fresh(m.out_channels)
    kept = m.kept_pos.detach().cpu().numpy()
    imp = m.implant_pos.detach().cpu().numpy()
    ctx.role(w, 0, Role.PRODUCER)
    ctx.unify(out[kept], w.labels[0])
    ctx.role(u, 0, Role.PRODUCER)
    ctx.unify(out[imp], u.labels[0])
    if b is not None:
        ctx.role(b, 0, Role.BIAS)
        ctx.unify(out, b.labels[0])
    ctx.role(w, 1, Role.CONSUMER)
    ctx.unify(x.labels[1], w.labels[1], " (conv input channels)")
    first = u if v is None else v
    ctx.role(first, 1, Role.CONSUMER)
    ctx.unify(x.labels[1], first.labels[1], " (implant input channels)")
    if v is not None:
        ctx.unify(v.labels[0], u.labels[1])  # the rank: internal, never pruned
        ctx.fix(v.labels[0], "implant rank")
    return (x.labels[0], out) + tuple(None for _ in range(2, len(ctx.out.shape)))


def _resize_implant(m: torch.nn.Module, ctx: EmitContext) -> None:
    keep = ctx.kept(ctx.out_labels()[1])
    new_index = np.cumsum(keep) - 1
    for name in ("kept_pos", "implant_pos"):
        pos = getattr(m, name).cpu().numpy()
        pos = pos[keep[pos]]
        setattr(m, name, torch.as_tensor(new_index[pos], dtype=torch.long, device=getattr(m, name).device))
    m.order = torch.argsort(torch.cat([m.kept_pos, m.implant_pos]))
    m.in_channels = ctx.new_shape(ctx.node.args[0])[1]
    m.out_channels = ctx.out_shape()[1]


def _implant_macs(ctx: OpContext) -> int:
    positions = int(np.prod(ctx.out.shape)) // ctx.out.shape[1]
    total = 0
    for name in ("weight", "implant_u", "implant_v"):
        p = ctx.param(name)
        if p is not None:
            total += int(np.prod(p.shape))
    return positions * total


IMPLANTED_CONV_MODULE = Rule("implant", _implant, resize=_resize_implant, macs=_implant_macs, leaf=True,
                             doc="fxprune's ImplantedConv2d (HAP Neural Implant).",
                             keys=Keys(modules=(ImplantedConv2d,)), zeros=Zeros.KEEP)

RULES = (IMPLANTED_CONV_MODULE,)
