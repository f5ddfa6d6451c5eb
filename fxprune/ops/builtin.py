"""The built-in rule table: one registration per op family.

This module is data: it maps registry keys (module types, functions,
:class:`~fxprune.ops.registry.Method` names, ATen overload packets) to the
rules of :mod:`fxprune.ops.generic`, :mod:`fxprune.ops.layers` and
:mod:`fxprune.ops.attention`.  :data:`TABLE` is read-only; extend a copy from
:func:`fxprune.ops.default_registry`.
"""
from __future__ import annotations

import builtins
import operator
from types import MappingProxyType
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import generic as g
from . import layers as L
from .attention import SDPA
from .registry import Method, Rule

__all__ = ["TABLE"]

_table: dict[Any, Rule] = {}


def _reg(rule: Rule, *keys: Any) -> None:
    for k in keys:
        if k is None:
            continue
        _table[k] = rule


def _methods(*names: str) -> list[Method]:
    return [Method(n) for n in names]


def _torch(*names: str) -> list[Any]:
    return [getattr(torch, n) for n in names if hasattr(torch, n)]


def _functional(*names: str) -> list[Any]:
    return [getattr(F, n) for n in names if hasattr(F, n)]


# --- unary: activations, dropout, casts, identity -------------------------
_UNARY_FN = ("relu", "relu_", "sigmoid", "tanh", "exp", "log", "abs", "neg", "sqrt", "rsqrt",
             "sin", "cos", "erf", "square", "reciprocal", "clamp", "clip", "sign", "floor",
             "ceil", "round", "logical_not", "nan_to_num", "sigmoid_", "exp2", "log1p", "expm1")
_reg(g.UNARY, *_torch(*_UNARY_FN))
_reg(g.UNARY, *_functional("relu", "relu6", "gelu", "silu", "hardswish", "hardsigmoid", "sigmoid",
                           "tanh", "leaky_relu", "elu", "selu", "celu", "mish", "softplus",
                           "softsign", "hardtanh", "dropout", "dropout1d", "dropout2d", "dropout3d",
                           "alpha_dropout", "tanhshrink", "logsigmoid"))
_reg(g.UNARY, *_methods(*_UNARY_FN, "contiguous", "float", "half", "double", "bfloat16", "to",
                        "type", "type_as", "clone", "detach", "cpu", "cuda", "requires_grad_",
                        "relu6", "silu", "gelu", "clamp_min", "clamp_max"))
_reg(g.UNARY, operator.neg, operator.pos, operator.invert, torch.clone, torch.detach,
     *_torch("clamp_min", "clamp_max"))
_reg(g.UNARY, nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
     nn.Tanh, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Softsign,
     nn.Hardtanh, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
     nn.AlphaDropout, nn.Tanhshrink, nn.LogSigmoid)
_reg(L.PRELU_MODULE, nn.PReLU)
_reg(g.LIKE, *_torch("zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like"))

# --- elementwise with broadcasting -----------------------------------------
_reg(g.ELEMENTWISE_BIAS, operator.add, operator.sub, operator.iadd, operator.isub,
     *_torch("add", "sub", "subtract"), *_methods("add", "sub", "add_", "sub_", "subtract",
                                                   "__add__", "__sub__", "__radd__", "__rsub__"))
_reg(g.ELEMENTWISE_SCALE, operator.mul, operator.truediv, operator.imul, operator.itruediv,
     *_torch("mul", "div", "multiply", "divide", "true_divide"),
     *_methods("mul", "div", "mul_", "div_", "multiply", "divide", "__mul__", "__truediv__",
               "__rmul__", "__rtruediv__"))
_reg(g.ELEMENTWISE, operator.pow, operator.floordiv, operator.mod, operator.eq, operator.ne,
     operator.lt, operator.le, operator.gt, operator.ge, operator.and_, operator.or_,
     *_torch("pow", "maximum", "minimum", "fmod", "remainder", "eq", "ne", "lt", "le", "gt", "ge",
             "logical_and", "logical_or", "atan2", "hypot", "lerp", "addcmul", "addcdiv"),
     *_methods("pow", "maximum", "minimum", "fmod", "remainder", "eq", "ne", "lt", "le", "gt",
               "ge", "lerp", "addcmul", "addcdiv", "__pow__", "__rpow__"))
_reg(g.WHERE, torch.where, Method("where"), Method("masked_fill"), torch.masked_fill)

# --- reductions ----------------------------------------------------------------
_reg(g.REDUCE_SUM, torch.sum, Method("sum"), torch.nansum, Method("nansum"))
_reg(g.REDUCE_MIXING, *_torch("mean", "amax", "amin", "prod", "logsumexp", "nanmean"),
     *_methods("mean", "amax", "amin", "prod", "logsumexp", "nanmean", "var", "std"),
     *_torch("var", "std"))
