"""Families that once hid verification holes: code a pruner must preserve, not just shapes.

* ``inplace``: in-place ops whose result is not reassigned (``y.clamp_()``,
  ``F.relu(y, inplace=True)``), some of which leave removed channels non-zero;
* ``tied``: two linear layers sharing one weight tensor;
* ``stateful``: a buffer updated in ``forward`` (a step counter) and a
  Python-side dict caching a tensor on first call;
* ``own_forward``: an ``nn.Linear`` / ``nn.Conv`` subclass with its own ``forward``;
* ``weight_std``: NF-ResNet's weight-standardised conv (``F.batch_norm`` over the
  weight's input channels);
* ``autograd_fn``: a custom ``torch.autograd.Function`` (straight-through clamp);
* ``train_dropout``: dropout that follows ``self.training`` (functional and module);
* ``channel_sum``: a parameter-free sum over channels after an op that does, or
  does not, map zero to zero.

Example:
    >>> from .core import Emitter, Shape
    >>> em = Emitter()
    >>> ChannelSum("sigmoid").emit(em, Shape("image", 4, (3, 3)), "x", "x")
    >>> em.forward, em.ops
    (['x = x + torch.sigmoid(x).sum(1, keepdim=True)'], 3)
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from .core import (ALL_LAYOUTS, IMAGE_LIKE, BlockBase, Ctx, Draw, Emitter, Family, Shape, draw_width, nd)

__all__ = ["Inplace", "Tied", "Stateful", "OwnForward", "WeightStd", "AutogradFn", "TrainDropout",
           "ChannelSum", "INPLACE", "TIED", "STATEFUL", "OWN_FORWARD", "WEIGHT_STD", "AUTOGRAD_FN",
           "TRAIN_DROPOUT", "CHANNEL_SUM"]

_SEQ_FLAT = frozenset({"sequence", "flat"})


class _SameShape(BlockBase):
    """A block that keeps its input's shape."""

    def out_shape(self, shape: Shape) -> Shape:
        return shape


def _channel_dim(shape: Shape) -> str:
    return "-1" if shape.layout in _SEQ_FLAT else "1"


# --------------------------------------------------------------------------
# inplace
# --------------------------------------------------------------------------

#: in-place calls on ``{y}`` whose result is dropped; the last two leave removed channels non-zero
INPLACE_OPS = ("{y}.clamp_(min=-1.0, max=1.0)", "F.relu({y}, inplace=True)", "torch.relu_({y})",
               "{y}.mul_(0.5)", "{y}.add_(0.25)", "{y}.sigmoid_()")


@dataclass(frozen=True)
class Inplace(_SameShape):
    """A copy of the input, then an in-place op on it whose result is not used."""

    family = "inplace"
    op: int = 0  # index into INPLACE_OPS

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        em.line(f"{dst} = {src}.clone()", 1)
        em.line(INPLACE_OPS[self.op].format(y=dst), 1)


def _draw_inplace(draw: Draw, shape: Shape, ctx: Ctx, budget: int) -> Inplace:
    return Inplace(draw(st.integers(0, len(INPLACE_OPS) - 1)))


INPLACE = Family("inplace", _draw_inplace, layouts=ALL_LAYOUTS, nestable=True, min_cost=2)


# --------------------------------------------------------------------------
# tied
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Tied(_SameShape):
    """``fc_b.weight = fc_a.weight`` (square, as GPT ties its embedding and head), then ``fc_b(act(fc_a(x)))``."""

    family = "tied"

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        c = shape.channels
        a = em.module("tied", f"nn.Linear({c}, {c})")
        b = em.module("tied", f"nn.Linear({c}, {c}, bias=False)")
        em.init.append(f"{b}.weight = {a}.weight")
        em.line(f"{dst} = {b}(F.gelu({a}({src})))", 3)


TIED = Family("tied", lambda draw, shape, ctx, budget: Tied(), layouts=_SEQ_FLAT, nestable=True,
              min_cost=3)


# --------------------------------------------------------------------------
# stateful
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Stateful(_SameShape):
    """A step counter incremented in ``forward`` and a per-channel scale cached in a dict on first call."""

    family = "stateful"

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        c = shape.channels
        steps = em.attribute("steps", 'self.register_buffer("{name}", torch.zeros(()))')
        cache = em.attribute("cache", "self.{name} = {{}}")
        em.comment("state: a counter updated in forward, a tensor cached on first call")
        em.line(f"{steps}.add_(1)", 0)  # plain symbolic_trace runs it rather than recording it
        em.line(f'if "scale" not in {cache}:', 0)
        view = f"{c}" if shape.layout in _SEQ_FLAT else f"{c}, " + ", ".join("1" for _ in shape.spatial)
        em.line(f'    {cache}["scale"] = torch.linspace(0.5, 1.5, {c}).view({view})', 0)
        em.line(f'{dst} = {src} * {cache}["scale"]', 1)


STATEFUL = Family("stateful", lambda draw, shape, ctx, budget: Stateful(), layouts=ALL_LAYOUTS,
                  nestable=True, min_cost=1)


# --------------------------------------------------------------------------
# own_forward
# --------------------------------------------------------------------------

_SCALED_LINEAR = '''
class HalvedLinear(nn.Linear):
    """An nn.Linear subclass with its own forward (no inherited rule)."""

    def forward(self, x):
        return super().forward(x) * 0.5
'''

_SHIFTED_CONV = '''
class ShiftedConv{d}(nn.Conv{d}):
    """An nn.Conv subclass with its own forward: it adds one to its output (no inherited rule)."""

    def forward(self, x):
        return super().forward(x) + 1.0
'''


