"""Specifications of the core compiler: groups, rewrite, report, errors, invariants."""
from __future__ import annotations

import copy
import json

import networkx as nx
import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

import fxprune
from fxprune.errors import (
    ConfigError,
    ExampleInputError,
    PlanError,
    TraceError,
    UnsupportedOpError,
)
from fxprune.testing import zoo
from fxprune.testing.check import check_pruning, mask_original

import _golden
import _golden_nets as G


# ---------------------------------------------------------------------------
# golden group listings


@pytest.mark.parametrize("name", ["resnet_block", "densenet_block", "channel_shuffle"])
def test_golden_listing(name):
    model, x = getattr(G, name)()
    analysis = fxprune.analyze(model, x)
    assert G.listing(analysis) + "\n" == getattr(_golden, name.upper())


def test_channel_shuffle_couples_both_halves_exactly():
    """Pruning a shuffled channel removes it from the identity half and the branch alike."""
    model, x = G.channel_shuffle()
    analysis = fxprune.analyze(model, x)
    g = analysis.group_of("stem.weight", 0)[0]
    # channel 0 of the stem is tied to output channel 0 of the first unit's branch
    branch = next(m for m in g.members if m.param == "body.0.branch2.5.weight")
    stem = next(m for m in g.members if m.param == "stem.weight")
    assert branch.index_map[0] == stem.index_map[0]
    assert branch.index_map[1] == stem.index_map[1]
    pruned = fxprune.apply(analysis, {g.id: [2]})
    ref = mask_original(analysis, {g.id: [2]})
    torch.testing.assert_close(pruned(*x), ref(*x), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# the zoo: every invariant on every architecture


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_zoo_invariants(name):
    model, x = zoo.ZOO[name]()
    summary = check_pruning(model, x, plans=1, seed=1)
    assert summary.groups > 0
    assert summary.barriers == 0, fxprune.analyze(model, x).barriers
    # something non-mixing was actually checked against the masked original
    assert summary.groups_checked > 0


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_zoo_prune_half_is_smaller_and_retraces(name):
    model, x = zoo.ZOO[name]()
    before = copy.deepcopy(model.state_dict())
    result = fxprune.prune(model, x, ratio=0.5)
    gm = result.graph_module
    assert result.report.params_after < result.report.params_before
    assert result.report.macs_after < result.report.macs_before
    with torch.no_grad():
        assert gm(*x).shape == model(*x).shape
    fx.symbolic_trace(gm).graph.lint()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_vit_emitted_code_has_smaller_constants():
    model, x = zoo.vit()
    result = fxprune.prune(model, x, ratio=0.5, split_policy="inner")
    code = result.graph_module.code
    # the fused qkv reshape (B, N, 3, heads, head_dim) now has head_dim 4 instead of 8
    assert ", 3, 4, 4)" in code and ", 3, 4, 8)" not in code
    qkv = result.graph_module.get_submodule("blocks.0.attn.qkv")
    assert qkv.out_features == 48 and qkv.weight.shape == (48, 16)  # residual stream 32 -> 16
    code = fxprune.prune(model, x, ratio=0.5).graph_module.code      # the default: 2 of 4 heads
    assert ", 3, 2, 8)" in code and ", 3, 4, 8)" not in code


def test_sdpa_scale_is_pinned_when_head_dim_shrinks():
    model, x = zoo.vit_separate_qkv()
    analysis = fxprune.analyze(model, x, split_policy="inner")
    result = fxprune.prune(model, x, ratio=0.5, analysis=analysis)
    assert "scale = 0.35355" in result.graph_module.code  # 1/sqrt(8), the original head_dim


def test_llama_gqa_rotary_grouping():
    model, x = zoo.llama()
    analysis = fxprune.analyze(model, x, split_policy="inner")    # head_dim units (the default prunes heads)
    attn = model.layers[0].self_attn
    q = analysis.group_of("layers.0.self_attn.q_proj.weight", 0)[0]
    params = {m.param for m in q.members}
    # q and k share head_dim units (contraction), rotary pairs d with d + D/2,
    # and the rotary tables are sliced with them
    assert {"layers.0.self_attn.k_proj.weight", "layers.0.self_attn.cos"} <= params
    assert q.size == attn.head_dim // 2
    q_rows = next(m for m in q.members if m.param.endswith("q_proj.weight"))
    assert q_rows.index_map[0] == q_rows.index_map[attn.head_dim // 2]  # rotary pair
    assert q_rows.index_map[0] == q_rows.index_map[attn.head_dim]       # same dim, next head
    v = analysis.group_of("layers.0.self_attn.v_proj.weight", 0)[0]
    assert "layers.0.self_attn.o_proj.weight" in {m.param for m in v.members}
    check_pruning(model, x, plans=2, seed=3)


def test_meta_device_model_is_analysed_without_weights():
    torch.manual_seed(0)
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 8))
    analysis = fxprune.analyze(model, (torch.randn(2, 64),))
    assert [g.size for g in analysis.groups] == [128]
    gm = fxprune.apply(analysis, {0: list(range(64))})
    assert gm.get_submodule("0").weight.shape == (64, 64)
    assert gm.get_submodule("0").weight.device.type == "meta"


