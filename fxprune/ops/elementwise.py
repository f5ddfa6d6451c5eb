"""Shape-preserving and broadcasting elementwise ops: activations, casts, arithmetic, ``where``.

Broadcasting ties the labels of equal-size dimensions together; a fixed
dimension tied to a labelled one fixes it; a labelled size-1 dimension
broadcast to many is fixed.

Example:
    >>> import torch, fxprune
    >>> m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.GELU(), torch.nn.Linear(4, 1))
    >>> [m.role for m in fxprune.analyze(m, (torch.randn(2, 3),)).groups[0].members]
    [<Role.PRODUCER: 'producer'>, <Role.BIAS: 'bias'>, <Role.CONSUMER: 'consumer'>]
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..ir import Algebra, Role, Zeros
from .context import EmitContext, OpContext, Unsupported, Value, first_tensor, tensor_values
from .registry import Keys, Rule, writes_nothing

__all__ = [
    "ELEMENTWISE",
    "ELEMENTWISE_ADD",
    "ELEMENTWISE_DIV",
    "ELEMENTWISE_MUL",
    "ELEMENTWISE_RDIV",
    "ELEMENTWISE_SUB",
    "LIKE",
    "NEW_TENSOR",
    "PRELU_FUNCTION",
    "PRELU_MODULE",
    "RULES",
    "STOCHASTIC_DEPTH",
    "UNARY",
    "WHERE",
    "broadcast_labels",
]


def broadcast_labels(ctx: OpContext, values: Sequence[Value], out_shape: Sequence[int],
                     role: Role = Role.COUPLED) -> tuple:
    """Labels of a broadcasting elementwise result; ties equal-size dimensions."""
    nd = len(out_shape)
    result: list[Any] = []
    for d in range(nd):
        size = out_shape[d]
        present: list[np.ndarray] = []
        fixed = False
        for v in values:
            k = d - (nd - v.ndim)
            if k < 0:
                continue
            lab = v.labels[k]
            if v.shape[k] == size and (size != 1 or lab is not None):
                if lab is None:
                    fixed = True
                else:
                    present.append(lab)
                    ctx.role(v, k, role)
            elif lab is not None:  # a labelled size-1 dim broadcast to many
                ctx.fix(lab, "a one-channel dimension is broadcast")
        if not present:
            result.append(None)
            continue
        base = present[0]
        for other in present[1:]:
            ctx.unify(base, other)
        if fixed:
            ctx.fix(base, "tied by broadcasting to a fixed-size dimension")
        result.append(base)
    return tuple(result)


# ---------------------------------------------------------------------------
# unary


def _unary(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    if tuple(x.shape) != tuple(ctx.out.shape):
        raise Unsupported("a shape-preserving rule saw the shape change")
    return x.labels


_UNARY_MATH = ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "exp", "exp2", "log", "log1p", "expm1",
               "abs", "neg", "sqrt", "rsqrt", "sin", "cos", "erf", "square", "reciprocal", "clamp",
               "clip", "sign", "floor", "ceil", "round", "logical_not", "nan_to_num", "clone",
               "detach", "clamp_min", "clamp_max")

UNARY = Rule(
    "unary", _unary, doc="Shape-preserving ops: activations, dropout, casts, identity.",
    keys=Keys(
        torch=_UNARY_MATH,
        functional=("relu", "relu6", "gelu", "silu", "hardswish", "hardsigmoid", "leaky_relu", "elu", "selu", "celu", "mish", "softplus", "softsign", "hardtanh",
                    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "tanhshrink",
                    "logsigmoid"),
        methods=_UNARY_MATH + ("contiguous", "float", "half", "double", "bfloat16", "to", "type",
                               "type_as", "cpu", "cuda", "requires_grad_"),
        operators=("neg", "pos", "invert"),
        modules=("ReLU", "ReLU6", "GELU", "SiLU", "Hardswish", "Hardsigmoid", "Sigmoid", "Tanh",
                 "LeakyReLU", "ELU", "SELU", "CELU", "Mish", "Softplus", "Softsign", "Hardtanh",
                 "Identity", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
                 "Tanhshrink", "LogSigmoid"),
        aten=("relu", "relu_", "hardtanh", "hardtanh_", "gelu", "silu", "silu_", "hardswish",
              "hardswish_", "hardsigmoid", "hardsigmoid_", "sigmoid", "sigmoid_", "tanh", "dropout",
              "contiguous", "clone", "alias", "rsqrt", "sqrt", "neg", "exp", "exp2", "log", "log1p", "expm1", "abs",
              "detach", "leaky_relu", "leaky_relu_", "elu", "mish", "softplus", "to", "type_as",
              "clamp", "clamp_min", "clamp_max",
              "sin", "cos", "erf", "reciprocal", "sign", "floor", "ceil", "round", "logical_not",
              "nan_to_num", "celu", "bitwise_not", "positive", "clip", "alpha_dropout",
              "feature_dropout", "log_sigmoid", "relu6", "selu", "square",
              # in-place dropouts: nn.Dropout(inplace=True) (MobileNetV2's classifier), F.dropout*(inplace=True)
              "dropout_", "feature_dropout_", "alpha_dropout_"),
    ), zeros=Zeros.PROBE, writes_state=writes_nothing)


STOCHASTIC_DEPTH = Rule(
    "unary", _unary, leaf=True, zeros=Zeros.KEEP,
    doc="Stochastic depth / drop path (x times a per-sample keep mask): a leaf, so the emitted module follows "
        "its own train()/eval(). No built-in keys: register your module or function under it "
        "(reg.register(STOCHASTIC_DEPTH.with_keys(Keys(functions=(drop_path,), modules=(DropPath,)))). "
        "A torch.fx.wrap-ped function that branches on training and passes channels through in both modes "
        "is registered under it by the analysis itself (fxprune.analysis.mode_calls).")


def _like(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    if tuple(x.shape) != tuple(ctx.out.shape):
        return tuple(None for _ in ctx.out.shape)
    # A fresh tensor shaped like x: its channels follow x's, nothing reads x's values.
    return x.labels


LIKE = Rule("like", _like, doc="zeros_like / ones_like / empty_like: labels follow the template.",
            keys=Keys(torch=("zeros_like", "ones_like", "empty_like", "full_like", "rand_like",
                             "randn_like"),
                      aten=("zeros_like", "ones_like", "empty_like", "full_like", "rand_like",
                            "randn_like")))


def _fresh(ctx: OpContext) -> tuple:
    # Values independent of x; sizes are arguments (read from shapes at run time or constants), so
    # no dim carries x's channels: unlabelled, a channel dim it is broadcast with stays fixed.
    return tuple(None for _ in ctx.out.shape)


NEW_TENSOR = Rule("new", _fresh, doc="x.new_empty / new_zeros / new_ones / new_full: a fresh tensor with "
                                     "x's dtype and device; no channels.",
                  keys=Keys(methods=("new_empty", "new_zeros", "new_ones", "new_full"),
                            aten=("new_empty", "new_zeros", "new_ones", "new_full")),
                  zeros=Zeros.KEEP, algebra=Algebra.FRESH)


def _prelu_module(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    w = ctx.param("weight")
    if w.shape[0] > 1:
        ctx.role(w, 0, Role.SCALE)
        ctx.unify(x.labels[1], w.labels[0])
    else:
        ctx.fix(w.labels[0], "shared PReLU slope")
    return x.labels


def _prelu_aten(ctx: OpContext) -> tuple:
    return _prelu_module(ctx.replace(params={"weight": ctx.arg(1)}))


def _resize_prelu(m: Any, ctx: EmitContext) -> None:
    if m.num_parameters > 1:
        m.num_parameters = ctx.out_shape()[1]


PRELU_MODULE = Rule("unary", _prelu_module, resize=_resize_prelu, doc="nn.PReLU (per-channel slopes).",
                    keys=Keys(modules=("PReLU",)), zeros=Zeros.KEEP, writes_state=writes_nothing)
PRELU_FUNCTION = Rule("unary", _prelu_aten, doc="F.prelu(x, weight) / aten.prelu.",
                      keys=Keys(functional=("prelu",), aten=("prelu",)), zeros=Zeros.KEEP)


# ---------------------------------------------------------------------------
# broadcasting arithmetic


def _elementwise(role: Role):
    def propagate(ctx: OpContext) -> tuple:
        return broadcast_labels(ctx, tensor_values(ctx), ctx.out.shape, role)

    return propagate


ELEMENTWISE_ADD = Rule(
    "elementwise", _elementwise(Role.BIAS),
    doc="Broadcasting add (a + b, residual sums); parameters involved are biases.",
    keys=Keys(operators=("add", "iadd"), torch=("add",), methods=("add", "add_", "__add__", "__radd__"),
              aten=("add", "add_")), zeros=Zeros.PROBE, algebra=Algebra.SUM)

ELEMENTWISE_SUB = Rule(
    "elementwise", _elementwise(Role.BIAS),
    doc="Broadcasting subtract; parameters involved are biases.",
    keys=Keys(operators=("sub", "isub"), torch=("sub", "subtract"),
              methods=("sub", "sub_", "subtract", "__sub__", "__rsub__"),
              aten=("sub", "sub_", "rsub", "subtract")), zeros=Zeros.PROBE)

ELEMENTWISE_MUL = Rule(
    "elementwise", _elementwise(Role.SCALE),
    doc="Broadcasting multiply; parameters involved are scales.",
    keys=Keys(operators=("mul", "imul"), torch=("mul", "multiply"),
              methods=("mul", "mul_", "multiply", "__mul__", "__rmul__"),
              aten=("mul", "mul_", "multiply")), zeros=Zeros.PROBE, algebra=Algebra.PRODUCT)

ELEMENTWISE_DIV = Rule(
    "elementwise", _elementwise(Role.SCALE),
    doc="Broadcasting divide (first operand by the second); parameters involved are scales.",
    keys=Keys(operators=("truediv", "itruediv"), torch=("div", "divide", "true_divide"),
              methods=("div", "div_", "divide", "__truediv__"),
              aten=("div", "div_", "divide", "true_divide")), zeros=Zeros.PROBE, algebra=Algebra.QUOTIENT)

ELEMENTWISE_RDIV = Rule(
    "elementwise", _elementwise(Role.SCALE),
    doc="x.__rtruediv__(y), i.e. y / x, as graphs from other tools record it; parameters are scales.",
    keys=Keys(methods=("__rtruediv__",)), zeros=Zeros.PROBE)

_BINARY = ("pow", "maximum", "minimum", "fmod", "remainder", "eq", "ne", "lt", "le", "gt", "ge",
           "lerp", "addcmul", "addcdiv")

ELEMENTWISE = Rule(
    "elementwise", _elementwise(Role.COUPLED),
    doc="Broadcasting n-ary arithmetic and comparisons; ties channels of equal-size dims.",
    keys=Keys(operators=("pow", "floordiv", "mod", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_"),
              torch=_BINARY + ("logical_and", "logical_or", "atan2", "hypot"),
              methods=_BINARY + ("__pow__", "__rpow__"),
              aten=_BINARY + ("logical_and", "logical_or", "atan2", "hypot", "floor_divide", "__and__",
                              "__or__")), zeros=Zeros.PROBE)

WHERE = Rule("elementwise", _elementwise(Role.COUPLED),
             doc="where / masked_fill: the condition broadcasts like any operand.",
             keys=Keys(torch=("where", "masked_fill"), methods=("where", "masked_fill"),
                       aten=("where", "masked_fill")), zeros=Zeros.PROBE)

RULES = (UNARY, STOCHASTIC_DEPTH, LIKE, NEW_TENSOR, PRELU_MODULE, PRELU_FUNCTION, ELEMENTWISE_ADD, ELEMENTWISE_SUB,
         ELEMENTWISE_MUL, ELEMENTWISE_DIV, ELEMENTWISE_RDIV, ELEMENTWISE, WHERE)
