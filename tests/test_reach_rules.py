"""Issue 9 ("Reach"), op rules: ops real architectures use, each checked differentially.

Every test prunes through :func:`fxprune.testing.check_pruning` (the pruned model against the
zero-masked original) and asserts that the layers around the op actually shrink, or that a
pattern that cannot be mapped exactly stays a barrier.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxprune
from fxprune.testing import check_pruning


def _groups(analysis, param, dim=None):
    return analysis.group_of(param, dim)


# ---------------------------------------------------------------------------
# mask/index ops without channels: counted, not listed


class MaskBuilder(nn.Module):
    """A causal mask built from arange/cumsum/comparisons, next to a prunable MLP."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 4)

    def forward(self, x):
        n = x.shape[1]
        pos = torch.ones(n, dtype=torch.long).cumsum(0) - 1
        mask = (pos[:, None] >= torch.arange(n)[None, :]) & (pos[None, :] >= 0)
        h = self.fc2(torch.relu(self.fc1(x)))
        return h.masked_fill(~mask[..., :1], 0.0)


class ChannelCumsum(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc2(self.fc1(x).cumsum(-1))   # cumsum over channels: a real barrier


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_mask_and_index_ops_without_channels_are_counted_not_listed(frontend):
    x = torch.randn(2, 5, 4)
    analysis = fxprune.analyze(MaskBuilder(), (x,), frontend=frontend)
    assert analysis.barriers == []
    assert any("cumsum" in b.op for b in analysis.state.inert)
    assert "mask/index ops without channels" in analysis.summary()
    assert _groups(analysis, "fc1.weight", 0)
    result = fxprune.prune(MaskBuilder(), (x,), ratio=0.5, frontend=frontend)
    text = str(result.report)
    assert "barriers (channels not pruned)" not in text and f"{len(analysis.state.inert)} mask/index ops without channels" in text
    assert result.report.to_dict()["inert_ops"] == len(analysis.state.inert)
    check_pruning(MaskBuilder(), (x,), frontend=frontend)


def test_an_op_without_a_rule_on_channels_is_still_a_listed_barrier():
    analysis = fxprune.analyze(ChannelCumsum(), (torch.randn(2, 4),))
    assert len(analysis.barriers) == 1 and "cumsum" in analysis.barriers[0].op
    assert not analysis.state.inert
    assert not _groups(analysis, "fc1.weight", 0)


def test_strict_mode_ignores_ops_without_channels():
    fxprune.analyze(MaskBuilder(), (torch.randn(2, 5, 4),), strict=True)       # no channel touched: no error
    with pytest.raises(fxprune.errors.UnsupportedOpError, match="cumsum"):
        fxprune.analyze(ChannelCumsum(), (torch.randn(2, 4),), strict=True)


# ---------------------------------------------------------------------------
# nn.MultiheadAttention: whole heads, tied to embed_dim


class ViTBlock(nn.Module):
    """Patch embedding, one pre-norm transformer block on nn.MultiheadAttention, a classifier."""

    def __init__(self, batch_first=True, norm=True, need_weights=False):
        super().__init__()
        self.batch_first, self.need_weights = batch_first, need_weights
        self.patch = nn.Conv2d(3, 16, 4, stride=4)
        self.pos = nn.Parameter(torch.randn(1, 4, 16) * 0.1)
        self.norm1 = nn.LayerNorm(16) if norm else nn.Identity()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=batch_first)
        self.norm2 = nn.LayerNorm(16) if norm else nn.Identity()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, img):
        x = self.patch(img).flatten(2).transpose(1, 2) + self.pos          # [B, N, E]
        if not self.batch_first:
            x = x.transpose(0, 1)
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=self.need_weights)[0]
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return self.head(x.mean(1 if self.batch_first else 0))


def _img():
    return (torch.randn(2, 3, 8, 8),)


@pytest.mark.parametrize("batch_first", [True, False])
def test_vit_block_on_multihead_attention_prunes_heads_and_hidden_size(batch_first):
    torch.manual_seed(0)
    model = ViTBlock(batch_first).eval()
    analysis = fxprune.analyze(model, _img())
    assert analysis.barriers == []
    heads = analysis.group_of("attn.in_proj_weight", 0)
    assert len(heads) == 1 and heads[0].size == 4                     # one unit per head
    assert heads[0] is analysis.group_of("patch.weight", 0)[0]          # the residual stream, block by block
    check_pruning(model, _img())
    result = fxprune.prune(model, _img(), ratio=0.5)
    attn = result.graph_module.get_submodule("attn")
    assert isinstance(attn, nn.MultiheadAttention)
    assert (attn.embed_dim, attn.num_heads, attn.head_dim) == (8, 2, 4)
    assert attn.in_proj_weight.shape == (24, 8) and attn.out_proj.weight.shape == (8, 8)
    assert result.graph_module.get_submodule("fc1").out_features < 32
    assert result.graph_module.get_submodule("patch").out_channels == 8
    small, img = result.materialize(), _img()
    with torch.no_grad():
        assert torch.allclose(small(*img), result.graph_module(*img), atol=1e-6)


