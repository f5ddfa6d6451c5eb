"""Rules of fxprune's implant modules (HAP's Neural Implant), so implanted models re-analyse and prune again.

:class:`~fxprune.modules.ImplantedConv2d` and
:class:`~fxprune.modules.ImplantedLinear` write the kept rows of the original
weight and the implant's rows to fixed output positions; both parts read all
input channels, so pruning an input channel slices the kept weights and the
implant alike (the first factor's input dim; for a ``dwpw`` implant the
depthwise filters of that channel and their pointwise columns), and pruning an
output channel slices whichever part produces it.  The rank (``lowrank``) is
internal and never pruned.

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
from ..modules import ImplantedConv2d, ImplantedLinear, ImplantKind
from .context import EmitContext, OpContext, Value, first_tensor
from .registry import Keys, Rule

__all__ = ["IMPLANTED_CONV_MODULE", "IMPLANTED_LINEAR_MODULE", "RULES"]


def _implant_channels(ctx: OpContext, xin: np.ndarray | None, dim: int) -> np.ndarray:
    """The shared channel map: ``xin`` (input channel labels) -> output channel labels."""
    m = ctx.module
    w, b = ctx.param("weight"), ctx.param("bias")
    u, v = ctx.param("implant_u"), ctx.param("implant_v")
    for name in ("kept_pos", "implant_pos", "order"):
        ctx.fix_value(ctx.param(name), "implant position table")
    for p in (w, u, v):
        if p is not None:
            for d in range(2, p.ndim):
                ctx.fix(p.labels[d], "kernel dimension")
    out = ctx.fresh(ctx.out.shape[dim])
    ctx.role(w, 0, Role.PRODUCER)
    ctx.unify(out[m.kept_pos.detach().cpu().numpy()], w.labels[0])
    ctx.role(u, 0, Role.PRODUCER)
    ctx.unify(out[m.implant_pos.detach().cpu().numpy()], u.labels[0])
    if b is not None:
        ctx.role(b, 0, Role.BIAS)
        ctx.unify(out, b.labels[0])
    ctx.role(w, 1, Role.CONSUMER)
    ctx.unify(xin, w.labels[1], " (input channels)")
    if v is None:  # pointwise: U reads the input
        ctx.role(u, 1, Role.CONSUMER)
        ctx.unify(xin, u.labels[1], " (implant input channels)")
    elif m.kind is ImplantKind.DWPW:  # depthwise filters (rank per input channel), then U reads them
        ctx.role(v, 0, Role.CONSUMER)
        ctx.fix(v.labels[1], "depthwise kernel has one input channel")
        rep = None if xin is None else np.repeat(xin, v.shape[0] // len(xin))
        ctx.unify(rep, v.labels[0], " (implant depthwise channels)")
        ctx.unify(v.labels[0], u.labels[1])
    else:  # lowrank: V reads the input; the rank is internal
        ctx.role(v, 1, Role.CONSUMER)
        ctx.unify(xin, v.labels[1], " (implant input channels)")
        ctx.unify(v.labels[0], u.labels[1])
        ctx.fix(v.labels[0], "implant rank")
    return out


def _implant_conv(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    for d in range(2, x.ndim):
        ctx.fix(x.labels[d], "convolved (spatial) dimension")
    out = _implant_channels(ctx, x.labels[1], 1)
    return (x.labels[0], out) + tuple(None for _ in range(2, len(ctx.out.shape)))


def _implant_linear(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    return tuple(x.labels[:-1]) + (_implant_channels(ctx, x.labels[-1], -1),)


def _resize(dim: int, sizes: tuple[str, str]):
    def resize(m: torch.nn.Module, ctx: EmitContext) -> None:
        keep = ctx.kept(ctx.out_labels()[dim])
        new_index = np.cumsum(keep) - 1
        for name in ("kept_pos", "implant_pos"):
            pos = getattr(m, name).cpu().numpy()
            pos = pos[keep[pos]]
            setattr(m, name, torch.as_tensor(new_index[pos], dtype=torch.long, device=getattr(m, name).device))
        m.order = torch.argsort(torch.cat([m.kept_pos, m.implant_pos]))
        setattr(m, sizes[0], ctx.new_shape(ctx.node.args[0])[dim])
        setattr(m, sizes[1], ctx.out_shape()[dim])

    return resize


def _implant_macs(dim: int):
    def macs(ctx: OpContext) -> int:
        positions = int(np.prod(ctx.out.shape)) // ctx.out.shape[dim]
        params = (ctx.param(name) for name in ("weight", "implant_u", "implant_v"))
        return positions * sum(int(np.prod(p.shape)) for p in params if isinstance(p, Value))

    return macs


IMPLANTED_CONV_MODULE = Rule("implant", _implant_conv, resize=_resize(1, ("in_channels", "out_channels")),
                             macs=_implant_macs(1), leaf=True,
                             doc="fxprune's ImplantedConv2d (HAP Neural Implant: pointwise, lowrank, dwpw).",
                             keys=Keys(modules=(ImplantedConv2d,)), zeros=Zeros.KEEP)
IMPLANTED_LINEAR_MODULE = Rule("implant", _implant_linear, resize=_resize(-1, ("in_features", "out_features")),
                               macs=_implant_macs(-1), leaf=True,
                               doc="fxprune's ImplantedLinear (HAP Neural Implant, low rank).",
                               keys=Keys(modules=(ImplantedLinear,)), zeros=Zeros.KEEP)

RULES = (IMPLANTED_CONV_MODULE, IMPLANTED_LINEAR_MODULE)
