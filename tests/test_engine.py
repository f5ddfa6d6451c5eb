"""Specifications of the schedule engine: settings, runtime arguments, custom policies, progress."""
from __future__ import annotations

import dataclasses
import inspect
import sys

import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune import AnalysisConfig, ConfigError
from fxprune.progress import Progress
from fxprune.schedules import (
    Decision,
    History,
    IterativeConfig,
    OneShotConfig,
    Policy,
    ScheduleConfig,
    iterative,
    one_shot,
)
from fxprune.scoring import SelectionConfig, select_plan

X = (torch.randn(2, 4),)


def mlp(width: int = 16) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))


def width(gm: nn.Module) -> int:
    return gm.get_submodule("0").out_features


# ---------------------------------------------------------------------------
# settings and runtime arguments
# ---------------------------------------------------------------------------
def test_an_unknown_setting_is_refused_with_the_valid_names():
    with pytest.raises(ConfigError, match=r"unknown iterative setting\(s\) \['percentil'\]; "
                                          r"did you mean \['percentile', 'percentile_rule'\]\?.*'rounds'.*'evaluate'"):
        iterative(mlp(), X, evaluate=lambda gm: 1.0, percentil=20.0, progress=False)
    with pytest.raises(ConfigError, match=r"unknown one_shot setting\(s\) \['rounds'\]"):
        one_shot(mlp(), X, rounds=3, progress=False)


def test_a_config_object_and_keyword_settings_give_the_same_run():
    config = IterativeConfig(percentile=25.0, rounds=2, analysis=AnalysisConfig(ignore="2"))
    a = iterative(mlp(), X, config, evaluate=lambda gm: 1.0, progress=False)
    b = iterative(mlp(), X, evaluate=lambda gm: 1.0, percentile=25.0, rounds=2,
                  analysis_options={"ignore": ["2"]}, progress=False)
    assert a.metrics == b.metrics and [width(r.graph_module) for r in a.rounds] == [16, 12, 9]
    c = iterative(mlp(), X, config, evaluate=lambda gm: 1.0, rounds=1, progress=False)   # over the config
    assert len(c.rounds) == 2
    with pytest.raises(ConfigError, match="takes a IterativeConfig, got OneShotConfig"):
        iterative(mlp(), X, OneShotConfig(), evaluate=lambda gm: 1.0)
    with pytest.raises(ConfigError, match="analysis= or analysis_options="):
        iterative(mlp(), X, evaluate=lambda gm: 1.0, analysis={}, analysis_options={})


def test_shared_fields_are_validated_once_for_every_schedule():
    for cls in (IterativeConfig, OneShotConfig, fxprune.schedules.AdaptiveConfig):
        with pytest.raises(ConfigError, match="min_channels must be an integer >= 1, got 0"):
            cls(min_channels=0)
        with pytest.raises(ConfigError, match="num_batches must be None or an integer >= 1"):
            cls(num_batches=0)
        with pytest.raises(ConfigError, match="unknown analysis option"):
            cls(analysis={"split": "inner"})
        with pytest.raises(TypeError):                     # keyword-only: no positional configs
            cls("l1")
    assert IterativeConfig.settings() == ("percentile", "rounds", "tolerance", "percentile_rule", "num_batches",
                                          "min_channels", "uniform")
    assert "rounds" not in OneShotConfig.settings() and OneShotConfig().budget == 1


def test_the_analysis_registry_is_a_runtime_argument():
    reg = fxprune.default_registry()
    history = iterative(mlp(), X, evaluate=lambda gm: 1.0, rounds=1, analysis_options={"registry": reg},
                        progress=False)
    assert len(history.rounds) == 2
    history = iterative(mlp(), X, evaluate=lambda gm: 1.0, rounds=1, registry=reg, progress=False)
    assert len(history.rounds) == 2


def test_the_public_functions_spell_out_their_signature():
    params = inspect.signature(iterative).parameters
    assert list(params)[:4] == ["model", "example_inputs", "config", "evaluate"]
    assert {"finetune", "checkpoint_dir", "percentile", "rounds", "tolerance", "analysis",
            "analysis_options"} <= set(params)
    assert params["rounds"].default == 10 and params["progress"].default is True
    assert "implant_ratio" in inspect.signature(one_shot).parameters


# ---------------------------------------------------------------------------
# a custom policy
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class HalvingConfig(ScheduleConfig):
    rounds: int = 5
    floor: float = 50.0        # stop once accuracy falls below this


class Halving(Policy):
    """Each round removes the lower-scoring half of every group; stops below the accuracy floor."""

    name, config_class = "halving", HalvingConfig

    def initial_state(self):
        return {"halvings": 0}

    def plan(self, analysis, scores, state):
        return select_plan(analysis, scores, SelectionConfig(ratio=0.5, min_channels=self.config.min_channels))

    def decide(self, number, metrics, state, history):
        ok = metrics["accuracy"] >= self.config.floor
        return Decision(accepted=ok, stop=None if ok else "floor", state={"halvings": state["halvings"] + 1},
                        metrics={"halvings": state["halvings"] + 1})


def test_a_custom_policy_runs_in_the_engine_with_checkpoints(tmp_path):
    evaluate = lambda gm: 100.0 if width(gm) >= 4 else 0.0       # noqa: E731
    history = Halving.run(mlp(), X, evaluate=evaluate, progress=False)
    assert isinstance(history, History) and history.schedule == "halving"
    assert [width(r.graph_module) for r in history.rounds] == [16, 8, 4, 2]
    assert [r.accepted for r in history.rounds] == [True, True, True, False]
    assert history.stop_reason == "floor" and history.best.round == 2
    assert history.rounds[-1].metrics["halvings"] == 3

    calls = []

    def interrupting(gm):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return gm

    with pytest.raises(KeyboardInterrupt):
        Halving.run(mlp(), X, evaluate=evaluate, finetune=interrupting, checkpoint_dir=tmp_path, progress=False)
    resumed = Halving.run(mlp(), X, evaluate=evaluate, finetune=interrupting, checkpoint_dir=tmp_path,
                          progress=False)
    assert resumed.metrics == history.metrics                     # the policy's state was restored
    with pytest.raises(ConfigError, match="floor"):
        Halving.run(mlp(), X, evaluate=evaluate, floor=10.0, checkpoint_dir=tmp_path, progress=False)


def test_a_policy_without_a_plan_says_so():
    class Nothing(Policy):
        name = "nothing"

    with pytest.raises(NotImplementedError, match="Nothing must implement plan"):
        Nothing.run(mlp(), X, progress=False)


# ---------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------
def test_progress_is_quiet_on_other_ranks(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)   # tqdm not importable: plain stderr lines
    Progress("demo", 2, unit="round").update(1, {"acc": "1.00"})
    assert capsys.readouterr().err == "[fxprune demo] round 1/2 acc=1.00\n"
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    bar = Progress("demo", 2, unit="round")
    bar.update(1, {"acc": "1.00"})
    bar.message("hello")
    bar.close()
    assert list(fxprune.progress.progress(range(2), total=2)) == [0, 1]
    assert capsys.readouterr().err == ""
