"""Channel-mixing families: shuffle, channels_last_ln, se, attention.

These are the patterns that couple channels in non-obvious ways: ShuffleNet
channel shuffles (``view`` + ``transpose``), ConvNeXt-style channels-last
LayerNorm + MLP, squeeze-excitation gates and hand-written multi-head
attention with head reshapes.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from .core import (IMAGE_LIKE, BlockBase, Ctx, Draw, Emitter, Family, Shape, divisors,
                   draw_width, nd, plural)

__all__ = ["ChannelShuffle", "ChannelsLastLN", "SqueezeExcite", "Attention",
           "SHUFFLE", "CHANNELS_LAST_LN", "SE", "ATTENTION"]


# --------------------------------------------------------------------------
# shuffle
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelShuffle(BlockBase):
    """ShuffleNet channel shuffle: ``view(b, g, c // g, ...).transpose(1, 2)``."""

    family = "shuffle"
    groups: int
    contiguous_view: bool = False  # ``.contiguous().view`` instead of ``.reshape``

    def out_shape(self, shape: Shape) -> Shape:
        return shape

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        g = self.groups
        sp = "h, w" if shape.layout == "image" else "l"
        em.line(f"b, c, {sp} = {src}.shape", 1 + 2 + len(shape.spatial))
        tail = (f".contiguous().view(b, -1, {sp})" if self.contiguous_view
                else f".reshape(b, -1, {sp})")
        em.line(f"{dst} = {src}.view(b, {g}, c // {g}, {sp}).transpose(1, 2){tail}",
                4 + int(self.contiguous_view))


def _shuffle_cost(shape: Shape) -> int:
    return 9 if shape.layout == "image" else 8


def _draw_shuffle(draw: Draw, shape: Shape, ctx: Ctx, budget: int) -> ChannelShuffle:
    groups = draw(st.sampled_from(divisors(shape.channels)[1:]))
    contiguous = budget > _shuffle_cost(shape) and draw(st.booleans())
    return ChannelShuffle(groups, contiguous)


SHUFFLE = Family("shuffle", _draw_shuffle, layouts=IMAGE_LIKE, nestable=True,
                 min_cost=_shuffle_cost, min_channels=2)


# --------------------------------------------------------------------------
# channels_last_ln
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelsLastLN(BlockBase):
    """ConvNeXt-style: to channels-last, ``LayerNorm``, ``Linear`` (MLP), back."""

    family = "channels_last_ln"
    out_features: int
    hidden: int | None = None  # if set: Linear(C, hidden) -> GELU -> Linear(hidden, out)

    def out_shape(self, shape: Shape) -> Shape:
        return shape.with_channels(self.out_features).strided()

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        em.comment("channels-last LayerNorm + Linear")
        if shape.layout == "image":
            to_last, to_first = "permute(0, 2, 3, 1)", "permute(0, 3, 1, 2)"
        else:
            to_last = to_first = "transpose(1, 2)"
        c = shape.channels
        ln = em.module("ln", f"nn.LayerNorm({c})")
        em.line(f"{dst} = {src}.{to_last}", 1)
        em.line(f"{dst} = {ln}({dst})", 1)
        if self.hidden is None:
            layers = [em.module("fc", f"nn.Linear({c}, {self.out_features})")]
        else:
            layers = [em.module("fc", f"nn.Linear({c}, {self.hidden})"),
                      em.module("act", "nn.GELU()"),
                      em.module("fc", f"nn.Linear({self.hidden}, {self.out_features})")]
        for layer in layers:
            em.line(f"{dst} = {layer}({dst})", 1)
        em.line(f"{dst} = {dst}.{to_first}", 1)


def _draw_channels_last_ln(draw: Draw, shape: Shape, ctx: Ctx, budget: int) -> ChannelsLastLN:
    hidden = None
    if budget >= 6 and draw(st.booleans()):
        hidden = draw_width(draw, ctx.cap)
    return ChannelsLastLN(draw_width(draw, ctx.cap), hidden)


CHANNELS_LAST_LN = Family("channels_last_ln", _draw_channels_last_ln, layouts=IMAGE_LIKE,
                          nestable=True, min_cost=4)


# --------------------------------------------------------------------------
# se
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SqueezeExcite(BlockBase):
    """Squeeze-excitation: pool, 1x1 conv down, ReLU, 1x1 conv up, gate, ``x * s``."""

    family = "se"
    reduced: int
    pool: str = "mean"  # "mean" | "functional" | "module"
    gate: str = "sigmoid"  # "sigmoid" | "hardsigmoid"

    def out_shape(self, shape: Shape) -> Shape:
        return shape

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        d, c = nd(shape), shape.channels
        em.comment("squeeze-excitation")
        s = em.var("scale")
        if self.pool == "mean":
            dims = "(2, 3)" if shape.layout == "image" else "2"
            em.line(f"{s} = {src}.mean({dims}, keepdim=True)", 1)
        elif self.pool == "functional":
            em.line(f"{s} = F.adaptive_avg_pool{d}({src}, 1)", 1)
        else:
            pool = em.module("pool", f"nn.AdaptiveAvgPool{d}(1)")
            em.line(f"{s} = {pool}({src})", 1)
        down = em.module("se_reduce", f"nn.Conv{d}({c}, {self.reduced}, kernel_size=1)")
        up = em.module("se_expand", f"nn.Conv{d}({self.reduced}, {c}, kernel_size=1)")
        gate = "torch.sigmoid" if self.gate == "sigmoid" else "F.hardsigmoid"
        for call in (down, "F.relu", up, gate):
            em.line(f"{s} = {call}({s})", 1)
        em.line(f"{dst} = {src} * {s}", 1)


def _draw_se(draw: Draw, shape: Shape, ctx: Ctx, budget: int) -> SqueezeExcite:
    reduced = draw(st.integers(1, max(1, shape.channels // 2)))
    pool = draw(st.sampled_from(["mean", "functional", "module"]))
    gate = draw(st.sampled_from(["sigmoid", "hardsigmoid"]))
    return SqueezeExcite(reduced, pool, gate)


SE = Family("se", _draw_se, layouts=IMAGE_LIKE, nestable=True, min_cost=6)


# --------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Attention(BlockBase):
    """Hand-written multi-head self-attention on [B, T, C]; ``heads`` divides C.

    ``head_dim_style`` picks how the head dimension appears in ``view``:
    ``"literal"`` (an int), ``"infer"`` (``-1``) or ``"expr"`` (``C // heads``).
    """

    family = "attention"
    heads: int
    fused_qkv: bool = False
    head_dim_style: str = "literal"
    residual: bool = True
    out_features: int | None = None  # output width when not residual (None: C)

    def out_shape(self, shape: Shape) -> Shape:
        if self.residual or self.out_features is None:
            return shape
        return shape.with_channels(self.out_features)

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        c, h = shape.channels, self.heads
        hd = c // h
        hd_expr, hd_ops = {"literal": (str(hd), 0), "infer": ("-1", 0),
                           "expr": (f"C // {h}", 1)}[self.head_dim_style]
        em.comment(f"multi-head self-attention ({plural(h, 'head')})")
        em.line(f"B, T, C = {src}.shape", 4)
        if self.fused_qkv:
            qkv_mod = em.module("qkv", f"nn.Linear({c}, {3 * c})")
            qkv = em.var("qkv")
            em.line(f"{qkv} = {qkv_mod}({src}).reshape(B, T, 3, {h}, {hd_expr})"
                    f".permute(2, 0, 3, 1, 4)", 3 + hd_ops)
            em.line(f"q, k, v = {qkv}.unbind(0)", 4)
        else:
            for name in ("q", "k", "v"):
                mod = em.module(name, f"nn.Linear({c}, {c})")
                em.line(f"{name} = {mod}({src}).view(B, T, {h}, {hd_expr}).transpose(1, 2)",
                        3 + hd_ops)
        attn = em.var("attn")
        em.line(f"{attn} = (q @ k.transpose(-2, -1)) * {hd ** -0.5!r}", 3)
        em.line(f"{attn} = {attn}.softmax(dim=-1)", 1)
        ctx = em.var("context")
        em.line(f"{ctx} = ({attn} @ v).transpose(1, 2).reshape(B, T, C)", 3)
        out = self.out_shape(shape).channels
        proj = em.module("proj", f"nn.Linear({c}, {out})")
        if self.residual:
            em.line(f"{dst} = {src} + {proj}({ctx})", 2)
        else:
            em.line(f"{dst} = {proj}({ctx})", 1)


def _draw_attention(draw: Draw, shape: Shape, ctx: Ctx, budget: int) -> Attention:
    heads = draw(st.sampled_from([h for h in divisors(shape.channels) if h <= 8]))
    # separate q/k/v costs 2 more ops than fused, "expr" head dims 1 more per view
    fused_options = [True] if budget < 21 else [False, True]
    fused = draw(st.sampled_from(fused_options))
    base = 19 if fused else 21
    styles = ["literal", "infer"]
    if budget >= base + (1 if fused else 3):
        styles.append("expr")
    style = draw(st.sampled_from(styles))
    base += (1 if fused else 3) if style == "expr" else 0
    residual = budget > base and draw(st.booleans())
    out = None  # inside residual bodies the width is kept
    if not residual and not ctx.preserve_spatial and draw(st.booleans()):
        out = draw_width(draw, ctx.cap)
    return Attention(heads, fused, style, residual, out)


ATTENTION = Family("attention", _draw_attention, layouts=frozenset({"sequence"}),
                   nestable=True, min_cost=19)
