"""A reshape merging two labelled dimensions keeps the split policy's one (T5's attention, issue 9).

T5 adds a per-head relative-position bias (an ``nn.Embedding`` of ``heads``
columns) to the attention scores, so after attention the heads dimension
carries channels too; merging ``heads x head_dim`` back into the hidden width
used to fix both, leaving ``v`` and ``o`` unpruned without a barrier.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune.testing import check_pruning


class PerHeadBias(nn.Module):
    """``v`` viewed as 2 heads of 4, plus a per-head bias table, merged back into 8 for ``o``."""

    def __init__(self):
        super().__init__()
        self.v = nn.Linear(8, 8)
        self.bias = nn.Embedding(5, 2)
        self.o = nn.Linear(8, 8)

    def forward(self, x, idx):
        B, T, _ = x.shape
        v = self.v(x).view(B, T, 2, 4).transpose(1, 2)                 # [B, heads, T, head_dim]
        b = self.bias(idx).permute(1, 0).unsqueeze(0).unsqueeze(-1)     # [1, heads, T, 1]
        return self.o((v + b).transpose(1, 2).reshape(B, T, 8))


INPUTS = (torch.randn(1, 3, 8), torch.tensor([0, 1, 4]))


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_inner_policy_prunes_head_dim_and_fixes_the_heads(frontend):
    torch.manual_seed(0)
    model = PerHeadBias().eval()
    analysis = fxprune.analyze(model, INPUTS, frontend=frontend)
    assert [g.size for g in analysis.groups] == [4]                     # head_dim, in both heads
    members = {(m.param, m.dim) for m in analysis.groups[0].members}
    assert {("v.weight", 0), ("o.weight", 1)} <= members and ("bias.weight", 1) not in members
    gm = fxprune.prune(model, INPUTS, ratio=0.5, analysis=analysis).graph_module
    assert tuple(gm.get_parameter("v.weight").shape) == (4, 8) and tuple(gm.get_parameter("o.weight").shape) == (8, 4)
    assert tuple(gm.get_parameter("bias.weight").shape) == (5, 2)
    check_pruning(model, INPUTS, plans=2, frontend=frontend)


def test_outer_policy_still_prunes_whole_heads():
    torch.manual_seed(0)
    model = PerHeadBias().eval()
    analysis = fxprune.analyze(model, INPUTS, split_policy="outer")
    assert [g.size for g in analysis.groups] == [2]
    assert ("bias.weight", 1) in {(m.param, m.dim) for m in analysis.groups[0].members}
    check_pruning(model, INPUTS, plans=2, split_policy="outer")
