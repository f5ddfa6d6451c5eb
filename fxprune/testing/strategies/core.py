"""The pieces every op family builds on: shapes, code emission, blocks, family records.

* :class:`Shape` is the per-sample shape flowing between blocks;
* :class:`Emitter` collects the generated ``__init__`` / ``forward`` lines and
  counts the traced ops;
* :class:`BlockBase` is the base of the block dataclasses (the IR);
* :class:`Family` is the one record describing an op family (where it
  applies, what it costs at least, how to draw a block of it), and
  :func:`draw_chain` draws a chain of blocks from a sequence of such records.

Example:
    >>> Shape("image", 3, (8, 8)).dims()
    (2, 3, 8, 8)
    >>> Shape("sequence", 16, (5,)).dims(batch=1)
    (1, 5, 16)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence, Union

from hypothesis import strategies as st

__all__ = [
    "BATCH",
    "MAX_DRAWN_CHANNELS",
    "MAX_CHANNELS",
    "MAX_INPUT_SPATIAL",
    "MAX_SPATIAL",
    "MAX_TOKENS",
    "MAX_RESIDUAL_DEPTH",
    "INPUT_KINDS",
    "ALL_LAYOUTS",
    "IMAGE_LIKE",
    "Shape",
    "Emitter",
    "BlockBase",
    "Draw",
    "Ctx",
    "Family",
    "nd",
    "channel_dim",
    "image_like",
    "plural",
    "divisors",
    "emit_chain",
    "chain_shape",
    "chain_families",
    "block_cost",
    "draw_chain",
    "draw_width",
]

BATCH = 2
MAX_DRAWN_CHANNELS = 24  # upper bound for any drawn width
MAX_CHANNELS = 48  # no tensor ever has more channels than this
MAX_INPUT_SPATIAL = 16
MAX_SPATIAL = 32
MAX_TOKENS = 16
MAX_RESIDUAL_DEPTH = 2

#: Layouts a model input can have.  ``flat`` ([B, F]) is only reached
#: through a layout change (flatten / global pooling).
INPUT_KINDS: tuple[str, ...] = ("image", "signal", "sequence")
ALL_LAYOUTS = frozenset({"image", "signal", "sequence", "flat"})
IMAGE_LIKE = frozenset({"image", "signal"})


# --------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """Per-sample shape of the tensor flowing between blocks.

    ``layout`` is ``"image"`` ([B, C, H, W], ``spatial=(H, W)``), ``"signal"``
    ([B, C, L], ``spatial=(L,)``), ``"sequence"`` ([B, T, D], ``channels=D``,
    ``spatial=(T,)``) or ``"flat"`` ([B, F], ``channels=F``, ``spatial=()``).
    """

    layout: str
    channels: int
    spatial: tuple[int, ...]
    #: False once the tensor may have non-standard strides (after a
    #: permute/transpose round trip); ``.view`` that merges dims is then unsafe.
    standard: bool = True

    def dims(self, batch: int = BATCH) -> tuple[int, ...]:
        """The full tensor shape including the batch dimension."""
        if self.layout == "sequence":
            return (batch, self.spatial[0], self.channels)
        return (batch, self.channels, *self.spatial)

    def with_channels(self, channels: int) -> Shape:
        return dataclasses.replace(self, channels=channels)

    def strided(self) -> Shape:
        """This shape, marked as possibly having non-standard strides."""
        return dataclasses.replace(self, standard=False)


def nd(shape: Shape) -> str:
    """``"2d"`` for images, ``"1d"`` otherwise (suffix of conv/pool/BN classes)."""
    return "2d" if shape.layout == "image" else "1d"


def channel_dim(shape: Shape) -> int:
    return -1 if shape.layout == "sequence" else 1


def image_like(shape: Shape) -> bool:
    """Channels-first with spatial dims: an image or a signal."""
    return shape.layout in IMAGE_LIKE


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# --------------------------------------------------------------------------
# Code emission and blocks
# --------------------------------------------------------------------------


class Emitter:
    """Accumulates ``__init__`` and ``forward`` lines and counts traced ops.

    ``ops`` is the number of ``call_module`` / ``call_function`` /
    ``call_method`` nodes :func:`torch.fx.symbolic_trace` produces for the
    emitted forward lines (each :meth:`line` call states its own count).
    """

    def __init__(self) -> None:
        self.init: list[str] = []
        self.forward: list[str] = []
        self.ops = 0
        self._modules: dict[str, int] = {}
        self._vars: dict[str, int] = {}
        self.module_types: set[str] = set()
        #: module-level definitions the forward needs (helper classes), by name, in order
        self.helpers: dict[str, str] = {}

    def module(self, prefix: str, ctor: str) -> str:
        index = self._modules.get(prefix, 0)
        self._modules[prefix] = index + 1
        name = f"{prefix}{index}"
        self.init.append(f"self.{name} = {ctor}")
        self.module_types.add(ctor.split("(", 1)[0])
        return f"self.{name}"

    def attribute(self, prefix: str, value: str) -> str:
        """A plain ``self.<prefix><i> = value`` line (a dict, a buffer registered by hand...)."""
        index = self._modules.get(prefix, 0)
        self._modules[prefix] = index + 1
        name = f"{prefix}{index}"
        self.init.append(value.format(name=name))
        return f"self.{name}"

    def helper(self, name: str, source: str) -> str:
        """Define ``source`` (a class or function named ``name``) once, above ``class Model``."""
        self.helpers.setdefault(name, source)
        return name

    def var(self, prefix: str) -> str:
        index = self._vars.get(prefix, 0)
        self._vars[prefix] = index + 1
        return prefix if index == 0 else f"{prefix}{index}"

    def line(self, code: str, ops: int) -> None:
        self.forward.append(code)
        self.ops += ops

    def comment(self, text: str) -> None:
        self.forward.append(f"# {text}")


class BlockBase:
    """Base of the block dataclasses: one block emits the code of one op family."""

    family: ClassVar[str]

    def out_shape(self, shape: Shape) -> Shape:  # pragma: no cover - abstract
        raise NotImplementedError

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:  # pragma: no cover
        raise NotImplementedError

    def chains(self) -> tuple[tuple[BlockBase, ...], ...]:
        """Nested chains of blocks (a residual body, branches); none by default."""
        return ()

    def families(self) -> frozenset[str]:
        """Families used by this block, including nested blocks."""
        out = {self.family}
        for chain in self.chains():
            out |= chain_families(chain)
        return frozenset(out)


def emit_chain(em: Emitter, blocks: Sequence[BlockBase], shape: Shape,
               src: str, dst: str) -> Shape:
    """Emit ``blocks`` in order, reading ``src`` and leaving the result in ``dst``."""
    if not blocks and src != dst:
        em.line(f"{dst} = {src}", 0)
    cur = src
    for block in blocks:
        block.emit(em, shape, cur, dst)
        shape = block.out_shape(shape)
        cur = dst
    return shape


def chain_shape(blocks: Sequence[BlockBase], shape: Shape) -> Shape:
    for block in blocks:
        shape = block.out_shape(shape)
    return shape


def chain_families(blocks: Sequence[BlockBase]) -> frozenset[str]:
    out: set[str] = set()
    for block in blocks:
        out |= block.families()
    return frozenset(out)


def block_cost(block: BlockBase, shape: Shape) -> int:
    """Number of traced op nodes ``block`` contributes when applied to ``shape``."""
    em = Emitter()
    block.emit(em, shape, "x", "x")
    return em.ops


# --------------------------------------------------------------------------
# Family records and chain drawing
# --------------------------------------------------------------------------

Draw = Callable[[st.SearchStrategy], object]
# "Continue?" choices: shrink towards 0 == "stop".  Top-level chains continue
# with probability ~7/8, nested chains (bodies, branches) with ~3/4.
_CONTINUE_TOP = st.integers(0, 7).map(bool)
_CONTINUE = st.integers(0, 3).map(bool)


@dataclass(frozen=True)
class Ctx:
    """Where a block is drawn: the family table, the enabled families, nesting."""

    catalog: tuple[Family, ...]  # every family, simplest first
    families: frozenset[str]  # names of the families enabled by the user
    depth: int = 0  # residual nesting depth
    preserve_spatial: bool = False  # inside residual bodies / branches
    cap: int = MAX_DRAWN_CHANNELS  # max width a conv / linear may produce

    def enabled(self) -> tuple[Family, ...]:
        """The families the user enabled, in table order."""
        return tuple(f for f in self.catalog if f.name in self.families)

    def primitives(self, layout: str) -> tuple[Family, ...]:
        """Families always available inside composite blocks on ``layout``."""
        return tuple(f for f in self.catalog if f.primitive and layout in f.layouts)

    def body_families(self, layout: str) -> tuple[Family, ...]:
        """Primitives plus the enabled families that may nest in a residual body."""
        return tuple(f for f in self.catalog if (f.primitive and layout in f.layouts)
                     or (f.nestable and f.name in self.families))


DrawBlock = Callable[[Draw, Shape, Ctx, int], BlockBase]


@dataclass(frozen=True)
class Family:
    """Everything the strategies know about one op family.

    ``draw(draw, shape, ctx, budget)`` draws a block of the family applied to
    ``shape`` that costs at most ``budget`` ops; it is only called when
    :meth:`applicable` holds and :meth:`cost` is within the budget.
    """

    name: str
    draw: DrawBlock
    #: Layouts the family applies to; it can start a model from those that
    #: are input kinds (:attr:`inputs`).
    layouts: frozenset[str]
    #: Op count of the cheapest variant: a constant or a function of the shape.
    min_cost: Union[int, Callable[[Shape], int]] = 1
    #: Always available inside composite blocks (residual bodies, branches).
    primitive: bool = False
    #: May appear inside a residual body when enabled.
    nestable: bool = False
    #: Changes the spatial size, so never drawn where it must be preserved.
    resizes: bool = False
    min_channels: int = 1
    #: Any further condition on the shape and context.
    when: Union[Callable[[Shape, Ctx], bool], None] = None

    @property
    def inputs(self) -> tuple[str, ...]:
        """Input kinds a model drawn from this family alone can start with."""
        return tuple(kind for kind in INPUT_KINDS if kind in self.layouts)

    def cost(self, shape: Shape) -> int:
        """Cheapest variant's op count on ``shape``."""
        return self.min_cost if isinstance(self.min_cost, int) else self.min_cost(shape)

    def applicable(self, shape: Shape, ctx: Ctx) -> bool:
        return (shape.layout in self.layouts
                and not (self.resizes and ctx.preserve_spatial)
                and shape.channels >= self.min_channels
                and (self.when is None or self.when(shape, ctx)))


