"""How to call every key of the built-in registry in a single-op model (see fxprune.testing.single_op).

``sample_for(key, rule)`` gives the :class:`OpSample` of a key: a per-key
override from ``BY_KEY``, else its rule's default from ``BY_RULE``.  Keys that
no single-op model can exercise are listed in ``NOT_SAMPLED`` with the reason;
ATen keys are exercised by exporting the other samples.  Adding an op to the
registry means adding its sample here when the rule's default does not fit.
"""
from __future__ import annotations

import builtins
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fxprune import ops
from fxprune.modules import ImplantedConv2d, ImplantedLinear
from fxprune.ops import Method
from fxprune.testing.single_op import OpSample

S = OpSample


def _two(o: Any) -> list:
    return [o[0], o[1]]


_SEQ = dict(layout="seq")


def _KT(t: Any) -> Any:  # noqa: N802  (seq keys as [B, C, T] for a contraction)
    return t.transpose(1, 2)


def _recorded(key: Any, swap: bool = False) -> OpSample:
    """Record ``key`` itself as the node: fx records ``x.__add__(y)`` and ``x += y`` as
    ``operator.add``, but graphs from other tools (TorchDynamo's) keep them."""
    op, target = ("call_method", key.name) if isinstance(key, Method) else ("call_function", key)

    def call(f: Any, ts: list, p: Any) -> Any:
        args = (ts[0], _KT(ts[1])) if swap else tuple(ts)
        if not isinstance(ts[0], torch.fx.Proxy):
            return f(*args)
        return ts[0].tracer.create_proxy(op, target, args, {})

    return S(arity=2, layout="seq" if swap else "image", call=call)


def _arg(*args: Any, **kwargs: Any) -> OpSample:
    """A unary sample with extra arguments after the tensor."""
    return S(call=lambda f, ts, p: f(ts[0], *args, **kwargs))


