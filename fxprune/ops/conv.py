"""Convolution: ``nn.Conv1d/2d/3d`` (groups, depthwise with multiplier), ``ConvTranspose``, functional forms.

The channel function is written once against tensor arguments
(:func:`conv_channels`) and adapted twice: the ``torch.nn`` module (parameters
come from the module) and the functional form (parameters are ``get_attr``
nodes, as in the ATen graphs of ``torch.export``).  A dense ``nn.Conv2d`` can
take HAP's Neural Implant (``Rule.implant``: :class:`~fxprune.modules.ImplantedConv2d`).

Example:
    >>> import torch, torch.nn as nn
    >>> import fxprune
    >>> a = fxprune.analyze(nn.Sequential(nn.Conv2d(3, 8, 3, groups=1), nn.BatchNorm2d(8),
    ...                                   nn.Conv2d(8, 4, 1)), (torch.randn(1, 3, 6, 6),))
    >>> [(m.param, m.dim, str(m.role)) for m in a.groups[0].members]
    [('0.weight', 0, 'producer'), ('0.bias', 0, 'bias'), ('1.bias', 0, 'bias'), ('1.running_mean', 0, 'bias'), ('1.running_var', 0, 'scale'), ('1.weight', 0, 'scale'), ('2.weight', 1, 'consumer')]
"""
from __future__ import annotations

import numpy as np
import torch

from ..ir import Role, Zeros
from ..modules import ImplantedConv2d
from .context import EmitContext, OpContext, Unsupported, Value, first_tensor
from .layout import split_labels
from .registry import Implant, Keys, Rule, writes_nothing

__all__ = ["CONV_FUNCTION", "CONV_MODULE", "CONV_TRANSPOSE_FUNCTION", "CONV_TRANSPOSE_MODULE", "RULES",
           "conv_channels"]


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
    if per_in > 1:  # a weight computed in forward may hold non-zero dead columns (a parameter's are zero)
        ctx.contract((x, 1), (w, in_dim), why="conv contraction")
    if groups == 1:
        ctx.role(w, in_dim, Role.CONSUMER)
        ctx.unify(xin, w.labels[in_dim], " (conv input channels)")
        out = w.labels[out_dim]
        ctx.role(w, out_dim, Role.PRODUCER)
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
        ctx.role(w, 0, Role.PRODUCER)
    else:
        # grouped: in channels (g, per_in) -> units along per_in; out (g, per_out) likewise
        ctx.role(w, in_dim, Role.CONSUMER)
        ctx.role(w, out_dim, Role.PRODUCER)
        if xin is not None:
            parts = split_labels(ctx.atoms, xin, (groups, per_in), "inner")
            if parts[1] is None:
                ctx.fix(xin, "grouped conv input")
            else:
                ctx.unify(parts[1], w.labels[in_dim])
        else:
            ctx.fix(w.labels[in_dim], "grouped conv over a fixed-size input")
        out = w.labels[out_dim]
        if split_labels(ctx.atoms, out, (groups, per_out), "inner")[1] is None:
            ctx.fix(out, "grouped conv output")
    if b is not None:
        ctx.role(b, 0, Role.BIAS)
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
        old_in = ctx.old_shape(ctx.node.args[0])[1]
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


def _dense_2d(m: torch.nn.Module) -> bool:
    """A dense (``groups=1``) Conv2d takes an implant: any kernel, stride, padding and dilation."""
    return m.weight.ndim == 4 and m.groups == 1


CONV_MODULE = Rule("conv", _conv_module(False), resize=_resize_conv,
                   implant=Implant(accepts=_dense_2d, build=ImplantedConv2d),
                   macs=lambda ctx: _conv_macs(ctx, ctx.param("weight")),
                   doc="nn.Conv1d/2d/3d incl. groups and depthwise.",
                   keys=Keys(modules=("Conv1d", "Conv2d", "Conv3d")), zeros=Zeros.KEEP,
                   writes_state=writes_nothing)
CONV_FUNCTION = Rule("conv", _conv_function(False), emit=_emit_conv_function(False),
                     macs=lambda ctx: _conv_macs(ctx, ctx.arg(1, "weight")),
                     doc="F.conv1d/2d/3d.",
                     keys=Keys(functional=("conv1d", "conv2d", "conv3d"), aten=("conv1d", "conv2d", "conv3d")), zeros=Zeros.KEEP)
CONV_TRANSPOSE_MODULE = Rule("conv", _conv_module(True), resize=_resize_conv,
                             macs=lambda ctx: _conv_macs_t(ctx, first_tensor(ctx), ctx.param("weight")),
                             doc="nn.ConvTranspose1d/2d/3d.",
                             keys=Keys(modules=("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")), zeros=Zeros.KEEP,
                             writes_state=writes_nothing)
CONV_TRANSPOSE_FUNCTION = Rule("conv", _conv_function(True), emit=_emit_conv_function(True),
                               macs=lambda ctx: _conv_macs_t(ctx, first_tensor(ctx), ctx.arg(1, "weight")),
                               doc="F.conv_transpose1d/2d/3d.",
                               keys=Keys(functional=("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"),
                                         aten=("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")), zeros=Zeros.KEEP)


def _conv_macs_t(ctx: OpContext, x: Value, w: Value) -> int:
    return int(np.prod(x.shape)) * int(np.prod(w.shape[1:]))


RULES = (CONV_MODULE, CONV_FUNCTION, CONV_TRANSPOSE_MODULE, CONV_TRANSPOSE_FUNCTION)
