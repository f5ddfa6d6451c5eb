"""ATen registrations: the ``torch.export`` front end reuses the same rules.

An exported program's graph calls ``torch.ops.aten`` overloads with parameters
as ``get_attr`` nodes, i.e. the functional forms fxprune already has rules for.
This table maps ATen overload packets to those rules; a few ATen ops whose
argument order differs from the functional API get thin adapters here
(``batch_norm``, ``embedding``, ``slice``, ``select``, ``split``).  Nothing else in
fxprune knows about ATen.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import generic as g
from . import layers as L
from .attention import SDPA
from .registry import EmitContext, OpContext, Rule, Value, normalize_dim

__all__ = ["ATEN_TABLE"]

aten = torch.ops.aten


def _bn(ctx: OpContext) -> tuple:
    x = ctx.arg(0)
    w, b, rm, rv = (ctx.arg(i) for i in (1, 2, 3, 4))
    vals = [v if isinstance(v, Value) else None for v in (w, b, rm, rv)]
    return L._bn(ctx, x, *vals)


def _embedding(ctx: OpContext) -> tuple:
    return L._embedding(ctx, ctx.arg(1), ctx.arg(0))


def _slice(ctx: OpContext) -> tuple:
    x = ctx.arg(0)
    dim = normalize_dim(g._intval(ctx.arg(1, "dim", 0)), x.ndim)
    start, end, step = (g._intval(ctx.arg(i, n, d)) for i, n, d in
                        ((2, "start", None), (3, "end", None), (4, "step", 1)))
    labels = list(x.labels)
    if labels[dim] is not None:
        if step not in (None, 1):
            raise g.Unsupported("strided slice over channels")
        labels[dim] = labels[dim][slice(start, end)]
    return g._check(ctx, tuple(labels))


def _emit_slice(ctx: EmitContext) -> tuple:
    xl = ctx.labels_of(ctx.node.args[0])
    dim = normalize_dim(g._static(ctx.old_arg(1, "dim", 0)), len(xl))
    lab = xl[dim]
    if lab is None:
        return ctx.node.target, ctx.args, ctx.kwargs
    conv = g.new_bound(ctx, lab)
    start = conv(ctx.old_arg(2, "start", None))
    end = conv(ctx.old_arg(3, "end", None))
    return ctx.node.target, (ctx.args[0], ctx.arg(1, "dim", 0), start, end), {}


def _select(ctx: OpContext) -> tuple:
    x = ctx.arg(0)
    dim = normalize_dim(g._intval(ctx.arg(1)), x.ndim)
    i = g._intval(ctx.arg(2))
    lab = x.labels[dim]
    if lab is not None:
        ctx.fix(lab[i % len(lab): i % len(lab) + 1], "a single channel is selected by index")
    return g._check(ctx, tuple(l for d, l in enumerate(x.labels) if d != dim))


def _emit_select(ctx: EmitContext) -> tuple:
    xl = ctx.labels_of(ctx.node.args[0])
    dim = normalize_dim(g._static(ctx.old_arg(1)), len(xl))
    lab = xl[dim]
    if lab is None:
        return ctx.node.target, ctx.args, ctx.kwargs
    i = g._static(ctx.old_arg(2))
    i = i % len(lab)
    new = int(np.cumsum(ctx.kept(lab))[i]) - 1
    return ctx.node.target, (ctx.args[0], ctx.args[1], new), {}


def _emit_split(ctx: EmitContext) -> tuple:
    target, args, kwargs = g.SPLIT.emit(ctx)
    if isinstance(args[1], (list, tuple)):  # sizes: aten.split.Tensor takes one int
        return aten.split_with_sizes.default, args, kwargs
    return target, args, kwargs


BN = Rule("norm", _bn, doc="aten.batch_norm(input, weight, bias, mean, var, ...).")
EMBEDDING = Rule("embedding", _embedding, doc="aten.embedding(weight, indices).")
SLICE = Rule("getitem", _slice, emit=_emit_slice, doc="aten.slice(self, dim, start, end, step).")
SELECT = Rule("getitem", _select, emit=_emit_select, doc="aten.select(self, dim, index).")
SPLIT = Rule("split", g.SPLIT.propagate, emit=_emit_split,
             doc="aten.split / split_with_sizes: pruned sections become split_with_sizes.")


def _guards(ctx: OpContext) -> None:
    return None  # torch.export's input guards: they read input shapes, which never change


GUARDS = Rule("metadata", _guards, doc="torch.export's _guards_fn (checks input shapes only).")

_UNARY = ("relu", "relu_", "hardtanh", "hardtanh_", "gelu", "silu", "silu_", "hardswish", "hardswish_",
          "hardsigmoid", "hardsigmoid_", "sigmoid", "tanh", "dropout", "dropout_", "contiguous",
          "clone", "rsqrt", "sqrt", "neg", "exp", "abs", "alias", "detach", "leaky_relu",
          "leaky_relu_", "elu", "mish", "softplus", "to", "_to_copy", "type_as", "clamp", "sin", "cos")

ATEN_TABLE: dict[Any, Rule] = {}


def _put(rule: Rule, *names: str) -> None:
    for n in names:
        packet = getattr(aten, n, None)
        if packet is not None:
            ATEN_TABLE[packet] = rule


_put(g.UNARY, *_UNARY)
_put(g.ELEMENTWISE_BIAS, "add", "add_", "sub", "sub_", "rsub")
_put(g.ELEMENTWISE_SCALE, "mul", "mul_", "div", "div_")
_put(g.ELEMENTWISE, "pow", "maximum", "minimum", "where", "eq", "ne", "lt", "le", "gt", "ge")
_put(g.REDUCE_SUM, "sum")
_put(g.REDUCE_MIXING, "mean", "amax", "amin", "var", "std")
_put(g.SOFTMAX, "softmax", "_softmax", "log_softmax", "_log_softmax")
_put(g.VIEW, "view", "reshape", "_unsafe_view")
_put(g.RESHAPE, "flatten", "unsqueeze", "squeeze")
_put(g.EXPAND, "expand")
_put(g.REPEAT, "repeat")
_put(g.PERMUTE, "permute")
_put(g.TRANSPOSE, "transpose")
_put(g.MATRIX_T, "t")
_put(g.CAT, "cat", "concat")
_put(g.STACK, "stack")
_put(SPLIT, "split", "split_with_sizes")
_put(g.CHUNK, "chunk")
_put(g.UNBIND, "unbind")
_put(g.NARROW, "narrow")
_put(g.MATMUL, "matmul", "bmm", "mm")
_put(g.SPATIAL, "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
     "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "upsample_nearest2d",
     "upsample_bilinear2d", "pad", "constant_pad_nd")
_put(g.LIKE, "zeros_like", "ones_like", "empty_like", "full_like")
_put(SDPA, "scaled_dot_product_attention")
_put(L.CONV_FUNCTION, "conv1d", "conv2d", "conv3d")
_put(L.CONV_TRANSPOSE_FUNCTION, "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
_put(L.LINEAR_FUNCTION, "linear")
_put(L.LAYER_NORM_FUNCTION, "layer_norm")
_put(L.RMS_NORM_FUNCTION, "rms_norm")
_put(L.GROUP_NORM_FUNCTION, "group_norm")
_put(BN, "batch_norm")
_put(EMBEDDING, "embedding")
_put(SLICE, "slice")
_put(SELECT, "select")
try:  # the guard module of exported programs (a private class of torch.export)
    from torch.export._unlift import GuardsFn as _GuardsFn

    ATEN_TABLE[_GuardsFn] = GUARDS
except ImportError:  # pragma: no cover - other torch versions
    pass