BY_RULE: dict[Any, OpSample] = {
    ops.UNARY: S(),
    ops.LIKE: S(),
    ops.PRELU_MODULE: S(module=lambda: nn.PReLU(6)),
    ops.PRELU_FUNCTION: S(params={"w": (6,)}, call=lambda f, ts, p: f(ts[0], p.w)),
    ops.ELEMENTWISE_ADD: S(arity=2),
    ops.ELEMENTWISE_SUB: S(arity=2),
    ops.ELEMENTWISE_MUL: S(arity=2),
    ops.ELEMENTWISE_DIV: S(arity=2),
    ops.ELEMENTWISE_RDIV: S(arity=2),
    ops.NEW_TENSOR: S(call=lambda f, ts, p: ts[0] * f(ts[0], (ts[0].shape[0],) + (1,) * (ts[0].ndim - 1))),
    ops.ELEMENTWISE: S(arity=2),
    ops.WHERE: S(arity=2, call=lambda f, ts, p: f(ts[0] > 1.0, ts[0], ts[1])),
    ops.REDUCE_SUM: _arg(1),
    ops.REDUCE_MIXING: _arg(1),
    ops.LOGSUMEXP: _arg(1),
    ops.REDUCE_TUPLE: S(call=lambda f, ts, p: _two(f(ts[0], 2))),
    ops.NORM_REDUCE: _arg(2, 1),
    ops.SOFTMAX: _arg(1),
    ops.SOFTMAX_MODULE: S(module=lambda: nn.Softmax(dim=1)),
    ops.RESHAPE: _arg(2),
    ops.VIEW: _arg(2, 6, 25),
    ops.UNFLATTEN: _arg(1, (2, 3)),
    ops.EXPAND: S(call=lambda f, ts, p: f(ts[0].unsqueeze(0), 3, 2, 6, 5, 5)),
    ops.EXPAND_AS: S(call=lambda f, ts, p: f(ts[0][:, :, :1], ts[0])),
    ops.REPEAT: _arg(1, 2, 1, 1),
    ops.PERMUTE: _arg((0, 2, 3, 1)),
    ops.TRANSPOSE: _arg(1, 3),
    ops.MATRIX_T: S(layout="flat"),
    ops.METADATA: S(call=lambda f, ts, p: ts[0] * f(ts[0])),
    ops.ATTRIBUTE: S(layout="flat", call=lambda f, ts, p: f(ts[0], "T")),
    ops.GETITEM: S(call=lambda f, ts, p: f(ts[0], (slice(None), slice(1, 4)))),
    ops.NARROW: _arg(1, 1, 3),
    ops.CAT: S(arity=2, call=lambda f, ts, p: f([ts[0], ts[1]], 1)),
    ops.STACK: S(arity=2, call=lambda f, ts, p: f([ts[0], ts[1]], 1)),
    ops.SPLIT: S(call=lambda f, ts, p: _two(f(ts[0], [2, 4], 1))),
    ops.CHUNK: S(call=lambda f, ts, p: _two(f(ts[0], 2, 1))),
    ops.UNBIND: S(call=lambda f, ts, p: _two(f(ts[0], 2))),
    ops.MATMUL: S(arity=2, **_SEQ, call=lambda f, ts, p: f(ts[0], _KT(ts[1]))),
    ops.ADD_MATMUL: S(layout="flat", params={"w": (6, 4), "b": (4,)}, call=lambda f, ts, p: f(p.b, ts[0], p.w)),
    ops.SDPA: S(arity=3, **_SEQ),
    ops.EINSUM: S(arity=2, **_SEQ, call=lambda f, ts, p: f("btc,bsc->bts", ts[0], ts[1])),
    ops.NORMALIZE: S(),
    ops.GATHER: S(buffers={"i": (2, 6, 3, 5)}, call=lambda f, ts, p: f(ts[0], 2, (p.i * 5).to(torch.long) % 5)),
    ops.ROLL: _arg((1, 2), (2, 3)),
    ops.SPATIAL: _arg(2),
    ops.PAD: _arg((1, 1, 1, 1)),
    ops.CONV_MODULE: S(module=lambda: nn.Conv2d(6, 4, 3, padding=1)),
    ops.CONV_FUNCTION: S(params={"w": (4, 6, 3, 3)}, call=lambda f, ts, p: f(ts[0], p.w, padding=1)),
    ops.CONV_TRANSPOSE_MODULE: S(module=lambda: nn.ConvTranspose2d(6, 4, 2, stride=2)),
    ops.CONV_TRANSPOSE_FUNCTION: S(params={"w": (6, 4, 2, 2)}, call=lambda f, ts, p: f(ts[0], p.w, stride=2)),
    ops.LINEAR_MODULE: S(**_SEQ, module=lambda: nn.Linear(6, 4)),
    ops.LINEAR_FUNCTION: S(**_SEQ, params={"w": (4, 6)}, call=lambda f, ts, p: f(ts[0], p.w)),
    ops.BATCH_NORM_MODULE: S(module=lambda: nn.BatchNorm2d(6)),
    ops.BATCH_NORM_FUNCTION: S(params={"g": (6,), "b": (6,)}, buffers={"rm": (6,), "rv": (6,)},
                               call=lambda f, ts, p: f(ts[0], p.rm, p.rv, p.g, p.b)),
    ops.INSTANCE_NORM_MODULE: S(module=lambda: nn.InstanceNorm2d(6, affine=True)),
    ops.LAYER_NORM_MODULE: S(**_SEQ, module=lambda: nn.LayerNorm(6)),
    ops.LAYER_NORM_FUNCTION: S(**_SEQ, params={"g": (6,), "b": (6,)},
                               call=lambda f, ts, p: f(ts[0], (6,), p.g, p.b)),
    ops.RMS_NORM_MODULE: S(**_SEQ, module=lambda: nn.RMSNorm(6)),
    ops.RMS_NORM_FUNCTION: S(**_SEQ, params={"g": (6,)}, call=lambda f, ts, p: f(ts[0], (6,), p.g)),
    ops.GROUP_NORM_MODULE: S(module=lambda: nn.GroupNorm(2, 6)),
    ops.GROUP_NORM_FUNCTION: S(params={"g": (6,), "b": (6,)}, call=lambda f, ts, p: f(ts[0], 2, p.g, p.b)),
    ops.EMBEDDING_MODULE: S(layout="tokens", module=lambda: nn.Embedding(10, 6)),
    ops.EMBEDDING_FUNCTION: S(layout="tokens", params={"w": (10, 6)}, call=lambda f, ts, p: f(ts[0], p.w)),
    ops.IMPLANTED_CONV_MODULE: S(module=lambda: ImplantedConv2d(nn.Conv2d(6, 4, 3, padding=1),
                                                                torch.tensor([0, 2]), torch.tensor([1, 3]),
                                                                "lowrank")),
    ops.implant.IMPLANTED_LINEAR_MODULE: S(layout="flat", module=lambda: ImplantedLinear(
        nn.Linear(6, 4), torch.tensor([0, 2]), torch.tensor([1, 3]), "lowrank", rank=1)),
}

