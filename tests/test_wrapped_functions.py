"""Capture traces into ``torch.fx.wrap``-ped Python functions (issue 9, "Reach").

Plain ``torch.fx`` records a wrapped function as one opaque call: a channel
barrier.  fxprune traces into it unless the registry has a rule for it, and
keeps the call (a barrier, with the reason) where tracing into it would freeze
a branch on ``self.training`` or on tensor values, or fails.  A kept call that branches on
``training`` and passes channels through in both modes (stochastic depth) is recognised and
is no barrier (see ``test_wrapped_mode_functions.py``).
"""
from __future__ import annotations

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

import fxprune
from fxprune import ir
from fxprune.ops import STOCHASTIC_DEPTH, Keys
from fxprune.testing import check_pruning


# --- module-level wrapped helpers, as vision libraries write them ---------------------------------

def drop_path(x, drop_prob: float = 0.0, training: bool = False):
    """timm-style stochastic depth: ``x`` times a per-sample keep mask in training, identity otherwise."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


torch.fx.wrap("drop_path")


def window_partition(x, ws: int):
    """Swin-style: ``(B, H, W, C)`` into ``(B * windows, ws, ws, C)``."""
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, C)


torch.fx.wrap("window_partition")


def window_reverse(windows, ws: int, H: int, W: int):
    """The inverse of :func:`window_partition`."""
    C = windows.shape[-1]
    x = windows.view(-1, H // ws, W // ws, ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, C)


torch.fx.wrap("window_reverse")


def pad_to_windows(x, ws: int):
    """Swin-style padding helper: pads ``(B, H, W, C)`` to whole windows (sizes computed from the tensor)."""
    H, W = x.shape[1], x.shape[2]
    return F.pad(x, (0, 0, 0, (ws - W % ws) % ws, 0, (ws - H % ws) % ws))


torch.fx.wrap("pad_to_windows")


def positive_part(x):
    """Branches on tensor values: cannot be traced into (nor can a branch on a size computed from one)."""
    if x.sum() > 0:
        return x
    return -x


torch.fx.wrap("positive_part")


def mix_in_training(x, training: bool = False):
    """Branches on the flag but is no pass-through: in training it adds a statistic over the channels."""
    if not training:
        return x
    return x + x.mean(-1, keepdim=True)


torch.fx.wrap("mix_in_training")


class Block(nn.Module):
    def __init__(self, c: int = 8, p: float = 0.1):
        super().__init__()
        self.fc1, self.fc2, self.p = nn.Linear(c, 2 * c), nn.Linear(2 * c, c), p

    def forward(self, x):
        return x + drop_path(self.fc2(torch.relu(self.fc1(x))), self.p, self.training)


class ResNetish(nn.Module):
    """A residual stream whose every branch goes through ``drop_path``."""

    def __init__(self):
        super().__init__()
        self.stem, self.blocks, self.head = nn.Linear(3, 8), nn.Sequential(Block(), Block()), nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class MixingResNetish(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.fc, self.head = nn.Linear(3, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.stem(x)
        return self.head(h + mix_in_training(self.fc(h), self.training))


class Windows(nn.Module):
    """A residual stream through window partition / reverse helpers (shifted-window attention style)."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.stem, self.mix, self.head = nn.Linear(3, c), nn.Linear(c, c), nn.Linear(c, 2)

    def forward(self, x):
        y = self.stem(x)
        w = self.mix(window_partition(y, 2))
        return self.head(y + window_reverse(w, 2, 4, 4))


class ValueBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(positive_part(self.a(x)))


def _stream(analysis, name="stem.weight"):
    return analysis.group_of(name, 0)


def test_window_helpers_are_traced_into_and_the_residual_stream_prunes():
    model, x = Windows().eval(), (torch.randn(2, 4, 4, 3),)
    analysis = fxprune.analyze(model, x)
    targets = {n.target for n in analysis.graph_module.graph.nodes if n.op == "call_function"}
    assert window_partition not in targets and window_reverse not in targets
    assert not analysis.barriers
    (group,) = _stream(analysis)
    assert {m.param for m in group.members} >= {"stem.weight", "mix.weight", "head.weight"}
    check_pruning(model, x)
    gm = fxprune.prune(model, x, ratio=0.5).graph_module
    assert gm.get_submodule("stem").out_features == 4
    assert gm(x[0]).shape == (2, 4, 4, 2)


