"""Specifications of recipes: loading, validation, TOML round trips, running, packaging."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn as nn

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

import fxprune
from fxprune.errors import RecipeError
from fxprune.recipes import Recipe, available_recipes, recipe, recipes_dir, scorer_parameters
from fxprune.scoring import SCORERS
from fxprune.schedules import History

REPO = Path(__file__).resolve().parent.parent
SHIPPED = ("aiap", "hap", "hap_implant", "iap", "l1", "three_d")


def write(tmp_path: Path, text: str, name: str = "r.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


MINIMAL = """
[recipe]
name = "mine"
[scorer]
name = "l1"
[schedule]
name = "iterative"
"""


# ---------------------------------------------------------------------------
# shipped recipes
# ---------------------------------------------------------------------------
def test_the_shipped_recipes_are_found_from_the_source_tree():
    assert available_recipes() == SHIPPED
    assert sorted(p.stem for p in (REPO / "passes").glob("*.toml")) == list(SHIPPED)
    assert recipes_dir().resolve() == (REPO / "passes").resolve()
    assert "recipe" in fxprune.__all__ and fxprune.recipe is recipe


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_recipe_loads_validates_and_round_trips(name, tmp_path):
    r = recipe(name)
    assert r.name == name and r.description
    assert r.scorer in SCORERS
    assert r == recipe(REPO / "passes" / f"{name}.toml")         # by name == by path
    again = recipe(r.to_toml_path(tmp_path / f"{name}.toml"))
    assert again == r and hash(again) == hash(r)
    assert tomllib.loads(r.to_toml()) == r.to_dict()


def test_shipped_recipes_say_what_the_methods_say():
    l1, iap, aiap, hap = (recipe(n) for n in ("l1", "iap", "aiap", "hap"))
    assert (l1.scorer, l1.schedule) == ("l1", "iterative")
    assert (iap.scorer, iap.schedule, iap.scorer_params["power"]) == ("activation", "iterative", 1.0)
    for r in (l1, iap):
        assert dict(r.schedule_params) == {"percentile": 20.0, "rounds": 10, "tolerance": 1.0,
                                           "percentile_rule": "count"}
    assert (aiap.scorer, aiap.schedule) == ("activation", "adaptive")
    assert aiap.schedule_params["lambda0"] == 1.0 and aiap.schedule_params["target"] == "accuracy"
    assert (hap.scorer, hap.schedule) == ("hessian", "one_shot")
    assert hap.schedule_params["max_ratio"] == 0.95 and hap.schedule_params["global_ranking"] is True


# ---------------------------------------------------------------------------
# round trips and immutability
# ---------------------------------------------------------------------------
def test_a_custom_recipe_with_arrays_tables_and_odd_strings_round_trips(tmp_path):
    text = '''
[recipe]
name = "custom"
description = "quotes \\" backslash \\\\ tab \\t newline \\n unicode é ✓"
[analysis]
split_policy = "outer"
ignore = ["fc", "head.proj"]
split_overrides = { view_1 = "inner", "odd name" = "outer" }
strict = false
[scorer]
name = "l2"
roles = ["producer", "consumer"]
aggregate = "mean"
[schedule]
name = "adaptive"
lambda0 = 0.1
rounds = 7
target = "params"
target_value = 0.25
max_drop = 1e-3
'''
    r = recipe(write(tmp_path, text))
    assert r.analysis["ignore"] == ("fc", "head.proj")
    assert r.analysis["split_overrides"]["odd name"] == "outer"
    assert r.scorer_params["roles"] == ("producer", "consumer")
    again = recipe(r.to_toml_path(tmp_path / "again.toml"))
    assert again == r and again.description == r.description
    assert again.source != r.source                              # the source is not compared


def test_recipes_are_frozen():
    r = recipe("l1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        r.schedule_params["rounds"] = 3  # type: ignore[index]
    assert r.replace(rounds=3).schedule_params["rounds"] == 3 and r.schedule_params["rounds"] == 10


def test_the_name_defaults_to_the_file_stem(tmp_path):
    r = recipe(write(tmp_path, MINIMAL.replace('[recipe]\nname = "mine"\n', ""), "stemmy.toml"))
    assert r.name == "stemmy"


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------
def test_unknown_recipe_names_list_the_available_ones():
    with pytest.raises(RecipeError, match=r"unknown recipe 'iapp'; available: \['aiap', 'hap', 'hap_implant', 'iap', 'l1', 'three_d'\]"):
        recipe("iapp")
    with pytest.raises(RecipeError, match="not found"):
        recipe("/nonexistent/dir/x.toml")


@pytest.mark.parametrize("text, pattern", [
    (MINIMAL + "[passes]\nx = 1\n", r"unknown section\(s\) \['\[passes\]'\]; valid: .*\[schedule\]"),
    (MINIMAL.replace('name = "l1"', 'name = "l3"'),
     r"unknown scorer 'l3' in \[scorer\]; available: \[.*'l1', 'l2'.*\]"),
    (MINIMAL.replace('name = "iterative"', 'name = "gradual"'),
     r"unknown schedule 'gradual' in \[schedule\]; available: \['adaptive', 'iterative', 'one_shot', 'three_d'\]"),
    (MINIMAL + "percentil = 20.0\n",
     r"unknown parameter\(s\) \['percentil'\] for schedule 'iterative' in \[schedule\]; valid: .*'percentile'"),
    (MINIMAL + "evaluate = 1\n", r"unknown parameter\(s\) \['evaluate'\].*given to Recipe.run"),
    (MINIMAL.replace('name = "l1"', 'name = "l1"\np = 2'),
     r"unknown parameter\(s\) \['p'\] for scorer 'l1' in \[scorer\]; valid: \['roles', 'aggregate'\]"),
    (MINIMAL.replace('name = "l1"', 'name = "activation"\npower = -1.0'),
     r"invalid \[scorer\] parameters for 'activation': .*power"),
    (MINIMAL + "[analysis]\nsplit = 'inner'\n", r"unknown parameter\(s\) \['split'\] in \[analysis\]; valid: .*'split_policy'"),
    (MINIMAL + "[analysis]\nsplit_policy = 'middle'\n",
     r"invalid \[analysis\] parameters: split_policy must be 'auto', 'inner', 'outer' or 'heads', got 'middle'"),
    (MINIMAL + "[analysis]\nignore = 3\n", r"invalid \[analysis\] parameters: ignore takes module or parameter names"),
    (MINIMAL + "[analysis]\nfrontend = 'jit'\n", r"invalid \[analysis\] parameters: unknown frontend 'jit'"),
    (MINIMAL + "[analysis]\nsplit_overrides = { view = 'middle' }\n",
     r"invalid \[analysis\] parameters: split_overrides\['view'\]"),
    (MINIMAL + "percentile = 150.0\n", r"invalid \[schedule\] parameters for 'iterative': percentile must be"),
    (MINIMAL.replace('[recipe]\nname = "mine"', '[recipe]\nname = "mine"\nauthor = "me"'),
     r"unknown key\(s\) \['author'\] in \[recipe\]"),
    (MINIMAL.replace('name = "l1"', 'power = 1.0'), r"\[scorer\] needs a name"),
    ("[recipe]\nname = 'x'\n[scorer]\nname = 'l1'\n", r"\[schedule\] needs a name"),
    ("[recipe]\nname = 'x'\nscorer = 'l1'\n", r"unknown key\(s\) \['scorer'\] in \[recipe\]"),
    ("[recipe\nname = 'x'\n", r"not valid TOML"),
])
def test_invalid_recipes_raise_clear_errors(tmp_path, text, pattern):
    with pytest.raises(RecipeError, match=pattern):
        recipe(write(tmp_path, text))


def test_recipe_errors_name_the_recipe_and_file(tmp_path):
    path = write(tmp_path, MINIMAL + "percentil = 20.0\n")
    with pytest.raises(RecipeError) as info:
        recipe(path)
    assert "recipe 'mine'" in str(info.value) and path in str(info.value)
    assert isinstance(info.value, ValueError)


def test_schedule_parameters_are_the_config_fields():
    from fxprune.recipes import schedule_parameters
    from fxprune.schedules import SCHEDULES

    for name, (_, config_cls) in SCHEDULES.items():
        names = {f.name for f in dataclasses.fields(config_cls)} - {"scorer", "scorer_params", "analysis"}
        assert set(schedule_parameters(name)) == names
    assert schedule_parameters("iterative") == ("percentile", "rounds", "tolerance", "percentile_rule",
                                                "num_batches", "min_channels", "uniform")
    assert "implant_ratio" in schedule_parameters("one_shot") and "rounds" not in schedule_parameters("one_shot")


def test_a_recipe_gives_its_schedule_config():
    config = recipe("aiap").config()
    assert type(config).__name__ == "AdaptiveConfig" and config.scorer == "activation"
    assert config.analysis == fxprune.AnalysisConfig(split_policy="inner") and config.rounds == 30


def test_scorer_parameters_come_from_the_factories():
    assert scorer_parameters("l1") == ("roles", "aggregate")   # p is fixed by the l1 factory
    for name in SCORERS:
        params = scorer_parameters(name)
        assert params is None or all(isinstance(p, str) for p in params)


def test_programmatic_recipes_are_validated_too():
    with pytest.raises(RecipeError, match="unknown parameter"):
        Recipe("x", "one_shot", "l1", schedule_params={"percentile": 20.0})
    with pytest.raises(RecipeError, match="max_ratio"):
        Recipe("x", "one_shot", "l1", schedule_params={"max_ratio": 1.5})
    with pytest.raises(RecipeError, match="cannot be written to TOML"):
        Recipe("x", "one_shot", "l1", schedule_params={"num_batches": None}).to_toml()


# ---------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------
def test_run_uses_the_recipe_and_overrides():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 2))
    calls = []
    history = recipe("l1").run(model, (torch.randn(2, 4),), evaluate=lambda gm: 90.0,
                               finetune=lambda gm: calls.append(1), rounds=2, progress=False)
    assert isinstance(history, History) and history.schedule == "iterative"
    assert [r.round for r in history.rounds] == [0, 1, 2] and len(calls) == 2
    # percentile 20 of 10 distinct scores removes 2 channels, then 2 of the 8 left
    assert history.graph_module.get_submodule("0").out_features == 6
    with pytest.raises(RecipeError, match=r"unknown override\(s\) \['round'\]"):
        recipe("l1").run(model, (torch.randn(2, 4),), evaluate=lambda gm: 90.0, round=2)


def test_run_passes_analysis_options(tmp_path):
    text = MINIMAL + "rounds = 1\n[analysis]\nignore = ['0']\n"
    model = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 2))
    history = recipe(write(tmp_path, text)).run(model, (torch.randn(2, 4),), evaluate=lambda gm: 1.0,
                                                progress=False)
    assert history.stop_reason == "nothing to prune"            # layer 0 is ignored: no group left


# ---------------------------------------------------------------------------
# packaging: passes/ ships as fxprune/recipes_data
# ---------------------------------------------------------------------------
def test_pyproject_ships_passes_as_package_data_and_lists_every_package():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"]["fxprune.recipes_data"] == "passes"
    assert "*.toml" in config["package-data"]["fxprune.recipes_data"]
    listed = set(config["packages"])
    on_disk = {".".join(p.parent.relative_to(REPO).parts)
               for p in (REPO / "fxprune").rglob("__init__.py")}
    missing = sorted(on_disk - listed)
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    assert listed - on_disk == {"fxprune.recipes_data"}
