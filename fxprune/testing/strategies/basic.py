"""Single-layer families: conv, linear, norm, activation, pool, upsample, flatten_linear.

Each family is a block dataclass, its draw function and its :class:`Family`
record, side by side.  ``conv``, ``linear``, ``norm`` and ``activation`` are
the *primitives*: always available inside composite blocks.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from hypothesis import strategies as st

from .core import (ALL_LAYOUTS, IMAGE_LIKE, MAX_SPATIAL, BlockBase, Ctx, Draw, Emitter, Family,
                   Shape, divisors, draw_width, nd)

__all__ = [
    "ACTIVATIONS",
    "ACT_MODULE",
    "Conv",
    "Linear",
    "Norm",
    "Activation",
    "Pool",
    "FlattenLinear",
    "Upsample",
    "draw_conv",
    "draw_linear",
    "ACTIVATION",
    "CONV",
    "LINEAR",
    "NORM",
    "POOL",
    "FLATTEN_LINEAR",
    "UPSAMPLE",
]

ACTIVATIONS = ("relu", "gelu", "silu", "hardswish", "sigmoid", "tanh")
ACT_MODULE = {"relu": "nn.ReLU()", "gelu": "nn.GELU()", "silu": "nn.SiLU()",
              "hardswish": "nn.Hardswish()", "sigmoid": "nn.Sigmoid()",
              "tanh": "nn.Tanh()"}
_ACT_FUNCTION = {"relu": "F.relu", "gelu": "F.gelu", "silu": "F.silu",
                 "hardswish": "F.hardswish", "sigmoid": "torch.sigmoid",
                 "tanh": "torch.tanh"}


def _bias_arg(bias: bool) -> str:
    return "" if bias else ", bias=False"


# --------------------------------------------------------------------------
# activation
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Activation(BlockBase):
    """An activation as an ``nn`` module or as a functional call."""

    family = "activation"
    kind: str = "relu"  # one of ACTIVATIONS
    functional: bool = False

    def out_shape(self, shape: Shape) -> Shape:
        return shape

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        if self.functional:
            em.line(f"{dst} = {_ACT_FUNCTION[self.kind]}({src})", 1)
        else:
            name = em.module("act", ACT_MODULE[self.kind])
            em.line(f"{dst} = {name}({src})", 1)


def _draw_activation(draw: Draw, shape: Shape, ctx: Ctx, budget: int) -> Activation:
    return Activation(draw(st.sampled_from(ACTIVATIONS)), draw(st.booleans()))


ACTIVATION = Family("activation", _draw_activation, layouts=ALL_LAYOUTS, primitive=True)


# --------------------------------------------------------------------------
# conv
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Conv(BlockBase):
    """``nn.Conv2d`` (image) / ``nn.Conv1d`` (signal)."""

    family = "conv"
    out_channels: int
    kernel_size: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1
    bias: bool = True

    def out_shape(self, shape: Shape) -> Shape:
        spatial = tuple((s + 2 * self.padding - self.kernel_size) // self.stride + 1
                        for s in shape.spatial)
        return dataclasses.replace(shape, channels=self.out_channels, spatial=spatial)

    def ctor(self, shape: Shape) -> str:
        args = [str(shape.channels), str(self.out_channels), f"kernel_size={self.kernel_size}"]
        if self.stride != 1:
            args.append(f"stride={self.stride}")
        if self.padding:
            args.append(f"padding={self.padding}")
        if self.groups != 1:
            args.append(f"groups={self.groups}")
        if not self.bias:
            args.append("bias=False")
        return f"nn.Conv{nd(shape)}({', '.join(args)})"

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        name = em.module("conv", self.ctor(shape))
        em.line(f"{dst} = {name}({src})", 1)


def draw_conv(draw: Draw, shape: Shape, ctx: Ctx, budget: int = 1,
              fixed_out: int | None = None) -> Conv:
    """Draw a conv on ``shape`` (dense, depthwise or grouped); ``fixed_out`` fixes its width."""
    c, cap = shape.channels, max(1, ctx.cap)
    modes = ["dense"]
    if fixed_out is None:
        if 2 <= c <= cap:
            modes.append("depthwise")
        grouped = [g for g in divisors(c) if 1 < g < c and g <= cap]
    else:
        grouped = [g for g in divisors(math.gcd(c, fixed_out)) if g > 1]
    if grouped:
        modes.append("grouped")
    mode = draw(st.sampled_from(modes))
    if mode == "dense":
        groups = 1
        out = fixed_out if fixed_out is not None else draw_width(draw, cap)
    elif mode == "depthwise":
        groups = c
        mults = [m for m in (1, 2) if c * m <= cap]
        out = c * draw(st.sampled_from(mults))
    else:
        groups = draw(st.sampled_from(grouped))
        out = fixed_out if fixed_out is not None else groups * draw(
            st.integers(1, max(1, cap // groups)))
    kernel = draw(st.sampled_from([1, 3]))
    small = min(shape.spatial)
    if ctx.preserve_spatial:
        stride, padding = 1, kernel // 2
    else:
        stride = draw(st.sampled_from([1, 2]))
        padding = kernel // 2
        if kernel == 3 and small >= 3:
            padding = draw(st.sampled_from([1, 0]))
    bias = draw(st.booleans())
    return Conv(out, kernel, stride, padding, groups, not bias)


CONV = Family("conv", draw_conv, layouts=IMAGE_LIKE, primitive=True)


# --------------------------------------------------------------------------
# linear
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Linear(BlockBase):
    """``nn.Linear`` over the last dimension (sequence / flat layouts)."""

    family = "linear"
    out_features: int
    bias: bool = True

    def out_shape(self, shape: Shape) -> Shape:
        return shape.with_channels(self.out_features)

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        name = em.module("fc", f"nn.Linear({shape.channels}, {self.out_features}"
                               f"{_bias_arg(self.bias)})")
        em.line(f"{dst} = {name}({src})", 1)


def draw_linear(draw: Draw, shape: Shape, ctx: Ctx, budget: int = 1,
                fixed_out: int | None = None) -> Linear:
    """Draw a linear layer; ``fixed_out`` fixes its width."""
    out = fixed_out if fixed_out is not None else draw_width(draw, ctx.cap)
    return Linear(out, not draw(st.booleans()))


LINEAR = Family("linear", draw_linear, layouts=frozenset({"sequence", "flat"}), primitive=True)


# --------------------------------------------------------------------------
# norm
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Norm(BlockBase):
    """BatchNorm, LayerNorm or GroupNorm over the channel dimension.

    LayerNorm on image/signal tensors is applied channels-last
    (``permute``/``transpose``, ``nn.LayerNorm(C)``, back); BatchNorm and
    GroupNorm on sequences are applied via ``transpose(1, 2)``.
    """

    family = "norm"
    kind: str = "batchnorm"  # "batchnorm" | "layernorm" | "groupnorm"
    groups: int = 1  # GroupNorm only

    def out_shape(self, shape: Shape) -> Shape:
        transposed = (shape.layout in ("image", "signal")) == (self.kind == "layernorm")
        return shape.strided() if transposed and shape.layout != "flat" else shape

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        c = shape.channels
        if self.kind == "batchnorm":
            name = em.module("bn", f"nn.BatchNorm{nd(shape)}({c})")
        elif self.kind == "groupnorm":
            name = em.module("gn", f"nn.GroupNorm({self.groups}, {c})")
        else:
            name = em.module("ln", f"nn.LayerNorm({c})")
        channels_last = self.kind == "layernorm"
        if shape.layout == "image" and channels_last:
            em.line(f"{dst} = {name}({src}.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)", 3)
        elif (shape.layout == "signal" and channels_last) or (
                shape.layout == "sequence" and not channels_last):
            em.line(f"{dst} = {name}({src}.transpose(1, 2)).transpose(1, 2)", 3)
        else:
            em.line(f"{dst} = {name}({src})", 1)


def _draw_norm(draw: Draw, shape: Shape, ctx: Ctx, budget: int) -> Norm:
    layout = shape.layout
    if layout == "flat" or budget >= 3:
        kinds = ["batchnorm", "layernorm", "groupnorm"]
    elif layout == "sequence":
        kinds = ["layernorm"]
    else:
        kinds = ["batchnorm", "groupnorm"]
    kind = draw(st.sampled_from(kinds))
    groups = draw(st.sampled_from(divisors(shape.channels))) if kind == "groupnorm" else 1
    return Norm(kind, groups)


NORM = Family("norm", _draw_norm, layouts=ALL_LAYOUTS, primitive=True)


# --------------------------------------------------------------------------
# pool
# --------------------------------------------------------------------------

#: Pooling kinds emitted as an ``nn`` module: class name and arguments.
_POOL_MODULES = {"max2": ("MaxPool", "2"), "avg2": ("AvgPool", "2"),
                 "max3s2": ("MaxPool", "3, stride=2, padding=1")}
#: Pooling kinds emitted as an expression (``str.format`` template) and its op count.
_POOL_EXPRESSIONS = {"functional_max2": ("F.max_pool{nd}({src}, 2)", 1),
                     "global_mean": ("{src}.mean({dims})", 1),
                     "global_flatten": ("F.adaptive_avg_pool{nd}({src}, 1).flatten(1)", 2),
                     "token_mean": ("{src}.mean(dim=1)", 1),
                     "cls": ("{src}[:, 0]", 1)}
_FLATTENING_POOLS = ("global_mean", "global_flatten", "token_mean", "cls")


@dataclass(frozen=True)
class Pool(BlockBase):
    """Pooling.

    ``kind``: ``"max2"``/``"avg2"`` (``nn.MaxPool``/``nn.AvgPool``, kernel 2),
    ``"max3s2"`` (kernel 3, stride 2, padding 1), ``"functional_max2"``,
    ``"adaptive"`` (``nn.AdaptiveAvgPool`` to ``output_size``),
    ``"global_mean"`` (``x.mean(spatial dims)`` -> flat),
    ``"global_flatten"`` (``F.adaptive_avg_pool(x, 1).flatten(1)`` -> flat);
    on sequences ``"token_mean"`` (``x.mean(dim=1)``) and ``"cls"``
    (``x[:, 0]``), both -> flat.
    """

    family = "pool"
    kind: str = "max2"
    output_size: int = 1

    def out_shape(self, shape: Shape) -> Shape:
        if self.kind in _FLATTENING_POOLS:
            return Shape("flat", shape.channels, ())
        if self.kind in ("max2", "avg2", "functional_max2"):
            spatial = tuple(s // 2 for s in shape.spatial)
        elif self.kind == "max3s2":
            spatial = tuple((s - 1) // 2 + 1 for s in shape.spatial)
        else:
            spatial = tuple(self.output_size for _ in shape.spatial)
        return dataclasses.replace(shape, spatial=spatial)

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        if self.kind in _POOL_EXPRESSIONS:
            template, ops = _POOL_EXPRESSIONS[self.kind]
            dims = "(2, 3)" if shape.layout == "image" else "2"
            em.line(f"{dst} = " + template.format(nd=nd(shape), src=src, dims=dims), ops)
            return
        cls, args = _POOL_MODULES.get(self.kind, ("AdaptiveAvgPool", str(self.output_size)))
        name = em.module("pool", f"nn.{cls}{nd(shape)}({args})")
        em.line(f"{dst} = {name}({src})", 1)


def _draw_pool(draw: Draw, shape: Shape, ctx: Ctx, budget: int) -> Pool:
    if shape.layout == "sequence":
        return Pool(draw(st.sampled_from(["token_mean", "cls"])))
    kinds = []
    if min(shape.spatial) >= 2:
        kinds += ["max2", "avg2"]
    kinds += ["adaptive", "global_mean", "max3s2"]
    if min(shape.spatial) >= 2:
        kinds.append("functional_max2")
    if budget >= 2:
        kinds.append("global_flatten")
    kind = draw(st.sampled_from(kinds))
    size = 1
    if kind == "adaptive" and min(shape.spatial) >= 2:
        size = draw(st.sampled_from([1, 2]))
    return Pool(kind, size)


POOL = Family("pool", _draw_pool, layouts=IMAGE_LIKE | {"sequence"}, resizes=True)


# --------------------------------------------------------------------------
# flatten_linear
# --------------------------------------------------------------------------

#: Flatten styles emitted as a single expression and its op count.
_FLATTEN_EXPRESSIONS = {"torch.flatten": ("torch.flatten({src}, 1)", 1),
                        "method": ("{src}.flatten(1)", 1),
                        "view": ("{src}.view({src}.size(0), -1)", 2),
                        "reshape": ("{src}.reshape({src}.shape[0], -1)", 3)}


@dataclass(frozen=True)
class FlattenLinear(BlockBase):
    """Flatten [B, C, *spatial] to [B, F] and apply an ``nn.Linear`` head."""

    family = "flatten_linear"
    out_features: int
    style: str = "torch.flatten"  # torch.flatten | method | nn.Flatten | view | reshape
    bias: bool = True

    def out_shape(self, shape: Shape) -> Shape:
        return Shape("flat", self.out_features, ())

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        features = shape.channels * math.prod(shape.spatial)
        if self.style == "nn.Flatten":
            name = em.module("flatten", "nn.Flatten()")
            em.line(f"{dst} = {name}({src})", 1)
        else:
            template, ops = _FLATTEN_EXPRESSIONS[self.style]
            em.line(f"{dst} = " + template.format(src=src), ops)
        name = em.module("fc", f"nn.Linear({features}, {self.out_features}"
                               f"{_bias_arg(self.bias)})")
        em.line(f"{dst} = {name}({dst})", 1)


def _draw_flatten_linear(draw: Draw, shape: Shape, ctx: Ctx, budget: int) -> FlattenLinear:
    styles = ["torch.flatten", "method", "nn.Flatten"]
    if budget >= 3 and shape.standard:  # view() cannot merge dims of permuted strides
        styles.append("view")
    if budget >= 4:
        styles.append("reshape")
    style = draw(st.sampled_from(styles))
    return FlattenLinear(draw_width(draw, ctx.cap), style, not draw(st.booleans()))


FLATTEN_LINEAR = Family("flatten_linear", _draw_flatten_linear, layouts=IMAGE_LIKE,
                        min_cost=2, resizes=True)


# --------------------------------------------------------------------------
# upsample
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Upsample(BlockBase):
    """Nearest-neighbour x2 upsampling followed by a conv."""

    family = "upsample"
    out_channels: int
    kernel_size: int = 3
    module: bool = False  # nn.Upsample instead of F.interpolate

    def out_shape(self, shape: Shape) -> Shape:
        return dataclasses.replace(shape, channels=self.out_channels,
                                   spatial=tuple(2 * s for s in shape.spatial))

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        if self.module:
            up = em.module("upsample", 'nn.Upsample(scale_factor=2, mode="nearest")')
            em.line(f"{dst} = {up}({src})", 1)
        else:
            em.line(f'{dst} = F.interpolate({src}, scale_factor=2, mode="nearest")', 1)
        k = self.kernel_size
        pad = f", padding={k // 2}" if k > 1 else ""
        conv = em.module("conv", f"nn.Conv{nd(shape)}({shape.channels}, {self.out_channels}, "
                                 f"kernel_size={k}{pad})")
        em.line(f"{dst} = {conv}({dst})", 1)


def _draw_upsample(draw: Draw, shape: Shape, ctx: Ctx, budget: int) -> Upsample:
    return Upsample(draw_width(draw, ctx.cap), draw(st.sampled_from([3, 1])), draw(st.booleans()))


UPSAMPLE = Family("upsample", _draw_upsample, layouts=IMAGE_LIKE, min_cost=2, resizes=True,
                  when=lambda shape, ctx: all(2 * s <= MAX_SPATIAL for s in shape.spatial))
