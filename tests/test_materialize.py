"""PruneResult.materialize(): the pruned model as the original class, checked against graph_module."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune import MaterializeError
from fxprune.rewrite import materialize
from fxprune.rewrite.eager import check_outputs, compare, module_calls, random_params
from fxprune.testing import zoo

#: (model, split policy) -> what the error names: the eager code hard-codes a pruned size
HARD_CODED = {
    ("vit", "inner"): "blocks.0.attn.head_dim = 8",
    ("vit", "outer"): "in 'blocks.0.attn' (Attention)",            # reshape(B, N, C): C is the input's width
    ("vit_separate_qkv", "inner"): "blocks.0.attn.head_dim = 8",
    ("llama", "inner"): "layers.0.self_attn.head_dim = 8",
    ("shufflenet_v2", "inner"): "in 'stage2.1' (ShuffleUnit)",      # x.chunk(2): equal halves no longer hold
    # the default prunes whole heads of attention (num_heads is resized), channels elsewhere
    ("vit", "auto"): "in 'blocks.0.attn' (Attention)",              # reshape(B, N, C): C is the input's width
    ("shufflenet_v2", "auto"): "in 'stage2.1' (ShuffleUnit)",
}


def _consistent(model: nn.Module) -> None:
    """Every module's size attributes agree with its (sliced) parameters."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            assert tuple(m.weight.shape) == (m.out_features, m.in_features), name
        elif isinstance(m, nn.modules.conv._ConvNd) and not m.transposed:
            assert m.weight.shape[0] == m.out_channels and m.weight.shape[1] * m.groups == m.in_channels, name
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert m.running_mean.shape[0] == m.num_features, name
        elif isinstance(m, nn.LayerNorm) and m.weight is not None:
            assert tuple(m.weight.shape) == tuple(m.normalized_shape), name
        elif isinstance(m, nn.Embedding):
            assert m.weight.shape[1] == m.embedding_dim, name


def _state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("frontend", ["fx", "export"])
@pytest.mark.parametrize("policy", ["auto", "inner", "outer"])
@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_every_zoo_model_materialises_or_names_the_hard_coded_size(name, policy, frontend):
    model, x = zoo.ZOO[name]()
    before = _state(model)
    result = fxprune.prune(model, x, ratio=0.4, split_policy=policy, frontend=frontend)
    expected = HARD_CODED.get((name, policy))
    if expected is not None:
        with pytest.raises(MaterializeError) as info:
            result.materialize()
        assert expected in str(info.value) and "result.graph_module" in str(info.value)
    else:
        small = result.materialize()
        assert type(small) is type(model) and small is not model
        _consistent(small)
        assert compare(small(*x), result.graph_module(*x)) is None
        assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)    # the user's model is untouched


def test_resnet_keeps_its_class_methods_and_indexing():
    model, x = zoo.resnet_basic()
    result = fxprune.prune(model, x, ratio=0.5)
    small = result.materialize()
    block = small.layer4[0]                                          # Sequential indexing works again
    assert isinstance(block, zoo.BasicBlock)
    assert block.conv1.out_channels == result.graph_module.get_submodule("layer4.0.conv1").out_channels < 64
    assert block.bn1.num_features == block.conv1.out_channels
    assert small.fc.in_features == result.graph_module.get_submodule("fc").in_features
    assert compare(small(*x), result.graph_module(*x)) is None
    assert model.layer4[0].conv1.out_channels == 64


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.body = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, 20, bias=False)
        self.head.weight = self.embed.weight                          # tied

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        return self.head(h + self.body(h))


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_tied_weights_stay_tied(frontend):
    torch.manual_seed(0)
    model, x = TiedLM().eval(), (torch.randint(0, 20, (2, 5)),)
    result = fxprune.prune(model, x, ratio=0.5, frontend=frontend)
    small = result.materialize()
    assert small.head.weight is small.embed.weight
    assert small.embed.embedding_dim == small.head.in_features == small.embed.weight.shape[1] < 16
    assert compare(small(*x), result.graph_module(*x)) is None
    assert model.head.weight is model.embed.weight and model.embed.weight.shape == (20, 16)