def test_heads_without_norms_are_checked_value_by_value():
    torch.manual_seed(0)
    model = ViTBlock(norm=False).eval()
    analysis = fxprune.analyze(model, _img())
    assert not analysis.group_of("attn.in_proj_weight", 0)[0].mixing
    summary = check_pruning(model, _img())
    assert summary.mixing_groups == 0 and summary.groups_checked == summary.groups


def test_attention_weights_averaged_over_heads_make_the_heads_mixing():
    model = ViTBlock(norm=False, need_weights=True).eval()
    assert fxprune.analyze(model, _img()).group_of("attn.in_proj_weight", 0)[0].mixing
    check_pruning(model, _img())


class CrossAttention(nn.Module):
    """Separate q/k/v weights (kdim, vdim != embed_dim): the key and value widths prune on their own."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(3, 8), nn.Linear(3, 6), nn.Linear(3, 5)
        self.attn = nn.MultiheadAttention(8, 2, kdim=6, vdim=5, batch_first=True)
        self.out = nn.Linear(8, 2)

    def forward(self, x, memory):
        return self.out(self.attn(self.q(x), self.k(memory), self.v(memory), need_weights=False)[0])


def test_cross_attention_with_separate_weights_prunes_kdim_and_vdim():
    inputs = (torch.randn(2, 4, 3), torch.randn(2, 7, 3))
    model = CrossAttention().eval()
    analysis = fxprune.analyze(model, inputs)
    assert analysis.group_of("attn.k_proj_weight", 1)[0].size == 6
    assert analysis.group_of("attn.v_proj_weight", 1)[0].size == 5
    check_pruning(model, inputs)
    attn = fxprune.prune(model, inputs, ratio=0.5).graph_module.get_submodule("attn")
    assert (attn.embed_dim, attn.num_heads, attn.kdim, attn.vdim) == (4, 1, 3, 3)
    assert attn.k_proj_weight.shape == (4, 3) and attn.v_proj_weight.shape == (4, 3)


def test_multihead_attention_variants_are_sound_op_by_op():
    """The harness's samples (tests/_op_samples.py) also through fx: sequence-first, separate widths,
    per-head weights, bias_k/bias_v with a mask."""
    import _op_samples
    from fxprune.testing.single_op import single_op_model
    from fxprune.testing.soundness import check_rules

    for key, sample in [s for s in _op_samples.EXTRA_SAMPLES if s[0] is nn.MultiheadAttention]:
        model, x = single_op_model(key, sample)
        assert check_rules(model, x, trials=3).checked_keys.get(nn.MultiheadAttention), sample


def test_regression_export_sdpa_mask_follows_key_positions():
    """bias_k adds a key position whose labels are a parameter's: the attention mask's key dim must
    follow it (before the fix, removing that position at the sdpa node left the mask a column too wide)."""
    from fxprune.testing.soundness import check_rules

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.m = nn.Linear(6, 6), nn.MultiheadAttention(6, 2, batch_first=True, add_bias_kv=True)

        def forward(self, q):
            mask = torch.ones(5, 5).triu(1).bool()
            x = self.a(q)
            return self.m(x, x, x, need_weights=False, attn_mask=mask)[0].sum(-1)

    torch.manual_seed(0)
    report = check_rules(Wrap().eval(), (torch.randn(2, 5, 6),), trials=3, frontend="export")
    assert report.nodes_checked > 0


# ---------------------------------------------------------------------------
# barrier hints: runnable Python, UNARY only where it could fit


class Scaler(nn.Module):
    """A module with a parameter and its own forward: no rule, kept whole as a leaf."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(8))

    def forward(self, x):
        return x * self.w