# ---------------------------------------------------------------------------
# rules and barriers


class Weird(nn.Module):
    def forward(self, x):
        return torch.fft.fft(x).real


class WithWeird(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(8, 8, 1)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.a(x)
        y = torch.fft.fft(y).abs()  # fft has no rule: a barrier
        return self.c(self.b(y))


def test_unknown_op_is_a_barrier_never_elementwise():
    model = WithWeird().eval()
    analysis = fxprune.analyze(model, (torch.randn(1, 3, 4, 4),))
    assert len(analysis.barriers) == 1
    barrier = analysis.barriers[0]
    assert "fft" in barrier.op and "no channel rule" in barrier.reason
    params = {m.param for g in analysis.groups for m in g.members if m.role == "producer"}
    assert "a.weight" not in params  # a's channels feed the barrier: not prunable
    assert "b.weight" in params      # b's are fine
    report = fxprune.prune(model, (torch.randn(1, 3, 4, 4),), ratio=0.5).report
    assert "fft" in str(report)


def test_strict_mode_names_the_op_and_the_fix():
    with pytest.raises(UnsupportedOpError, match=r"fft.*register"):
        fxprune.analyze(WithWeird(), (torch.randn(1, 3, 4, 4),), strict=True)


def test_registering_a_rule_lifts_the_barrier():
    reg = fxprune.default_registry()
    reg.register(torch.fft.fft, rule=fxprune.ops.UNARY)
    analysis = fxprune.analyze(WithWeird(), (torch.randn(1, 3, 4, 4),), registry=reg)
    assert not analysis.barriers
    # and the default registry is untouched (no global state)
    assert fxprune.analyze(WithWeird(), (torch.randn(1, 3, 4, 4),)).barriers


class SE(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Conv2d(8, 2, 1)
        self.fc2 = nn.Conv2d(2, 8, 1)
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(y, 1)))))
        return self.out(y * s)


def test_se_broadcast_multiply_couples_gate_and_features():
    analysis = fxprune.analyze(SE().eval(), (torch.randn(2, 3, 8, 8),))
    g = analysis.group_of("conv.weight", 0)[0]
    assert {m.param for m in g.members} >= {"conv.weight", "fc1.weight", "fc2.weight", "fc2.bias", "out.weight"}
    check_pruning(SE().eval(), (torch.randn(2, 3, 8, 8),), plans=3)


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.g = nn.Conv2d(8, 12, 3, padding=1, groups=4)
        self.dw = nn.Conv2d(12, 24, 3, padding=1, groups=12)  # depthwise, multiplier 2
        self.gn = nn.GroupNorm(4, 24)
        self.out = nn.Conv2d(24, 2, 1)

    def forward(self, x):
        return self.out(self.gn(self.dw(self.g(self.a(x)))))


