"""Normalisation: BatchNorm, InstanceNorm, LayerNorm, RMSNorm, GroupNorm (modules, functions, ATen).

Per-channel norms (BatchNorm) tie their affine parameters and running
statistics to the channel; batch statistics run over dims 0 and 2+, which are
mixing where they carry channels (``F.batch_norm(w.reshape(1, out, -1), None,
None, training=True)`` standardises a weight over its input channels); norms whose statistics run over channels
(LayerNorm, RMSNorm, GroupNorm) are *mixing*: pruning stays valid, but a dead
channel's removal changes the statistics of the kept ones.  ``F.normalize``
divides by a p-norm over ``dim``: zero channels add nothing to a norm with
``p >= 0``, so it declares the sum (``ctx.contract``: exact where removed channels
are zero, mixing otherwise); a negative ``p`` is mixing.

Example:
    >>> import torch, fxprune
    >>> m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    >>> g = fxprune.analyze(m, (torch.randn(1, 3),)).groups[0]
    >>> g.mixing, [str(x.role) for x in g.members]
    (True, ['producer', 'bias', 'bias', 'scale', 'consumer'])
"""
from __future__ import annotations

from typing import Any

import torch

from ..ir import Role, Zeros
from .context import EmitContext, OpContext, Value, first_tensor, normalize_dim, static_value
from .layout import split_labels
from .registry import Keys, Rule, writes_in_training, writes_nothing

__all__ = [
    "BATCH_NORM_ATEN",
    "BATCH_NORM_FUNCTION",
    "BATCH_NORM_MODULE",
    "GROUP_NORM_FUNCTION",
    "GROUP_NORM_MODULE",
    "INSTANCE_NORM_ATEN",
    "INSTANCE_NORM_MODULE",
    "LAYER_NORM_FUNCTION",
    "LAYER_NORM_MODULE",
    "NORMALIZE",
    "RMS_NORM_FUNCTION",
    "RMS_NORM_MODULE",
    "RULES",
]


def per_channel(ctx: OpContext, x: Value, dim: int, params: dict[str, tuple[Value | None, Role]]) -> None:
    lab = x.labels[dim]
    for name, (p, role) in params.items():
        if p is None:
            continue
        ctx.role(p, 0, role)
        ctx.unify(lab, p.labels[0], f" ({name})")


def _bn(ctx: OpContext, x: Value, w, b, rm, rv, instance: bool = False, batch_stats: bool = False) -> tuple:
    if instance:  # statistics over the spatial dims of each channel
        for d in range(2, x.ndim):
            ctx.mixing(x.labels[d], "instance normalisation statistics")
    if batch_stats:  # statistics over dims 0 and 2+ of each channel (a weight standardised in forward)
        for d in [0] + list(range(2, x.ndim)):
            ctx.mixing(x.labels[d], "batch normalisation statistics")
    per_channel(ctx, x, 1, {"weight": (w, Role.SCALE), "bias": (b, Role.BIAS),
                            "running_mean": (rm, Role.BIAS), "running_var": (rv, Role.SCALE)})
    return x.labels


