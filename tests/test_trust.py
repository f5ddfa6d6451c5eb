"""Regression tests for the verification holes adversarial probes found (issue 8, part A).

Each test is named after the behaviour it holds fxprune to, and failed on the
main branch before the fix (commit b50a4cb).
"""
from __future__ import annotations


import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxprune
from fxprune import ir
from fxprune.testing import check_pruning


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------------------- 1. in-place ops


class _UnusedInplace(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.a, self.b, self.op = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 2, 1), op

    def forward(self, x):
        y = self.a(x)
        self.op(y)          # result not reassigned: only the side effect matters
        return self.b(y)


@pytest.mark.parametrize("op", [
    lambda y: y.clamp_(min=0), lambda y: y.mul_(2.0), torch.relu_, lambda y: F.relu(y, inplace=True),
    lambda y: F.relu(y, True), lambda y: y.add_(y), lambda y: y.__imul__(3.0),
], ids=["clamp_", "mul_", "torch.relu_", "F.relu(inplace=True)", "F.relu(y, True)", "add_", "__imul__"])
def test_unused_inplace_ops_survive_the_rewrite(op):
    model, x = _UnusedInplace(op).eval(), torch.randn(2, 3, 5, 5)
    analysis = fxprune.analyze(model, (x,))
    assert torch.equal(fxprune.apply(analysis, {})(x), model(x))
    check_pruning(model, (x,))


def test_inplace_module_with_unused_output_survives_the_rewrite():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.act, self.b = nn.Conv2d(3, 6, 1), nn.ReLU(inplace=True), nn.Conv2d(6, 2, 1)

        def forward(self, x):
            y = self.a(x) - 0.5
            self.act(y)
            return self.b(y)

    model, x = M().eval(), torch.randn(2, 3, 5, 5)
    assert torch.equal(fxprune.apply(fxprune.analyze(model, (x,)), {})(x), model(x))


def test_inplace_write_makes_later_reads_see_its_channels():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(4, 6)

        def forward(self, x):
            y = self.a(x)
            y.add_(1.0)                 # y's removed channels are 1 from here on
            return y.sum(-1) + self.b(x).sum(-1) * 0

    model, x = M().eval(), torch.randn(3, 4)
    analysis = fxprune.analyze(model, (x,))
    assert analysis.group_of("a.weight", 0)[0].mixing
    check_pruning(model, (x,))


# --------------------------------------------------------------------------- 2. weight standardisation


class ScaledStdConv2d(nn.Conv2d):
    """NF-ResNet's weight-standardised conv (its own forward)."""

    def __init__(self, *args, eps=1e-6, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.rand(self.out_channels, 1, 1, 1) + 0.5)
        self.scale, self.eps = self.weight[0].numel() ** -0.5, eps

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         weight=(self.gain * self.scale).view(-1), training=True, momentum=0.,
                         eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class StdConv2d(nn.Conv2d):
    """Weight standardisation written with mean/var reductions."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.var(dim=(1, 2, 3), keepdim=True) + 1e-5).sqrt()
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


@pytest.mark.parametrize("conv", [ScaledStdConv2d, StdConv2d])
@pytest.mark.parametrize("kernel", [1, 3])
def test_weight_standardisation_makes_its_input_channels_mixing(conv, kernel):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), conv(8, 4, kernel, padding=kernel // 2),
                          nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(2, 3, 6, 6)
    analysis = fxprune.analyze(model, (x,))
    groups = analysis.group_of("2.weight", 1)
    assert not groups or groups[0].mixing
    check_pruning(model, (x,))


def test_training_mode_batch_norm_statistics_over_a_channel_dim_are_mixing():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.out = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):               # [B, T, C] normalised per token: C is a statistics dim
            return self.out(F.batch_norm(self.fc(x), None, None, training=True))

    analysis = fxprune.analyze(M(), (torch.randn(2, 3, 4),))
    assert analysis.group_of("fc.weight", 0)[0].mixing


# --------------------------------------------------------------------------- 3. dead channels that are not zero


_NOT_ZERO = {"sigmoid": torch.sigmoid, "plus_one": lambda t: t + 1, "exp": torch.exp, "cos": torch.cos,
             "less_than": lambda t: (t < 1).float(), "softplus": F.softplus,
             "clamp_min": lambda t: t.clamp(min=0.5), "pad_value": lambda t: F.pad(t.transpose(1, 2), (1, 1), value=1.0).transpose(1, 2)}
_ZERO = {"relu": torch.relu, "gelu": F.gelu, "tanh": torch.tanh, "times_two": lambda t: t * 2,
         "greater_than_0_times": lambda t: (t > 0).float() * t, "clamp_0": lambda t: t.clamp(min=0)}


class _SumAfter(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.a, self.b, self.f = nn.Linear(4, 8), nn.Linear(4, 8), f

    def forward(self, x):
        h = self.f(self.a(x))
        return h.sum(-1, keepdim=True) + (self.f(self.b(x)) @ h.transpose(-1, -2)).sum(-1, keepdim=True)


@pytest.mark.parametrize("name", sorted(_NOT_ZERO))
def test_a_sum_over_channels_that_are_not_zero_once_removed_is_mixing(name):
    model, x = _SumAfter(_NOT_ZERO[name]).eval(), torch.randn(2, 3, 4)
    analysis = fxprune.analyze(model, (x,))
    assert analysis.group_of("a.weight", 0)[0].mixing
    check_pruning(model, (x,))


@pytest.mark.parametrize("name", sorted(_ZERO))
def test_a_sum_over_channels_that_stay_zero_is_exact(name):
    model, x = _SumAfter(_ZERO[name]).eval(), torch.randn(2, 3, 4)
    analysis = fxprune.analyze(model, (x,))
    assert not analysis.group_of("a.weight", 0)[0].mixing
    check_pruning(model, (x,))


def test_zeros_are_recorded_per_dimension():
    model, x = _SumAfter(torch.sigmoid).eval(), torch.randn(2, 3, 4)
    gm = fxprune.analyze(model, (x,)).graph_module
    zeros = {n.name: n.meta.get(ir.ZEROS) for n in gm.graph.nodes}
    assert zeros["a"] == (False, False, True) and zeros["sigmoid"] == (False, False, False)


def test_a_scale_parameter_reduced_on_its_own_is_not_zero_once_removed():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.gamma = nn.Linear(4, 6), nn.Parameter(torch.rand(6) + 0.5)

        def forward(self, x):
            h = self.fc(x) * self.gamma          # gamma is a scale: the mask keeps it
            return h.sum(-1) + self.gamma.sum()

    model, x = M().eval(), torch.randn(3, 4)
    assert fxprune.analyze(model, (x,)).groups[0].mixing
    check_pruning(model, (x,))