def test_grouped_depthwise_and_groupnorm_stay_exact():
    model = Grouped().eval()
    analysis = fxprune.analyze(model, (torch.randn(1, 3, 6, 6),))
    # grouped conv: 2 input channels per group are pruned uniformly across the 4 groups
    assert analysis.group_of("a.weight", 0)[0].size == 2
    check_pruning(model, (torch.randn(1, 3, 6, 6),), plans=3)
    result = fxprune.prune(model, (torch.randn(1, 3, 6, 6),), ratio=0.5)
    gm = result.graph_module
    assert gm.get_submodule("g").groups == 4
    assert gm.get_submodule("dw").groups == gm.get_submodule("dw").in_channels


class Slices(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 12)
        self.b = nn.Linear(4, 2)
        self.c = nn.Linear(4, 2)

    def forward(self, x):
        y = self.a(x)
        return self.b(y[:, :4]) + self.c(y[:, 8:]) + y[:, 4:8].sum(-1, keepdim=True)


def test_channel_slices_get_new_bounds():
    model = Slices().eval()
    x = (torch.randn(3, 4),)
    analysis = fxprune.analyze(model, x)
    check_pruning(model, x, plans=4)
    gm = fxprune.apply(analysis, {analysis.groups[0].id: [0, 5, 9]})
    assert "slice(None, 3, None)" in gm.code and "slice(6, None, None)" in gm.code


# ---------------------------------------------------------------------------
# selection


def test_ignore_keeps_a_layer_and_unknown_names_are_listed():
    model, x = zoo.lenet5()
    result = fxprune.prune(model, x, ratio=0.5, ignore=["conv1"])
    assert result.graph_module.get_submodule("conv1").out_channels == 6
    with pytest.raises(ConfigError, match="conv_1"):
        fxprune.prune(model, x, ratio=0.5, ignore=["conv_1"])


def test_round_to_and_floors():
    model = nn.Sequential(nn.Linear(4, 30), nn.ReLU(), nn.Linear(30, 2))
    gm = fxprune.prune(model, (torch.randn(1, 4),), ratio=0.7, round_to=8).graph_module
    assert gm.get_submodule("0").out_features % 8 == 0
    gm = fxprune.prune(model, (torch.randn(1, 4),), ratio=0.99).graph_module
    assert gm.get_submodule("0").out_features >= 1


def test_global_ranking_respects_cap():
    model, x = zoo.resnet_basic()
    res = fxprune.prune(model, x, ratio=0.5, global_ranking=True, max_ratio=0.6)
    for d in res.report.groups:
        assert d.removed <= int(0.6 * d.size)
    total = sum(d.size - d.fixed for d in res.report.groups)
    assert sum(d.removed for d in res.report.groups) <= 0.5 * total + 1


def test_l1_removes_lowest_norm_channels():
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 0], [0.1, 0], [2.0, 0], [0.2, 0]]))
    result = fxprune.prune(model, (torch.randn(1, 2),), ratio=0.5)
    assert result.plan == {0: [1, 3]}
    assert torch.equal(result.graph_module.get_submodule("0").weight[:, 0], torch.tensor([3.0, 2.0]))


# ---------------------------------------------------------------------------
# errors and untouched inputs


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 2)

    def forward(self, x):
        if x.sum() > 0:
            return self.a(x)
        return x


def test_untraceable_model_names_the_line_and_the_escape_hatch():
    with pytest.raises(TraceError) as info:
        fxprune.analyze(Untraceable(), (torch.randn(1, 2),))
    msg = str(info.value)
    assert "if x.sum() > 0" in msg and "leaf_modules" in msg


def test_leaf_module_escape_hatch():
    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Untraceable()
            self.b = nn.Linear(2, 3)

        def forward(self, x):
            return self.b(self.inner(x))

    analysis = fxprune.analyze(Outer(), (torch.randn(1, 2),), leaf_modules=[Untraceable])
    assert analysis.barriers and analysis.barriers[0].node == "inner"