class WithLeaf(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.s, self.b = nn.Linear(4, 8), Scaler(), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(self.s(self.a(x)))


def _hint(analysis, op_part):
    return next(b.hint for b in analysis.barriers if op_part in b.op)


def _run_hint(hint):
    """Execute the registration the hint names; return the registry."""
    import re

    code = re.search(r"(reg = .*?); then pass", hint).group(1)
    scope = {"fxprune": fxprune, "torch": torch, "propagate": lambda ctx: None,
             "tests": __import__("sys").modules[__name__]}
    exec(code, scope)
    return scope["reg"]


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_barrier_hints_are_runnable_and_offer_unary_only_where_it_could_fit(frontend):
    x = (torch.randn(2, 4),)
    cumsum = _hint(fxprune.analyze(ChannelCumsum(), x, frontend=frontend), "cumsum")
    assert "UNARY" in cumsum                                   # one tensor in, same shape out: it may be
    reg = _run_hint(cumsum)
    key = torch.ops.aten.cumsum.default if frontend == "export" else fxprune.ops.Method("cumsum")
    assert reg.rule_for_key(key).family == "my_op"
    if frontend == "export":
        assert "Keys(aten=('cumsum',))" in cumsum
    else:
        scaler = _hint(fxprune.analyze(WithLeaf(), x, leaf_modules=[Scaler]), "Scaler")
        assert "UNARY" not in scaler                           # a parameter: never elementwise-only
        assert "Keys(modules=(" in scaler


def test_a_shape_changing_op_gets_no_unary_hint():
    class Flip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(16, 2)

        def forward(self, x):
            return self.b(torch.kron(self.a(x), torch.ones(1, 2)))

    analysis = fxprune.analyze(Flip(), (torch.randn(2, 4),))
    hint = _hint(analysis, "kron")
    assert "UNARY" not in hint and "Keys(functions=(torch.kron,))" in hint
    assert _run_hint(hint).rule_for_key(torch.kron).family == "my_op"


# ---------------------------------------------------------------------------
# F.normalize, torch.roll, F.pad on [B, H, W, C], torch.einsum, bias-table gathers


class Normalized(nn.Module):
    def __init__(self, act=nn.Identity()):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(4, 8), act, nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(F.normalize(self.act(self.fc1(x)), dim=-1))


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_normalize_over_channels_is_exact_where_removed_channels_are_zero(frontend):
    """Exported, F.normalize is a norm, clamp_min, expand_as of the norm and a division: the expanded
    norm takes the channels it is divided into (before, it fixed them) and the norm is a sum."""
    x = (torch.randn(3, 4),)
    analysis = fxprune.analyze(Normalized(), x, frontend=frontend)
    group = analysis.group_of("fc1.weight", 0)[0]
    assert not group.mixing and analysis.barriers == []
    assert check_pruning(Normalized(), x, frontend=frontend).groups_checked == 1
    small = fxprune.prune(Normalized(), x, ratio=0.5, frontend=frontend).graph_module
    assert small.get_submodule("fc1").weight.shape == (4, 4)
    # sigmoid(0) = 0.5: removed channels are no longer zero, the norm mixes them
    assert fxprune.analyze(Normalized(nn.Sigmoid()), x, frontend=frontend).group_of("fc1.weight", 0)[0].mixing


def test_a_negative_p_norm_over_channels_is_mixing():
    class Harmonic(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = self.fc1(x)
            return self.fc2(h / h.norm(-1, dim=-1, keepdim=True))

    assert fxprune.analyze(Harmonic(), (torch.randn(3, 4),)).group_of("fc1.weight", 0)[0].mixing


class Windows(nn.Module):
    """Swin-style [B, H, W, C] steps: a cyclic shift, a pad to a window multiple, a pad of channels."""

    def __init__(self, roll_dims=(1, 2), channel_pad=None, mode="constant"):
        super().__init__()
        self.roll_dims, self.channel_pad, self.mode = roll_dims, channel_pad, mode
        self.fc1 = nn.Linear(3, 8)
        self.fc2 = nn.Linear(8 + sum(channel_pad or (0, 0)), 2)

    def forward(self, x):                                                  # x: [B, H, W, 3]
        h = torch.roll(self.fc1(x), shifts=(1, 1), dims=self.roll_dims)
        h = F.pad(h, (0, 0, 0, 1, 0, 1))                                   # H, W to a multiple of 2
        if self.channel_pad:
            h = F.pad(h, self.channel_pad, mode=self.mode)
        return self.fc2(h)


def _hw():
    return (torch.randn(2, 3, 3, 3),)


def test_roll_and_pad_of_spatial_dims_keep_channels_prunable():
    analysis = fxprune.analyze(Windows(), _hw())
    assert analysis.barriers == [] and analysis.group_of("fc1.weight", 0)[0].size == 8
    check_pruning(Windows(), _hw())
    assert fxprune.prune(Windows(), _hw(), ratio=0.5).graph_module.fc2.in_features == 4


def test_constant_padding_of_a_channel_dim_keeps_the_channels_between_fixed_pads():
    model = Windows(channel_pad=(2, 1))
    analysis = fxprune.analyze(model, _hw())
    group = analysis.group_of("fc1.weight", 0)[0]
    assert analysis.barriers == [] and group.size == 11 and len(group.fixed) == 3     # 8 channels, 3 pads
    check_pruning(model, _hw())
    small = fxprune.prune(model, _hw(), ratio=0.5).graph_module
    assert (small.fc1.out_features, small.fc2.in_features) == (4, 7)


class ChannelReflect(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 8), nn.Linear(10, 2)

    def forward(self, x):
        return self.fc2(F.pad(self.fc1(x), (1, 1), mode="reflect"))


@pytest.mark.parametrize("model,x", [(Windows(roll_dims=(1, 3)), _hw()), (ChannelReflect(), (torch.randn(2, 5, 3),))],
                         ids=["roll-channels", "reflect-channels"])
def test_rolling_or_reflecting_a_channel_dim_is_a_barrier(model, x):
    analysis = fxprune.analyze(model, x)
    assert len(analysis.barriers) == 1 and not analysis.group_of("fc1.weight", 0)
    check_pruning(model, x)


class EinsumAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(4, 5)
        self.w = nn.Parameter(torch.randn(3, 5))

    def forward(self, x):
        scores = torch.einsum("bqc,bkc->bqk", self.q(x), self.k(x)).softmax(-1)
        out = torch.einsum("bqk,bkd->bqd", scores, self.v(x))
        return torch.einsum("...d,od", out, self.w)                       # implicit output: ...o


def test_einsum_subscripts_drive_the_labels():
    x = (torch.randn(2, 5, 4),)
    analysis = fxprune.analyze(EinsumAttention(), x)
    assert analysis.barriers == []
    qk = analysis.group_of("q.weight", 0)[0]
    assert qk is analysis.group_of("k.weight", 0)[0] and qk.size == 6      # 'c' summed: q and k tied
    assert analysis.group_of("v.weight", 0)[0] is analysis.group_of("w", 1)[0]
    assert check_pruning(EinsumAttention(), x).groups_checked == 2
    small = fxprune.prune(EinsumAttention(), x, ratio=0.5).graph_module
    assert (small.q.out_features, small.v.out_features, small.w.shape) == (3, 3, (3, 3))


class RelativeBias(nn.Module):
    """timm/Swin-style attention: fused qkv, ``qkv.unbind(0)``, a relative-position bias table gather."""

    def __init__(self, heads=2, n=4):
        super().__init__()
        self.heads, self.n = heads, n
        self.qkv, self.proj, self.out = nn.Linear(8, 3 * 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.table = nn.Parameter(torch.randn(2 * n - 1, heads))
        coords = torch.arange(n)
        self.register_buffer("index", (coords[:, None] - coords[None, :] + n - 1).flatten())

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self.table[self.index].view(n, n, -1).permute(2, 0, 1)
        attn = (q @ k.transpose(-2, -1) + bias.unsqueeze(0)).softmax(-1)
        return self.out(self.proj((attn @ v).transpose(1, 2).reshape(b, n, c)))


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_unbind_and_a_bias_table_gather_are_not_barriers(frontend):
    x = (torch.randn(2, 4, 8),)
    analysis = fxprune.analyze(RelativeBias(), x, frontend=frontend)
    assert analysis.barriers == []
    assert analysis.group_of("proj.weight", 0)                                # the output projection prunes
    check_pruning(RelativeBias(), x, frontend=frontend)


def test_a_bias_table_follows_whole_heads():
    x = (torch.randn(2, 4, 8),)
    overrides = {"reshape": 1}                                                # prune the heads factor
    analysis = fxprune.analyze(RelativeBias(), x, split_overrides=overrides)
    heads = analysis.group_of("table", 1)
    assert len(heads) == 1 and heads[0] is analysis.group_of("qkv.weight", 0)[0] and heads[0].size == 2
    check_pruning(RelativeBias(), x, split_overrides=overrides)
    small = fxprune.prune(RelativeBias(), x, ratio=0.5, split_overrides=overrides).graph_module
    assert small.table.shape == (7, 1) and small.qkv.out_features == 12


class Gathered(nn.Module):
    """``torch.gather`` along positions: the channel dim of input, index and output is one."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)
        self.register_buffer("index", torch.randint(0, 5, (2, 3, 8)))

    def forward(self, x):                                                  # x: [2, 5, 4]
        return self.fc2(torch.gather(self.fc1(x), 1, self.index))


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_gather_along_positions_keeps_channels(frontend):
    x = (torch.randn(2, 5, 4),)
    analysis = fxprune.analyze(Gathered(), x, frontend=frontend)
    assert analysis.barriers == [] and analysis.group_of("fc1.weight", 0)[0].size == 8
    check_pruning(Gathered(), x, frontend=frontend)
    small = fxprune.prune(Gathered(), x, ratio=0.5, frontend=frontend).graph_module
    assert small.get_submodule("fc1").weight.shape == (4, 4) and small.index.shape == (2, 3, 4)