@dataclass(frozen=True)
class OwnForward(BlockBase):
    """A layer whose class subclasses a torch.nn layer and overrides ``forward``."""

    family = "own_forward"
    out_channels: int

    def out_shape(self, shape: Shape) -> Shape:
        return shape.with_channels(self.out_channels)

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        if shape.layout in _SEQ_FLAT:
            cls, args = em.helper("HalvedLinear", _SCALED_LINEAR), ""
        else:
            cls, args = em.helper(f"ShiftedConv{nd(shape)}", _SHIFTED_CONV.format(d=nd(shape))), ", 1"
        name = em.module("own", f"{cls}({shape.channels}, {self.out_channels}{args})")
        em.line(f"{dst} = {name}({src})", 2)


OWN_FORWARD = Family("own_forward", lambda draw, shape, ctx, budget: OwnForward(draw_width(draw, ctx.cap)),
                     layouts=ALL_LAYOUTS, min_cost=2)


# --------------------------------------------------------------------------
# weight_std
# --------------------------------------------------------------------------

_STD_CONV = '''
class ScaledStdConv{d}(nn.Conv{d}):
    """NF-ResNet's weight-standardised conv: batch statistics of the weight over its input channels."""

    def __init__(self, *args, eps=1e-6, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels))
        self.scale, self.eps = self.weight[0].numel() ** -0.5, eps

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         weight=self.gain * self.scale, training=True, momentum=0.0,
                         eps=self.eps).reshape_as(self.weight)
        return F.conv{d}(x, w, self.bias, self.stride, self.padding)
'''


@dataclass(frozen=True)
class WeightStd(BlockBase):
    """A weight-standardised conv (``ScaledStdConv``)."""

    family = "weight_std"
    out_channels: int
    kernel_size: int = 3  # a 1x1 kernel pruned to one input channel leaves batch_norm one value

    def out_shape(self, shape: Shape) -> Shape:
        return shape.with_channels(self.out_channels)

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        cls = em.helper(f"ScaledStdConv{nd(shape)}", _STD_CONV.format(d=nd(shape)))
        k = self.kernel_size
        name = em.module("std_conv", f"{cls}({shape.channels}, {self.out_channels}, {k}, padding={k // 2})")
        em.line(f"{dst} = {name}({src})", 5)


def _draw_weight_std(draw: Draw, shape: Shape, ctx: Ctx, budget: int) -> WeightStd:
    return WeightStd(draw_width(draw, ctx.cap))


WEIGHT_STD = Family("weight_std", _draw_weight_std, layouts=IMAGE_LIKE, min_cost=5)


# --------------------------------------------------------------------------
# autograd_fn
# --------------------------------------------------------------------------

_CLAMP_STE = '''
class ClampSTE(torch.autograd.Function):
    """Clamp forward, straight-through (identity) backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(-2.0, 2.0)

    @staticmethod
    def backward(ctx, grad):
        return grad
'''


@dataclass(frozen=True)
class AutogradFn(_SameShape):
    """``ClampSTE.apply(x)``: a custom autograd Function (its backward must survive)."""

    family = "autograd_fn"

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        em.helper("ClampSTE", _CLAMP_STE)
        em.line(f"{dst} = ClampSTE.apply({src})", 1)


AUTOGRAD_FN = Family("autograd_fn", lambda draw, shape, ctx, budget: AutogradFn(), layouts=ALL_LAYOUTS,
                     nestable=True, min_cost=1)


# --------------------------------------------------------------------------
# train_dropout
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainDropout(_SameShape):
    """Dropout that follows the model's mode: ``F.dropout(x, p, training=self.training)`` or ``nn.Dropout``."""

    family = "train_dropout"
    kind: str = "functional"  # "functional" | "module" | "feature"

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        if self.kind == "module":
            name = em.module("drop", "nn.Dropout(0.25)")
            em.line(f"{dst} = {name}({src})", 1)
        elif self.kind == "feature" and shape.layout == "image":
            em.line(f"{dst} = F.dropout2d({src}, 0.25, self.training)", 1)
        else:
            em.line(f"{dst} = F.dropout({src}, 0.25, training=self.training)", 1)


def _draw_train_dropout(draw: Draw, shape: Shape, ctx: Ctx, budget: int) -> TrainDropout:
    return TrainDropout(draw(st.sampled_from(["functional", "module", "feature"])))


TRAIN_DROPOUT = Family("train_dropout", _draw_train_dropout, layouts=ALL_LAYOUTS, nestable=True)


# --------------------------------------------------------------------------
# channel_sum
# --------------------------------------------------------------------------

#: ops before the sum: ``sigmoid``/``cos``/``plus_one`` map zero elsewhere, ``relu``/``tanh`` keep it
SUM_OPS = {"sigmoid": "torch.sigmoid({x})", "cos": "torch.cos({x})", "plus_one": "({x} + 1.0)",
           "relu": "torch.relu({x})", "tanh": "torch.tanh({x})"}


@dataclass(frozen=True)
class ChannelSum(_SameShape):
    """``x + f(x).sum(channel dim, keepdim=True)``: a parameter-free sum over channels."""

    family = "channel_sum"
    op: str = "sigmoid"

    def emit(self, em: Emitter, shape: Shape, src: str, dst: str) -> None:
        inner = SUM_OPS[self.op].format(x=src)
        em.line(f"{dst} = {src} + {inner}.sum({_channel_dim(shape)}, keepdim=True)", 3)


CHANNEL_SUM = Family("channel_sum", lambda draw, shape, ctx, budget: ChannelSum(draw(st.sampled_from(sorted(SUM_OPS)))),
                     layouts=ALL_LAYOUTS, nestable=True, min_cost=3)
