"""Specifications of the one form of analysis options: AnalysisConfig, analyze() and prune()."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune import AnalysisConfig, ConfigError


class Heads(nn.Module):
    """A Linear whose 12 outputs are viewed as 3 heads of 4: ``split_policy`` decides what a channel is."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 12), nn.Linear(12, 2)

    def forward(self, x):
        y = self.a(x).view(x.shape[0], 3, 4).relu()
        return self.b(y.reshape(x.shape[0], 12))


X = (torch.randn(2, 4),)


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


# ---------------------------------------------------------------------------
# AnalysisConfig
# ---------------------------------------------------------------------------
def test_a_single_name_is_one_name_not_its_characters():
    assert AnalysisConfig(ignore="fc").ignore == ("fc",)
    assert AnalysisConfig(leaf_modules="block").leaf_modules == ("block",)
    assert AnalysisConfig(leaf_modules=nn.ReLU).leaf_modules == (nn.ReLU,)
    assert AnalysisConfig(ignore=["a", "b.c"]).ignore == ("a", "b.c")
    assert AnalysisConfig(ignore=None).ignore == ()


@pytest.mark.parametrize("options, pattern", [
    ({"ignore": [3]}, r"ignore takes module or parameter names \(strings\) or module types; got 3 \(int\)"),
    ({"ignore": [int]}, r"ignore takes module or parameter names"),
    ({"leaf_modules": [3]}, r"leaf_modules takes module types or qualified module names \(strings\); got 3"),
    ({"leaf_modules": [int]}, r"leaf_modules takes"),
    ({"split_policy": "middle"}, r"split_policy must be 'auto', 'inner', 'outer' or 'heads', got 'middle'"),
    ({"frontend": "jit"}, r"unknown frontend 'jit'; available: 'fx' .*'export'"),
    ({"strict": "yes"}, r"strict must be True or False"),
    ({"split_overrides": {"view": "middle"}}, r"split_overrides\['view'\] must be one of \['auto', 'inner', 'outer', 'heads'\] or an int"),
    ({"split_overrides": ["view"]}, r"split_overrides must map fx node names to policies"),
])
def test_invalid_values_name_the_option_and_the_valid_values(options, pattern):
    with pytest.raises(ConfigError, match=pattern):
        AnalysisConfig(**options)
    with pytest.raises(ConfigError, match=pattern):
        AnalysisConfig.from_options(options)


def test_unknown_options_are_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown analysis option\(s\) \['split_polcy'\]; "
                                          r"did you mean \['split_policy'\]\? \(valid: \['leaf_modules'"):
        AnalysisConfig.from_options({"split_polcy": "outer"})
    with pytest.raises(ConfigError, match="unknown analysis option"):
        fxprune.analyze(Heads(), X, splitpolicy="outer")


def test_from_options_and_replace_build_equal_configs():
    cfg = AnalysisConfig.from_options({"split_policy": "outer", "split_overrides": {"view": 1, "a": "inner"}})
    assert cfg.split_overrides == (("a", "inner"), ("view", 1))          # sorted pairs, hashable
    assert cfg == AnalysisConfig(split_policy="outer", split_overrides=(("view", 1), ("a", "inner")))
    assert hash(cfg) == hash(AnalysisConfig.from_options(dict(split_policy="outer",
                                                             split_overrides={"a": "inner", "view": 1})))
    assert cfg.replace(strict=True).strict and not cfg.strict
    assert AnalysisConfig.coerce(None) == AnalysisConfig() and AnalysisConfig.coerce(cfg) is cfg


# ---------------------------------------------------------------------------
# analyze
# ---------------------------------------------------------------------------
def test_analyze_takes_a_config_or_keywords_and_records_the_config():
    by_keywords = fxprune.analyze(Heads(), X, split_policy="outer")
    by_config = fxprune.analyze(Heads(), X, AnalysisConfig(split_policy="outer"))
    assert [g.size for g in by_keywords.groups] == [g.size for g in by_config.groups] == [3]
    assert by_keywords.config == by_config.config == AnalysisConfig(split_policy="outer")
    # keywords apply over the config
    over = fxprune.analyze(Heads(), X, AnalysisConfig(split_policy="outer"), split_policy="inner")
    assert [g.size for g in over.groups] == [4] and over.config.split_policy == "inner"
    exported = fxprune.analyze(Heads(), X, split_policy="outer", frontend="export")
    assert exported.config.frontend == "export" and [g.size for g in exported.groups] == [3]


# ---------------------------------------------------------------------------
# prune
# ---------------------------------------------------------------------------
def test_prune_accepts_every_analysis_option():
    inner = fxprune.prune(Heads(), X, ratio=0.5).graph_module
    assert inner.a.out_features == 6                                     # 2 of 4 channels (per head)
    heads = fxprune.prune(Heads(), X, ratio=0.5, split_overrides={"view": "outer"})
    assert heads.graph_module.a.out_features == 8                        # 1 of 3 heads
    assert heads.analysis.config.split_overrides == (("view", "outer"),)
    exported = fxprune.prune(Heads(), X, ratio=0.5, frontend="export")
    assert exported.analysis.config.frontend == "export" and "aten" in exported.graph_module.code
    kept = fxprune.prune(mlp(), X, ratio=0.5, ignore="0").graph_module
    assert kept.get_submodule("0").out_features == 8 and kept.get_submodule("2").out_features == 4
    by_type = fxprune.prune(mlp(), X, ratio=0.5, ignore=nn.Linear)      # every Linear is kept
    assert by_type.analysis.config.ignore == (nn.Linear,) and not by_type.plan
    with pytest.raises(ConfigError, match="ignore entry Conv2d matches no module"):
        fxprune.prune(mlp(), X, ignore=[nn.Conv2d])
    with pytest.raises(ConfigError, match="split_overrides names node 'veiw'"):
        fxprune.prune(Heads(), X, split_overrides={"veiw": "outer"})


def test_prune_refuses_options_that_a_given_analysis_would_ignore():
    model = mlp()
    analysis = fxprune.analyze(model, X)
    with pytest.raises(ConfigError, match=r"\['ignore'\] would be ignored"):
        fxprune.prune(model, X, analysis=analysis, ignore=["0"])
    with pytest.raises(ConfigError, match=r"\['split_policy', 'registry'\] would be ignored"):
        fxprune.prune(model, X, analysis=analysis, split_policy="outer", registry=fxprune.default_registry())
    assert fxprune.prune(model, X, analysis=analysis).analysis is analysis


def test_prune_names_a_misspelt_option():
    with pytest.raises(ConfigError, match=r"unknown prune option\(s\) \['ration'\]; did you mean \['ratio'"):
        fxprune.prune(mlp(), X, ration=0.5)
