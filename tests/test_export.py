"""The torch.export front end: ATen graphs, the same rules, the same invariants."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

import fxprune
import fxprune.analysis.capture
from fxprune.errors import GuardError, TraceError
from fxprune.modules import check_traced
from fxprune.testing import check_pruning, zoo

warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.mark.parametrize("name", ["resnet_basic", "shufflenet_v2", "vit", "llama", "densenet", "unet"])
def test_zoo_invariants_through_export(name):
    model, x = zoo.ZOO[name]()
    summary = check_pruning(model, x, plans=1, frontend="export")
    fx_groups = len(fxprune.analyze(model, x).groups)
    assert summary.groups == fx_groups  # same coupling as the symbolic_trace front end
    assert summary.barriers == 0


class ShapeBranch(nn.Module):
    """Plain symbolic_trace cannot branch on a shape; torch.export specialises it, fx's trace from
    example values freezes it behind a run-time guard."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = torch.relu(self.a(x))
        if y.shape[-1] > 4:
            y = y * 2
        return self.b(y)


def test_export_handles_what_plain_symbolic_trace_cannot():
    x = (torch.randn(1, 3, 8, 8),)
    with pytest.raises(TraceError, match="leaf_modules"):
        fxprune.analysis.capture.trace(ShapeBranch())            # plain symbolic tracing
    traced = fxprune.analyze(ShapeBranch(), x)                 # fx from the example values: guarded
    assert traced.frontend == "fx" and any(n.target is check_traced for n in traced.graph_module.graph.nodes)
    with pytest.raises(GuardError):
        traced.graph_module(torch.randn(1, 3, 4, 4))           # the branch would go the other way
    model = ShapeBranch().eval()
    result = fxprune.prune(model, x, ratio=0.5, analysis=fxprune.analyze(model, x, frontend="export"))
    assert "aten.conv2d" in result.graph_module.code
    assert result.graph_module(*x).shape == (1, 4, 8, 8)
    check_pruning(ShapeBranch().eval(), x, plans=2, frontend="export")


def test_unknown_frontend():
    with pytest.raises(fxprune.ConfigError, match="export"):
        fxprune.analyze(*zoo.lenet5(), frontend="jit")


class EvenSplit(nn.Module):
    """Regression: aten.split.Tensor takes one int; uneven pruned sections need split_with_sizes."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 14, 1)
        self.b = nn.Conv2d(7, 5, 1)
        self.c = nn.Conv2d(12, 2, 1)

    def forward(self, x):
        p, q = torch.split(self.a(x), 7, dim=1)
        return self.c(torch.cat([p, self.b(torch.relu(q))], 1))


def test_uneven_split_through_export():
    model, x = EvenSplit().eval(), (torch.randn(2, 3, 4, 4),)
    analysis = fxprune.analyze(model, x, frontend="export")
    g = analysis.group_of("a.weight", 0)[0]
    gm = fxprune.apply(analysis, {g.id: [0, 1, 9]})  # 5 + 6 channels left
    assert "split_with_sizes" in gm.code
    check_pruning(model, x, plans=4, frontend="export")
