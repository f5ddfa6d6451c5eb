"""Composite families, whose blocks contain chains of other blocks: residual, concat, split.

Residual bodies and concat / split branches keep the spatial size and draw
from the primitives (conv or linear, norm, activation); residual bodies may
also nest every enabled ``nestable`` family, up to
:data:`~.core.MAX_RESIDUAL_DEPTH` residual levels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hypothesis import strategies as st

from .basic import draw_conv, draw_linear
from .core import (ALL_LAYOUTS, IMAGE_LIKE, MAX_CHANNELS, MAX_DRAWN_CHANNELS,
                   MAX_RESIDUAL_DEPTH, BlockBase, Ctx, Draw, Emitter, Family, Shape,
                   channel_dim, chain_shape, draw_chain, draw_width, emit_chain, image_like, nd)

__all__ = ["Residual", "Concat", "Split", "RESIDUAL", "CONCAT", "SPLIT"]


def _merged(shape: Shape, outs: list[Shape], width: int) -> Shape:
    """``shape`` at ``width``, strided unless every merged output is standard."""
    out = shape.with_channels(width)
    return out if all(o.standard for o in outs) else out.strided()


def _branch_ctx(ctx: Ctx, cap: int | None = None) -> Ctx:
    """Context of a branch: spatial size kept, widths capped at ``cap``."""
    if cap is None:
        return dataclasses.replace(ctx, preserve_spatial=True)
    return dataclasses.replace(ctx, preserve_spatial=True,
                               cap=max(1, min(MAX_DRAWN_CHANNELS, cap)))


# --------------------------------------------------------------------------
# residual
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Residual(BlockBase):
    """``out = body(x); x = out + skip`` where ``skip`` is ``x`` or a projection.

    ``projection`` is ``"none"``, ``"conv"`` (1x1 conv), ``"conv_bn"``
    (``nn.Sequential(1x1 conv, BatchNorm)``) or ``"linear"``.  The body never
    changes spatial size; a projection is present whenever it changes width.
    """

    family = "residual"
    body: tuple[BlockBase, ...]
    projection: str = "none"
    add: str = "+"  # "+" | "torch.add"

    def out_shape(self, shape: Shape) -> Shape:
        out = chain_shape(self.body, shape)
        return out if shape.standard else out.strided()

    def chains(self) -> tuple[tuple[BlockBase, ...], ...]:
        return (self.body,)

    def _skip(self, em: Emitter, shape: Shape, c_out: int, src: str) -> str:
        """Emit the projection (if any); return the skip tensor's name."""
        if self.projection == "none":
            return src
        c_in, d = shape.channels, nd(shape)
        conv = f"nn.Conv{d}({c_in}, {c_out}, kernel_size=1, bias=False)"
        if self.projection == "linear":
            ctor, ops = f"nn.Linear({c_in}, {c_out})", 1
        elif self.projection == "conv":
            ctor, ops = conv, 1
        else:
            ctor, ops = f"nn.Sequential({conv}, nn.BatchNorm{d}({c_out}))", 2
            em.module_types.update({f"nn.Conv{d}", f"nn.BatchNorm{d}"})
        name = em.module("downsample" if self.projection == "conv_bn" else "proj", ctor)
        skip = em.var("identity")
        em.line(f"{skip} = {name}({src})", ops)
        return skip

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        out_shape = self.out_shape(shape)
        em.comment("residual block")
        out = em.var("out")
        emit_chain(em, self.body, shape, src, out)
        skip = self._skip(em, shape, out_shape.channels, src)
        if self.add == "torch.add":
            em.line(f"{dst} = torch.add({out}, {skip})", 1)
        else:
            em.line(f"{dst} = {out} + {skip}", 1)


