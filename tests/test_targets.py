"""Specifications of cost targets: every zoo model lands within one channel step of its budget."""
from __future__ import annotations

import dataclasses

import pytest

import fxprune
from fxprune.analysis.cost import plan_costs
from fxprune.analysis.groups import plan_mask
from fxprune.scoring import ScoreContext, SelectionConfig, get_scorer, select_plan
from fxprune.scoring.targets import Target, select_for_target
from fxprune.testing import zoo


def _costs(analysis, plan):
    return plan_costs(analysis.graph_module, analysis.registry,
                      plan_mask(analysis.groups, analysis.state.atoms.roots(), plan), analysis.state.param_labels)


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
@pytest.mark.parametrize("kind", ["macs", "params"])
def test_a_target_lands_within_one_channel_step(name, kind):
    model, x = zoo.ZOO[name]()
    analysis = fxprune.analyze(model, x)
    scores = get_scorer("l1")(analysis, ScoreContext())
    cfg = SelectionConfig(global_ranking=name in ("resnet_basic", "llama"))
    plan, hit = select_for_target(analysis, scores, cfg, Target.parse(kind, 0.5))
    index = 1 if kind == "macs" else 0
    before, after = (hit.macs_before, hit.macs_after) if kind == "macs" else (hit.params_before, hit.params_after)
    assert _costs(analysis, plan)[index] == after
    if not hit.reached:  # only when nothing more can go
        assert select_plan(analysis, scores, dataclasses.replace(cfg, ratio=1 - 1e-9)) == plan
        return
    assert after <= 0.5 * before
    # one channel step less misses the budget: the plan just below the found ratio costs more
    below = select_plan(analysis, scores, dataclasses.replace(cfg, ratio=max(0.0, hit.ratio - 1e-9)))
    assert below != plan and _costs(analysis, below)[index] > 0.5 * before


def test_absolute_and_invalid_targets():
    model, x = zoo.ZOO["lenet5"]()
    analysis = fxprune.analyze(model, x)
    scores = get_scorer("l1")(analysis, ScoreContext())
    _, hit = select_for_target(analysis, scores, SelectionConfig(), Target.parse("params", 20_000))
    assert hit.reached and hit.params_after <= 20_000
    for bad in (0, -1, float("nan"), "half", True):
        with pytest.raises(fxprune.ConfigError):
            Target.parse("macs", bad)
    with pytest.raises(fxprune.ConfigError, match="unknown target"):
        Target.parse("energy", 0.5)
    with pytest.raises(fxprune.ConfigError, match="fraction of the measured original latency"):
        Target.parse("latency", 2.0)


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_prune_with_a_macs_target_lands_within_one_step_of_half(name):
    model, x = zoo.ZOO[name]()
    result = fxprune.prune(model, x, target_macs=0.5)
    report = result.report
    assert report.macs_after <= 0.5 * report.macs_before or "not reachable" in report.notes[0]
    assert report.notes and report.notes[0].startswith("target macs")


def test_prune_meets_both_budgets():
    model, x = zoo.ZOO["vit"]()
    report = fxprune.prune(model, x, target_macs=0.7, target_params=0.6).report
    assert report.macs_ratio <= 0.7 and report.params_ratio <= 0.6


def test_ratios_and_round_to_per_layer_prefix():
    model, x = zoo.ZOO["resnet_basic"]()
    result = fxprune.prune(model, x, ratio={"layer4": 0.75, "layer1": 0.5}, round_to={"layer1": 4})
    width = lambda gm, name: gm.get_submodule(name).out_channels  # noqa: E731
    gm = result.graph_module
    assert width(gm, "layer4.0.conv1") == 16          # 64 * (1 - 0.75)
    assert width(gm, "layer1.0.conv1") == 4           # 8 * 0.5, a multiple of 4
    assert width(gm, "layer2.0.conv1") == 16 and width(gm, "layer3.0.conv1") == 32   # unmatched: kept
    default = fxprune.prune(model, x, ratio={"": 0.5, "layer4": 0.25}).graph_module
    assert width(default, "layer2.0.conv1") == 8 and width(default, "layer4.0.conv1") == 48


def test_per_layer_mistakes_are_clear_errors():
    model, x = zoo.ZOO["resnet_basic"]()
    with pytest.raises(fxprune.ConfigError, match="did you mean"):
        fxprune.prune(model, x, ratio={"layer5": 0.5})
    with pytest.raises(fxprune.ConfigError, match="global_ranking"):
        fxprune.prune(model, x, ratio={"layer4": 0.5}, global_ranking=True)
    with pytest.raises(fxprune.ConfigError, match=r"ratio\['layer4'\]"):
        fxprune.prune(model, x, ratio={"layer4": 1.5})
    with pytest.raises(fxprune.ConfigError, match="cost target"):
        fxprune.prune(model, x, ratio={"layer4": 0.5}, target_macs=0.5)


def test_ignore_takes_name_patterns():
    model, x = zoo.ZOO["resnet_basic"]()
    gm = fxprune.prune(model, x, ratio=0.5, ignore=["layer*.0.conv1"]).graph_module
    assert [gm.get_submodule(f"layer{i}.0.conv1").out_channels for i in range(1, 5)] == [8, 16, 32, 64]
    assert gm.get_submodule("layer1.1.conv1").out_channels == 4
    with pytest.raises(fxprune.ConfigError, match="matches no module"):
        fxprune.prune(model, x, ignore=["nope*"])
