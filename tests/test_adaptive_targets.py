"""``adaptive(target="macs"|"params")`` reaches its target with default settings.

The automatic step (``lambda0=None``) and the exact last round (``finish_exact``)
land the result within one channel step of the requested reduction, never
beyond it.  A representative subset of the zoo runs here (plain convs, concats,
depthwise and squeeze-excitation, attention, GQA with rotary embeddings);
``bench/adaptive_targets.py`` runs the whole zoo (its output is in docs/benchmarks.md).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune.schedules import ScheduleInterrupted, adaptive
from fxprune.scoring.targets import TargetKind
from fxprune.testing import zoo
from fxprune.testing.targets import largest_channel_step

SUBSET = ["lenet5", "resnet_basic", "densenet", "mobilenet_v3", "vit", "llama"]


@pytest.mark.parametrize("name", SUBSET)
def test_a_macs_target_is_reached_with_default_settings(name):
    model, x = zoo.ZOO[name]()
    history = adaptive(model, x, target="macs", target_value=0.5, progress=False)
    base, best = history.rounds[0].metrics["macs"], history.best.metrics["macs"]
    reduction = 1 - best / base
    assert reduction <= 0.5 + 1e-12                                      # never beyond the target
    assert (0.5 - reduction) * base <= largest_channel_step(history.graph_module, x, TargetKind.MACS)
    assert history.rounds[-1].accepted                                   # the exact last round meets it
    assert history.rounds[1].metrics["step"] > 0


def test_a_params_target_is_reached_with_default_settings():
    model, x = zoo.ZOO["mobilenet_v2"]()
    history = adaptive(model, x, target="params", target_value=0.4, progress=False)
    base, best = history.rounds[0].metrics["params"], history.best.metrics["params"]
    assert 1 - best / base <= 0.4 + 1e-12
    assert (0.4 - (1 - best / base)) * base <= largest_channel_step(history.graph_module, x, TargetKind.PARAMS)


def mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 40), nn.ReLU(), nn.Linear(40, 2))
    with torch.no_grad():
        model[0].weight.mul_(1e3)                                        # scores far from 1: no unit scale
    return model


X = (torch.randn(2, 4),)


def test_the_step_follows_the_scores_not_their_unit():
    a = adaptive(mlp(), X, target="params", target_value=0.5, rounds=4, finish_exact=False, progress=False)
    small = mlp()
    with torch.no_grad():
        small[0].weight.mul_(1e-6)
    b = adaptive(small, X, target="params", target_value=0.5, rounds=4, finish_exact=False, progress=False)
    widths = lambda h: [r.graph_module.get_submodule("0").out_features for r in h.rounds]  # noqa: E731
    assert widths(a) == widths(b) and widths(a)[-1] < 40                 # same rounds at any score scale
    assert a.rounds[1].metrics["step"] == pytest.approx(b.rounds[1].metrics["step"] * 1e6, rel=1e-3)


def test_the_accuracy_target_keeps_lambda0_one():
    history = adaptive(mlp(), X, rounds=2, evaluate=lambda gm: 90.0, progress=False)
    assert [r.metrics["step"] for r in history.rounds[1:]] == [1.0, 1.0]
    with pytest.raises(fxprune.ConfigError, match="lambda0"):
        adaptive(mlp(), X, lambda0=0.0, evaluate=lambda gm: 90.0, progress=False)


def test_a_resumed_cost_target_run_matches_an_uninterrupted_one(tmp_path):
    reference = adaptive(mlp(), X, target="macs", target_value=0.5, rounds=6, progress=False)
    calls = []

    def interrupting(gm):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return gm

    with pytest.raises(ScheduleInterrupted):
        adaptive(mlp(), X, target="macs", target_value=0.5, rounds=6, finetune=interrupting,
                 checkpoint_dir=tmp_path, progress=False)
    resumed = adaptive(mlp(), X, target="macs", target_value=0.5, rounds=6, finetune=interrupting,
                       checkpoint_dir=tmp_path, progress=False)
    assert [r.metrics["threshold"] for r in resumed.rounds[1:]] == \
        [r.metrics["threshold"] for r in reference.rounds[1:]]
    assert resumed.best.metrics["macs"] == reference.best.metrics["macs"]
