"""Depth: finding removable residual blocks and removing them (issue 12).

* golden block listings of the zoo's residual models;
* the invariant (removal == the original with the branch output zeroed, float64)
  on every residual zoo model, through both front ends, and on generated
  architectures, whose residual blocks are also counted from their specs;
* a non-tautological cross-check: a ResNet block removed equals the original
  with the branch's last BatchNorm scale and shift set to zero;
* projection policy, re-analysability, the input model untouched, errors.
"""
from __future__ import annotations

import copy
import operator
import warnings

import pytest
import torch
from hypothesis import given, settings

import fxprune
from fxprune.analysis.blocks import ProjectionPolicy, find_blocks
from fxprune.errors import PlanError
from fxprune.rewrite.blocks import remove_blocks
from fxprune.testing import check_block_removal, mask_blocks, zoo
from fxprune.testing.strategies import Attention, Residual, architectures

RESIDUAL_ZOO = ("resnet_basic", "resnet_bottleneck", "mobilenet_v2", "mobilenet_v3", "convnext", "vit",
                "vit_separate_qkv", "llama")

#: per model: (add, skip, branch output, projection) of every block, in order
GOLDEN = {
    "resnet_basic": [
        ("add", "maxpool", "layer1_0_bn2", False),
        ("add_1", "layer1_0_relu_1", "layer1_1_bn2", False),
        ("add_2", "layer2_0_downsample_1", "layer2_0_bn2", True),
        ("add_3", "layer2_0_relu_1", "layer2_1_bn2", False),
        ("add_4", "layer3_0_downsample_1", "layer3_0_bn2", True),
        ("add_5", "layer3_0_relu_1", "layer3_1_bn2", False),
        ("add_6", "layer4_0_downsample_1", "layer4_0_bn2", True),
        ("add_7", "layer4_0_relu_1", "layer4_1_bn2", False),
    ],
    "resnet_bottleneck": [
        ("add", "layer1_0_downsample_1", "layer1_0_bn3", True),
        ("add_1", "layer2_0_downsample_1", "layer2_0_bn3", True),
        ("add_2", "layer2_0_relu_2", "layer2_1_bn3", False),
        ("add_3", "layer3_0_downsample_1", "layer3_0_bn3", True),
        ("add_4", "layer4_0_downsample_1", "layer4_0_bn3", True),
    ],
    "mobilenet_v2": [
        ("add", "features_2_conv_3", "features_3_conv_3", False),
        ("add_1", "features_4_conv_3", "features_5_conv_3", False),
    ],
    "mobilenet_v3": [
        ("add", "features_2_block_2_1", "features_3_block_2_1", False),
        ("add_1", "features_4_block_3_1", "features_5_block_3_1", False),
    ],
    "convnext": [
        ("add_2", "add_1", "permute_1", False),
        ("add_5", "downsample_layers_1_1", "permute_3", False),
        ("add_8", "downsample_layers_2_1", "permute_5", False),
        ("add_9", "add_8", "permute_7", False),
        ("add_12", "downsample_layers_3_1", "permute_9", False),
    ],
    "vit": [
        ("add_1", "add", "blocks_0_attn_proj", False),
        ("add_2", "add_1", "blocks_0_mlp_fc2", False),
        ("add_3", "add_2", "blocks_1_attn_proj", False),
        ("add_4", "add_3", "blocks_1_mlp_fc2", False),
    ],
    "llama": [
        ("add_3", "embed_tokens", "layers_0_self_attn_o_proj", False),
        ("add_5", "add_3", "layers_0_mlp_down_proj", False),
        ("add_9", "add_5", "layers_1_self_attn_o_proj", False),
        ("add_11", "add_9", "layers_1_mlp_down_proj", False),
    ],
}


def _params(model: torch.nn.Module, prefixes: tuple[str, ...]) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefixes))


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_block_listing(name):
    model, inputs = zoo.ZOO[name]()
    blocks = find_blocks(fxprune.analyze(model, inputs))
    assert [(b.add, b.skip, b.output, b.projection) for b in blocks] == GOLDEN[name]
    assert [b.id for b in blocks] == list(range(len(blocks)))
    assert all(b.macs > 0 and b.num_params > 0 and b.output in b.nodes for b in blocks)