_SIGNAL, _VOLUME = dict(layout="signal"), dict(layout="volume")

BY_KEY: dict[Any, OpSample] = {
    Method("new_full"): S(call=lambda f, ts, p: ts[0] * f(ts[0], (ts[0].shape[0],) + (1,) * (ts[0].ndim - 1), 2.0)),
    # unary ops with arguments
    torch.clamp: _arg(0.7), torch.clip: _arg(0.7), Method("clamp"): _arg(0.7), Method("clip"): _arg(0.7),
    torch.clamp_min: _arg(0.7), torch.clamp_max: _arg(0.9),
    Method("clamp_min"): _arg(0.7), Method("clamp_max"): _arg(0.9),
    Method("to"): _arg(torch.float64), Method("type"): _arg(torch.float64),
    Method("type_as"): S(call=lambda f, ts, p: f(ts[0], ts[0])),
    operator.invert: S(call=lambda f, ts, p: f(ts[0] > 1.0)),
    F.dropout: _arg(0.5, training=False), F.alpha_dropout: _arg(0.5, training=False),
    F.dropout1d: S(**_SIGNAL, call=lambda f, ts, p: f(ts[0], 0.5, training=False)),
    F.dropout2d: _arg(0.5, training=False),
    F.dropout3d: S(**_VOLUME, call=lambda f, ts, p: f(ts[0], 0.5, training=False)),
    nn.Dropout1d: S(**_SIGNAL), nn.Dropout3d: S(**_VOLUME),
    # fills with an argument
    torch.full_like: _arg(2.0),
    # binary ops whose second operand is not a tensor of the same kind
    torch.lerp: S(arity=2, call=lambda f, ts, p: f(ts[0], ts[1], 0.5)),
    Method("lerp"): S(arity=2, call=lambda f, ts, p: f(ts[0], ts[1], 0.5)),
    torch.addcmul: S(arity=2, call=lambda f, ts, p: f(ts[0], ts[1], ts[1])),
    Method("addcmul"): S(arity=2, call=lambda f, ts, p: f(ts[0], ts[1], ts[1])),
    torch.addcdiv: S(arity=2, call=lambda f, ts, p: f(ts[0], ts[1], ts[1])),
    Method("addcdiv"): S(arity=2, call=lambda f, ts, p: f(ts[0], ts[1], ts[1])),
    operator.and_: S(arity=2, call=lambda f, ts, p: f(ts[0] > 1.0, ts[1] > 1.0)),
    operator.or_: S(arity=2, call=lambda f, ts, p: f(ts[0] > 1.0, ts[1] > 1.0)),
    torch.masked_fill: S(arity=2, call=lambda f, ts, p: f(ts[0], ts[1] > 1.0, 0.0)),
    Method("masked_fill"): S(arity=2, call=lambda f, ts, p: f(ts[0], ts[1] > 1.0, 0.0)),
    Method("where"): S(arity=2, call=lambda f, ts, p: f(ts[0], ts[0] > 1.0, ts[1])),
    # reductions
    torch.max: S(call=lambda f, ts, p: _two(f(ts[0], 2))),
    # layout
    torch.squeeze: S(call=lambda f, ts, p: f(ts[0][:, :, :1], 2)),
    Method("squeeze"): S(call=lambda f, ts, p: f(ts[0][:, :, :1], 2)),
    Method("view_as"): S(call=lambda f, ts, p: f(ts[0], ts[0])),
    Method("reshape_as"): S(call=lambda f, ts, p: f(ts[0], ts[0])),
    nn.Flatten: S(module=lambda: nn.Flatten(2)),
    torch.reshape: _arg((2, 6, 25)),
    torch.swapaxes: _arg(1, 3), Method("swapaxes"): _arg(1, 3),
    # metadata
    Method("size"): S(call=lambda f, ts, p: ts[0].view(f(ts[0], 0), f(ts[0], 1), -1)),
    Method("stride"): S(call=lambda f, ts, p: ts[0] * f(ts[0], 1)),
    Method("is_contiguous"): S(call=lambda f, ts, p: ts[0] * f(ts[0])),
    Method("is_floating_point"): S(call=lambda f, ts, p: ts[0] * f(ts[0])),
    # split
    Method("split"): S(call=lambda f, ts, p: _two(f(ts[0], 3, 1))),
    # matmul
    torch.bmm: S(arity=2, **_SEQ, call=lambda f, ts, p: f(ts[0], _KT(ts[1]))),
    torch.baddbmm: S(arity=2, **_SEQ, params={"c": (5,)}, call=lambda f, ts, p: f(p.c, ts[0], _KT(ts[1]))),
    Method("baddbmm"): S(arity=2, **_SEQ, params={"c": (5,)}, call=lambda f, ts, p: f(p.c, ts[0], _KT(ts[1]))),
    # attention modules
    nn.MultiheadAttention: S(**_SEQ, module=lambda: nn.MultiheadAttention(6, 2, batch_first=True),
                             call=lambda f, ts, p: f(ts[0], ts[0], ts[0], need_weights=False)[0]),
    # recurrent modules (their output; hidden units 6)
    nn.LSTM: S(**_SEQ, module=lambda: nn.LSTM(6, 6, batch_first=True), call=lambda f, ts, p: f(ts[0])[0]),
    nn.GRU: S(**_SEQ, module=lambda: nn.GRU(6, 6, num_layers=2, batch_first=True), call=lambda f, ts, p: f(ts[0])[0]),
    nn.RNN: S(**_SEQ, module=lambda: nn.RNN(6, 6, bidirectional=True, batch_first=True),
              call=lambda f, ts, p: f(ts[0])[0]),
    # spatial ops by dimensionality
    torch.max_pool1d: S(**_SIGNAL, call=lambda f, ts, p: f(ts[0], 2)),
    torch.avg_pool1d: S(**_SIGNAL, call=lambda f, ts, p: f(ts[0], 2)),
    torch.adaptive_avg_pool1d: S(**_SIGNAL, call=lambda f, ts, p: f(ts[0], 1)),
    F.max_pool1d: S(**_SIGNAL, call=lambda f, ts, p: f(ts[0], 2)),
    F.avg_pool1d: S(**_SIGNAL, call=lambda f, ts, p: f(ts[0], 2)),
    F.adaptive_avg_pool1d: S(**_SIGNAL, call=lambda f, ts, p: f(ts[0], 1)),
    F.adaptive_max_pool1d: S(**_SIGNAL, call=lambda f, ts, p: f(ts[0], 1)),
    F.max_pool3d: S(**_VOLUME, call=lambda f, ts, p: f(ts[0], 2)),
    F.avg_pool3d: S(**_VOLUME, call=lambda f, ts, p: f(ts[0], 2)),
    F.adaptive_avg_pool3d: S(**_VOLUME, call=lambda f, ts, p: f(ts[0], 1)),
    F.adaptive_max_pool3d: S(**_VOLUME, call=lambda f, ts, p: f(ts[0], 1)),
    F.adaptive_avg_pool2d: _arg(1), F.adaptive_max_pool2d: _arg(1),
    F.interpolate: _arg(scale_factor=2), F.upsample: _arg(scale_factor=2), F.pad: _arg((1, 1, 1, 1)),
    nn.MaxPool1d: S(**_SIGNAL, module=lambda: nn.MaxPool1d(2)),
    nn.AvgPool1d: S(**_SIGNAL, module=lambda: nn.AvgPool1d(2)),
    nn.AdaptiveAvgPool1d: S(**_SIGNAL, module=lambda: nn.AdaptiveAvgPool1d(1)),
    nn.AdaptiveMaxPool1d: S(**_SIGNAL, module=lambda: nn.AdaptiveMaxPool1d(1)),
    nn.MaxPool2d: S(module=lambda: nn.MaxPool2d(2)),
    nn.AvgPool2d: S(module=lambda: nn.AvgPool2d(2)),
    nn.AdaptiveAvgPool2d: S(module=lambda: nn.AdaptiveAvgPool2d(1)),
    nn.AdaptiveMaxPool2d: S(module=lambda: nn.AdaptiveMaxPool2d(1)),
    nn.MaxPool3d: S(**_VOLUME, module=lambda: nn.MaxPool3d(2)),
    nn.AvgPool3d: S(**_VOLUME, module=lambda: nn.AvgPool3d(2)),
    nn.AdaptiveAvgPool3d: S(**_VOLUME, module=lambda: nn.AdaptiveAvgPool3d(1)),
    nn.AdaptiveMaxPool3d: S(**_VOLUME, module=lambda: nn.AdaptiveMaxPool3d(1)),
    nn.Upsample: S(module=lambda: nn.Upsample(scale_factor=2)),
    nn.UpsamplingNearest2d: S(module=lambda: nn.UpsamplingNearest2d(scale_factor=2)),
    nn.UpsamplingBilinear2d: S(module=lambda: nn.UpsamplingBilinear2d(scale_factor=2)),
    nn.ZeroPad2d: S(module=lambda: nn.ZeroPad2d(1)),
    nn.ConstantPad2d: S(module=lambda: nn.ConstantPad2d(1, 0.5)),
    nn.ConstantPad1d: S(**_SIGNAL, module=lambda: nn.ConstantPad1d((1, 2), 0.5)),
    nn.ConstantPad3d: S(**_VOLUME, module=lambda: nn.ConstantPad3d(1, 0.0)),
    nn.ReflectionPad2d: S(module=lambda: nn.ReflectionPad2d(1)),
    nn.ReplicationPad2d: S(module=lambda: nn.ReplicationPad2d(1)),
    # layers by dimensionality
    nn.Conv1d: S(**_SIGNAL, module=lambda: nn.Conv1d(6, 4, 3, padding=1)),
    nn.Conv3d: S(**_VOLUME, module=lambda: nn.Conv3d(6, 4, 3, padding=1)),
    F.conv1d: S(**_SIGNAL, params={"w": (4, 6, 3)}, call=lambda f, ts, p: f(ts[0], p.w, padding=1)),
    F.conv3d: S(**_VOLUME, params={"w": (4, 6, 3, 3, 3)}, call=lambda f, ts, p: f(ts[0], p.w, padding=1)),
    nn.ConvTranspose1d: S(**_SIGNAL, module=lambda: nn.ConvTranspose1d(6, 4, 2, stride=2)),
    nn.ConvTranspose3d: S(**_VOLUME, module=lambda: nn.ConvTranspose3d(6, 4, 2, stride=2)),
    F.conv_transpose1d: S(**_SIGNAL, params={"w": (6, 4, 2)}, call=lambda f, ts, p: f(ts[0], p.w, stride=2)),
    F.conv_transpose3d: S(**_VOLUME, params={"w": (6, 4, 2, 2, 2)},
                          call=lambda f, ts, p: f(ts[0], p.w, stride=2)),
    nn.BatchNorm1d: S(**_SIGNAL, module=lambda: nn.BatchNorm1d(6)),
    nn.BatchNorm3d: S(**_VOLUME, module=lambda: nn.BatchNorm3d(6)),
    nn.SyncBatchNorm: S(module=lambda: nn.SyncBatchNorm(6)),
    nn.InstanceNorm1d: S(**_SIGNAL, module=lambda: nn.InstanceNorm1d(6, affine=True)),
    nn.InstanceNorm3d: S(**_VOLUME, module=lambda: nn.InstanceNorm3d(6, affine=True)),
    nn.LogSoftmax: S(module=lambda: nn.LogSoftmax(dim=1)),
    nn.Unflatten: S(module=lambda: nn.Unflatten(1, (2, 3))),
    # dunder methods and in-place operators, as TorchDynamo graphs record them
    **{k: _recorded(k) for k in (operator.iadd, operator.isub, operator.imul, operator.itruediv)},
    **{Method(n): _recorded(Method(n)) for n in ("__add__", "__sub__", "__mul__", "__truediv__", "__radd__",
                                                 "__rsub__", "__rmul__", "__rtruediv__", "__pow__", "__rpow__")},
    Method("__matmul__"): _recorded(Method("__matmul__"), swap=True),
}

