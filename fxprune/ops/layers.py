"""Rules for parametrised layers: convolution, linear, normalisation, embedding.

Each layer family has one channel function written against tensor arguments
(input, weight, bias...), used by two thin adapters: the ``torch.nn`` module
(parameters come from the module) and the functional form (parameters are
``get_attr`` nodes, as in the ATen graphs of ``torch.export``).  So the same
knowledge serves every front end.

Example:
    >>> import torch, torch.nn as nn
    >>> import fxprune
    >>> a = fxprune.analyze(nn.Sequential(nn.Conv2d(3, 8, 3, groups=1), nn.BatchNorm2d(8),
    ...                                   nn.Conv2d(8, 4, 1)), (torch.randn(1, 3, 6, 6),))
    >>> [(m.param, m.dim, m.role) for m in a.groups[0].members]
    [('0.weight', 0, 'producer'), ('0.bias', 0, 'bias'), ('1.bias', 0, 'bias'), ('1.running_mean', 0, 'bias'), ('1.running_var', 0, 'scale'), ('1.weight', 0, 'scale'), ('2.weight', 1, 'consumer')]
"""
from __future__ import annotations


import numpy as np
import torch

from .generic import first_tensor, split_labels
from .registry import EmitContext, OpContext, Rule, Unsupported, Value

__all__ = [
    "conv_channels",
    "linear_channels",
    "CONV_MODULE",
    "CONV_FUNCTION",
    "CONV_TRANSPOSE_MODULE",
    "CONV_TRANSPOSE_FUNCTION",
    "LINEAR_MODULE",
    "LINEAR_FUNCTION",
    "BATCH_NORM_MODULE",
    "BATCH_NORM_FUNCTION",
    "INSTANCE_NORM_MODULE",
    "LAYER_NORM_MODULE",
    "LAYER_NORM_FUNCTION",
    "RMS_NORM_MODULE",
    "RMS_NORM_FUNCTION",
    "GROUP_NORM_MODULE",
    "GROUP_NORM_FUNCTION",
    "EMBEDDING_MODULE",
    "EMBEDDING_FUNCTION",
    "PRELU_MODULE",
]


# ---------------------------------------------------------------------------
# convolution


def conv_channels(ctx: OpContext, x: Value, w: Value, b: Value | None, groups: int,
                  transposed: bool) -> tuple:
    """Channel map of (transposed) convolution.

    Weight layout: ``[out, in/groups, *k]`` (``[in, out/groups, *k]`` transposed).
    Depthwise-like convs (one input channel per group) tie each input channel to
    its output channels; other grouped convs prune the within-group index
    uniformly across groups (``groups`` stays), which keeps the op exact.
    """
    if transposed and groups > 1:
        raise Unsupported("grouped transposed convolution")
    in_dim, out_dim = (1, 0) if not transposed else (0, 1)
    c_in = x.shape[1]
    c_out = ctx.out.shape[1]
    per_in = c_in // groups
    per_out = c_out // groups
    for d in range(2, w.ndim):
        ctx.fix(w.labels[d], "kernel dimension")
    for d in range(2, x.ndim):  # a conv mixes positions: labelled positions cannot be pruned
        ctx.fix(x.labels[d], "convolved (spatial) dimension")
    xin = x.labels[1]
    if groups == 1:
        ctx.role(w, in_dim, "consumer")
        ctx.unify(xin, w.labels[in_dim], " (conv input channels)")
        out = w.labels[out_dim]
        ctx.role(w, out_dim, "producer")
    elif per_in == 1 and not transposed:
        # depthwise (with channel multiplier per_out): output channel j*per_out+m reads input j
        w_out = w.labels[0]
        ctx.fix(w.labels[1], "depthwise kernel has one input channel")
        if xin is None:
            ctx.fix(w_out, "depthwise conv over a fixed-size input")
            out = w_out
        else:
            rep = np.repeat(xin, per_out)
            ctx.unify(rep, w_out)
            out = rep
        ctx.role(w, 0, "producer")
    else:
        # grouped: in channels (g, per_in) -> units along per_in; out (g, per_out) likewise
        ctx.role(w, in_dim, "consumer")
        ctx.role(w, out_dim, "producer")
        if xin is not None:
            parts = split_labels(ctx.atoms, xin, (groups, per_in), "inner")
            if parts[1] is None:
                ctx.fix(xin, "grouped conv input")
            else:
                ctx.unify(parts[1], w.labels[in_dim])
        else:
            ctx.fix(w.labels[in_dim], "grouped conv over a fixed-size input")
        w_out = w.labels[out_dim]
        if True:
            parts = split_labels(ctx.atoms, w_out, (groups, per_out), "inner")
            out = w_out
            if parts[1] is None:
                ctx.fix(w_out, "grouped conv output")
    if b is not None:
        ctx.role(b, 0, "bias")
        ctx.unify(out, b.labels[0])
    return (x.labels[0], out) + tuple(None for _ in range(2, len(ctx.out.shape)))