def test_block_sizes_are_the_branch_parameters_and_macs():
    model, inputs = zoo.resnet_basic()
    blocks = find_blocks(fxprune.analyze(model, inputs))
    b = blocks[0]  # layer1.0: conv1-bn1-relu-conv2-bn2 on 8 channels at 8x8
    assert b.nodes == ("layer1_0_conv1", "layer1_0_bn1", "layer1_0_relu", "layer1_0_conv2", "layer1_0_bn2")
    assert b.num_params == _params(model, ("layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2", "layer1.0.bn2"))
    assert b.macs == 2 * (8 * 8 * 9 * 8 * 8)  # two 3x3 convs, 8 -> 8 channels at 8x8 (norms count none)
    assert b.params == ("layer1.0.bn1.bias", "layer1.0.bn1.weight", "layer1.0.bn2.bias", "layer1.0.bn2.weight",
                        "layer1.0.conv1.weight", "layer1.0.conv2.weight")
    proj = blocks[2]  # layer2.0: the projection (downsample) is kept, not counted
    assert proj.projection and not any(p.startswith("layer2.0.downsample") for p in proj.params)
    assert proj.source == "layer1_1_relu_1"


@pytest.mark.parametrize("name", RESIDUAL_ZOO)
def test_block_removal_is_exact_on_the_zoo(name):
    model, inputs = zoo.ZOO[name]()
    summary = check_block_removal(model, inputs, subsets=1)
    assert summary.blocks == len(find_blocks(fxprune.analyze(model, inputs)))
    assert summary.max_abs_diff == 0.0  # the same ops on the same values


@pytest.mark.parametrize("name", ["resnet_bottleneck", "vit", "llama"])
def test_block_removal_is_exact_through_torch_export(name):
    model, inputs = zoo.ZOO[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_block_removal(model, inputs, subsets=0, frontend="export")


def test_removing_a_resnet_block_equals_zeroing_its_last_batchnorm():
    model, inputs = zoo.resnet_basic()
    model = model.double()
    inputs = tuple(x.double() for x in inputs)
    analysis = fxprune.analyze(model, inputs)
    blocks = find_blocks(analysis)
    targets = {n.name: n.target for n in analysis.graph_module.graph.nodes}
    for b in blocks:
        zeroed = copy.deepcopy(model)
        target = zeroed.get_submodule(targets[b.output])  # the branch's last BatchNorm
        assert isinstance(target, torch.nn.BatchNorm2d)
        with torch.no_grad():
            target.weight.zero_()
            target.bias.zero_()
        got = remove_blocks(analysis, [b.id], projection=ProjectionPolicy.REPLACE)(*inputs)
        torch.testing.assert_close(got, zeroed(*inputs), rtol=1e-12, atol=1e-12)


def test_projection_policy():
    model, inputs = zoo.resnet_basic()
    analysis = fxprune.analyze(model, inputs)
    blocks = find_blocks(analysis)
    proj = next(b for b in blocks if b.projection)
    assert not proj.removable() and proj.removable(ProjectionPolicy.REPLACE)
    with pytest.raises(PlanError, match="projection shortcut"):
        remove_blocks(analysis, [proj.id])
    with pytest.raises(PlanError, match="no block 99"):
        remove_blocks(analysis, [99])
    gm = remove_blocks(analysis, [proj.id], projection=ProjectionPolicy.REPLACE)
    names = {n.name for n in gm.graph.nodes}
    assert proj.skip in names and not names & set(proj.nodes) and proj.add not in names
    assert ProjectionPolicy("replace") is ProjectionPolicy.REPLACE  # a str enum: "replace" is accepted
    assert torch.equal(remove_blocks(analysis, [proj.id], projection="replace")(*inputs), gm(*inputs))


def test_removal_drops_submodules_keeps_the_post_add_activation_and_leaves_the_model_alone():
    model, inputs = zoo.resnet_basic()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    structure = repr(model)
    analysis = fxprune.analyze(model, inputs)
    gm = remove_blocks(analysis, [0, 1])
    assert repr(model) == structure
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    mods = dict(gm.named_modules())
    assert "layer1.0.conv1" not in mods and "layer1.0.relu" in mods  # the post-add ReLU stays
    assert "layer2.0.conv1" in mods
    assert gm.get_submodule("layer2.0.conv1").weight is not model.layer2[0].conv1.weight
    relu = next(n for n in gm.graph.nodes if n.name == "layer1_0_relu_1")
    assert relu.args[0].name == "maxpool"  # the add became its skip
    # the result is re-analysable and prunable
    again = fxprune.analyze(gm, inputs)
    assert [b.add for b in find_blocks(again)] == [b.add for b in find_blocks(analysis)][2:]
    pruned = fxprune.prune(gm, inputs, ratio=0.5, analysis=again).graph_module
    assert pruned(*inputs).shape == model(*inputs).shape
    gm2 = torch.fx.symbolic_trace(gm)
    assert torch.equal(gm2(*inputs), gm(*inputs))


def test_nested_blocks_go_with_their_outer_block():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)

        def forward(self, x):
            inner = x + self.a(x)            # block 0, inside block 1's branch
            return self.head(x + self.b(inner))

    x = (torch.randn(3, 4),)
    analysis = fxprune.analyze(Net(), x)
    blocks = find_blocks(analysis)
    assert [(b.add, b.skip) for b in blocks] == [("add", "x"), ("add_1", "x")]
    assert set(blocks[0].nodes) < set(blocks[1].nodes)
    gm = remove_blocks(analysis, [0, 1])
    assert [n.name for n in gm.graph.nodes] == ["x", "head", "output"]
    check_block_removal(Net(), x)