def _bn_module(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    # the emitted module follows its own train()/eval(): either mode may compute batch statistics
    return _bn(ctx, x, ctx.param("weight"), ctx.param("bias"), ctx.param("running_mean"),
               ctx.param("running_var"), batch_stats=True)


def _batch_stats(training: Any, running_mean: Any) -> bool:
    """Whether a functional batch norm computes statistics of its input (not a literal eval call)."""
    return training is not False or not isinstance(running_mean, Value)


def _in_module(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    return _bn(ctx, x, ctx.param("weight"), ctx.param("bias"), ctx.param("running_mean"),
               ctx.param("running_var"), instance=True)


def _bn_function(ctx: OpContext) -> tuple:
    x = ctx.arg(0, "input")
    vals = [ctx.arg(i, n) for i, n in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias"))]
    rm, rv, w, b = [v if isinstance(v, Value) else None for v in vals]
    return _bn(ctx, x, w, b, rm, rv, batch_stats=_batch_stats(ctx.arg(5, "training", False), vals[0]))


def _resize_num_features(m: torch.nn.Module, ctx: EmitContext) -> None:
    m.num_features = ctx.out_shape()[1]


BATCH_NORM_MODULE = Rule("norm", _bn_module, resize=_resize_num_features,
                         doc="nn.BatchNorm1d/2d/3d: per-channel, no mixing.",
                         keys=Keys(modules=("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm")), zeros=Zeros.KEEP,
                         writes_state=writes_in_training)
BATCH_NORM_FUNCTION = Rule("norm", _bn_function, doc="F.batch_norm.", keys=Keys(functional=("batch_norm",)), zeros=Zeros.KEEP)


def _bn_aten(ctx: OpContext) -> tuple:
    vals = [ctx.arg(i) for i in (1, 2, 3, 4)]
    w, b, rm, rv = [v if isinstance(v, Value) else None for v in vals]
    return _bn(ctx, ctx.arg(0), w, b, rm, rv, batch_stats=_batch_stats(ctx.arg(5), vals[2]))


BATCH_NORM_ATEN = Rule("norm", _bn_aten, doc="aten.batch_norm(input, weight, bias, mean, var, ...).",
                       keys=Keys(aten=("batch_norm",)), zeros=Zeros.KEEP)
def _in_aten(ctx: OpContext) -> tuple:
    vals = [ctx.arg(i) for i in (1, 2, 3, 4)]
    w, b, rm, rv = [v if isinstance(v, Value) else None for v in vals]
    return _bn(ctx, ctx.arg(0), w, b, rm, rv, instance=True)


INSTANCE_NORM_ATEN = Rule("norm", _in_aten, doc="aten.instance_norm(input, weight, bias, mean, var, ...).",
                          keys=Keys(aten=("instance_norm",)), zeros=Zeros.KEEP)
INSTANCE_NORM_MODULE = Rule("norm", _in_module, resize=_resize_num_features,
                            doc="nn.InstanceNorm*: per-channel statistics, no mixing.",
                            keys=Keys(modules=("InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d")), zeros=Zeros.KEEP,
                            writes_state=writes_in_training)


def _last_dims_norm(ctx: OpContext, x: Value, k: int, w: Value | None, b: Value | None) -> tuple:
    for j in range(k):
        d = x.ndim - k + j
        ctx.mixing(x.labels[d], "normalisation statistics over channels")
        if w is not None:
            ctx.role(w, j, Role.SCALE)
            ctx.unify(x.labels[d], w.labels[j])
        if b is not None:
            ctx.role(b, j, Role.BIAS)
            ctx.unify(x.labels[d], b.labels[j])
    return x.labels


def _ln_module(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    k = len(ctx.module.normalized_shape)
    return _last_dims_norm(ctx, x, k, ctx.param("weight"), ctx.param("bias"))


def _ln_function(ctx: OpContext) -> tuple:
    x = ctx.arg(0, "input")
    shape = ctx.arg(1, "normalized_shape")
    w, b = ctx.arg(2, "weight"), ctx.arg(3, "bias")
    return _last_dims_norm(ctx, x, len(shape), w if isinstance(w, Value) else None,
                           b if isinstance(b, Value) else None)


def _rms_function(ctx: OpContext) -> tuple:
    x = ctx.arg(0, "input")
    shape = ctx.arg(1, "normalized_shape")
    w = ctx.arg(2, "weight")
    return _last_dims_norm(ctx, x, len(shape), w if isinstance(w, Value) else None, None)


def _resize_normalized_shape(m: torch.nn.Module, ctx: EmitContext) -> None:
    k = len(m.normalized_shape)
    m.normalized_shape = tuple(int(s) for s in ctx.out_shape()[-k:])


def _emit_normalized_shape(ctx: EmitContext) -> tuple:
    args = list(ctx.args)
    shape = ctx.old_arg(1, "normalized_shape")
    new = tuple(int(s) for s in ctx.out_shape()[-len(shape):])
    kwargs = dict(ctx.kwargs)
    if len(args) > 1:
        args[1] = new
    else:
        kwargs["normalized_shape"] = new
    return ctx.node.target, tuple(args), kwargs


LAYER_NORM_MODULE = Rule("norm", _ln_module, resize=_resize_normalized_shape,
                         doc="nn.LayerNorm: mixing over the normalised dims.",
                         keys=Keys(modules=("LayerNorm",)), writes_state=writes_nothing)
LAYER_NORM_FUNCTION = Rule("norm", _ln_function, emit=_emit_normalized_shape, doc="F.layer_norm.",
                           keys=Keys(functional=("layer_norm",), aten=("layer_norm",)))
RMS_NORM_MODULE = Rule("norm", _ln_module, resize=_resize_normalized_shape, doc="nn.RMSNorm.",
                       keys=Keys(modules=("RMSNorm?",)), writes_state=writes_nothing)
RMS_NORM_FUNCTION = Rule("norm", _rms_function, emit=_emit_normalized_shape, doc="F.rms_norm.",
                         keys=Keys(functional=("rms_norm?",), aten=("rms_norm?",)))


def _gn(ctx: OpContext, x: Value, groups: int, w: Value | None, b: Value | None) -> tuple:
    for d in range(2, x.ndim):  # statistics run over the spatial dims too
        ctx.mixing(x.labels[d], "group normalisation statistics")
    lab = x.labels[1]
    if lab is not None:
        parts = split_labels(ctx.atoms, lab, (groups, x.shape[1] // groups), "inner")
        if groups > 1 and parts[1] is None:
            ctx.fix(lab, "group norm")
        ctx.mixing(lab, "group normalisation statistics")
    per_channel(ctx, x, 1, {"weight": (w, Role.SCALE), "bias": (b, Role.BIAS)})
    return x.labels


def _gn_module(ctx: OpContext) -> tuple:
    return _gn(ctx, first_tensor(ctx), ctx.module.num_groups, ctx.param("weight"), ctx.param("bias"))


def _gn_function(ctx: OpContext) -> tuple:
    x = ctx.arg(0, "input")
    w, b = ctx.arg(2, "weight"), ctx.arg(3, "bias")
    return _gn(ctx, x, ctx.arg(1, "num_groups"), w if isinstance(w, Value) else None,
               b if isinstance(b, Value) else None)


def _resize_gn(m: torch.nn.Module, ctx: EmitContext) -> None:
    m.num_channels = ctx.out_shape()[1]


GROUP_NORM_MODULE = Rule("norm", _gn_module, resize=_resize_gn,
                         doc="nn.GroupNorm: channels pruned uniformly within groups.",
                         keys=Keys(modules=("GroupNorm",)), writes_state=writes_nothing)
GROUP_NORM_FUNCTION = Rule("norm", _gn_function, doc="F.group_norm.",
                           keys=Keys(functional=("group_norm",), aten=("group_norm",)))


def _normalize(ctx: OpContext) -> tuple:
    """``x / max(||x||_p over dim, eps)``: a zero channel adds nothing to the norm when ``p >= 0``."""
    x = first_tensor(ctx)
    p = float(static_value(ctx.arg(1, "p", 2.0)))
    dim = normalize_dim(static_value(ctx.arg(2, "dim", 1)), x.ndim)
    if p >= 0:
        ctx.contract((x, dim), why="norm over channels")
    else:
        ctx.mixing(x.labels[dim], "a negative-p norm over channels")
    return x.labels


NORMALIZE = Rule("norm", _normalize, doc="F.normalize(x, p, dim): a p-norm over dim, exact over zero channels.",
                 keys=Keys(functional=("normalize",)), zeros=Zeros.KEEP)


RULES = (NORMALIZE, BATCH_NORM_MODULE, BATCH_NORM_FUNCTION, BATCH_NORM_ATEN, INSTANCE_NORM_ATEN, INSTANCE_NORM_MODULE, LAYER_NORM_MODULE,
         LAYER_NORM_FUNCTION, RMS_NORM_MODULE, RMS_NORM_FUNCTION, GROUP_NORM_MODULE, GROUP_NORM_FUNCTION)
