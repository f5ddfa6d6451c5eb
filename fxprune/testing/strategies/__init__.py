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

Layout of the package: :mod:`.core` (shapes, code emission, the
:class:`~.core.Family` record and chain drawing); one module per group of op
families, each holding, per family, its block dataclass, its draw function and
its ``Family`` record (:mod:`.basic`, :mod:`.composite`, :mod:`.sequence`,
:mod:`.mixing`, :mod:`.hazards`); :mod:`.table` (the ordered family table, from which
:data:`FAMILIES` is derived); :mod:`.arch` (specs, source generation and
execution); :mod:`.draw` (the public strategies).  To add a family, write its
block, draw function and record, and put the record in the table.
"""

from __future__ import annotations

from .arch import Arch, ArchSpec, InputSpec
from .basic import Activation, Conv, FlattenLinear, Linear, Norm, Pool, Upsample
from .composite import Concat, Residual, Split
from .core import MAX_CHANNELS, MAX_DRAWN_CHANNELS, MAX_SPATIAL, Shape
from .draw import arch_specs, architectures, input_specs
from .mixing import Attention, ChannelShuffle, ChannelsLastLN, SqueezeExcite
from .sequence import Conv1dStack, TemporalConv, TokenMixing
from .hazards import AutogradFn, ChannelSum, Inplace, OwnForward, Stateful, Tied, TrainDropout, WeightStd
from .table import FAMILIES, HAZARD_FAMILIES, Block

__all__ = [
    "FAMILIES",
    "HAZARD_FAMILIES",
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
    "Inplace",
    "Tied",
    "Stateful",
    "OwnForward",
    "WeightStd",
    "AutogradFn",
    "TrainDropout",
    "ChannelSum",
    "input_specs",
    "arch_specs",
    "architectures",
]