def draw_chain(draw: Draw, shape: Shape, ctx: Ctx, allowed: Sequence[Family], budget: int,
               min_len: int, max_len: int) -> tuple[tuple[BlockBase, ...], Shape, int]:
    """Draw up to ``max_len`` blocks of ``allowed`` (at least ``min_len`` when possible).

    ``allowed`` must be in table order (hypothesis shrinks towards the first
    option).  Returns ``(blocks, output shape, op count)`` with op count <=
    ``budget``.
    """
    blocks: list[BlockBase] = []
    used = 0
    for i in range(max_len):
        remaining = budget - used
        options = [f for f in allowed if f.applicable(shape, ctx) and f.cost(shape) <= remaining]
        if not options:
            break
        if i >= min_len and not draw(_CONTINUE_TOP if ctx.depth == 0 and not ctx.preserve_spatial
                                     else _CONTINUE):
            break
        family = draw(st.sampled_from(options))
        block = family.draw(draw, shape, ctx, remaining)
        cost = block_cost(block, shape)
        if cost > remaining:  # pragma: no cover - drawers respect the budget
            raise AssertionError(f"{family.name} drawer exceeded its budget: {block!r}")
        blocks.append(block)
        used += cost
        shape = block.out_shape(shape)
    return tuple(blocks), shape, used


def draw_width(draw: Draw, cap: int) -> int:
    """A layer width in ``1..cap`` (never above :data:`MAX_DRAWN_CHANNELS`)."""
    return draw(st.integers(1, max(1, min(cap, MAX_DRAWN_CHANNELS))))
