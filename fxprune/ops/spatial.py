"""Spatial ops over dims 2+: pooling, adaptive pooling, interpolation, spatial padding.

Batch and channel dims pass through unchanged; a labelled dim among the
pooled/padded ones (a channel laid out spatially) cannot be mapped and makes
the node a barrier.

Example:
    >>> import torch, fxprune
    >>> m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 2, 1))
    >>> len(fxprune.analyze(m, (torch.randn(1, 3, 6, 6),)).groups)
    1
"""
from __future__ import annotations

from ..ir import TensorSpec, Zeros
from .context import OpContext, Unsupported, first_tensor
from .registry import Keys, Rule

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
    ), zeros=Zeros.KEEP)

PAD = Rule("spatial", _spatial, doc="constant spatial padding: removed channels hold the pad value there.",
           keys=Keys(modules=("ConstantPad2d",), functional=("pad",), aten=("pad",)), zeros=Zeros.PROBE)

RULES = (SPATIAL, PAD)