def test_wrong_example_inputs_fail_before_analysis():
    model, _ = zoo.lenet5()
    with pytest.raises(ExampleInputError, match="conv1"):
        fxprune.analyze(model, (torch.randn(2, 3, 28, 28),))
    with pytest.raises(ExampleInputError, match="positional"):
        fxprune.analyze(model, (torch.randn(2, 1, 28, 28), torch.randn(1)))


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2, "half"])
def test_impossible_ratio(bad):
    model, x = zoo.lenet5()
    with pytest.raises(ConfigError, match="ratio"):
        fxprune.prune(model, x, ratio=bad)


def test_unknown_scorer_lists_valid_ones():
    model, x = zoo.lenet5()
    with pytest.raises(ConfigError, match="l1"):
        fxprune.prune(model, x, scorer="l7")


def test_bad_plans():
    model, x = zoo.lenet5()
    a = fxprune.analyze(model, x)
    with pytest.raises(PlanError, match="group 99"):
        fxprune.apply(a, {99: [0]})
    with pytest.raises(PlanError, match="all"):
        fxprune.apply(a, {0: list(range(a.groups[0].size))})


def test_input_untouched_even_when_rewrite_fails():
    model, x = zoo.resnet_basic()
    snap = {k: v.clone() for k, v in model.state_dict().items()}
    a = fxprune.analyze(model, x)
    with pytest.raises(PlanError):
        fxprune.apply(a, {0: [10_000]})
    model.train()
    fxprune.analyze(model, (torch.randn(2, 3, 32, 32),))  # train mode must not touch BN stats
    model.eval()
    for k, v in model.state_dict().items():
        assert torch.equal(v, snap[k]), k


def test_pruned_module_does_not_share_storage_with_input():
    model, x = zoo.lenet5()
    gm = fxprune.prune(model, x, ratio=0.0).graph_module
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), gm.named_parameters()):
        assert p1.data_ptr() != p2.data_ptr()


def test_pruned_and_kept_tensors_share_no_storage_with_the_input_and_aliases_follow_the_slice():
    # The rewrite copies whole only the tensors it keeps; sliced ones replace the originals
    # wherever the module tree refers to them (here a plain attribute aliasing a weight).
    model, x = zoo.resnet_basic()
    model.conv1.alias = model.conv1.weight
    storages = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    gm = fxprune.prune(model, x, ratio=0.5).graph_module
    for t in [*gm.parameters(), *gm.buffers()]:
        assert t.untyped_storage().data_ptr() not in storages
    conv1 = gm.get_submodule("conv1")
    assert conv1.weight.shape[0] < model.conv1.weight.shape[0]
    assert conv1.alias is conv1.weight
    assert model.conv1.alias is model.conv1.weight  # the input untouched


# ---------------------------------------------------------------------------
# report and exports


def test_report_counts_match_the_modules():
    model, x = zoo.lenet5()
    res = fxprune.prune(model, x, ratio=0.5)
    assert res.report.params_before == sum(p.numel() for p in model.parameters())
    assert res.report.params_after == sum(p.numel() for p in res.graph_module.parameters())
    # conv1 MACs: 6 out channels * 28*28 positions * 1*5*5 per output, batch 2
    assert res.report.macs_before >= 2 * 6 * 28 * 28 * 25
    text = str(res.report)
    assert "params:" in text and "MACs:" in text and "group" in text


def test_exports():
    model, x = G.resnet_block()
    a = fxprune.analyze(model, x)
    g = a.to_networkx()
    assert nx.number_connected_components(g) == len(a.groups)
    dot = a.to_dot()
    assert dot.startswith("graph coupling {") and "cluster_0" in dot
    data = json.loads(a.to_json())
    assert len(data["groups"]) == len(a.groups)
    assert data["groups"][0]["members"][0]["index_map"] == [0, 1, 2, 3]


