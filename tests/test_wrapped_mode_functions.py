"""Wrapped functions that branch on ``training`` and pass channels through are recognised (issue 9).

A ``torch.fx.wrap``-ped function that branches on a ``training`` flag is kept as one call that
follows the mode at run time.  When it is a channel pass-through in both modes (torchvision's
``stochastic_depth``, timm's ``drop_path``), the analysis registers it under
``fxprune.ops.STOCHASTIC_DEPTH`` (in a copy of the registry) instead of making it a barrier; any
look-alike that is not provably one stays a barrier, saying why.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxprune
from fxprune import ir
from fxprune.ops import STOCHASTIC_DEPTH
from fxprune.testing import check_pruning

from _wrapped_mode import (DropOrMix, DropPath, ModeHelper, StochasticDepth, channel_scale_in_training, drop_path,
                           stochastic_depth)


class Block(nn.Module):
    """A ConvNeXt block: depthwise conv, channels-last LayerNorm and MLP, stochastic depth, residual add."""

    def __init__(self, c: int, drop: nn.Module) -> None:
        super().__init__()
        self.dw, self.norm = nn.Conv2d(c, c, 3, padding=1, groups=c), nn.LayerNorm(c)
        self.fc1, self.fc2, self.drop = nn.Linear(c, 4 * c), nn.Linear(4 * c, c), drop

    def forward(self, x):
        h = self.dw(x).permute(0, 2, 3, 1)
        h = self.fc2(F.gelu(self.fc1(self.norm(h)))).permute(0, 3, 1, 2)
        return x + self.drop(h)


class ConvNeXtish(nn.Module):
    def __init__(self, drops=None) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 2, 2)
        drops = drops if drops is not None else [StochasticDepth(0.5, "row"), StochasticDepth(0.5, "batch"),
                                                 DropPath(0.5)]
        self.blocks = nn.Sequential(*[Block(16, d) for d in drops])
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def _inputs(n: int = 8):
    return (torch.randn(n, 3, 8, 8),)


def _snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(name, m.training, dict(vars(m))) for name, m in model.named_modules()])


def _unchanged(model, snap) -> bool:
    state, modules = snap
    now = [(name, m.training, dict(vars(m))) for name, m in model.named_modules()]
    return (all(torch.equal(state[k], v) for k, v in model.state_dict().items())
            and [(n, t, sorted(d)) for n, t, d in now] == [(n, t, sorted(d)) for n, t, d in modules]
            and all(type(m.training) is bool for _, m in model.named_modules()))


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_stochastic_depth_and_drop_path_are_recognised_and_the_residual_stream_prunes(training):
    model, x = ConvNeXtish().train(training), _inputs()
    snap = _snapshot(model)
    analysis = fxprune.analyze(model, x)
    assert not analysis.barriers
    kept = [n for n in analysis.graph_module.graph.nodes if n.target in (stochastic_depth, drop_path)]
    assert len(kept) == 3 and all(n.op == "call_function" and ir.KEPT_CALL in n.meta for n in kept)
    assert all(n.meta[ir.RULE].family == "unary" for n in kept)
    assert not analysis.graph_module.meta[ir.MODE_BRANCHES]          # nothing frozen
    notes = [n for n in analysis.notes if "stochastic depth" in n]
    assert len(notes) == 2 and all("pass-through in train and eval" in n for n in notes)
    assert any("stochastic_depth" in n and "2 call(s)" in n for n in notes)
    (stream,) = analysis.group_of("stem.weight", 0)
    assert {m.param for m in stream.members} >= {"stem.weight", "blocks.0.fc2.weight", "blocks.1.fc2.weight",
                                                 "blocks.2.fc2.weight", "head.weight"}
    assert _unchanged(model, snap)
    assert analysis.registry is not fxprune.default_registry()        # a copy: the caller's registry is not written
    check_pruning(model, x)
    assert _unchanged(model, snap)


def test_the_pruned_module_shrinks_the_stream_and_still_follows_the_mode():
    model, x = ConvNeXtish().eval(), _inputs()
    snap = _snapshot(model)
    result = fxprune.prune(model, x, ratio=0.5)
    gm = result.graph_module
    assert gm.get_submodule("stem").out_channels < 16
    assert all(gm.get_submodule(f"blocks.{i}.fc2").out_features < 16 for i in range(3))
    assert _unchanged(model, snap)
    assert "stochastic_depth(" in gm.code and "drop_path(" in gm.code and "training" in gm.code
    big = torch.randn(64, 3, 8, 8)
    gm.eval()
    assert torch.equal(gm(big), gm(big))
    gm.train()                                                        # the random mask still applies
    torch.manual_seed(0)
    first, second = gm(big), gm(big)
    assert not torch.equal(first, second)
    gm.eval()
    assert torch.equal(gm(big), gm(big))


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_each_torchvision_mode_alone_is_recognised(mode):
    model, x = ConvNeXtish([StochasticDepth(0.2, mode)]).eval(), _inputs()
    analysis = fxprune.analyze(model, x)
    assert not analysis.barriers and len(analysis.group_of("stem.weight", 0)) == 1
    check_pruning(model, x)


def test_timm_drop_path_in_train_mode_pruned_output_matches_the_masked_original():
    """Same seed, same noise: the pruned train-mode module equals the original with the channels removed."""
    model, x = ConvNeXtish([DropPath(0.5), DropPath(0.5)]).train(), _inputs()
    analysis = fxprune.analyze(model, x)
    assert not analysis.barriers
    gm = fxprune.apply(analysis, {})                                  # nothing removed: same function
    for training in (True, False):
        a, b = copy.deepcopy(gm).train(training), copy.deepcopy(model).train(training)
        torch.manual_seed(1)
        ya = a(x[0])
        torch.manual_seed(1)
        yb = b(x[0])
        assert torch.equal(ya, yb)


@pytest.mark.parametrize("name, why", [
    ("mean_in_training", "does more with the input than scale it"),
    ("channel_scale_in_training", "channel by channel"),
    ("fixed_channel_noise", "channel by channel"),
    ("offset_in_training", "does more with the input than scale it"),
    ("shape_change_in_training", "does more with the input than scale it"),
])
def test_a_training_branch_that_is_not_a_pass_through_stays_a_barrier(name, why):
    model, x = ConvNeXtish([ModeHelper(name)]).eval(), _inputs()
    snap = _snapshot(model)
    analysis = fxprune.analyze(model, x)
    (barrier,) = analysis.barriers
    assert barrier.node.startswith(name)
    assert "not recognised as stochastic depth" in barrier.reason and why in barrier.reason
    assert "in train mode" in barrier.reason
    assert not analysis.group_of("stem.weight", 0)                   # the stream is fixed
    assert not any("recognised: pass-through" in n for n in analysis.notes)
    assert _unchanged(model, snap)
    check_pruning(model, x)


def test_a_non_pass_through_captured_in_train_mode_stays_a_barrier():
    model, x = ConvNeXtish([ModeHelper("mean_in_training")]).train(), _inputs()
    analysis = fxprune.analyze(model, x)
    assert len(analysis.barriers) == 1 and not analysis.group_of("stem.weight", 0)


def test_the_callers_registry_is_not_written():
    reg = fxprune.default_registry()
    analysis = fxprune.analyze(ConvNeXtish().eval(), _inputs(), registry=reg)
    assert not analysis.barriers and analysis.registry is not reg
    assert reg.rule_for_key(stochastic_depth) is None and reg.rule_for_key(drop_path) is None
    assert analysis.registry.rule_for_key(drop_path).family == "unary"


def test_a_function_with_a_registered_rule_is_left_to_it():
    reg = fxprune.default_registry()
    reg.register(STOCHASTIC_DEPTH.with_keys(fxprune.ops.Keys(functions=(channel_scale_in_training,))))
    model, x = ConvNeXtish([ModeHelper("channel_scale_in_training")]).eval(), _inputs()
    analysis = fxprune.analyze(model, x, registry=reg)
    assert not analysis.barriers and analysis.registry is reg and not analysis.notes


def test_one_call_that_is_not_a_pass_through_keeps_every_call_of_the_function_a_barrier():
    model, x = ConvNeXtish([DropOrMix("drop"), DropOrMix("mix")]).eval(), _inputs()
    analysis = fxprune.analyze(model, x)
    assert [b.node for b in analysis.barriers] == ["drop_or_mix", "drop_or_mix_1"]
    assert all("node 'drop_or_mix_1': in train mode" in b.reason for b in analysis.barriers)
    check_pruning(model, x)
    alone = fxprune.analyze(ConvNeXtish([DropOrMix("drop")]).eval(), x)  # the pass-through call alone is fine
    assert not alone.barriers and "drop_or_mix" in alone.notes[0]


def test_the_recogniser_reads_what_a_call_computes_from_the_registry():
    """Products and quotients are the rules' declarations (Rule.algebra), not op names."""
    import dataclasses

    from fxprune import ops
    from fxprune.analysis.mode_calls import _pass_through

    def drop(x, p, training):
        if not training or p == 0.0:
            return x
        return x * x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p) / (1 - p)

    spec = ir.TensorSpec((4, 8, 2, 2), torch.float32)
    registry = ops.default_registry()
    assert _pass_through(drop, (None, 0.5, None), {}, 0, spec, (2,), {}, registry) == (None, {0})
    registry.register(dataclasses.replace(ops.ELEMENTWISE_MUL, algebra=ir.Algebra.NONE))
    why, _ = _pass_through(drop, (None, 0.5, None), {}, 0, spec, (2,), {}, registry)
    assert why is not None and "does more with the input than scale it" in why