def _draw_residual(draw: Draw, shape: Shape, ctx: Ctx, budget: int) -> Residual:
    reserve = 2 if image_like(shape) else 1  # worst-case projection cost
    body_ctx = dataclasses.replace(ctx, depth=ctx.depth + 1, preserve_spatial=True)
    body, out, _ = draw_chain(draw, shape, body_ctx, ctx.body_families(shape.layout),
                              budget - 1 - reserve, min_len=1, max_len=4)
    needs_projection = out.channels != shape.channels
    if image_like(shape):
        choices = ["conv_bn", "conv"] if needs_projection else ["none", "conv_bn", "conv"]
    else:
        choices = ["linear"] if needs_projection else ["none", "linear"]
    projection = draw(st.sampled_from(choices))
    add = draw(st.sampled_from(["+", "torch.add"]))
    return Residual(body, projection, add)


RESIDUAL = Family("residual", _draw_residual, layouts=ALL_LAYOUTS, nestable=True,
                  min_cost=lambda shape: 4 if image_like(shape) else 3,
                  when=lambda shape, ctx: ctx.depth < MAX_RESIDUAL_DEPTH)


# --------------------------------------------------------------------------
# concat
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Concat(BlockBase):
    """Multi-branch block: each branch is a small conv chain; ``torch.cat`` on dim 1.

    With ``identity=True`` the block input itself is the first concatenated
    tensor (DenseNet style).
    """

    family = "concat"
    branches: tuple[tuple[BlockBase, ...], ...]
    identity: bool = False

    def out_shape(self, shape: Shape) -> Shape:
        outs = [chain_shape(branch, shape) for branch in self.branches]
        total = (shape.channels if self.identity else 0) + sum(o.channels for o in outs)
        return _merged(shape, [shape, *outs], total)

    def chains(self) -> tuple[tuple[BlockBase, ...], ...]:
        return self.branches

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        em.comment(f"concat block ({len(self.branches)} branches)")
        parts = [src] if self.identity else []
        for branch in self.branches:
            var = em.var("branch")
            emit_chain(em, branch, shape, src, var)
            parts.append(var)
        em.line(f"{dst} = torch.cat([{', '.join(parts)}], dim=1)", 1)


