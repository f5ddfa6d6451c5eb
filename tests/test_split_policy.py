"""``split_policy="heads"``: whole heads of fused and separate q/k/v layouts and GQA groups (issue 9).

A channel dim viewed as ``(heads, head_dim)`` or ``(3, heads, head_dim)`` is
pruned by whole heads, without node names; a policy that fixes a whole split
(``outer`` on a fused q/k/v layout) says so in the report.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune import AnalysisConfig, ConfigError
from fxprune.ops.layout import SplitPolicy, choose_axis
from fxprune.testing import check_pruning

C, H, D = 16, 4, 4
X = (torch.randn(2, 5, C),)


class FusedQKV(nn.Module):
    """GPT-2 style attention: one Linear C -> 3C viewed as ``(B, T, 3, H, D)``."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(C, C)
        self.qkv, self.proj, self.head = nn.Linear(C, 3 * C), nn.Linear(C, C), nn.Linear(C, 2)

    def forward(self, x):
        B, T, _ = x.shape
        x = self.stem(x)
        qkv = self.qkv(x).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = (q @ k.transpose(-2, -1) / math.sqrt(D)).softmax(-1)
        y = (a @ v).transpose(1, 2).reshape(B, T, C)
        return self.head(x + self.proj(y))


class SeparateQKV(nn.Module):
    """Llama style attention: separate q/k/v projections; ``kv < H`` is grouped-query attention (repeat_kv)."""

    def __init__(self, kv: int = H):
        super().__init__()
        self.kv = kv
        self.stem = nn.Linear(C, C)
        self.q, self.k, self.v = nn.Linear(C, H * D), nn.Linear(C, kv * D), nn.Linear(C, kv * D)
        self.o, self.head = nn.Linear(H * D, C), nn.Linear(C, 2)

    def _repeat_kv(self, t):
        B, _, T, _ = t.shape
        n = H // self.kv
        return t if n == 1 else t[:, :, None].expand(B, self.kv, n, T, D).reshape(B, H, T, D)

    def forward(self, x):
        B, T, _ = x.shape
        x = self.stem(x)
        q = self.q(x).view(B, T, H, D).transpose(1, 2)
        k = self._repeat_kv(self.k(x).view(B, T, self.kv, D).transpose(1, 2))
        v = self._repeat_kv(self.v(x).view(B, T, self.kv, D).transpose(1, 2))
        a = (q @ k.transpose(-2, -1) / math.sqrt(D)).softmax(-1)
        y = (a @ v).transpose(1, 2).reshape(B, T, H * D)
        return self.head(x + self.o(y))


def _attention_groups(analysis):
    return [g for g in analysis.groups if any(m.param in ("qkv.weight", "q.weight") for m in g.producers())]


def test_choose_axis():
    assert choose_axis([0, 1, 2], SplitPolicy.HEADS) == 1       # (3, heads, head_dim): heads
    assert choose_axis([0, 1], "heads") == 0                    # (heads, head_dim): heads
    assert choose_axis([0, 1, 2], "inner") == 2 and choose_axis([0, 1, 2], "outer") == 0
    assert choose_axis([0, 1, 2], 1) == 1


def test_fused_qkv_loses_whole_heads():
    model = FusedQKV().eval()
    analysis = fxprune.analyze(model, X, split_policy="heads")
    (group,) = _attention_groups(analysis)
    assert group.size == H and len(group.prunable) == H          # one channel per head
    gm = fxprune.prune(model, X, ratio=0.5, split_policy="heads").graph_module
    assert gm.get_submodule("qkv").out_features == 3 * C // 2    # 2 of 4 heads, q, k and v alike
    assert gm.get_submodule("proj").in_features == C // 2
    assert gm(*X).shape == (2, 5, 2)
    check_pruning(model, X, split_policy="heads")


@pytest.mark.parametrize("kv", [H, 2])
def test_separate_qkv_and_gqa_lose_whole_heads_and_groups(kv):
    model = SeparateQKV(kv).eval()
    (group,) = _attention_groups(fxprune.analyze(model, X, split_policy="heads"))
    assert group.size == kv and {m.param for m in group.producers()} >= {"q.weight", "k.weight", "v.weight"}
    result = fxprune.prune(model, X, ratio=0.5, split_policy="heads", ignore="stem")
    gm = result.graph_module
    kept = max(1, kv // 2)                                       # whole kv groups, with their query heads
    assert gm.get_submodule("k").out_features == gm.get_submodule("v").out_features == kept * D
    assert gm.get_submodule("q").out_features == gm.get_submodule("o").in_features == kept * (H // kv) * D
    check_pruning(model, X, split_policy="heads")


def test_outer_on_a_fused_qkv_layout_says_it_prunes_nothing_there():
    model = FusedQKV().eval()
    analysis = fxprune.analyze(model, X, split_policy="outer")
    assert not _attention_groups(analysis)
    (note,) = analysis.notes
    assert "split_policy='outer'" in note and "(3, 4, 4)" in note and "none of these 48 channels" in note
    assert "split_policy='heads'" in note
    report = fxprune.prune(model, X, ratio=0.5, split_policy="outer").report
    assert note in report.notes and note in str(report) and note in report.to_json()
    assert f"note: {note}" in analysis.summary()
    assert not fxprune.analyze(model, X, split_policy="heads").notes


def test_the_policies_are_validated_by_name():
    assert AnalysisConfig(split_policy="heads").split_policy == "heads"
    with pytest.raises(ConfigError, match="split_policy must be 'auto', 'inner', 'outer' or 'heads'"):
        AnalysisConfig(split_policy="head")
    assert AnalysisConfig(split_overrides={"view": "heads"}).split_overrides == (("view", "heads"),)