def test_a_padding_helper_is_traced_into():
    class Padded(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 8)

        def forward(self, x):
            return pad_to_windows(self.a(x), 2)

    gm = fxprune.analyze(Padded().eval(), (torch.randn(1, 3, 3, 3),)).graph_module
    calls = [n for n in gm.graph.nodes if n.op == "call_function"]
    assert F.pad in {n.target for n in calls} and pad_to_windows not in {n.target for n in calls}
    assert not any(ir.KEPT_CALL in n.meta for n in calls)
    assert gm(torch.randn(1, 3, 3, 3)).shape == (1, 4, 4, 8)


def test_a_helper_branching_on_the_training_flag_stays_a_call_and_is_recognised_as_stochastic_depth():
    model, x = ResNetish().eval(), (torch.randn(4, 3),)
    analysis = fxprune.analyze(model, x)
    kept = [n for n in analysis.graph_module.graph.nodes if n.target is drop_path]
    assert len(kept) == 2 and all("training flag" in n.meta[ir.KEPT_CALL] for n in kept)
    assert not analysis.graph_module.meta[ir.MODE_BRANCHES]          # nothing frozen: the call reads the flag
    assert not analysis.barriers                                     # a pass-through in both modes: no barrier
    assert any("stochastic depth" in n and "drop_path" in n for n in analysis.notes)
    assert len(_stream(analysis)) == 1                               # the residual stream is one group
    check_pruning(model, x)                                          # ...and train/eval still follow the mode


def test_a_helper_branching_on_the_training_flag_that_is_no_pass_through_says_why():
    model, x = MixingResNetish().eval(), (torch.randn(4, 3),)
    analysis = fxprune.analyze(model, x)
    (node,) = [n for n in analysis.graph_module.graph.nodes if n.target is mix_in_training]
    barrier = next(b for b in analysis.barriers if b.node == node.name)
    assert "training flag" in barrier.reason and "not recognised as stochastic depth" in barrier.reason
    assert "STOCHASTIC_DEPTH" in barrier.hint
    assert not _stream(analysis)                                     # the residual stream is a barrier
    check_pruning(model, x)


def test_a_registered_wrapped_function_stays_a_call_with_its_rule():
    reg = fxprune.default_registry()
    reg.register(STOCHASTIC_DEPTH.with_keys(Keys(functions=(drop_path,))))
    model, x = ResNetish().eval(), (torch.randn(4, 3),)
    analysis = fxprune.analyze(model, x, registry=reg)
    assert [n.op for n in analysis.graph_module.graph.nodes if n.target is drop_path] == ["call_function"] * 2
    assert not analysis.barriers
    assert len(_stream(analysis)) == 1                               # the residual stream is one group
    check_pruning(model, x, registry=reg)
    result = fxprune.prune(model, x, ratio=0.5, registry=reg)
    gm = result.graph_module
    assert gm.get_submodule("stem").out_features == 4
    gm.train()                                                       # the emitted module drops paths in train mode
    torch.manual_seed(0)
    outs = {tuple(gm(torch.ones(64, 3)).flatten().tolist()) for _ in range(3)}
    assert len(outs) > 1
    gm.eval()
    assert torch.equal(gm(x[0]), gm(x[0]))


def test_a_helper_branching_on_tensor_values_stays_a_call():
    model, x = ValueBranch().eval(), (torch.randn(2, 3),)
    analysis = fxprune.analyze(model, x)
    (node,) = [n for n in analysis.graph_module.graph.nodes if n.target is positive_part]
    assert "tracing into it failed" in node.meta[ir.KEPT_CALL]
    assert [b.node for b in analysis.barriers] == [node.name]
    assert not analysis.groups
    check_pruning(model, x)


def test_tracing_into_a_helper_leaves_the_model_and_torch_fx_as_they_were():
    model = Windows().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fxprune.analyze(model, (torch.randn(2, 4, 4, 3),))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    plain = torch.fx.symbolic_trace(model)                           # torch.fx's own behaviour is unchanged
    assert window_partition in {n.target for n in plain.graph.nodes}
