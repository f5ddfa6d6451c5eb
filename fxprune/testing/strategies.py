"""Hypothesis strategies that generate small, valid, traceable ``nn.Module``\\ s.

The strategies draw a random *architecture spec* (a tiny IR made of frozen
dataclasses), generate readable Python source for it (a standalone
``class Model(nn.Module)`` plus ``example_inputs``), and execute that source to
obtain the model.  The generated source is therefore the single source of
truth: the object drawn by :func:`architectures` prints (``repr``) as exactly
the code that built it, so a failing hypothesis example can be pasted into a
file and run as-is.

Every generated model

* is an ordinary ``nn.Module`` built from stock ``torch.nn`` layers, with a
  straight-line ``forward`` (no data-dependent control flow), so
  :func:`torch.fx.symbolic_trace` works and yields familiar ops;
* runs on its ``example_inputs`` (batch size 2), because all divisibility
  constraints (conv groups, GroupNorm groups, attention heads, channel
  shuffle groups, split sizes) are satisfied by construction;
* is in eval mode, with weights initialised from a seed drawn by hypothesis
  and with randomised BatchNorm running statistics and norm affine
  parameters (so no norm layer is the identity);
* is small: drawn channel counts are in ``1..24`` (a tensor never has more
  than 48 channels), input spatial sizes are at most 16 (32 after
  upsampling), and ``max_nodes`` bounds the number of ops.

Example::

    from hypothesis import given, settings
    import torch

    from fxprune.testing.strategies import architectures

    @settings(max_examples=20, deadline=None)
    @given(architectures(max_nodes=20, families=frozenset({"conv", "residual"})))
    def test_trace_roundtrip(arch):
        gm = torch.fx.symbolic_trace(arch.model)
        torch.testing.assert_close(gm(*arch.example_inputs),
                                   arch.model(*arch.example_inputs))

    test_trace_roundtrip()

Shrinking: blocks are drawn one after another with a "continue?" choice that
shrinks towards stopping, families are sampled from :data:`FAMILIES` which is
ordered simple-first, and every integer shrinks towards its (small) minimum,
so failing examples shrink towards few blocks, narrow layers and plain
conv/activation/norm models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import linecache
import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence, Union

import torch
from hypothesis import strategies as st
from torch import nn

__all__ = [
    "FAMILIES",
    "MAX_CHANNELS",
    "MAX_DRAWN_CHANNELS",
    "MAX_SPATIAL",
    "Shape",
    "InputSpec",
    "ArchSpec",
    "Arch",
    "Block",
    "Conv",
    "Linear",
    "Norm",
    "Activation",
    "Residual",
    "Concat",
    "Split",
    "FlattenLinear",
    "ChannelShuffle",
    "ChannelsLastLN",
    "SqueezeExcite",
    "Attention",
    "TokenMixing",
    "TemporalConv",
    "Conv1dStack",
    "Pool",
    "Upsample",
    "input_specs",
    "arch_specs",
    "architectures",
]

#: Every op family, ordered roughly simplest first (hypothesis shrinks a
#: ``sampled_from`` towards its first element).
FAMILIES: tuple[str, ...] = (
    "activation",
    "conv",
    "linear",
    "norm",
    "pool",
    "flatten_linear",
    "residual",
    "concat",
    "split",
    "sequence",
    "upsample",
    "channels_last_ln",
    "se",
    "shuffle",
    "attention",
)

#: Input kinds each family can start from.  ``flat`` ([B, F]) is only reached
#: through a layout change (flatten / global pooling).
_FAMILY_INPUTS: dict[str, tuple[str, ...]] = {
    "activation": ("image", "signal", "sequence"),
    "conv": ("image", "signal"),
    "linear": ("sequence",),
    "norm": ("image", "signal", "sequence"),
    "pool": ("image", "signal", "sequence"),
    "flatten_linear": ("image", "signal"),
    "residual": ("image", "signal", "sequence"),
    "concat": ("image", "signal"),
    "split": ("image", "signal", "sequence"),
    "sequence": ("signal", "sequence"),
    "upsample": ("image", "signal"),
    "channels_last_ln": ("image", "signal"),
    "se": ("image", "signal"),
    "shuffle": ("image", "signal"),
    "attention": ("sequence",),
}

_INPUT_KINDS: tuple[str, ...] = ("image", "signal", "sequence")
_LAYOUT_FAMILIES: dict[str, frozenset[str]] = {
    "image": frozenset({"activation", "conv", "norm", "pool", "flatten_linear",
                        "residual", "concat", "split", "upsample",
                        "channels_last_ln", "se", "shuffle"}),
    "signal": frozenset({"activation", "conv", "norm", "pool", "flatten_linear",
                         "residual", "concat", "split", "sequence", "upsample",
                         "channels_last_ln", "se", "shuffle"}),
    "sequence": frozenset({"activation", "linear", "norm", "pool", "residual",
                           "split", "sequence", "attention"}),
    "flat": frozenset({"activation", "linear", "norm", "residual"}),
}
#: Families always available inside composite blocks (residual bodies,
#: concat / split branches), per layout.
_PRIMITIVES: dict[str, tuple[str, ...]] = {
    "image": ("activation", "conv", "norm"),
    "signal": ("activation", "conv", "norm"),
    "sequence": ("activation", "linear", "norm"),
    "flat": ("activation", "linear", "norm"),
}
#: Families that may additionally appear inside a residual body (when enabled).
_NESTABLE = frozenset({"residual", "concat", "split", "sequence",
                       "channels_last_ln", "se", "shuffle", "attention"})

BATCH = 2
MAX_DRAWN_CHANNELS = 24  # upper bound for any drawn width
MAX_CHANNELS = 48  # no tensor ever has more channels than this
MAX_INPUT_SPATIAL = 16
MAX_SPATIAL = 32
MAX_TOKENS = 16
MAX_RESIDUAL_DEPTH = 2
_ACTIVATIONS = ("relu", "gelu", "silu", "hardswish", "sigmoid", "tanh")
_ACT_MODULE = {"relu": "nn.ReLU()", "gelu": "nn.GELU()", "silu": "nn.SiLU()",
               "hardswish": "nn.Hardswish()", "sigmoid": "nn.Sigmoid()",
               "tanh": "nn.Tanh()"}
_ACT_FUNCTION = {"relu": "F.relu", "gelu": "F.gelu", "silu": "F.silu",
                 "hardswish": "F.hardswish", "sigmoid": "torch.sigmoid",
                 "tanh": "torch.tanh"}


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


def _nd(shape: Shape) -> str:
    """``"2d"`` for images, ``"1d"`` otherwise (suffix of conv/pool/BN classes)."""
    return "2d" if shape.layout == "image" else "1d"


def _channel_dim(shape: Shape) -> int:
    return -1 if shape.layout == "sequence" else 1


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# --------------------------------------------------------------------------
# Code emission
# --------------------------------------------------------------------------


class _Emitter:
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

    def module(self, prefix: str, ctor: str) -> str:
        index = self._modules.get(prefix, 0)
        self._modules[prefix] = index + 1
        name = f"{prefix}{index}"
        self.init.append(f"self.{name} = {ctor}")
        self.module_types.add(ctor.split("(", 1)[0])
        return f"self.{name}"

    def var(self, prefix: str) -> str:
        index = self._vars.get(prefix, 0)
        self._vars[prefix] = index + 1
        return prefix if index == 0 else f"{prefix}{index}"

    def line(self, code: str, ops: int) -> None:
        self.forward.append(code)
        self.ops += ops

    def comment(self, text: str) -> None:
        self.forward.append(f"# {text}")


def _emit_chain(em: _Emitter, blocks: Sequence[Block], shape: Shape,
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


def _chain_shape(blocks: Sequence[Block], shape: Shape) -> Shape:
    for block in blocks:
        shape = block.out_shape(shape)
    return shape


def _chain_families(blocks: Sequence[Block]) -> frozenset[str]:
    out: set[str] = set()
    for block in blocks:
        out |= block.families()
    return frozenset(out)


def _block_cost(block: Block, shape: Shape) -> int:
    """Number of traced op nodes ``block`` contributes when applied to ``shape``."""
    em = _Emitter()
    block.emit(em, shape, "x", "x")
    return em.ops


# --------------------------------------------------------------------------
# Blocks (the IR)
# --------------------------------------------------------------------------


class _BlockBase:
    family: ClassVar[str]

    def out_shape(self, shape: Shape) -> Shape:  # pragma: no cover - abstract
        raise NotImplementedError

    def emit(self, em: _Emitter, shape: Shape, src: str, dst: str) -> None:  # pragma: no cover
        raise NotImplementedError

    def families(self) -> frozenset[str]:
        """Families used by this block, including nested blocks."""
        return frozenset({self.family})


@dataclass(frozen=True)
class Conv(_BlockBase):
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
        return f"nn.Conv{_nd(shape)}({', '.join(args)})"

    def emit(self, em: _Emitter, shape: Shape, src: str, dst: str) -> None:
        name = em.module("conv", self.ctor(shape))
        em.line(f"{dst} = {name}({src})", 1)


@dataclass(frozen=True)
class Linear(_BlockBase):
    """``nn.Linear`` over the last dimension (sequence / flat layouts)."""

    family = "linear"
    out_features: int
    bias: bool = True

    def out_shape(self, shape: Shape) -> Shape:
        return shape.with_channels(self.out_features)

    def emit(self, em: _Emitter, shape: Shape, src: str, dst: str) -> None:
        bias = "" if self.bias else ", bias=False"
        name = em.module("fc", f"nn.Linear({shape.channels}, {self.out_features}{bias})")
        em.line(f"{dst} = {name}({src})", 1)


@dataclass(frozen=True)
class Norm(_BlockBase):
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

    def emit(self, em: _Emitter, shape: Shape, src: str, dst: str) -> None:
        c = shape.channels
        if self.kind == "batchnorm":
            nd = "2d" if shape.layout == "image" else "1d"
            name = em.module("bn", f"nn.BatchNorm{nd}({c})")
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


@dataclass(frozen=True)
class Activation(_BlockBase):
    """An activation as an ``nn`` module or as a functional call."""

    family = "activation"
    kind: str = "relu"  # one of _ACTIVATIONS
    functional: bool = False

    def out_shape(self, shape: Shape) -> Shape:
        return shape

    def emit(self, em: _Emitter, shape: Shape, src: str, dst: str) -> None:
        if self.functional:
            em.line(f"{dst} = {_ACT_FUNCTION[self.kind]}({src})", 1)
        else:
            name = em.module("act", _ACT_MODULE[self.kind])
            em.line(f"{dst} = {name}({src})", 1)


@dataclass(frozen=True)
class Residual(_BlockBase):
    """``out = body(x); x = out + skip`` where ``skip`` is ``x`` or a projection.

    ``projection`` is ``"none"``, ``"conv"`` (1x1 conv), ``"conv_bn"``
    (``nn.Sequential(1x1 conv, BatchNorm)``) or ``"linear"``.  The body never
    changes spatial size; a projection is present whenever it changes width.
    """

    family = "residual"
    body: tuple[Block, ...]
    projection: str = "none"
    add: str = "+"  # "+" | "torch.add"

    def out_shape(self, shape: Shape) -> Shape:
        out = _chain_shape(self.body, shape)
        return out if shape.standard else out.strided()

    def families(self) -> frozenset[str]:
        return frozenset({self.family}) | _chain_families(self.body)

    def emit(self, em: _Emitter, shape: Shape, src: str, dst: str) -> None:
        out_shape = self.out_shape(shape)
        em.comment("residual block")
        out = em.var("out")
        _emit_chain(em, self.body, shape, src, out)
        c_in, c_out = shape.channels, out_shape.channels
        if self.projection == "none":
            skip = src
        else:
            if self.projection == "linear":
                ctor = f"nn.Linear({c_in}, {c_out})"
                ops = 1
            elif self.projection == "conv":
                ctor = f"nn.Conv{_nd(shape)}({c_in}, {c_out}, kernel_size=1, bias=False)"
                ops = 1
            else:
                ctor = (f"nn.Sequential(nn.Conv{_nd(shape)}({c_in}, {c_out}, kernel_size=1, "
                        f"bias=False), nn.BatchNorm{_nd(shape)}({c_out}))")
                em.module_types.update({f"nn.Conv{_nd(shape)}", f"nn.BatchNorm{_nd(shape)}"})
                ops = 2
            name = em.module("downsample" if self.projection == "conv_bn" else "proj", ctor)
            skip = em.var("identity")
            em.line(f"{skip} = {name}({src})", ops)
        if self.add == "torch.add":
            em.line(f"{dst} = torch.add({out}, {skip})", 1)
        else:
            em.line(f"{dst} = {out} + {skip}", 1)


@dataclass(frozen=True)
class Concat(_BlockBase):
    """Multi-branch block: each branch is a small conv chain; ``torch.cat`` on dim 1.

    With ``identity=True`` the block input itself is the first concatenated
    tensor (DenseNet style).
    """

    family = "concat"
    branches: tuple[tuple[Block, ...], ...]
    identity: bool = False

    def out_shape(self, shape: Shape) -> Shape:
        total = shape.channels if self.identity else 0
        standard = shape.standard
        for branch in self.branches:
            out = _chain_shape(branch, shape)
            total += out.channels
            standard = standard and out.standard
        out = shape.with_channels(total)
        return out if standard else out.strided()

    def families(self) -> frozenset[str]:
        out = {self.family}
        for branch in self.branches:
            out |= _chain_families(branch)
        return frozenset(out)

    def emit(self, em: _Emitter, shape: Shape, src: str, dst: str) -> None:
        em.comment(f"concat block ({len(self.branches)} branches)")
        parts = [src] if self.identity else []
        for branch in self.branches:
            var = em.var("branch")
            _emit_chain(em, branch, shape, src, var)
            parts.append(var)
        em.line(f"{dst} = torch.cat([{', '.join(parts)}], dim=1)", 1)


@dataclass(frozen=True)
class Split(_BlockBase):
    """Split channels, process each part, merge by ``torch.cat`` or addition.

    ``method`` is ``"split"`` (``torch.split(x, [sizes], dim)``),
    ``"split_equal"`` (``x.split(size, dim)``) or ``"chunk"``
    (``x.chunk(n, dim)``).  For ``merge="add"`` every branch ends at the same
    width.  Empty branches pass their part through unchanged.
    """

    family = "split"
    sizes: tuple[int, ...]
    branches: tuple[tuple[Block, ...], ...]
    method: str = "split"
    merge: str = "cat"

    def _part_shapes(self, shape: Shape) -> list[Shape]:
        return [shape.with_channels(s) for s in self.sizes]

    def out_shape(self, shape: Shape) -> Shape:
        outs = [_chain_shape(b, s) for b, s in zip(self.branches, self._part_shapes(shape))]
        width = outs[0].channels if self.merge == "add" else sum(o.channels for o in outs)
        out = shape.with_channels(width)
        return out if all(o.standard for o in outs) else out.strided()

    def families(self) -> frozenset[str]:
        out = {self.family}
        for branch in self.branches:
            out |= _chain_families(branch)
        return frozenset(out)

    def emit(self, em: _Emitter, shape: Shape, src: str, dst: str) -> None:
        dim = _channel_dim(shape)
        n = len(self.sizes)
        em.comment(f"split block ({n} parts, merged by {self.merge})")
        parts = [em.var("part") for _ in range(n)]
        lhs = ", ".join(parts)
        if self.method == "chunk":
            call = f"{src}.chunk({n}, dim={dim})"
        elif self.method == "split_equal":
            call = f"{src}.split({self.sizes[0]}, dim={dim})"
        else:
            call = f"torch.split({src}, {list(self.sizes)}, dim={dim})"
        em.line(f"{lhs} = {call}", 1 + n)
        outs = []
        for part, part_shape, branch in zip(parts, self._part_shapes(shape), self.branches):
            if branch:
                var = em.var("branch")
                _emit_chain(em, branch, part_shape, part, var)
                outs.append(var)
            else:
                outs.append(part)
        if self.merge == "add":
            em.line(f"{dst} = {' + '.join(outs)}", n - 1)
        else:
            em.line(f"{dst} = torch.cat([{', '.join(outs)}], dim={dim})", 1)


@dataclass(frozen=True)
class FlattenLinear(_BlockBase):
    """Flatten [B, C, *spatial] to [B, F] and apply an ``nn.Linear`` head."""

    family = "flatten_linear"
    out_features: int
    style: str = "torch.flatten"  # torch.flatten | method | nn.Flatten | view | reshape
    bias: bool = True

    def out_shape(self, shape: Shape) -> Shape:
        return Shape("flat", self.out_features, ())

    def emit(self, em: _Emitter, shape: Shape, src: str, dst: str) -> None:
        features = shape.channels * math.prod(shape.spatial)
        if self.style == "torch.flatten":
            em.line(f"{dst} = torch.flatten({src}, 1)", 1)
        elif self.style == "method":
            em.line(f"{dst} = {src}.flatten(1)", 1)
        elif self.style == "nn.Flatten":
            name = em.module("flatten", "nn.Flatten()")
            em.line(f"{dst} = {name}({src})", 1)
        elif self.style == "view":
            em.line(f"{dst} = {src}.view({src}.size(0), -1)", 2)
        else:
            em.line(f"{dst} = {src}.reshape({src}.shape[0], -1)", 3)
        bias = "" if self.bias else ", bias=False"
        name = em.module("fc", f"nn.Linear({features}, {self.out_features}{bias})")
        em.line(f"{dst} = {name}({dst})", 1)


@dataclass(frozen=True)
class ChannelShuffle(_BlockBase):
    """ShuffleNet channel shuffle: ``view(b, g, c // g, ...).transpose(1, 2)``."""

    family = "shuffle"
    groups: int
    contiguous_view: bool = False  # ``.contiguous().view`` instead of ``.reshape``

    def out_shape(self, shape: Shape) -> Shape:
        return shape

    def emit(self, em: _Emitter, shape: Shape, src: str, dst: str) -> None:
        g = self.groups
        sp = "h, w" if shape.layout == "image" else "l"
        em.line(f"b, c, {sp} = {src}.shape", 1 + 2 + len(shape.spatial))
        tail = (f".contiguous().view(b, -1, {sp})" if self.contiguous_view
                else f".reshape(b, -1, {sp})")
        em.line(f"{dst} = {src}.view(b, {g}, c // {g}, {sp}).transpose(1, 2){tail}",
                4 + int(self.contiguous_view))


@dataclass(frozen=True)
class ChannelsLastLN(_BlockBase):
    """ConvNeXt-style: to channels-last, ``LayerNorm``, ``Linear`` (MLP), back."""

    family = "channels_last_ln"
    out_features: int
    hidden: int | None = None  # if set: Linear(C, hidden) -> GELU -> Linear(hidden, out)

    def out_shape(self, shape: Shape) -> Shape:
        return shape.with_channels(self.out_features).strided()

    def emit(self, em: _Emitter, shape: Shape, src: str, dst: str) -> None:
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
            fc = em.module("fc", f"nn.Linear({c}, {self.out_features})")
            em.line(f"{dst} = {fc}({dst})", 1)
        else:
            fc1 = em.module("fc", f"nn.Linear({c}, {self.hidden})")
            act = em.module("act", "nn.GELU()")
            fc2 = em.module("fc", f"nn.Linear({self.hidden}, {self.out_features})")
            em.line(f"{dst} = {fc1}({dst})", 1)
            em.line(f"{dst} = {act}({dst})", 1)
            em.line(f"{dst} = {fc2}({dst})", 1)
        em.line(f"{dst} = {dst}.{to_first}", 1)


@dataclass(frozen=True)
class SqueezeExcite(_BlockBase):
    """Squeeze-excitation: pool, 1x1 conv down, ReLU, 1x1 conv up, gate, ``x * s``."""

    family = "se"
    reduced: int
    pool: str = "mean"  # "mean" | "functional" | "module"
    gate: str = "sigmoid"  # "sigmoid" | "hardsigmoid"

    def out_shape(self, shape: Shape) -> Shape:
        return shape

    def emit(self, em: _Emitter, shape: Shape, src: str, dst: str) -> None:
        nd, c = _nd(shape), shape.channels
        em.comment("squeeze-excitation")
        s = em.var("scale")
        if self.pool == "mean":
            dims = "(2, 3)" if shape.layout == "image" else "2"
            em.line(f"{s} = {src}.mean({dims}, keepdim=True)", 1)
        elif self.pool == "functional":
            em.line(f"{s} = F.adaptive_avg_pool{nd}({src}, 1)", 1)
        else:
            pool = em.module("pool", f"nn.AdaptiveAvgPool{nd}(1)")
            em.line(f"{s} = {pool}({src})", 1)
        down = em.module("se_reduce", f"nn.Conv{nd}({c}, {self.reduced}, kernel_size=1)")
        up = em.module("se_expand", f"nn.Conv{nd}({self.reduced}, {c}, kernel_size=1)")
        em.line(f"{s} = {down}({s})", 1)
        em.line(f"{s} = F.relu({s})", 1)
        em.line(f"{s} = {up}({s})", 1)
        gate = "torch.sigmoid" if self.gate == "sigmoid" else "F.hardsigmoid"
        em.line(f"{s} = {gate}({s})", 1)
        em.line(f"{dst} = {src} * {s}", 1)


@dataclass(frozen=True)
class Attention(_BlockBase):
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

    def emit(self, em: _Emitter, shape: Shape, src: str, dst: str) -> None:
        c, h = shape.channels, self.heads
        hd = c // h
        hd_expr, hd_ops = {"literal": (str(hd), 0), "infer": ("-1", 0),
                           "expr": (f"C // {h}", 1)}[self.head_dim_style]
        em.comment(f"multi-head self-attention ({_plural(h, 'head')})")
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


@dataclass(frozen=True)
class TokenMixing(_BlockBase):
    """``nn.Linear`` over the token / length axis (MLP-Mixer style)."""

    family = "sequence"
    out_tokens: int

    def out_shape(self, shape: Shape) -> Shape:
        out = dataclasses.replace(shape, spatial=(self.out_tokens,))
        return out.strided() if shape.layout == "sequence" else out

    def emit(self, em: _Emitter, shape: Shape, src: str, dst: str) -> None:
        name = em.module("token_fc", f"nn.Linear({shape.spatial[0]}, {self.out_tokens})")
        if shape.layout == "sequence":
            em.line(f"{dst} = {name}({src}.transpose(1, 2)).transpose(1, 2)", 3)
        else:  # signal [B, C, L]: L is already last
            em.line(f"{dst} = {name}({src})", 1)


@dataclass(frozen=True)
class TemporalConv(_BlockBase):
    """``nn.Conv1d`` over time on a [B, T, D] sequence (via ``transpose``)."""

    family = "sequence"
    out_channels: int
    kernel_size: int = 3

    def out_shape(self, shape: Shape) -> Shape:
        return shape.with_channels(self.out_channels).strided()

    def emit(self, em: _Emitter, shape: Shape, src: str, dst: str) -> None:
        k = self.kernel_size
        name = em.module("tconv", f"nn.Conv1d({shape.channels}, {self.out_channels}, "
                                  f"kernel_size={k}, padding={k // 2})")
        em.line(f"{dst} = {name}({src}.transpose(1, 2)).transpose(1, 2)", 3)


@dataclass(frozen=True)
class Conv1dStack(_BlockBase):
    """A stack of ``Conv1d`` + activation layers on a [B, C, L] signal."""

    family = "sequence"
    widths: tuple[int, ...]
    kernel_size: int = 3
    activation: str = "relu"

    def out_shape(self, shape: Shape) -> Shape:
        return shape.with_channels(self.widths[-1])

    def emit(self, em: _Emitter, shape: Shape, src: str, dst: str) -> None:
        k, c = self.kernel_size, shape.channels
        cur = src
        for width in self.widths:
            conv = em.module("conv", f"nn.Conv1d({c}, {width}, kernel_size={k}, padding={k // 2})")
            act = em.module("act", _ACT_MODULE[self.activation])
            em.line(f"{dst} = {act}({conv}({cur}))", 2)
            cur, c = dst, width


@dataclass(frozen=True)
class Pool(_BlockBase):
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
        if self.kind in ("global_mean", "global_flatten", "token_mean", "cls"):
            return Shape("flat", shape.channels, ())
        if self.kind in ("max2", "avg2", "functional_max2"):
            spatial = tuple(s // 2 for s in shape.spatial)
        elif self.kind == "max3s2":
            spatial = tuple((s - 1) // 2 + 1 for s in shape.spatial)
        else:
            spatial = tuple(self.output_size for _ in shape.spatial)
        return dataclasses.replace(shape, spatial=spatial)

    def emit(self, em: _Emitter, shape: Shape, src: str, dst: str) -> None:
        nd = _nd(shape)
        if self.kind == "max2":
            name = em.module("pool", f"nn.MaxPool{nd}(2)")
            em.line(f"{dst} = {name}({src})", 1)
        elif self.kind == "avg2":
            name = em.module("pool", f"nn.AvgPool{nd}(2)")
            em.line(f"{dst} = {name}({src})", 1)
        elif self.kind == "max3s2":
            name = em.module("pool", f"nn.MaxPool{nd}(3, stride=2, padding=1)")
            em.line(f"{dst} = {name}({src})", 1)
        elif self.kind == "functional_max2":
            em.line(f"{dst} = F.max_pool{nd}({src}, 2)", 1)
        elif self.kind == "adaptive":
            name = em.module("pool", f"nn.AdaptiveAvgPool{nd}({self.output_size})")
            em.line(f"{dst} = {name}({src})", 1)
        elif self.kind == "global_mean":
            dims = "(2, 3)" if shape.layout == "image" else "2"
            em.line(f"{dst} = {src}.mean({dims})", 1)
        elif self.kind == "global_flatten":
            em.line(f"{dst} = F.adaptive_avg_pool{nd}({src}, 1).flatten(1)", 2)
        elif self.kind == "token_mean":
            em.line(f"{dst} = {src}.mean(dim=1)", 1)
        else:  # cls
            em.line(f"{dst} = {src}[:, 0]", 1)


@dataclass(frozen=True)
class Upsample(_BlockBase):
    """Nearest-neighbour x2 upsampling followed by a conv."""

    family = "upsample"
    out_channels: int
    kernel_size: int = 3
    module: bool = False  # nn.Upsample instead of F.interpolate

    def out_shape(self, shape: Shape) -> Shape:
        return dataclasses.replace(shape, channels=self.out_channels,
                                   spatial=tuple(2 * s for s in shape.spatial))

    def emit(self, em: _Emitter, shape: Shape, src: str, dst: str) -> None:
        if self.module:
            up = em.module("upsample", 'nn.Upsample(scale_factor=2, mode="nearest")')
            em.line(f"{dst} = {up}({src})", 1)
        else:
            em.line(f'{dst} = F.interpolate({src}, scale_factor=2, mode="nearest")', 1)
        k = self.kernel_size
        pad = f", padding={k // 2}" if k > 1 else ""
        conv = em.module("conv", f"nn.Conv{_nd(shape)}({shape.channels}, {self.out_channels}, "
                                 f"kernel_size={k}{pad})")
        em.line(f"{dst} = {conv}({dst})", 1)


Block = Union[Conv, Linear, Norm, Activation, Residual, Concat, Split, FlattenLinear,
              ChannelShuffle, ChannelsLastLN, SqueezeExcite, Attention, TokenMixing,
              TemporalConv, Conv1dStack, Pool, Upsample]


# --------------------------------------------------------------------------
# Whole architectures
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """The model input: ``kind`` is ``"image"`` [B, C, H, W], ``"signal"``
    [B, C, L] or ``"sequence"`` [B, T, D] (``channels=D``, ``size=(T,)``)."""

    kind: str
    channels: int
    size: tuple[int, ...]

    @property
    def shape(self) -> Shape:
        return Shape(self.kind, self.channels, self.size)


_NORM_HELPER = '''def randomize_norm_layers(model):
    """Give norm layers non-trivial affine parameters and running statistics."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)'''

_NORM_TYPES = {"nn.BatchNorm1d", "nn.BatchNorm2d", "nn.GroupNorm", "nn.LayerNorm"}


@dataclass(frozen=True)
class ArchSpec:
    """A complete architecture: input, a chain of blocks, and a weight seed."""

    input: InputSpec
    blocks: tuple[Block, ...]
    seed: int = 0

    def shapes(self) -> list[Shape]:
        """Shapes between blocks: ``[input, after block 0, ..., output]``."""
        out = [self.input.shape]
        for block in self.blocks:
            out.append(block.out_shape(out[-1]))
        return out

    @property
    def output_shape(self) -> Shape:
        return self.shapes()[-1]

    def families(self) -> frozenset[str]:
        """All families used anywhere in the architecture (including nested blocks)."""
        return _chain_families(self.blocks)

    def _emit(self) -> _Emitter:
        em = _Emitter()
        shape = self.input.shape
        for block in self.blocks:
            block.emit(em, shape, "x", "x")
            shape = block.out_shape(shape)
        return em

    @property
    def num_ops(self) -> int:
        """Number of ``call_module``/``call_function``/``call_method`` nodes in
        the graph :func:`torch.fx.symbolic_trace` produces for the model."""
        return self._emit().ops

    def to_source(self) -> str:
        """Standalone Python source defining ``Model``, ``model`` and ``example_inputs``."""
        em = self._emit()
        init = em.init or []
        lines = [
            f"# Generated by fxprune.testing.strategies; {self._summary()}",
            "import torch",
            "import torch.nn as nn",
            "import torch.nn.functional as F",
            "",
            "",
            "class Model(nn.Module):",
            "    def __init__(self):",
            "        super().__init__()",
        ]
        lines += [f"        {line}" for line in init]
        lines += ["", "    def forward(self, x):"]
        lines += [f"        {line}" for line in em.forward]
        lines += ["        return x", "", ""]
        has_norm = bool(em.module_types & _NORM_TYPES)
        if has_norm:
            lines += [*_NORM_HELPER.split("\n"), "", ""]
        dims = ", ".join(map(str, self.input.shape.dims()))
        lines += [
            f"torch.manual_seed({self.seed})",
            "model = Model()",
        ]
        if has_norm:
            lines.append("randomize_norm_layers(model)")
        lines += [
            "model.eval()",
            f"example_inputs = (torch.randn({dims}),)",
            "",
        ]
        return "\n".join(lines)

    def _summary(self) -> str:
        fams = ", ".join(f for f in FAMILIES if f in self.families()) or "none"
        return (f"{_plural(len(self.blocks), 'block')}, {_plural(self.num_ops, 'op')}, "
                f"families: {fams}")

    def materialize(self) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
        """Execute :meth:`to_source`; return ``(model, example_inputs)``.

        The global RNG state is saved and restored around the execution.
        """
        return _execute(self.to_source())

    def build(self) -> nn.Module:
        """Build the model (eval mode, deterministic weights from ``seed``)."""
        return self.materialize()[0]


def _execute(source: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Run generated source; return its ``model`` and ``example_inputs``."""
    digest = hashlib.sha1(source.encode()).hexdigest()[:16]
    filename = f"<fxprune-generated-{digest}>"
    # Register the source so tracebacks and inspect.getsource(Model.forward) show it.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, object] = {"__name__": "fxprune_generated"}
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
        exec(compile(source, filename, "exec"), namespace)
    return namespace["model"], namespace["example_inputs"]  # type: ignore[return-value]


@dataclass(frozen=True, eq=False, repr=False)
class Arch:
    """A drawn architecture: spec, built model, example inputs and source.

    ``repr(arch)`` is ``arch.source``, which is what hypothesis prints for a
    failing example.
    """

    spec: ArchSpec
    model: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    source: str

    @classmethod
    def from_spec(cls, spec: ArchSpec) -> Arch:
        source = spec.to_source()
        model, example_inputs = _execute(source)
        return cls(spec=spec, model=model, example_inputs=example_inputs, source=source)

    def __repr__(self) -> str:
        return self.source

    def _repr_pretty_(self, p: object, cycle: bool) -> None:
        # Hypothesis' pretty-printer looks for this before anything else; print
        # the source verbatim so a falsifying example can be pasted and run.
        p.text(self.source)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------

Draw = Callable[[st.SearchStrategy], object]
# "Continue?" choices: shrink towards 0 == "stop".  Top-level chains continue
# with probability ~7/8, nested chains (bodies, branches) with ~3/4.
_CONTINUE_TOP = st.integers(0, 7).map(bool)
_CONTINUE = st.integers(0, 3).map(bool)


@dataclass(frozen=True)
class _Ctx:
    families: frozenset[str]  # families enabled by the user
    depth: int = 0  # residual nesting depth
    preserve_spatial: bool = False  # inside residual bodies / branches
    cap: int = MAX_DRAWN_CHANNELS  # max width a conv / linear may produce


def _min_cost(family: str, shape: Shape) -> int:
    """Cheapest variant's op count for ``family`` on ``shape``."""
    image_like = shape.layout in ("image", "signal")
    return {
        "activation": 1, "conv": 1, "linear": 1, "norm": 1, "pool": 1,
        "upsample": 2, "flatten_linear": 2,
        "residual": 4 if image_like else 3,
        "concat": 2 if shape.channels < MAX_CHANNELS else 3, "split": 4,
        "sequence": 1 if shape.layout == "signal" else 3,
        "channels_last_ln": 4, "se": 6,
        "shuffle": 9 if shape.layout == "image" else 8,
        "attention": 19,
    }[family]


def _applicable(family: str, shape: Shape, ctx: _Ctx) -> bool:
    if family not in _LAYOUT_FAMILIES[shape.layout]:
        return False
    c = shape.channels
    if ctx.preserve_spatial and family in ("pool", "upsample", "flatten_linear"):
        return False
    if family == "residual":
        return ctx.depth < MAX_RESIDUAL_DEPTH
    if family == "split":
        return c >= 2
    if family == "shuffle":
        return c >= 2
    if family == "upsample":
        return all(2 * s <= MAX_SPATIAL for s in shape.spatial)
    return True


def _draw_chain(draw: Draw, shape: Shape, ctx: _Ctx, allowed: Sequence[str], budget: int,
                min_len: int, max_len: int) -> tuple[tuple[Block, ...], Shape, int]:
    """Draw up to ``max_len`` blocks (at least ``min_len`` when possible).

    Returns ``(blocks, output shape, op count)`` with op count <= ``budget``.
    """
    blocks: list[Block] = []
    used = 0
    for i in range(max_len):
        remaining = budget - used
        options = [f for f in FAMILIES if f in allowed and _applicable(f, shape, ctx)
                   and _min_cost(f, shape) <= remaining]
        if not options:
            break
        if i >= min_len and not draw(_CONTINUE_TOP if ctx.depth == 0 and not ctx.preserve_spatial
                                     else _CONTINUE):
            break
        family = draw(st.sampled_from(options))
        block = _DRAWERS[family](draw, shape, ctx, remaining)
        cost = _block_cost(block, shape)
        if cost > remaining:  # pragma: no cover - drawers respect the budget
            raise AssertionError(f"{family} drawer exceeded its budget: {block!r}")
        blocks.append(block)
        used += cost
        shape = block.out_shape(shape)
    return tuple(blocks), shape, used


def _width(draw: Draw, cap: int) -> int:
    return draw(st.integers(1, max(1, min(cap, MAX_DRAWN_CHANNELS))))


def _draw_conv(draw: Draw, shape: Shape, ctx: _Ctx, budget: int = 1,
               fixed_out: int | None = None) -> Conv:
    c, cap = shape.channels, max(1, ctx.cap)
    modes = ["dense"]
    if fixed_out is None:
        if 2 <= c <= cap:
            modes.append("depthwise")
        grouped = [g for g in _divisors(c) if 1 < g < c and g <= cap]
    else:
        grouped = [g for g in _divisors(math.gcd(c, fixed_out)) if g > 1]
    if grouped:
        modes.append("grouped")
    mode = draw(st.sampled_from(modes))
    if mode == "dense":
        groups = 1
        out = fixed_out if fixed_out is not None else _width(draw, cap)
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


def _draw_linear(draw: Draw, shape: Shape, ctx: _Ctx, budget: int = 1,
                 fixed_out: int | None = None) -> Linear:
    out = fixed_out if fixed_out is not None else _width(draw, ctx.cap)
    return Linear(out, not draw(st.booleans()))


def _draw_norm(draw: Draw, shape: Shape, ctx: _Ctx, budget: int) -> Norm:
    layout = shape.layout
    if layout == "flat" or budget >= 3:
        kinds = ["batchnorm", "layernorm", "groupnorm"]
    elif layout == "sequence":
        kinds = ["layernorm"]
    else:
        kinds = ["batchnorm", "groupnorm"]
    kind = draw(st.sampled_from(kinds))
    groups = draw(st.sampled_from(_divisors(shape.channels))) if kind == "groupnorm" else 1
    return Norm(kind, groups)


def _draw_activation(draw: Draw, shape: Shape, ctx: _Ctx, budget: int) -> Activation:
    return Activation(draw(st.sampled_from(_ACTIVATIONS)), draw(st.booleans()))


def _draw_pool(draw: Draw, shape: Shape, ctx: _Ctx, budget: int) -> Pool:
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


def _draw_flatten_linear(draw: Draw, shape: Shape, ctx: _Ctx, budget: int) -> FlattenLinear:
    styles = ["torch.flatten", "method", "nn.Flatten"]
    if budget >= 3 and shape.standard:  # view() cannot merge dims of permuted strides
        styles.append("view")
    if budget >= 4:
        styles.append("reshape")
    style = draw(st.sampled_from(styles))
    return FlattenLinear(_width(draw, ctx.cap), style, not draw(st.booleans()))


def _draw_residual(draw: Draw, shape: Shape, ctx: _Ctx, budget: int) -> Residual:
    image_like = shape.layout in ("image", "signal")
    reserve = 2 if image_like else 1  # worst-case projection cost
    body_allowed = set(_PRIMITIVES[shape.layout]) | (ctx.families & _NESTABLE)
    body_ctx = dataclasses.replace(ctx, depth=ctx.depth + 1, preserve_spatial=True)
    body, out, _ = _draw_chain(draw, shape, body_ctx, sorted(body_allowed),
                               budget - 1 - reserve, min_len=1, max_len=4)
    needs_projection = out.channels != shape.channels
    if image_like:
        choices = ["conv_bn", "conv"] if needs_projection else ["none", "conv_bn", "conv"]
    else:
        choices = ["linear"] if needs_projection else ["none", "linear"]
    projection = draw(st.sampled_from(choices))
    add = draw(st.sampled_from(["+", "torch.add"]))
    return Residual(body, projection, add)


def _draw_concat(draw: Draw, shape: Shape, ctx: _Ctx, budget: int) -> Concat:
    c = shape.channels
    # with a budget of 2 only "cat([x, conv(x)])" fits
    identity = c < MAX_CHANNELS and (budget < 3 or draw(st.booleans()))
    if identity:  # every branch adds at least one channel to c
        n = draw(st.integers(1, max(1, min(4, budget - 1, MAX_CHANNELS - c))))
    else:
        n = draw(st.integers(2, max(2, min(4, budget - 1))))
    room = MAX_CHANNELS - (c if identity else 0)
    branch_ctx = dataclasses.replace(ctx, preserve_spatial=True,
                                     cap=max(1, min(MAX_DRAWN_CHANNELS, room // n)))
    remaining = budget - 1
    branches = []
    for i in range(n):
        # leave at least one op for each later branch
        branch_budget = remaining - (n - i - 1)
        first = _draw_conv(draw, shape, branch_ctx)
        rest, _, cost = _draw_chain(draw, first.out_shape(shape), branch_ctx,
                                    _PRIMITIVES[shape.layout], branch_budget - 1,
                                    min_len=0, max_len=2)
        branches.append((first, *rest))
        remaining -= 1 + cost
    return Concat(tuple(branches), identity)


def _draw_split(draw: Draw, shape: Shape, ctx: _Ctx, budget: int) -> Split:
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
    if method == "split":
        sizes = []
        left = c
        for i in range(n - 1):
            s = draw(st.integers(1, left - (n - 1 - i)))
            sizes.append(s)
            left -= s
        sizes.append(left)
    else:
        sizes = [c // n] * n
    remaining = budget - 1 - n - (1 if merge == "cat" else n - 1)
    primitives = _PRIMITIVES[shape.layout]
    slack = max(0, MAX_CHANNELS - c) // n
    branches = []
    if merge == "cat":
        for s in sizes:
            part = shape.with_channels(s)
            bctx = dataclasses.replace(ctx, preserve_spatial=True,
                                       cap=max(1, min(MAX_DRAWN_CHANNELS, s + slack)))
            branch, _, cost = _draw_chain(draw, part, bctx, primitives, remaining,
                                          min_len=0, max_len=2)
            branches.append(branch)
            remaining -= cost
    else:
        w = _width(draw, ctx.cap)
        for i, s in enumerate(sizes):
            part = shape.with_channels(s)
            bctx = dataclasses.replace(ctx, preserve_spatial=True)
            # reserve one op for this branch's projection and for each later branch
            pre, pre_shape, cost = _draw_chain(draw, part, bctx, primitives,
                                               remaining - 1 - (n - i - 1), min_len=0, max_len=1)
            if shape.layout in ("image", "signal"):
                last = _draw_conv(draw, pre_shape, bctx, fixed_out=w)
            else:
                last = _draw_linear(draw, pre_shape, bctx, fixed_out=w)
            branches.append((*pre, last))
            remaining -= cost + 1
    return Split(tuple(sizes), tuple(branches), method, merge)


def _draw_shuffle(draw: Draw, shape: Shape, ctx: _Ctx, budget: int) -> ChannelShuffle:
    groups = draw(st.sampled_from(_divisors(shape.channels)[1:]))
    contiguous = budget > _min_cost("shuffle", shape) and draw(st.booleans())
    return ChannelShuffle(groups, contiguous)


def _draw_channels_last_ln(draw: Draw, shape: Shape, ctx: _Ctx, budget: int) -> ChannelsLastLN:
    hidden = None
    if budget >= 6 and draw(st.booleans()):
        hidden = _width(draw, ctx.cap)
    return ChannelsLastLN(_width(draw, ctx.cap), hidden)


def _draw_se(draw: Draw, shape: Shape, ctx: _Ctx, budget: int) -> SqueezeExcite:
    reduced = draw(st.integers(1, max(1, shape.channels // 2)))
    pool = draw(st.sampled_from(["mean", "functional", "module"]))
    gate = draw(st.sampled_from(["sigmoid", "hardsigmoid"]))
    return SqueezeExcite(reduced, pool, gate)


def _draw_attention(draw: Draw, shape: Shape, ctx: _Ctx, budget: int) -> Attention:
    heads = draw(st.sampled_from([h for h in _divisors(shape.channels) if h <= 8]))
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
        out = _width(draw, ctx.cap)
    return Attention(heads, fused, style, residual, out)


def _draw_sequence(draw: Draw, shape: Shape, ctx: _Ctx, budget: int) -> _BlockBase:
    if shape.layout == "sequence":
        kind = draw(st.sampled_from(["token_mixing", "temporal_conv"]))
        if kind == "temporal_conv":
            return TemporalConv(_width(draw, ctx.cap), draw(st.sampled_from([3, 1])))
    else:
        kinds = ["token_mixing"]
        if budget >= 2:
            kinds.append("conv1d_stack")
        kind = draw(st.sampled_from(kinds))
        if kind == "conv1d_stack":
            n = draw(st.integers(1, max(1, min(3, budget // 2))))
            widths = tuple(_width(draw, ctx.cap) for _ in range(n))
            return Conv1dStack(widths, draw(st.sampled_from([3, 1])),
                               draw(st.sampled_from(["relu", "gelu", "silu"])))
    if ctx.preserve_spatial:
        return TokenMixing(shape.spatial[0])
    return TokenMixing(draw(st.integers(1, MAX_TOKENS)))


def _draw_upsample(draw: Draw, shape: Shape, ctx: _Ctx, budget: int) -> Upsample:
    return Upsample(_width(draw, ctx.cap), draw(st.sampled_from([3, 1])), draw(st.booleans()))


_DRAWERS: dict[str, Callable[[Draw, Shape, _Ctx, int], _BlockBase]] = {
    "activation": _draw_activation,
    "conv": _draw_conv,
    "linear": _draw_linear,
    "norm": _draw_norm,
    "pool": _draw_pool,
    "flatten_linear": _draw_flatten_linear,
    "residual": _draw_residual,
    "concat": _draw_concat,
    "split": _draw_split,
    "sequence": _draw_sequence,
    "upsample": _draw_upsample,
    "channels_last_ln": _draw_channels_last_ln,
    "se": _draw_se,
    "shuffle": _draw_shuffle,
    "attention": _draw_attention,
}


def _check_families(families: frozenset[str] | None, max_nodes: int) -> frozenset[str]:
    if families is None:
        families = frozenset(FAMILIES)
    families = frozenset(families)
    unknown = families - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)}; known: {FAMILIES}")
    if not families:
        raise ValueError("families must not be empty")
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be >= 1, got {max_nodes}")
    cheapest = min(_min_cost(f, Shape(k, 2, (2, 2) if k == "image" else (2,)))
                   for f in families for k in _FAMILY_INPUTS[f])
    if cheapest > max_nodes:
        raise ValueError(f"max_nodes={max_nodes} is too small for families "
                         f"{sorted(families)} (the cheapest block needs {cheapest} ops)")
    return families


def _startable_kinds(families: frozenset[str], max_nodes: int) -> list[str]:
    kinds = []
    for kind in _INPUT_KINDS:
        probe = Shape(kind, 2, (2, 2) if kind == "image" else (2,))
        if any(kind in _FAMILY_INPUTS[f] and _min_cost(f, probe) <= max_nodes
               for f in families):
            kinds.append(kind)
    return kinds


@st.composite
def input_specs(draw: Draw, families: frozenset[str] | None = None,
                max_nodes: int = 40) -> InputSpec:
    """Draw an :class:`InputSpec` from which some block of ``families`` can start."""
    families = _check_families(families, max_nodes)
    kind = draw(st.sampled_from(_startable_kinds(families, max_nodes)))
    ctx = _Ctx(families)

    def startable(c: int) -> bool:
        probe = Shape(kind, c, (MAX_INPUT_SPATIAL,) * (2 if kind == "image" else 1))
        return any(_applicable(f, probe, ctx) and _min_cost(f, probe) <= max_nodes
                   for f in families)

    channels = draw(st.integers(1 if startable(1) else 2, MAX_DRAWN_CHANNELS))
    if kind == "image":
        size: tuple[int, ...] = (draw(st.integers(1, MAX_INPUT_SPATIAL)),
                                 draw(st.integers(1, MAX_INPUT_SPATIAL)))
    else:
        size = (draw(st.integers(1, MAX_TOKENS if kind == "sequence" else MAX_INPUT_SPATIAL)),)
    return InputSpec(kind, channels, size)


@st.composite
def _arch_specs(draw: Draw, max_nodes: int, families: frozenset[str],
                seed_weights: bool) -> ArchSpec:
    inp = draw(input_specs(families, max_nodes))
    blocks, _, _ = _draw_chain(draw, inp.shape, _Ctx(families), sorted(families),
                               max_nodes, min_len=1, max_len=max_nodes)
    seed = draw(st.integers(0, 2**31 - 1)) if seed_weights else 0
    return ArchSpec(inp, blocks, seed)


def arch_specs(max_nodes: int = 40, families: frozenset[str] | None = None,
               seed_weights: bool = True) -> st.SearchStrategy[ArchSpec]:
    """Strategy for :class:`ArchSpec` values (cheap: nothing is built).

    Arguments and errors as for :func:`architectures`; build a drawn spec
    with :meth:`ArchSpec.build`, :meth:`ArchSpec.materialize` or
    :meth:`Arch.from_spec`.
    """
    return _arch_specs(max_nodes, _check_families(families, max_nodes), seed_weights)


def architectures(max_nodes: int = 40, families: frozenset[str] | None = None,
                  seed_weights: bool = True) -> st.SearchStrategy[Arch]:
    """Strategy for random, valid, runnable, fx-traceable models.

    Args:
        max_nodes: upper bound on the number of ops, i.e. on the
            ``call_module``/``call_function``/``call_method`` nodes of the
            traced graph (``arch.spec.num_ops <= max_nodes``).
        families: subset of :data:`FAMILIES` the top-level blocks are drawn
            from (``None``: all).  Composite families bring their own inner
            ops: residual bodies and concat/split branches always may use
            conv (or linear), norm and activation layers, and residual bodies
            may also nest the other enabled composite families.
        seed_weights: draw the weight/input seed with hypothesis (shrinks
            towards 0); if ``False`` the seed is always 0, so examples differ
            only in architecture.

    Returns:
        A strategy for :class:`Arch` (``spec``, ``model`` in eval mode,
        ``example_inputs`` with batch size 2, ``source``); ``repr`` of a
        drawn value is its standalone source code.

    Raises:
        ValueError: for unknown family names, an empty family set, or a
            ``max_nodes`` too small for every requested family.
    """
    return arch_specs(max_nodes=max_nodes, families=families,
                      seed_weights=seed_weights).map(Arch.from_spec)
