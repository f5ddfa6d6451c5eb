"""The ``sequence`` family: 1-D sequence models on [B, T, D] sequences and [B, C, L] signals.

One family, three block kinds: token mixing (``nn.Linear`` over the token /
length axis), a temporal ``Conv1d`` over a sequence (via ``transpose``) and a
stack of ``Conv1d`` + activation layers on a signal.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hypothesis import strategies as st

from .basic import ACT_MODULE
from .core import (MAX_TOKENS, BlockBase, Ctx, Draw, Emitter, Family, Shape, draw_width)

__all__ = ["TokenMixing", "TemporalConv", "Conv1dStack", "SEQUENCE"]


@dataclass(frozen=True)
class TokenMixing(BlockBase):
    """``nn.Linear`` over the token / length axis (MLP-Mixer style)."""

    family = "sequence"
    out_tokens: int

    def out_shape(self, shape: Shape) -> Shape:
        out = dataclasses.replace(shape, spatial=(self.out_tokens,))
        return out.strided() if shape.layout == "sequence" else out

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        name = em.module("token_fc", f"nn.Linear({shape.spatial[0]}, {self.out_tokens})")
        if shape.layout == "sequence":
            em.line(f"{dst} = {name}({src}.transpose(1, 2)).transpose(1, 2)", 3)
        else:  # signal [B, C, L]: L is already last
            em.line(f"{dst} = {name}({src})", 1)


@dataclass(frozen=True)
class TemporalConv(BlockBase):
    """``nn.Conv1d`` over time on a [B, T, D] sequence (via ``transpose``)."""

    family = "sequence"
    out_channels: int
    kernel_size: int = 3

    def out_shape(self, shape: Shape) -> Shape:
        return shape.with_channels(self.out_channels).strided()

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        k = self.kernel_size
        name = em.module("tconv", f"nn.Conv1d({shape.channels}, {self.out_channels}, "
                                  f"kernel_size={k}, padding={k // 2})")
        em.line(f"{dst} = {name}({src}.transpose(1, 2)).transpose(1, 2)", 3)


@dataclass(frozen=True)
class Conv1dStack(BlockBase):
    """A stack of ``Conv1d`` + activation layers on a [B, C, L] signal."""

    family = "sequence"
    widths: tuple[int, ...]
    kernel_size: int = 3
    activation: str = "relu"

    def out_shape(self, shape: Shape) -> Shape:
        return shape.with_channels(self.widths[-1])

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        k, c = self.kernel_size, shape.channels
        cur = src
        for width in self.widths:
            conv = em.module("conv", f"nn.Conv1d({c}, {width}, kernel_size={k}, padding={k // 2})")
            act = em.module("act", ACT_MODULE[self.activation])
            em.line(f"{dst} = {act}({conv}({cur}))", 2)
            cur, c = dst, width


def _draw_sequence(draw: Draw, shape: Shape, ctx: Ctx, budget: int) -> BlockBase:
    if shape.layout == "sequence":
        kind = draw(st.sampled_from(["token_mixing", "temporal_conv"]))
        if kind == "temporal_conv":
            return TemporalConv(draw_width(draw, ctx.cap), draw(st.sampled_from([3, 1])))
    else:
        kinds = ["token_mixing"]
        if budget >= 2:
            kinds.append("conv1d_stack")
        kind = draw(st.sampled_from(kinds))
        if kind == "conv1d_stack":
            n = draw(st.integers(1, max(1, min(3, budget // 2))))
            widths = tuple(draw_width(draw, ctx.cap) for _ in range(n))
            return Conv1dStack(widths, draw(st.sampled_from([3, 1])),
                               draw(st.sampled_from(["relu", "gelu", "silu"])))
    if ctx.preserve_spatial:
        return TokenMixing(shape.spatial[0])
    return TokenMixing(draw(st.integers(1, MAX_TOKENS)))


SEQUENCE = Family("sequence", _draw_sequence, layouts=frozenset({"signal", "sequence"}),
                  nestable=True, min_cost=lambda shape: 1 if shape.layout == "signal" else 3)
