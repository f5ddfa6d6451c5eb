"""Uniform widths: repeating groups (analysis.repeats) keep identical kept counts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fxprune
from fxprune.analysis.repeats import block_positions, name_pattern, repeats
from fxprune.errors import ConfigError
from fxprune.schedules import iterative, one_shot
from fxprune.scoring import SelectionConfig
from fxprune.scoring.select import GroupInfo, equalize, uniform_plan
from fxprune.testing import zoo


def _counts(analysis, plan):
    return {r.pattern: [len(plan.get(g, ())) for g in r.groups] for r in repeats(analysis.groups)}


def test_block_index_is_the_integer_shared_by_every_member():
    assert block_positions(["layer1.0.conv1.weight", "layer1.0.bn1.bias"]) == (1,)
    assert block_positions(["mlp.0.weight", "mlp.2.weight"]) == ()          # two layers of one MLP: no block
    assert block_positions(["stages.2.1.a.weight", "stages.2.1.b.weight"]) == (1, 2)
    assert name_pattern("stages.2.1.a.weight", (2,)) == "stages.2.*.a.weight"


def test_repeats_of_the_zoo():
    model, x = zoo.llama()
    analysis = fxprune.analyze(model, x)          # whole heads: q, k, v and o of a GQA group together
    found = {r.pattern: len(r.groups) for r in repeats(analysis.groups)}
    assert found == {"layers.*.self_attn.q_proj.weight": 2, "layers.*.mlp.gate_proj.weight": 2}
    analysis = fxprune.analyze(model, x, split_policy="inner")   # head_dim: q/k and v apart
    found = {r.pattern: len(r.groups) for r in repeats(analysis.groups)}
    assert found == {"layers.*.self_attn.q_proj.weight": 2, "layers.*.self_attn.v_proj.weight": 2,
                     "layers.*.mlp.gate_proj.weight": 2}
    model, x = zoo.resnet_basic()
    patterns = [r.pattern for r in repeats(fxprune.analyze(model, x).groups)]
    assert patterns == [f"layer{i}.*.conv1.weight" for i in range(1, 5)]


@pytest.mark.parametrize("name", ["resnet_basic", "llama", "vit", "densenet"])
@pytest.mark.parametrize("global_ranking", [False, True])
def test_uniform_prune_keeps_repeats_equal(name, global_ranking):
    model, x = zoo.ZOO[name]()
    result = fxprune.prune(model, x, ratio=0.4, global_ranking=global_ranking, uniform=True)
    counts = _counts(result.analysis, result.plan)
    assert counts and all(len(set(c)) == 1 for c in counts.values()), counts
    assert any(c[0] > 0 for c in counts.values())
    assert result.graph_module(*x).shape == model(*x).shape


def test_equalize_takes_each_groups_own_lowest_channels():
    info = GroupInfo(size=6, fixed=frozenset({5}), counts=np.ones((2, 6), dtype=int))
    scores = {0: np.array([5., 4, 3, 2, 1, 0]), 1: np.array([0., 1, 2, 3, np.nan, 5])}
    plan = equalize({0: [1, 2, 3, 4], 1: [0, 1]}, scores, {0: info, 1: info}, [(0, 1)], SelectionConfig())
    assert plan == {0: [2, 3, 4], 1: [0, 1, 2]}                   # mean of 4 and 2; NaN last; fixed never
    plan = equalize({0: [4], 1: []}, scores, {0: info, 1: info}, [(0, 1)], SelectionConfig())
    assert plan == {}                                              # floor(1 / 2) = 0: nobody prunes
    rounded = equalize({0: [1, 2, 3, 4], 1: [0, 1]}, scores, {0: info, 1: info}, [(0, 1)],
                       SelectionConfig(round_to=2))
    assert [len(c) for c in rounded.values()] == [2, 2]             # keep 3 rounds up to 4


def test_uniform_is_validated():
    with pytest.raises(ConfigError, match="uniform must be True or False"):
        SelectionConfig(uniform="yes")


def test_uniform_target_search():
    model, x = zoo.llama()
    result = fxprune.prune(model, x, target_params=0.7, uniform=True)
    assert all(len(set(c)) == 1 for c in _counts(result.analysis, result.plan).values())
    assert result.report.params_after <= 0.7 * result.report.params_before


def test_schedules_and_recipes_take_uniform(tmp_path):
    model, x = zoo.llama()
    history = iterative(model, x, evaluate=lambda gm: 1.0, percentile=30.0, rounds=2, uniform=True, progress=False)
    gm = history.graph_module
    widths = [gm.get_submodule(f"layers.{i}.mlp.up_proj").out_features for i in range(2)]
    assert widths[0] == widths[1] < 64
    history = one_shot(model, x, ratio=0.5, uniform=True, progress=False)
    gm = history.graph_module
    assert gm.get_submodule("layers.0.mlp.up_proj").out_features == gm.get_submodule("layers.1.mlp.up_proj").out_features
    path = tmp_path / "uniform.toml"
    path.write_text('[scorer]\nname = "l1"\n[schedule]\nname = "one_shot"\nratio = 0.5\nuniform = true\n')
    recipe = fxprune.recipe(str(path))
    assert recipe.config().uniform is True
    gm = recipe.run(model, x, progress=False).graph_module
    assert gm.get_submodule("layers.0.mlp.up_proj").out_features == gm.get_submodule("layers.1.mlp.up_proj").out_features


def test_uniform_plan_of_a_plain_plan():
    model, x = zoo.llama()
    analysis = fxprune.analyze(model, x)
    mlp = [r for r in repeats(analysis.groups) if "mlp" in r.pattern][0]
    plan = {mlp.groups[0]: list(range(10)), mlp.groups[1]: list(range(30))}
    scores = {g.id: torch.rand(g.size).numpy() for g in analysis.groups}
    out = uniform_plan(analysis, scores, plan)
    assert [len(out[g]) for g in mlp.groups] == [20, 20]