#: further samples of some keys (other layouts and options), for the ATen forms they lower to
EXTRA_SAMPLES: list[tuple[Any, OpSample]] = [
    (F.interpolate, S(**_SIGNAL, call=lambda f, ts, p: f(ts[0], scale_factor=2))),
    (F.interpolate, S(**_SIGNAL, call=lambda f, ts, p: f(ts[0], scale_factor=2, mode="linear"))),
    (F.interpolate, S(**_VOLUME, call=lambda f, ts, p: f(ts[0], scale_factor=2))),
    (F.interpolate, S(**_VOLUME, call=lambda f, ts, p: f(ts[0], scale_factor=2, mode="trilinear"))),
    (F.interpolate, _arg(scale_factor=2, mode="bilinear")),
    (operator.getitem, S(call=lambda f, ts, p: f(ts[0], (slice(None), slice(None), 0)))),
    (F.pad, S(**_SEQ, call=lambda f, ts, p: f(ts[0], (1, 2, 0, 1)))),            # a channel dim padded
    (F.pad, S(call=lambda f, ts, p: f(ts[0].permute(0, 2, 3, 1), (0, 0, 1, 1, 0, 2)))),  # [B, H, W, C]
    (F.pad, _arg((1, 1, 2, 0), mode="reflect")),
    (operator.getitem, S(**_SEQ, buffers={"index": (7,)},   # a bias-table gather: table[index]
                         call=lambda f, ts, p: f(ts[0][0], (p.index.long() % 5,)))),
    (operator.getitem, S(call=lambda f, ts, p: f(ts[0], Ellipsis))),
    (Method("contiguous"), S(call=lambda f, ts, p: f(ts[0].transpose(2, 3)))),
    *[(f, _arg(inplace=True)) for f in (F.relu, F.silu, F.hardswish, F.hardsigmoid, F.leaky_relu, F.hardtanh)],
    # in-place dropouts export as aten.dropout_ / feature_dropout_ / alpha_dropout_
    *[(f, _arg(0.5, training=False, inplace=True)) for f in (F.dropout, F.dropout2d, F.alpha_dropout)],
]