@pytest.mark.parametrize("name", ["resnet_basic", "shufflenet_v2", "vit"])
def test_the_coupling_graph_built_on_demand_is_build_groups_graph(name):
    """analyze finds the groups without networkx and builds the coupling graph only when an export
    asks (Coupling): the graph, and the groups, are those of build_groups, node and edge data included."""
    from fxprune.analysis.groups import build_groups

    model, x = zoo.ZOO[name]()
    a = fxprune.analyze(model, x)
    groups, graph = build_groups(a.graph_module, a.state)
    ours = a.to_networkx()
    assert list(ours.nodes(data=True)) == list(graph.nodes(data=True))
    assert list(ours.edges(data=True)) == list(graph.edges(data=True))
    assert [g.describe() for g in groups] == [g.describe() for g in a.groups]
    assert all((m.index_map == n.index_map).all() for g, h in zip(groups, a.groups)
               for m, n in zip(g.members + g.tensors, h.members + h.tensors))
    assert nx.number_connected_components(ours) >= len(a.groups)


def test_whole_head_pruning_on_fused_qkv_with_a_split_override():
    model, x = zoo.vit()
    names = [n.name for n in fx.symbolic_trace(model).graph.nodes
             if n.op == "call_method" and n.target == "reshape"]
    overrides = {names[0]: 1, names[2]: 1}  # the (B, N, 3, heads, head_dim) reshapes: prune heads
    analysis = fxprune.analyze(model, x, split_overrides=overrides)
    heads = analysis.group_of("blocks.0.attn.qkv.weight", 0)[0]
    assert heads.size == model.blocks[0].attn.num_heads
    check_pruning(model, x, plans=3, split_overrides=overrides)
    gm = fxprune.apply(analysis, {heads.id: [1, 2]})
    assert gm.get_submodule("blocks.0.attn.qkv").out_features == 3 * 2 * 8
    with pytest.raises(ConfigError, match="not in the graph"):
        fxprune.analyze(model, x, split_overrides={"no_such_node": 1})


def test_a_called_modules_state_is_read_as_named_parameters_and_named_buffers_list_it():
    from fxprune.analysis.channels import _named_state

    class Twice(nn.Module):  # one tensor under two names, a None parameter, a None buffer
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3))
            self.v = self.w
            self.register_parameter("none", None)
            self.register_buffer("b", torch.zeros(3))
            self.register_buffer("nob", None)
            self.register_buffer("w_again", self.w.detach())

    class Renamed(nn.Linear):
        def named_parameters(self, *args, **kwargs):
            return iter([("renamed", self.weight)])

    for m in (nn.Linear(2, 3), nn.Linear(2, 3, bias=False), nn.BatchNorm2d(4), Twice(), Renamed(2, 3),
              nn.MultiheadAttention(4, 2), nn.Sequential(nn.Linear(2, 2), nn.ReLU())):
        expected = list(m.named_parameters()) + list(m.named_buffers())
        got = _named_state(m)
        assert [n for n, _ in got] == [n for n, _ in expected]
        assert all(a is b for (_, a), (_, b) in zip(got, expected))


def test_emitted_code_reaches_submodules_through_modules_dicts():
    """No ``nn.Module.__getattr__`` chain per call (bench/graph_overhead.py): the same objects, the same results."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())

        def forward(self, x):
            return x + self.body[1].weight.view(1, -1, 1, 1) * self.body(x)   # a get_attr two hops deep

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sequential(Block(), Block()), nn.Conv2d(8, 4, 1)).eval()
    x = (torch.randn(2, 3, 12, 12),)
    result = fxprune.prune(model, x, ratio=0.5)
    gm = result.graph_module
    code = gm.code
    assert "getattr(" not in code and "self._modules['1']._modules['0']._modules['body']._modules['0'](" in code
    assert "self._modules['1']._modules['0']._modules['body']._modules['1'].weight" in code
    reference = fx.GraphModule(gm, copy.deepcopy(gm.graph))   # the same graph with fx's own code ...
    reference.graph.set_codegen(fx.graph.CodeGen())
    reference.recompile()
    assert "getattr(" in reference.code
    with torch.no_grad():
        y = gm(*x)
        assert torch.equal(y, reference(*x)) and torch.equal(y, result.materialize()(*x))
        gm.recompile()                                     # ... and the fast code survives recompiles and copies
        copied = copy.deepcopy(gm)
        assert "_modules[" in gm.code and "_modules[" in copied.code and torch.equal(copied(*x), y)