def _conv_macs(ctx: OpContext, w: Value) -> int:
    per_out = int(np.prod(w.shape[1:]))
    return int(np.prod(ctx.out.shape)) * per_out


def _conv_module(transposed: bool):
    def propagate(ctx: OpContext) -> tuple:
        x = first_tensor(ctx)
        m = ctx.module
        return conv_channels(ctx, x, ctx.param("weight"), ctx.param("bias"), m.groups, transposed)

    return propagate


def _conv_function(transposed: bool):
    def propagate(ctx: OpContext) -> tuple:
        x = ctx.arg(0, "input")
        w = ctx.arg(1, "weight")
        b = ctx.arg(2, "bias")
        groups = ctx.arg(7 if transposed else 6, "groups", 1)
        if not isinstance(w, Value) or not isinstance(groups, int):
            raise Unsupported("convolution with a dynamic weight or groups")
        return conv_channels(ctx, x, w, b if isinstance(b, Value) else None, groups, transposed)

    return propagate


def _resize_conv(m: torch.nn.Module, ctx: EmitContext) -> None:
    new_in = ctx.new_shape(ctx.node.args[0])[1]
    new_out = ctx.out_shape()[1]
    depthwise = m.groups > 1 and m.in_channels // m.groups == 1 and not getattr(m, "transposed", False)
    if depthwise:
        m.groups = new_in
    m.in_channels = new_in
    m.out_channels = new_out


def _emit_conv_function(transposed: bool):
    def emit(ctx: EmitContext) -> tuple:
        gpos = 7 if transposed else 6
        groups = ctx.old_arg(gpos, "groups", 1)
        old_in = ctx.node.args[0].meta["fxprune.spec"].shape[1]
        if groups > 1 and old_in // groups == 1 and not transposed:
            new_in = ctx.new_shape(ctx.node.args[0])[1]
            args = list(ctx.args)
            kwargs = dict(ctx.kwargs)
            if len(args) > gpos:
                args[gpos] = new_in
            else:
                kwargs["groups"] = new_in
            return ctx.node.target, tuple(args), kwargs
        return ctx.node.target, ctx.args, ctx.kwargs

    return emit


CONV_MODULE = Rule("conv", _conv_module(False), resize=_resize_conv,
                   macs=lambda ctx: _conv_macs(ctx, ctx.param("weight")),
                   doc="nn.Conv1d/2d/3d incl. groups and depthwise.")
CONV_FUNCTION = Rule("conv", _conv_function(False), emit=_emit_conv_function(False),
                     macs=lambda ctx: _conv_macs(ctx, ctx.arg(1, "weight")),
                     doc="F.conv1d/2d/3d.")
CONV_TRANSPOSE_MODULE = Rule("conv", _conv_module(True), resize=_resize_conv,
                             macs=lambda ctx: _conv_macs_t(ctx, first_tensor(ctx), ctx.param("weight")),
                             doc="nn.ConvTranspose1d/2d/3d.")
CONV_TRANSPOSE_FUNCTION = Rule("conv", _conv_function(True), emit=_emit_conv_function(True),
                               macs=lambda ctx: _conv_macs_t(ctx, first_tensor(ctx), ctx.arg(1, "weight")),
                               doc="F.conv_transpose1d/2d/3d.")