class HardCoded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.width = 16
        self.a, self.b = nn.Linear(4, 16), nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        return self.b(h.view(-1, self.width))


def test_a_hard_coded_size_is_named():
    result = fxprune.prune(HardCoded(), (torch.randn(3, 4),), ratio=0.5)
    assert result.graph_module(torch.randn(3, 4)).shape == (3, 2)      # the graph re-emits the view
    with pytest.raises(MaterializeError, match=r"width = 16 \(the pruned graph has 8 there\)"):
        result.materialize()


def test_train_mode_dropout_is_checked_in_eval_and_flags_restored():
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 2)).train()
    result = fxprune.prune(model, (torch.randn(3, 4),), ratio=0.5)
    small = result.materialize()
    assert small.training and small[2].training and result.graph_module.training
    assert small[0].out_features == 8


def test_materialize_from_an_analysis_and_a_plan():
    model, x = zoo.lenet5()
    analysis = fxprune.analyze(model, x)
    plan = {g.id: list(g.prunable[:2]) for g in analysis.groups}
    small = materialize(analysis, plan)
    assert isinstance(small, zoo.LeNet5) and small.conv1.out_channels == 4


def test_a_graph_module_comes_back_as_the_pruned_graph_module():
    gm = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    result = fxprune.prune(gm, (torch.randn(1, 4),), ratio=0.5)
    assert result.materialize() is result.graph_module


def test_meta_models_materialise_by_shape():
    model, x = zoo.llama_7b_meta(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=128,
                                 vocab_size=100, max_seq_len=32)
    result = fxprune.prune(model, x, ratio=0.5, split_policy="inner")
    with pytest.raises(MaterializeError, match="head_dim = 16"):
        result.materialize()
    small = fxprune.prune(model, x, ratio=0.5).materialize()        # the default: whole heads, GQA groups
    attn = small.layers[0].self_attn
    assert (attn.n_heads, attn.n_kv_heads, attn.n_rep, attn.head_dim) == (2, 1, 2, 16)
    assert attn.q_proj.weight.device.type == "meta" and attn.q_proj.out_features == 32
    result = fxprune.prune(model, x, ratio=0.5, split_policy="outer",
                           ignore=["layers.0.self_attn.q_proj", "layers.1.self_attn.q_proj"])
    small = result.materialize()
    assert small.layers[0].mlp.up_proj.weight.device.type == "meta"
    assert small.layers[1].mlp.up_proj.out_features == 64


def test_module_calls_of_an_exported_graph():
    model, x = zoo.resnet_basic()
    analysis = fxprune.analyze(model, x, frontend="export")
    paths = [p for p, _ in module_calls(analysis.graph_module)]
    assert "layer4.0.conv1" in paths and "fc" in paths


class Heads(nn.Module):
    def __init__(self, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = (f(x).view(B, T, self.heads, -1).transpose(1, 2) for f in (self.q, self.k, self.v))
        return torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, 8)


def test_the_random_weight_check_sees_what_tiny_weights_hide():
    torch.manual_seed(0)
    two = Heads(2)
    with torch.no_grad():
        for p in two.parameters():
            p.mul_(1e-4)                                   # attention is uniform: the head split is invisible
    four = copy.deepcopy(two)
    four.heads = 4
    x = (torch.randn(2, 5, 8),)
    assert compare(two(*x), four(*x)) is None
    assert random_params(two, four).keys() == dict(two.named_parameters()).keys()
    assert check_outputs(two, four, x).startswith("with random weights, output 0 differs")
    assert check_outputs(two, copy.deepcopy(two), x) is None


def test_materialize_takes_the_fine_tuned_weights_of_the_graph_module():
    model, x = zoo.ZOO["resnet_basic"]()
    result = fxprune.prune(model, x, ratio=0.5)
    with torch.no_grad():  # "fine-tune" the pruned module
        for p in result.graph_module.parameters():
            p.mul_(1.01)
    small = result.materialize()
    assert torch.equal(small.layer1[0].conv1.weight, result.graph_module.get_parameter("layer1.0.conv1.weight"))
    with torch.no_grad():
        torch.testing.assert_close(small(*x), result.graph_module(*x), rtol=1e-4, atol=1e-5)
