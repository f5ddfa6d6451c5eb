"""Depth x width x resolution: one plan, one call; block scores; the composed invariant.

The composed invariant: removing blocks and channels together equals the
original with the plan's channels masked out and the blocks' branch outputs
zeroed (float64).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings

import fxprune
from fxprune.analysis.blocks import ProjectionPolicy, find_blocks
from fxprune.errors import ConfigError, PlanError
from fxprune.plan3d import accuracy_drop_scores, choose_blocks, plan_3d, width_plan
from fxprune.rewrite import kept_indices
from fxprune.rewrite.compose import Plan3D, apply_3d, reanalyze, translate_plan
from fxprune.scoring.blocks import branch_norm_scores
from fxprune.testing import mask_original, random_plan, zero_branches, zoo
from fxprune.testing.strategies import architectures


def _double(model, inputs):
    return copy.deepcopy(model).double(), tuple(x.double() if x.is_floating_point() else x for x in inputs)


def _check_composed(model, inputs, seed=0, projection=ProjectionPolicy.REPLACE):
    model, inputs = _double(model, inputs)
    analysis = fxprune.analyze(model, inputs)
    rng = np.random.default_rng(seed)
    channels = random_plan(analysis, rng, include_mixing=False)
    blocks = [b for b in find_blocks(analysis) if b.removable(projection)]
    chosen = [b for b in blocks if rng.random() < 0.5] or blocks[:1]
    result = apply_3d(analysis, Plan3D(channels, tuple(b.id for b in chosen), projection))
    reference = zero_branches(mask_original(analysis, channels), chosen)
    with torch.no_grad():
        got, want = result.graph_module(*inputs), reference(*inputs)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    assert result.removed_blocks == tuple(b.add for b in chosen)
    return result


@pytest.mark.parametrize("name", ["resnet_basic", "resnet_bottleneck", "mobilenet_v2", "convnext", "vit", "llama"])
def test_blocks_and_channels_together_equal_masking_and_zeroing(name):
    result = _check_composed(*zoo.ZOO[name]())
    assert result.params < result.params_before and result.macs < result.macs_before


@settings(max_examples=max(5, settings().max_examples // 10))
@given(architectures(max_nodes=20, families=frozenset({"residual"})))
def test_composition_is_exact_on_generated_architectures(arch):
    if find_blocks(fxprune.analyze(arch.model, arch.example_inputs)):
        _check_composed(arch.model, arch.example_inputs)


def test_translate_plan_is_the_identity_on_the_same_graph():
    model, inputs = zoo.resnet_basic()
    analysis = fxprune.analyze(model, inputs)
    plan = random_plan(analysis, np.random.default_rng(1), include_mixing=True)
    assert translate_plan(analysis, plan, analysis) == {g: sorted(c) for g, c in plan.items()}
    smaller = reanalyze(analysis, fxprune.remove_blocks(analysis, [0]))
    moved = translate_plan(analysis, plan, smaller)
    # every parameter both graphs have keeps exactly the same indices
    old, new = kept_indices(analysis, plan), kept_indices(smaller, moved)
    assert set(new) < set(old) and "layer1.0.conv1.weight" in set(old) - set(new)
    for name, dims in new.items():
        assert all((a is None and b is None) or np.array_equal(a, b) for a, b in zip(dims, old[name])), name


def test_apply_3d_checks_its_plan():
    model, inputs = zoo.resnet_basic()
    analysis = fxprune.analyze(model, inputs)
    with pytest.raises(PlanError, match="projection shortcut"):
        apply_3d(analysis, Plan3D(blocks=(2,)))
    with pytest.raises(PlanError, match="group 99"):
        apply_3d(analysis, Plan3D(channels={99: [0]}, blocks=(0,)))
    nothing = apply_3d(analysis, Plan3D())
    assert nothing.params == nothing.params_before and nothing.macs == nothing.macs_before
    assert torch.equal(nothing.graph_module(*inputs), model(*inputs))


def test_block_norm_scores_rank_a_dead_block_first():
    model, inputs = zoo.resnet_basic()
    with torch.no_grad():
        model.layer2[1].bn2.weight.zero_()
        model.layer2[1].bn2.bias.zero_()
    analysis = fxprune.analyze(model, inputs)
    blocks = find_blocks(analysis)
    dead = next(b.id for b in blocks if b.output == "layer2_1_bn2")
    data = [torch.randn(4, 3, 32, 32), (torch.randn(2, 3, 32, 32), torch.zeros(2))]
    for relative in (True, False):
        scores = branch_norm_scores(analysis, data, relative=relative)
        assert scores[dead] == 0.0 and all(s > 0 for i, s in scores.items() if i != dead)
    scores = branch_norm_scores(analysis, data)
    assert choose_blocks(blocks, scores, depth=0.8) == (dead,)  # 1 of the 5 identity blocks
    assert dead in choose_blocks(blocks, scores, depth=0.5, projection=ProjectionPolicy.REPLACE)
    # the accuracy effect agrees: removing the dead block changes nothing
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
        drops = accuracy_drop_scores(analysis, lambda m: -(m(x) - reference).abs().max().item())
    assert drops[dead] == 0.0 and min(d for i, d in drops.items() if i != dead) > 0
    assert set(drops) == {b.id for b in blocks if not b.projection}


def test_choose_blocks_and_width_plan_validate():
    blocks = find_blocks(fxprune.analyze(*zoo.mobilenet_v2()))
    with pytest.raises(ConfigError, match="depth"):
        choose_blocks(blocks, {0: 1.0, 1: 2.0}, depth=1.5)
    with pytest.raises(ConfigError, match="no score"):
        choose_blocks(blocks, {0: 1.0}, depth=0.5)
    assert choose_blocks(blocks, {0: 1.0, 1: 2.0}, depth=0.0) == (0, 1)
    analysis = fxprune.analyze(*zoo.mobilenet_v2())
    with pytest.raises(ConfigError, match="width"):
        width_plan(analysis, 0.0)
    assert width_plan(analysis, 1.0) == {}
    plan = width_plan(analysis, 0.5, round_to=2)
    for g in analysis.groups:
        kept = g.size - len(plan.get(g.id, []))
        assert kept >= g.size // 2 and (kept % 2 == 0 or kept == g.size)


def test_plan_3d_composes_depth_and_width_on_one_analysis():
    model, inputs = zoo.resnet_basic()
    analysis = fxprune.analyze(model, inputs)
    plan = plan_3d(analysis, depth=0.6, width=0.5, projection=ProjectionPolicy.REPLACE)
    assert len(plan.blocks) == 3 and plan.channels and plan.projection is ProjectionPolicy.REPLACE
    result = apply_3d(analysis, plan)
    assert result.graph_module(*inputs).shape == (1, 10)


def test_prune_3d_records_the_input_size_and_leaves_the_model_alone():
    model, inputs = zoo.resnet_basic()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fxprune.prune_3d(model, inputs, depth=0.5, width=0.75, resolution=0.5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert result.input_shapes == ((1, 3, 16, 16),) and result.scale == 0.5
    assert result.resolution.macs_before == result.macs_original
    assert result.result.macs < 0.25 * result.macs_original
    x = torch.randn(2, 3, 32, 32)
    assert result.wrapped()(x).shape == (2, 10)
    assert "blocks removed" in result.summary() and "(1, 3, 16, 16)" in result.summary()
    again = fxprune.analyze(result.graph_module, (torch.randn(1, 3, 16, 16),))
    assert len(find_blocks(again)) == len(find_blocks(fxprune.analyze(model, inputs))) - 3


def test_prune_3d_on_a_vit_at_a_higher_resolution_with_data_driven_scores():
    model, inputs = zoo.vit()
    data = [torch.randn(4, 3, 32, 32)]
    result = fxprune.prune_3d(model, inputs, depth=0.5, width=0.5, resolution=2.0, data=data,
                              scorer="activation")
    assert [a.param for a in result.resolution.adapted] == ["pos_embed"]
    assert result.input_shapes == ((2, 3, 64, 64),) and len(result.removed_blocks) == 2
    assert result.graph_module(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert set(result.block_scores) == {0, 1, 2, 3}
    custom = fxprune.prune_3d(model, inputs, depth=0.75, block_scores=lambda a: {0: 0.0, 1: 1, 2: 2, 3: 3})
    assert custom.removed_blocks == ("add_1",) and custom.result.plan.channels == {}