def _conv_macs_t(ctx: OpContext, x: Value, w: Value) -> int:
    return int(np.prod(x.shape)) * int(np.prod(w.shape[1:]))


# ---------------------------------------------------------------------------
# linear


def linear_channels(ctx: OpContext, x: Value, w: Value, b: Value | None) -> tuple:
    """``y[..., o] = sum_i x[..., i] W[o, i] + b[o]``."""
    ctx.role(w, 1, "consumer")
    ctx.role(w, 0, "producer")
    ctx.unify(x.labels[-1], w.labels[1], " (linear input features)")
    out = w.labels[0]
    if b is not None:
        ctx.role(b, 0, "bias")
        ctx.unify(out, b.labels[0])
    return tuple(x.labels[:-1]) + (out,)


def _linear_module(ctx: OpContext) -> tuple:
    return linear_channels(ctx, first_tensor(ctx), ctx.param("weight"), ctx.param("bias"))


def _linear_function(ctx: OpContext) -> tuple:
    x, w, b = ctx.arg(0, "input"), ctx.arg(1, "weight"), ctx.arg(2, "bias")
    if not isinstance(w, Value):
        raise Unsupported("linear with a non-tensor weight")
    return linear_channels(ctx, x, w, b if isinstance(b, Value) else None)


def _resize_linear(m: torch.nn.Module, ctx: EmitContext) -> None:
    m.in_features = ctx.new_shape(ctx.node.args[0])[-1]
    m.out_features = ctx.out_shape()[-1]


def _linear_macs(ctx: OpContext, w: Value) -> int:
    return int(np.prod(ctx.out.shape)) * int(w.shape[1])


LINEAR_MODULE = Rule("linear", _linear_module, resize=_resize_linear,
                     macs=lambda ctx: _linear_macs(ctx, ctx.param("weight")), doc="nn.Linear.")
LINEAR_FUNCTION = Rule("linear", _linear_function,
                       macs=lambda ctx: _linear_macs(ctx, ctx.arg(1, "weight")), doc="F.linear.")


# ---------------------------------------------------------------------------
# normalisation


def per_channel(ctx: OpContext, x: Value, dim: int, params: dict[str, tuple[Value | None, str]]) -> None:
    lab = x.labels[dim]
    for name, (p, role) in params.items():
        if p is None:
            continue
        ctx.role(p, 0, role)
        ctx.unify(lab, p.labels[0], f" ({name})")


def _bn(ctx: OpContext, x: Value, w, b, rm, rv, instance: bool = False) -> tuple:
    if instance:  # statistics over the spatial dims of each channel
        for d in range(2, x.ndim):
            ctx.mixing(x.labels[d], "instance normalisation statistics")
    per_channel(ctx, x, 1, {"weight": (w, "scale"), "bias": (b, "bias"),
                            "running_mean": (rm, "bias"), "running_var": (rv, "scale")})
    return x.labels