_reg(g.REDUCE_TUPLE, torch.max, torch.min, Method("max"), Method("min"))
_reg(g.NORM_REDUCE, Method("norm"), torch.norm)
_reg(g.SOFTMAX, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax,
     Method("softmax"), Method("log_softmax"))


def _softmax_module(ctx):
    return g.SOFTMAX.propagate(type(ctx)(ctx.node, (ctx.args[0], ctx.module.dim), {}, ctx.out,
                                         ctx.atoms, ctx.module, ctx.params, ctx.roles, ctx.split_policy))


_reg(Rule("softmax", _softmax_module, doc="nn.Softmax(dim)."), nn.Softmax, nn.LogSoftmax)

# --- layout ----------------------------------------------------------------------
_reg(g.VIEW, Method("view"), Method("reshape"), torch.reshape)
_reg(g.RESHAPE, torch.flatten, Method("flatten"), nn.Flatten, torch.squeeze, Method("squeeze"),
     torch.unsqueeze, Method("unsqueeze"), nn.Unflatten, Method("view_as"), Method("reshape_as"))
_reg(g.UNFLATTEN, torch.unflatten, Method("unflatten"))
_reg(g.EXPAND, Method("expand"))
_reg(Rule("expand", g.EXPAND.propagate, doc="expand_as: follows the template."), Method("expand_as"))
_reg(g.REPEAT, Method("repeat"))
_reg(g.PERMUTE, Method("permute"), torch.permute)
_reg(g.TRANSPOSE, Method("transpose"), torch.transpose, Method("swapaxes"), torch.swapaxes)
_reg(g.MATRIX_T, Method("t"), torch.t)
_reg(g.ATTRIBUTE, builtins.getattr)
_reg(g.GETITEM, operator.getitem)
_reg(g.NARROW, torch.narrow, Method("narrow"))
_reg(g.METADATA, *_methods("size", "dim", "numel", "ndimension", "nelement", "stride",
                           "is_contiguous", "is_floating_point", "element_size"),
     torch.numel, builtins.len)
_reg(g.CAT, torch.cat, *_torch("concat", "concatenate"))
_reg(g.STACK, torch.stack)
_reg(g.SPLIT, torch.split, Method("split"))
_reg(g.CHUNK, torch.chunk, Method("chunk"))
_reg(g.UNBIND, torch.unbind, Method("unbind"))

# --- matmul / attention ----------------------------------------------------------
_reg(g.MATMUL, torch.matmul, operator.matmul, torch.bmm, Method("matmul"), Method("bmm"),
     Method("__matmul__"))
_reg(SDPA, F.scaled_dot_product_attention)

# --- spatial ------------------------------------------------------------------------
_reg(g.SPATIAL, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
     nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
     nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample, nn.UpsamplingNearest2d,
     nn.UpsamplingBilinear2d, nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d,
     *_functional("max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
                  "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
                  "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
                  "interpolate", "upsample", "pad"),
     *_torch("max_pool1d", "max_pool2d", "avg_pool1d", "adaptive_avg_pool1d"))

# --- parametrised layers -------------------------------------------------------------
_reg(L.CONV_MODULE, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_reg(L.CONV_FUNCTION, F.conv1d, F.conv2d, F.conv3d)
_reg(L.CONV_TRANSPOSE_MODULE, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_reg(L.CONV_TRANSPOSE_FUNCTION, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
_reg(L.LINEAR_MODULE, nn.Linear)
_reg(L.LINEAR_FUNCTION, F.linear)
_reg(L.BATCH_NORM_MODULE, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_reg(L.BATCH_NORM_FUNCTION, F.batch_norm)
_reg(L.INSTANCE_NORM_MODULE, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
_reg(L.LAYER_NORM_MODULE, nn.LayerNorm)
_reg(L.LAYER_NORM_FUNCTION, F.layer_norm)
_reg(L.RMS_NORM_MODULE, getattr(nn, "RMSNorm", None))
_reg(L.RMS_NORM_FUNCTION, getattr(F, "rms_norm", None))
_reg(L.GROUP_NORM_MODULE, nn.GroupNorm)
_reg(L.GROUP_NORM_FUNCTION, F.group_norm)
_reg(L.EMBEDDING_MODULE, nn.Embedding)
_reg(L.EMBEDDING_FUNCTION, F.embedding)


def _implanted_conv() -> type:
    from ..rewrite.implant import ImplantedConv2d

    return ImplantedConv2d


_reg(L.IMPLANTED_CONV_MODULE, _implanted_conv())

from .aten import ATEN_TABLE  # noqa: E402  (the torch.export front end's keys)

_table.update(ATEN_TABLE)
TABLE = MappingProxyType(dict(_table))

