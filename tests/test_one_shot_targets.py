"""``one_shot(target_macs=..., target_params=...)`` and recipes built on it reach cost budgets.

The one-shot schedule searches its global-ranking ratio exactly as
:func:`fxprune.prune` does (the same :func:`select_for_target`), so its result
is the least-pruned plan within the budget; implants are refused with a target.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import fxprune
from fxprune.errors import ConfigError
from fxprune.schedules import OneShotConfig, one_shot
from fxprune.scoring import ScoreContext, get_scorer, select_plan
from fxprune.scoring.targets import Target, TargetKind, select_for_target, shape_costs
from fxprune.testing import zoo


@pytest.mark.parametrize("name,kind", [("resnet_basic", "macs"), ("mobilenet_v2", "params"), ("vit", "macs")])
def test_one_shot_lands_on_the_least_pruned_plan_within_budget(name, kind):
    model, x = zoo.ZOO[name]()
    history = one_shot(model, x, progress=False, **{f"target_{kind}": 0.5})
    before, after = history.rounds[0].metrics[kind], history.best.metrics[kind]
    assert after <= 0.5 * before

    analysis = fxprune.analyze(model, x)
    scores = get_scorer("l1")(analysis, ScoreContext())
    cfg = OneShotConfig(target_macs=0.5).selection()
    plan, hit = select_for_target(analysis, scores, cfg, [Target.parse(kind, 0.5)])
    assert hit.reached and after == (hit.macs_after if kind == "macs" else hit.params_after)
    # one step less pruning is a different plan, and it misses the budget
    below = select_plan(analysis, scores, dataclasses.replace(cfg, ratio=hit.ratio - 1e-9))
    assert below != plan and shape_costs(analysis)(below)[TargetKind(kind)] > 0.5 * before


@pytest.mark.filterwarnings("ignore:hessian scorer")
def test_the_hap_recipe_takes_a_params_target():
    torch.manual_seed(0)
    model, x = zoo.lenet5()
    data = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))) for _ in range(2)]
    history = fxprune.recipe("hap").run(model, x, data=data, loss_fn=F.cross_entropy, target_params=0.4,
                                        scorer_params={"n_probes": 2}, progress=False)
    before, after = history.rounds[0].metrics["params"], history.best.metrics["params"]
    assert 0.3 * before < after <= 0.4 * before


def test_a_target_with_implants_or_a_bad_budget_is_refused():
    model, x = zoo.lenet5()
    with pytest.raises(ConfigError, match="implant_ratio"):
        one_shot(model, x, target_macs=0.5, implant_ratio=0.1, progress=False)
    with pytest.raises(ConfigError, match="target_params"):
        OneShotConfig(target_params=-2)