def _bn_module(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    return _bn(ctx, x, ctx.param("weight"), ctx.param("bias"), ctx.param("running_mean"),
               ctx.param("running_var"))


def _in_module(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    return _bn(ctx, x, ctx.param("weight"), ctx.param("bias"), ctx.param("running_mean"),
               ctx.param("running_var"), instance=True)


def _bn_function(ctx: OpContext) -> tuple:
    x = ctx.arg(0, "input")
    vals = [ctx.arg(i, n) for i, n in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias"))]
    rm, rv, w, b = [v if isinstance(v, Value) else None for v in vals]
    return _bn(ctx, x, w, b, rm, rv)


def _resize_num_features(m: torch.nn.Module, ctx: EmitContext) -> None:
    m.num_features = ctx.out_shape()[1]


BATCH_NORM_MODULE = Rule("norm", _bn_module, resize=_resize_num_features,
                         doc="nn.BatchNorm1d/2d/3d: per-channel, no mixing.")
BATCH_NORM_FUNCTION = Rule("norm", _bn_function, doc="F.batch_norm.")
INSTANCE_NORM_MODULE = Rule("norm", _in_module, resize=_resize_num_features,
                            doc="nn.InstanceNorm*: per-channel statistics, no mixing.")


def _last_dims_norm(ctx: OpContext, x: Value, k: int, w: Value | None, b: Value | None) -> tuple:
    for j in range(k):
        d = x.ndim - k + j
        ctx.mixing(x.labels[d], "normalisation statistics over channels")
        if w is not None:
            ctx.role(w, j, "scale")
            ctx.unify(x.labels[d], w.labels[j])
        if b is not None:
            ctx.role(b, j, "bias")
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
                         doc="nn.LayerNorm: mixing over the normalised dims.")
LAYER_NORM_FUNCTION = Rule("norm", _ln_function, emit=_emit_normalized_shape, doc="F.layer_norm.")
RMS_NORM_MODULE = Rule("norm", _ln_module, resize=_resize_normalized_shape, doc="nn.RMSNorm.")
RMS_NORM_FUNCTION = Rule("norm", _rms_function, emit=_emit_normalized_shape, doc="F.rms_norm.")


def _gn(ctx: OpContext, x: Value, groups: int, w: Value | None, b: Value | None) -> tuple:
    for d in range(2, x.ndim):  # statistics run over the spatial dims too
        ctx.mixing(x.labels[d], "group normalisation statistics")
    lab = x.labels[1]
    if lab is not None:
        parts = split_labels(ctx.atoms, lab, (groups, x.shape[1] // groups), "inner")
        if groups > 1 and parts[1] is None:
            ctx.fix(lab, "group norm")
        ctx.mixing(lab, "group normalisation statistics")
    per_channel(ctx, x, 1, {"weight": (w, "scale"), "bias": (b, "bias")})
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
                         doc="nn.GroupNorm: channels pruned uniformly within groups.")
GROUP_NORM_FUNCTION = Rule("norm", _gn_function, doc="F.group_norm.")


# ---------------------------------------------------------------------------
# embedding


def _embedding(ctx: OpContext, idx: Value, w: Value) -> tuple:
    ctx.fix(w.labels[0], "embedding rows are indexed by token ids")
    ctx.role(w, 1, "producer")
    return tuple(idx.labels) + (w.labels[1],)


def _embedding_module(ctx: OpContext) -> tuple:
    return _embedding(ctx, first_tensor(ctx), ctx.param("weight"))


def _embedding_function(ctx: OpContext) -> tuple:
    return _embedding(ctx, ctx.arg(0, "input"), ctx.arg(1, "weight"))


def _resize_embedding(m: torch.nn.Module, ctx: EmitContext) -> None:
    m.embedding_dim = ctx.out_shape()[-1]


EMBEDDING_MODULE = Rule("embedding", _embedding_module, resize=_resize_embedding, doc="nn.Embedding.")
EMBEDDING_FUNCTION = Rule("embedding", _embedding_function, doc="F.embedding.")


def _prelu_module(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    w = ctx.param("weight")
    if w.shape[0] > 1:
        ctx.role(w, 0, "scale")
        ctx.unify(x.labels[1], w.labels[0])
    else:
        ctx.fix(w.labels[0], "shared PReLU slope")
    return x.labels


def _resize_prelu(m: torch.nn.Module, ctx: EmitContext) -> None:
    if m.num_parameters > 1:
        m.num_parameters = ctx.out_shape()[1]


PRELU_MODULE = Rule("unary", _prelu_module, resize=_resize_prelu, doc="nn.PReLU (per-channel slopes).")


# ---------------------------------------------------------------------------
# HAP's implanted convolution (fxprune.rewrite.implant.ImplantedConv2d)


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
    ctx.role(w, 0, "producer")
    ctx.unify(out[kept], w.labels[0])
    ctx.role(u, 0, "producer")
    ctx.unify(out[imp], u.labels[0])
    if b is not None:
        ctx.role(b, 0, "bias")
        ctx.unify(out, b.labels[0])
    ctx.role(w, 1, "consumer")
    ctx.unify(x.labels[1], w.labels[1], " (conv input channels)")
    first = u if v is None else v
    ctx.role(first, 1, "consumer")
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
                             doc="fxprune's ImplantedConv2d (HAP Neural Implant).")