EXTRA_SAMPLES += [
    # nn.MultiheadAttention: sequence-first, separate k/v widths, per-head weights, masks
    (nn.MultiheadAttention, S(**_SEQ, arity=2, module=lambda: nn.MultiheadAttention(6, 3, kdim=6, vdim=6),
                              call=lambda f, ts, p: f(ts[0], ts[1], ts[1])[0])),
    (nn.MultiheadAttention, S(**_SEQ, arity=3, module=lambda: nn.MultiheadAttention(6, 2, kdim=4, vdim=5,
                                                                                   batch_first=True),
                              call=lambda f, ts, p: _two(f(ts[0], ts[1][..., :4], ts[2][..., :5],
                                                           average_attn_weights=False)))),
    (nn.MultiheadAttention, S(**_SEQ, module=lambda: nn.MultiheadAttention(6, 2, batch_first=True, add_bias_kv=True),
                              call=lambda f, ts, p: f(ts[0], ts[0], ts[0], need_weights=False,
                                                      attn_mask=torch.ones(5, 5).triu(1).bool())[0])),
]

#: keys no single-op model can exercise on this machine, with the reason
NOT_SAMPLED: dict[Any, str] = {
    Method("cuda"): "needs a CUDA device",
    Method("requires_grad_"): "cannot change requires_grad of a non-leaf tensor",
    builtins.len: "torch.fx cannot trace len() of a proxy",
    torch.rand_like: "random values: sliced and masked calls draw different numbers",
    torch.randn_like: "random values: sliced and masked calls draw different numbers",
    torch.empty_like: "uninitialised values",
    Method("new_empty"): "uninitialised values",
    ops.GUARDS.keys.resolved[0] if len(ops.GUARDS.keys) else None: "exists only in exported programs",
    ops.TRACED_GUARDS.keys.resolved[0]: "inserted only by the fx capture from example values "
                                        "(tests/test_fx_values.py prunes through it)",
}
NOT_SAMPLED.pop(None, None)


def sample_for(key: Any, rule: Any) -> OpSample:
    """The sample of ``key`` (registered for ``rule``)."""
    if key in BY_KEY:
        return BY_KEY[key]
    return BY_RULE[rule]