def _draw_concat(draw: Draw, shape: Shape, ctx: Ctx, budget: int) -> Concat:
    c = shape.channels
    # with a budget of 2 only "cat([x, conv(x)])" fits
    identity = c < MAX_CHANNELS and (budget < 3 or draw(st.booleans()))
    if identity:  # every branch adds at least one channel to c
        n = draw(st.integers(1, max(1, min(4, budget - 1, MAX_CHANNELS - c))))
    else:
        n = draw(st.integers(2, max(2, min(4, budget - 1))))
    room = MAX_CHANNELS - (c if identity else 0)
    branch_ctx = _branch_ctx(ctx, room // n)
    remaining = budget - 1
    branches = []
    for i in range(n):
        # leave at least one op for each later branch
        branch_budget = remaining - (n - i - 1)
        first = draw_conv(draw, shape, branch_ctx)
        rest, _, cost = draw_chain(draw, first.out_shape(shape), branch_ctx,
                                   ctx.primitives(shape.layout), branch_budget - 1,
                                   min_len=0, max_len=2)
        branches.append((first, *rest))
        remaining -= 1 + cost
    return Concat(tuple(branches), identity)


CONCAT = Family("concat", _draw_concat, layouts=IMAGE_LIKE, nestable=True,
                min_cost=lambda shape: 2 if shape.channels < MAX_CHANNELS else 3)


# --------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Split(BlockBase):
    """Split channels, process each part, merge by ``torch.cat`` or addition.

    ``method`` is ``"split"`` (``torch.split(x, [sizes], dim)``),
    ``"split_equal"`` (``x.split(size, dim)``) or ``"chunk"``
    (``x.chunk(n, dim)``).  For ``merge="add"`` every branch ends at the same
    width.  Empty branches pass their part through unchanged.
    """

    family = "split"
    sizes: tuple[int, ...]
    branches: tuple[tuple[BlockBase, ...], ...]
    method: str = "split"
    merge: str = "cat"

    def _part_shapes(self, shape: Shape) -> list[Shape]:
        return [shape.with_channels(s) for s in self.sizes]

    def out_shape(self, shape: Shape) -> Shape:
        outs = [chain_shape(b, s) for b, s in zip(self.branches, self._part_shapes(shape))]
        width = outs[0].channels if self.merge == "add" else sum(o.channels for o in outs)
        return _merged(shape, outs, width)

    def chains(self) -> tuple[tuple[BlockBase, ...], ...]:
        return self.branches

    def _call(self, src: str, dim: int) -> str:
        n = len(self.sizes)
        if self.method == "chunk":
            return f"{src}.chunk({n}, dim={dim})"
        if self.method == "split_equal":
            return f"{src}.split({self.sizes[0]}, dim={dim})"
        return f"torch.split({src}, {list(self.sizes)}, dim={dim})"

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        dim = channel_dim(shape)
        n = len(self.sizes)
        em.comment(f"split block ({n} parts, merged by {self.merge})")
        parts = [em.var("part") for _ in range(n)]
        em.line(f"{', '.join(parts)} = {self._call(src, dim)}", 1 + n)
        outs = []
        for part, part_shape, branch in zip(parts, self._part_shapes(shape), self.branches):
            if branch:
                var = em.var("branch")
                emit_chain(em, branch, part_shape, part, var)
                outs.append(var)
            else:
                outs.append(part)
        if self.merge == "add":
            em.line(f"{dst} = {' + '.join(outs)}", n - 1)
        else:
            em.line(f"{dst} = torch.cat([{', '.join(outs)}], dim={dim})", 1)


def _draw_sizes(draw: Draw, c: int, n: int, method: str) -> list[int]:
    """``n`` positive part sizes summing to ``c`` (equal unless ``method == "split"``)."""
    if method != "split":
        return [c // n] * n
    sizes = []
    left = c
    for i in range(n - 1):
        s = draw(st.integers(1, left - (n - 1 - i)))
        sizes.append(s)
        left -= s
    sizes.append(left)
    return sizes


def _draw_split(draw: Draw, shape: Shape, ctx: Ctx, budget: int) -> Split:
    c = shape.channels
    merge = draw(st.sampled_from(["cat", "add"] if budget >= 6 else ["cat"]))
    # cost: split (1) + getitems (n) + merge (1 for cat, n - 1 for add) + branches
    if merge == "add":  # every branch needs a final projection
        max_n = min(4, c, budget // 3)
    else:
        max_n = min(4, c, budget - 2)
    n = draw(st.integers(2, max(2, max_n)))
    equal = [m for m in ("split_equal", "chunk") if c % n == 0]
    method = draw(st.sampled_from(["split", *equal]))
    sizes = _draw_sizes(draw, c, n, method)
    remaining = budget - 1 - n - (1 if merge == "cat" else n - 1)
    primitives = ctx.primitives(shape.layout)
    slack = max(0, MAX_CHANNELS - c) // n
    branches = []
    if merge == "cat":
        for s in sizes:
            branch, _, cost = draw_chain(draw, shape.with_channels(s), _branch_ctx(ctx, s + slack),
                                         primitives, remaining, min_len=0, max_len=2)
            branches.append(branch)
            remaining -= cost
    else:
        w = draw_width(draw, ctx.cap)
        project = draw_conv if image_like(shape) else draw_linear
        bctx = _branch_ctx(ctx)
        for i, s in enumerate(sizes):
            # reserve one op for this branch's projection and for each later branch
            pre, pre_shape, cost = draw_chain(draw, shape.with_channels(s), bctx, primitives,
                                              remaining - 1 - (n - i - 1), min_len=0, max_len=1)
            branches.append((*pre, project(draw, pre_shape, bctx, fixed_out=w)))
            remaining -= cost + 1
    return Split(tuple(sizes), tuple(branches), method, merge)


SPLIT = Family("split", _draw_split, layouts=IMAGE_LIKE | {"sequence"}, nestable=True,
               min_cost=4, min_channels=2)