def test_two_inputs_added_and_parameter_adds_are_not_blocks():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.l = torch.nn.Linear(4, 4)
            self.bias = torch.nn.Parameter(torch.zeros(4))

        def forward(self, x, y):
            return self.l(x + y) + self.bias

    assert find_blocks(fxprune.analyze(Net(), (torch.randn(2, 4), torch.randn(2, 4)))) == ()


def test_mask_blocks_zeroes_the_branch():
    model, inputs = zoo.mobilenet_v2()
    analysis = fxprune.analyze(model, inputs)
    masked = mask_blocks(analysis, [0])
    assert any(n.target is torch.zeros_like for n in masked.graph.nodes)
    assert not any(n.target is torch.zeros_like for n in analysis.graph_module.graph.nodes)


def _spec_blocks(blocks) -> tuple[int, int]:
    """(identity residuals, projection residuals) in a generated spec, nested ones included."""
    ident = proj = 0
    for block in blocks:
        if isinstance(block, Residual):
            if block.projection == "none":
                ident += 1
            else:
                proj += 1
        elif isinstance(block, Attention) and block.residual:
            ident += 1
        for chain in block.chains():
            i, p = _spec_blocks(chain)
            ident, proj = ident + i, proj + p
    return ident, proj


@settings(max_examples=max(5, settings().max_examples // 4))
@given(architectures(max_nodes=24, families=frozenset({"residual"})))
def test_block_removal_is_exact_on_generated_architectures(arch):
    summary = check_block_removal(arch.model, arch.example_inputs, subsets=1)
    ident, proj = _spec_blocks(arch.spec.blocks)
    blocks = find_blocks(fxprune.analyze(arch.model, arch.example_inputs))
    assert sum(not b.projection for b in blocks) == ident
    assert sum(b.projection for b in blocks) <= proj
    assert summary.blocks == len(blocks)


def my_sum(a, b):
    return a + b


torch.fx.wrap("my_sum")


class _OwnSum(torch.nn.Module):
    def forward(self, x):
        return my_sum(x, x * 2)


@pytest.mark.parametrize("rule_name, is_sum", [("ELEMENTWISE_ADD", True), ("ELEMENTWISE_SUB", False),
                                               ("ELEMENTWISE_MUL", False)])
def test_a_sum_is_what_the_registry_declares_not_an_op_name(rule_name, is_sum):
    from fxprune import ops
    from fxprune.analysis.blocks import is_add
    from fxprune.ops.registry import Keys

    registry = ops.default_registry()
    registry.register(getattr(ops, rule_name).with_keys(Keys(functions=(my_sum,))))
    gm = torch.fx.symbolic_trace(_OwnSum())
    node = next(n for n in gm.graph.nodes if n.target is my_sum)
    assert is_add(node, registry, gm) is is_sum
    mul = next(n for n in gm.graph.nodes if n.op == "call_function" and n.target is operator.mul)
    assert not is_add(mul, registry, gm)
