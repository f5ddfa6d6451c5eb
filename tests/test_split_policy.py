"""``split_policy="heads"``: whole heads of fused and separate q/k/v layouts and GQA groups (issue 9).

A channel dim viewed as ``(heads, head_dim)`` or ``(3, heads, head_dim)`` is
pruned by whole heads, without node names; a policy that fixes a whole split
(``outer`` on a fused q/k/v layout) says so in the report.  The default,
``auto``, prunes whole heads where a split reaches attention and the inner
factor elsewhere (a channel shuffle); the materialised module gets its head
counts resized.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune import AnalysisConfig, ConfigError, MaterializeError
from fxprune.ops.layout import SplitPolicy, choose_axis
from fxprune.rewrite.eager import compare, resize_head_counts
from fxprune.testing import check_pruning, zoo

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


# -- the default: auto ---------------------------------------------------------------------------------
def _resolved(analysis):
    return {c.node: c.resolved.value for c in analysis.state.splits}


def _sizes(analysis):
    """Every group: its size and members with their index maps (which rows of a weight are which channel)."""
    return sorted((g.size, tuple(sorted((m.param, m.dim, tuple(m.index_map)) for m in g.members)))
                  for g in analysis.groups)


def test_auto_is_the_default_and_prunes_whole_heads_of_both_layouts():
    assert AnalysisConfig().split_policy == SplitPolicy.AUTO == "auto"
    for model in (FusedQKV().eval(), SeparateQKV().eval(), SeparateQKV(kv=2).eval()):
        analysis = fxprune.analyze(model, X)
        assert set(_resolved(analysis).values()) == {"heads"} and not analysis.notes
        assert _sizes(analysis) == _sizes(fxprune.analyze(model, X, split_policy="heads"))
        assert _sizes(analysis) != _sizes(fxprune.analyze(model, X, split_policy="inner"))


@pytest.mark.parametrize("frontend", ["fx", "export"])
@pytest.mark.parametrize("name,heads,kv", [("vit", "num_heads", None), ("vit_separate_qkv", "num_heads", None),
                                           ("llama", "n_heads", "n_kv_heads")])
def test_zoo_transformers_lose_whole_heads_by_default_and_materialise_with_their_head_counts(name, heads, kv,
                                                                                            frontend):
    model, x = zoo.ZOO[name]()
    result = fxprune.prune(model, x, ratio=0.5, frontend=frontend)
    analysis = result.analysis
    assert set(_resolved(analysis).values()) == {"heads"}
    attn = next(p for p, m in model.named_modules() if hasattr(m, heads))
    before = model.get_submodule(attn)
    small = result.materialize()                                   # ratio 0.5: the ViT's residual width = heads x 8
    after = small.get_submodule(attn)
    assert getattr(after, heads) == getattr(before, heads) // 2 and after.head_dim == before.head_dim
    if kv is not None:                                             # GQA: whole kv groups with their query heads
        assert getattr(after, kv) == getattr(before, kv) // 2 and after.n_rep == before.n_rep
    assert getattr(before, heads) == 4                             # the user's model is untouched
    assert compare(small(*x), result.graph_module(*x)) is None
    if frontend == "fx":
        check_pruning(model, x, plans=1)


def test_shufflenet_prunes_its_channel_shuffles_as_before():
    model, x = zoo.shufflenet_v2()
    auto, inner = fxprune.analyze(model, x), fxprune.analyze(model, x, split_policy="inner")
    assert auto.state.splits and set(_resolved(auto).values()) == {"inner"}
    assert _sizes(auto) == _sizes(inner) and not auto.notes
    assert _sizes(auto) != _sizes(fxprune.analyze(model, x, split_policy="heads"))   # heads: the shuffle's groups
    assert sorted(fxprune.prune(model, x, ratio=0.5).plan.items()) == \
        sorted(fxprune.prune(model, x, ratio=0.5, split_policy="inner").plan.items())


class ShuffleThenAttention(nn.Module):
    """A channel shuffle feeding attention over the pixels: ``auto`` decides each split on its own."""

    def __init__(self):
        super().__init__()
        self.conv, self.mix = nn.Conv2d(3, C, 1), nn.Conv2d(C, C, 1)
        self.attn, self.head = SeparateQKV(), nn.Linear(2, 2)

    def forward(self, x):
        B, _, Hh, W = x.shape
        y = self.conv(x).view(B, 2, C // 2, Hh, W).transpose(1, 2).reshape(B, C, Hh, W)
        tokens = self.mix(y).flatten(2).transpose(1, 2)
        return self.head(self.attn(tokens).mean(1))


def test_a_shuffle_and_attention_in_one_model_resolve_apart():
    model, x = ShuffleThenAttention().eval(), (torch.randn(2, 3, 2, 3),)
    analysis = fxprune.analyze(model, x)
    resolved = _resolved(analysis)
    assert resolved.pop("view") == "inner" and set(resolved.values()) == {"heads"}
    (shuffle,) = analysis.group_of("conv.weight", 0)
    assert shuffle.size == C // 2                                  # channels, alike in both shuffle groups
    (heads,) = [g for g in analysis.groups if any(m.param == "attn.q.weight" for m in g.producers())]
    assert heads.size == H
    overridden = fxprune.analyze(model, x, split_overrides={"view": "heads"})
    assert overridden.group_of("conv.weight", 0)[0].size == 2     # explicit overrides still win
    check_pruning(model, x, plans=1)


class WeightsOut(SeparateQKV):
    """Attention that also returns its per-head weights: the heads are model outputs, fixed."""

    def forward(self, x):
        B, T, _ = x.shape
        x = self.stem(x)
        q, k, v = (f(x).view(B, T, H, D).transpose(1, 2) for f in (self.q, self.k, self.v))
        a = (q @ k.transpose(-2, -1) / math.sqrt(D)).softmax(-1)
        y = (a @ v).transpose(1, 2).reshape(B, T, H * D)
        return self.head(x + self.o(y)), a


def test_auto_falls_back_to_head_dim_where_the_heads_are_fixed_and_says_so():
    model = WeightsOut().eval()
    analysis = fxprune.analyze(model, X)
    assert set(_resolved(analysis).values()) == {"inner"}
    notes = [n for n in analysis.notes if n.startswith("split_policy='auto': node 'view'")]
    assert len(notes) == 1 and "(4, 4) for attention, but its heads" in notes[0] and "model output" in notes[0]
    assert "prunes the inner factor (head_dim) instead" in notes[0]
    assert analysis.group_of("v.weight", 0)[0].size == D          # v's head_dim still prunable
    assert notes[0] in fxprune.prune(model, X, ratio=0.5).report.notes
    assert not fxprune.analyze(model, X, split_policy="heads").group_of("v.weight", 0)


def test_a_head_count_that_fits_two_pruned_counts_is_refused_by_name():
    model = nn.Sequential(nn.Module())
    model[0].num_heads = 4
    with pytest.raises(MaterializeError, match=r"'0' \(Module\): 0.num_heads = 4 counts the heads of splits pruned "
                                               r"to different counts \(\[2, 3\]\)"):
        resize_head_counts(model, {("0", ""): {4: {2, 3}}})
    assert resize_head_counts(model, {("0",): {4: {2}}}, skip={"0"}) == {} and model[0].num_heads == 4


class OwnHeads(nn.Module):
    """Attention in the model's own forward, its head count equal to its head_dim (both 4)."""

    def __init__(self):
        super().__init__()
        self.num_heads, self.head_dim = H, D
        self.q, self.k, self.v, self.o = (nn.Linear(C, C) for _ in range(4))

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = (f(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2) for f in (self.q, self.k, self.v))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.o(y.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim))


def test_the_head_count_is_resized_and_an_equal_head_dim_is_not():
    model = OwnHeads().eval()
    result = fxprune.prune(model, X, ratio=0.5)
    small = result.materialize()
    assert (small.num_heads, small.head_dim) == (2, 4) and (model.num_heads, model.head_dim) == (4, 4)
    assert small.q.out_features == small.o.in_features == 8
    assert compare(small(*X), result.graph_module(*X)) is None
    with pytest.raises(MaterializeError, match="head_dim = 4"):      # inner: head_dim is hard-coded
        fxprune.prune(model, X, ratio=0.5, split_policy="inner").materialize()
