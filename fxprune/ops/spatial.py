"""Spatial ops over dims 2+: pooling, adaptive pooling, interpolation; padding of any trailing dims.

Batch and channel dims pass through unchanged; a labelled dim among the
pooled ones (a channel laid out spatially) cannot be mapped and makes
the node a barrier.  ``F.pad`` pads the last dims (``[B, H, W, C]`` layouts
included): unpadded dims pass through, a channel dim padded with a constant
keeps its channels, shifted by the left pad, between new fixed pad channels;
reflection, replication, circular padding or cropping (negative pads) of a
channel dim is a barrier.

Example:
    >>> import torch, fxprune
    >>> m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 2, 1))
    >>> len(fxprune.analyze(m, (torch.randn(1, 3, 6, 6),)).groups)
    1
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..ir import TensorSpec, Zeros
from .context import OpContext, Unsupported, check_labels, first_tensor, static_value
from .registry import Keys, Rule, writes_nothing

__all__ = ["PAD", "RULES", "SPATIAL"]


def _spatial(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    out = ctx.out if isinstance(ctx.out, TensorSpec) else ctx.out[0]
    if x.ndim < 3 or len(out.shape) != x.ndim or tuple(out.shape[:2]) != tuple(x.shape[:2]):
        raise Unsupported("spatial op on an unbatched tensor, or one that changes dims 0-1")
    for d in range(2, x.ndim):
        if x.labels[d] is not None:
            raise Unsupported("pooling over a channel dimension")
    labels = (x.labels[0], x.labels[1]) + tuple(None for _ in range(2, x.ndim))
    if not isinstance(ctx.out, TensorSpec):
        return tuple(labels for _ in ctx.out)
    return labels


_POOL = tuple(f"{kind}_pool{d}d" for kind in ("max", "avg", "adaptive_avg", "adaptive_max") for d in (1, 2, 3))

SPATIAL = Rule(
    "spatial", _spatial, doc="pooling / adaptive pooling / interpolate / spatial pad over dims 2+.",
    keys=Keys(
        modules=tuple(f"{k}Pool{d}d" for k in ("Max", "Avg", "AdaptiveAvg", "AdaptiveMax") for d in (1, 2, 3))
        + ("Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d", "ZeroPad2d",
           "ReflectionPad2d", "ReplicationPad2d"),
        functional=_POOL + ("interpolate",),
        torch=("max_pool1d", "max_pool2d", "avg_pool1d", "adaptive_avg_pool1d"),
        aten=_POOL + ("upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "upsample_linear1d",
                      "upsample_bilinear2d", "upsample_trilinear3d"),
    ), zeros=Zeros.KEEP, writes_state=writes_nothing)

def _pad_args(ctx: OpContext) -> tuple[list[int], str]:
    """``(pad, mode)`` of ``F.pad``/``aten.pad`` or of a ``nn.ConstantPad*d`` module."""
    if ctx.module is not None:
        return [int(p) for p in ctx.module.padding], "constant"
    pad = static_value(ctx.arg(1, "pad"))
    if not isinstance(pad, (list, tuple)) or not all(isinstance(p, int) for p in map(static_value, pad)):
        raise Unsupported("dynamic padding")
    return [int(static_value(p)) for p in pad], str(ctx.arg(2, "mode", None) or "constant")


def _pad(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    pad, mode = _pad_args(ctx)
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise Unsupported(f"padding {pad} for a {x.ndim}-d tensor")
    labels: list[Any] = list(x.labels)
    for k in range(len(pad) // 2):
        d, left, right = x.ndim - 1 - k, pad[2 * k], pad[2 * k + 1]
        if labels[d] is None or left == right == 0:
            continue
        if mode != "constant" or left < 0 or right < 0:
            raise Unsupported(f"{mode} padding or cropping of a channel dimension")
        edges = ctx.fresh(left), ctx.fresh(right)
        for edge in edges:
            ctx.fix(edge, "padding channels")
        labels[d] = np.concatenate([edges[0], labels[d], edges[1]])
    return check_labels(ctx, tuple(labels))


PAD = Rule("spatial", _pad,
           doc="constant/reflect/replicate padding of the last dims; a channel dim padded with a constant "
               "keeps its channels between fixed pad channels. Removed channels hold the pad value there.",
           keys=Keys(modules=("ConstantPad1d", "ConstantPad2d", "ConstantPad3d"), functional=("pad",),
                     aten=("pad",)), zeros=Zeros.PROBE, writes_state=writes_nothing)

RULES = (SPATIAL, PAD)
