"""Bad arguments raise an fxprune error that says what to do, never a raw TypeError/AttributeError.

One test per behaviour; each failed (with a raw exception) before its fix.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune.errors import ConfigError, PlanError, RecipeError

MODEL = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
X = (torch.randn(1, 4),)


@pytest.mark.parametrize("option,value", [("min_channels", "2"), ("round_to", 2.5), ("max_ratio", "0.5"),
                                          ("min_channels", True)])
def test_prune_options_of_the_wrong_type_are_config_errors(option, value):
    with pytest.raises(ConfigError, match=option):
        fxprune.prune(MODEL, X, **{option: value})


def test_scorer_none_is_a_config_error_listing_the_scorers():
    with pytest.raises(ConfigError, match=r"scorer must be a scorer name \(activation, hessian, l1"):
        fxprune.prune(MODEL, X, scorer=None)


@pytest.mark.parametrize("plan,match", [([0, 1], "got a list"), ([[0, 1]], "got a list"),
                                        ({0: 3}, r"not a collection of channels \(e.g. \[3\]\)"),
                                        ({0: ["a"]}, "must be integers"), ({"0": [1]}, "group ids are integers")])
def test_a_plan_that_is_not_a_mapping_of_channel_lists_is_a_plan_error(plan, match):
    analysis = fxprune.analyze(MODEL, X)
    with pytest.raises(PlanError, match=match):
        fxprune.apply(analysis, plan)


def _recipe(tmp_path, body: bytes):
    path = tmp_path / "r.toml"
    path.write_bytes(body)
    return fxprune.recipe(str(path))


def test_a_recipe_that_is_not_utf8_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match="is not UTF-8 text"):
        _recipe(tmp_path, b'[scorer]\nname = "l1"\n[schedule]\nname = "\xff\xfe"\n')


@pytest.mark.parametrize("value", ['["iterative"]', "{ a = 1 }"])
def test_unhashable_recipe_values_are_recipe_errors(tmp_path, value):
    with pytest.raises(RecipeError, match="unknown schedule"):
        _recipe(tmp_path, f'[scorer]\nname = "l1"\n[schedule]\nname = {value}\n'.encode())
    with pytest.raises(RecipeError, match="unknown scorer"):
        _recipe(tmp_path, f'[scorer]\nname = {value}\n[schedule]\nname = "iterative"\n'.encode())


@pytest.mark.parametrize("line,match", [('split_policy = ["inner"]', "split_policy"), ('strict = "yes"', "strict"),
                                        ("leaf_modules = [1]", "leaf_modules"), ("frontend = 3", "frontend"),
                                        ("split_overrides = { view = [1] }", "split_overrides"),
                                        ("ignore = [{ a = 1 }]", "ignore"), ("splitpolicy = 'outer'", "split_policy")])
def test_recipe_analysis_values_are_validated_when_the_recipe_is_loaded(tmp_path, line, match):
    with pytest.raises(RecipeError, match=match):
        _recipe(tmp_path, f'[analysis]\n{line}\n[scorer]\nname = "l1"\n[schedule]\nname = "iterative"\n'.encode())


def test_scorer_none_in_a_schedule_is_a_config_error():
    from fxprune.schedules import iterative

    with pytest.raises(ConfigError, match="scorer must be a scorer name"):
        iterative(MODEL, X, scorer=None, evaluate=lambda gm: 1.0, progress=False)
