"""Specifications of the schedule drivers: iterative (ILP/IAP), adaptive (AIAP), one-shot (HAP).

Every test uses a tiny model with hand-set weights, so the L1 score of each
hidden channel is known, and fake ``finetune``/``evaluate`` callbacks whose
results depend on the remaining channels; the expected channels, thresholds
and stop rounds are worked out by hand in the comments.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.fx as fx
import torch.nn as nn

import fxprune
from _saving import XC, conv_net, shrink
from fxprune.errors import ConfigError
from fxprune.schedules import (
    History,
    ScheduleInterrupted,
    adaptive,
    iterative,
    one_shot,
)
from fxprune.schedules.plans import threshold_plan

X = (torch.randn(2, 4),)


def mlp(scores, hidden_in=4, out=2) -> nn.Sequential:
    """Linear(4, H) -> ReLU -> Linear(H, 2) whose hidden channel c has L1 score ``scores[c]``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(hidden_in, len(scores)), nn.ReLU(), nn.Linear(len(scores), out))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[:, 0] = torch.tensor(scores, dtype=torch.float32)
        model[0].bias.copy_(torch.arange(len(scores), dtype=torch.float32) / 100)
    return model


def hidden(gm: nn.Module) -> int:
    return gm.get_submodule("0").out_features


def surviving(gm: nn.Module) -> list[float]:
    """The L1 scores (= first weight column) of the surviving hidden channels."""
    return gm.get_submodule("0").weight[:, 0].tolist()


class Counter:
    """A fake callback that counts calls and delegates to ``fn``."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, gm):
        self.calls += 1
        return self.fn(gm)


# ---------------------------------------------------------------------------
# iterative (ILP / IAP)
# ---------------------------------------------------------------------------
def test_iterative_prunes_channels_at_or_below_the_percentile_and_stops_at_tolerance():
    model = mlp([float(c + 1) for c in range(10)])          # scores 1..10
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # accuracy falls by 2 points once fewer than 6 hidden channels are left
    evaluate = Counter(lambda gm: 90.0 if hidden(gm) >= 6 else 88.0)
    finetune = Counter(lambda gm: gm)
    history = iterative(model, X, scorer="l1", percentile=20.0, rounds=10, tolerance=1.0,
                        percentile_rule="threshold", evaluate=evaluate, finetune=finetune, progress=False)
    # round 1: 20th percentile of 1..10 is 2.8 -> scores 1, 2 go
    # round 2: of 3..10 it is 4.4 -> 3, 4 go; round 3: of 5..10 it is 6.0 -> 5, 6 go
    assert surviving(history.rounds[1].graph_module) == [3., 4., 5., 6., 7., 8., 9., 10.]
    assert surviving(history.rounds[2].graph_module) == [5., 6., 7., 8., 9., 10.]
    assert surviving(history.rounds[3].graph_module) == [7., 8., 9., 10.]
    # round 3 drops 2 points > 1: stop and return round 2, the last model within tolerance
    assert [r.round for r in history.rounds] == [0, 1, 2, 3]
    assert [r.accepted for r in history.rounds] == [True, True, True, False]
    assert history.stop_reason == "tolerance"
    assert history.best.round == 2 and history.graph_module is history.rounds[2].graph_module
    assert hidden(history.graph_module) == 6
    assert evaluate.calls == 4 and finetune.calls == 3       # baseline + 3 rounds; 3 fine-tunes
    m = history.rounds[3].metrics
    assert m["accuracy"] == 88.0 and m["drop"] == pytest.approx(2.0)
    assert m["channels_removed"] == 2 and m["ratio"] == pytest.approx(2 / 6)
    assert history.rounds[0].metrics["params"] == 4 * 10 + 10 + 10 * 2 + 2
    assert m["params"] == 4 * 4 + 4 + 4 * 2 + 2
    assert m["macs"] < history.rounds[2].metrics["macs"] < history.rounds[0].metrics["macs"]
    assert m["params_ratio"] == pytest.approx(m["params"] / history.rounds[0].metrics["params"])
    assert isinstance(history.graph_module, fx.GraphModule)
    assert history.graph_module(*X).shape == (2, 2)
    for k, v in model.state_dict().items():                 # the input model is never modified
        assert torch.equal(v, before[k])


def test_iterative_threshold_rule_removes_ties_at_the_percentile():
    # sorted scores 1,1,1,2,...: the 20th percentile of 10 values is 1.0 -> all three 1s go
    model = mlp([1., 5., 1., 2., 3., 1., 4., 6., 7., 8.])
    history = iterative(model, X, percentile=20.0, rounds=1, evaluate=lambda gm: 50.0,
                        percentile_rule="threshold", progress=False)
    assert sorted(surviving(history.graph_module)) == [2., 3., 4., 5., 6., 7., 8.]
    assert history.stop_reason == "budget"


def test_iterative_never_empties_a_group_or_a_concat_member():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return self.c(torch.relu(torch.cat([self.a(x), self.b(x)], 1)))

    torch.manual_seed(0)
    model = Cat()
    with torch.no_grad():   # b's channels all score below a's
        model.b.weight.mul_(0.01)
    history = iterative(model, (torch.randn(1, 3, 4, 4),), percentile=100.0, rounds=5,
                        evaluate=lambda gm: 1.0, progress=False)
    gm1 = history.rounds[1].graph_module
    # percentile 100 selects everything; a keeps its best channel, b (the concat's other input) one
    assert gm1.a.out_channels == 1 and gm1.b.out_channels == 1 and gm1.c.in_channels == 2
    # removing either remaining channel would empty a or b: the schedule stops, no round 2
    assert history.stop_reason == "nothing to prune" and len(history.rounds) == 2


def test_threshold_plan_keeps_min_channels():
    model = mlp([1., 2., 3., 4.])
    a = fxprune.analyze(model, X)
    assert threshold_plan(a, {0: np.array([1., 2., 3., 4.])}, {0: 10.0}) == {0: [0, 1, 2]}
    assert threshold_plan(a, {0: np.array([1., 2., 3., 4.])}, {0: 10.0}, min_channels=3) == {0: [0]}
    with pytest.raises(fxprune.errors.ScoreError, match="group 0"):   # NaN cannot be ranked: say so
        threshold_plan(a, {0: np.array([np.nan, 2., 3., 4.])}, {0: 2.0})


def test_iterative_returns_the_unpruned_copy_when_round_one_fails():
    model = mlp([float(c + 1) for c in range(10)])
    history = iterative(model, X, evaluate=lambda gm: 90.0 if hidden(gm) == 10 else 10.0,
                        progress=False)
    assert history.best.round == 0 and history.stop_reason == "tolerance"
    gm = history.graph_module
    assert gm is not model and hidden(gm) == 10
    assert gm.get_submodule("0").weight.data_ptr() != model[0].weight.data_ptr()
    assert torch.equal(gm(*X), model(*X))


def test_iterative_requires_evaluate_and_validates_settings():
    model = mlp([1., 2., 3.])
    with pytest.raises(ConfigError, match="evaluate"):
        iterative(model, X, evaluate=None, progress=False)
    with pytest.raises(ConfigError, match="percentile"):
        iterative(model, X, evaluate=lambda gm: 1.0, percentile=120.0, progress=False)
    with pytest.raises(ConfigError, match="unknown analysis option"):
        iterative(model, X, evaluate=lambda gm: 1.0, analysis_options={"split": "x"}, progress=False)


# ---------------------------------------------------------------------------
# lottery-ticket rewinding
# ---------------------------------------------------------------------------
def test_rewinding_resets_surviving_weights_to_the_rewind_state():
    model = mlp([float(c + 1) for c in range(10)])
    torch.manual_seed(1)
    rewind = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    # rewind rows keep the channel order of the scores, so the same channels are pruned
    rewind["0.weight"] = torch.arange(40, dtype=torch.float32).reshape(10, 4)
    seen = []

    def finetune(gm):
        seen.append({k: v.clone() for k, v in gm.state_dict().items()})
        with torch.no_grad():       # training moves weights away from the rewind point
            gm.get_submodule("2").weight.add_(1.0)
        return gm

    history = iterative(model, X, percentile=20.0, rounds=2, evaluate=lambda gm: 1.0,
                        finetune=finetune, rewind_state=rewind, progress=False)
    # round 1 keeps original channels 2..9, round 2 (scored on rewound weights) keeps 4..9
    for state, keep in zip(seen, (list(range(2, 10)), list(range(4, 10)))):
        assert torch.equal(state["0.weight"], rewind["0.weight"][keep])
        assert torch.equal(state["0.bias"], rewind["0.bias"][keep])
        assert torch.equal(state["2.weight"], rewind["2.weight"][:, keep])
        assert torch.equal(state["2.bias"], rewind["2.bias"])
    # the recorded models are the fine-tuned ones
    assert torch.equal(history.rounds[2].graph_module.get_submodule("2").weight,
                       rewind["2.weight"][:, 4:] + 1.0)


def test_rewinding_rejects_a_state_dict_of_another_model():
    model = mlp([float(c + 1) for c in range(10)])
    other = {k: torch.zeros(3, 3) for k in model.state_dict()}
    with pytest.raises(ConfigError, match="rewind_state"):
        iterative(model, X, rounds=1, evaluate=lambda gm: 1.0, rewind_state=other, progress=False)


# ---------------------------------------------------------------------------
# checkpoints, resume, interrupts
# ---------------------------------------------------------------------------
def fake_accuracy(gm):
    return 80.0 + sum(p.numel() for p in gm.parameters()) / 1000.0


def run_iterative(checkpoint_dir, finetune, evaluate, **kw):
    return iterative(conv_net(), XC, percentile=25.0, rounds=5, tolerance=50.0, finetune=finetune,
                     evaluate=evaluate, checkpoint_dir=checkpoint_dir, progress=False, **kw)


def same_history(a: History, b: History) -> None:
    assert [r.round for r in a.rounds] == [r.round for r in b.rounds]
    assert a.metrics == b.metrics
    assert (a.best_round, a.stop_reason) == (b.best_round, b.stop_reason)
    for ra, rb in zip(a.rounds, b.rounds):
        sa, sb = ra.graph_module.state_dict(), rb.graph_module.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), (ra.round, k)


def test_interrupt_keeps_finished_rounds_and_resume_does_not_redo_them(tmp_path):
    reference = run_iterative(None, shrink, Counter(fake_accuracy))
    assert len(reference.rounds) == 6 and reference.stop_reason == "budget"

    def interrupting(gm):
        interrupting.calls += 1
        if interrupting.calls == 3:
            raise KeyboardInterrupt
        return shrink(gm)

    interrupting.calls = 0
    evaluate = Counter(fake_accuracy)
    with pytest.raises(ScheduleInterrupted) as info:
        run_iterative(tmp_path, interrupting, evaluate)
    assert isinstance(info.value, KeyboardInterrupt)
    partial = info.value.history
    assert partial.interrupted and [r.round for r in partial.rounds] == [0, 1, 2]
    assert evaluate.calls == 3                                 # baseline, rounds 1 and 2
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["rounds"] == [0, 1, 2]
    assert not (tmp_path / "round_0003.pt").exists()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]

    evaluate2 = Counter(fake_accuracy)
    resumed = run_iterative(tmp_path, shrink, evaluate2)
    assert evaluate2.calls == 3                                # rounds 3, 4, 5 only
    assert evaluate.calls + evaluate2.calls == 1 + 5
    same_history(resumed, reference)
    assert not resumed.interrupted

    # a finished run is returned as saved, without any callback
    evaluate3 = Counter(fake_accuracy)
    again = run_iterative(tmp_path, shrink, evaluate3)
    assert evaluate3.calls == 0
    same_history(again, reference)
    same_history(History.load(tmp_path, conv_net()), reference)


def test_checkpoint_files_hold_only_tensors_and_json_and_reload_onto_the_model(tmp_path):
    history = run_iterative(tmp_path, shrink, fake_accuracy)
    loaded = History.load(tmp_path, conv_net())
    same_history(loaded, history)
    for r, again in zip(history.rounds, loaded.rounds):
        tensors = torch.load(tmp_path / f"round_{r.round:04d}.pt", weights_only=True)
        assert all(type(v) is torch.Tensor for v in tensors.values())
        assert set(tensors) >= set(r.graph_module.state_dict())
        assert again.graph_module.code == r.graph_module.code
        assert torch.equal(again.graph_module(*XC), r.graph_module(*XC))
        metrics = json.loads((tmp_path / f"round_{r.round:04d}.json").read_text())["metrics"]
        assert metrics == dict(r.metrics)
    # a reloaded model can be analysed and pruned again
    assert fxprune.analyze(loaded.graph_module, XC).groups


def test_resume_with_other_settings_is_refused_and_a_larger_budget_extends(tmp_path):
    iterative(conv_net(), XC, percentile=25.0, rounds=2, tolerance=50.0, evaluate=fake_accuracy,
              checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="percentile"):
        iterative(conv_net(), XC, percentile=30.0, rounds=2, tolerance=50.0, evaluate=fake_accuracy,
                  checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="adaptive"):
        adaptive(conv_net(), XC, evaluate=fake_accuracy, checkpoint_dir=tmp_path, progress=False)
    evaluate = Counter(fake_accuracy)
    longer = iterative(conv_net(), XC, percentile=25.0, rounds=3, tolerance=50.0, evaluate=evaluate,
                       checkpoint_dir=tmp_path, progress=False)
    assert evaluate.calls == 1 and [r.round for r in longer.rounds] == [0, 1, 2, 3]


def test_progress_goes_to_stderr_and_can_be_silenced(capsys):
    model = mlp([float(c + 1) for c in range(10)])
    iterative(model, X, rounds=1, evaluate=lambda gm: 1.0, progress=False)
    assert capsys.readouterr().err == ""
    iterative(model, X, rounds=1, evaluate=lambda gm: 1.0, progress=True)
    assert "iterative" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# adaptive (AIAP)
# ---------------------------------------------------------------------------
def aiap_model():
    return mlp([float(c) for c in range(12)])                 # hidden channel c scores c


def test_adaptive_back_off_branches_follow_the_threshold_sequence():
    model = aiap_model()
    assert len(fxprune.analyze(model, X).groups) == 1          # one group: T_l = T
    # the target holds while at least 7 hidden channels are left (scores > T survive)
    evaluate = Counter(lambda gm: 90.0 if hidden(gm) >= 7 else 80.0)
    history = adaptive(model, X, lambda0=4.0, rounds=9, target="accuracy", target_value=1.0,
                       evaluate=evaluate, progress=False)
    rounds = history.rounds[1:]
    col = lambda key: [r.metrics[key] for r in rounds]        # noqa: E731
    # r1 T=0 met (channel 0 goes) -> T=4;  r2 T=4 met (1..4 go, 7 left) -> T=8
    # r3 T=8 fails -> restore r2, reset 1: step 4/2, T=4+2;  r4 T=6 fails -> reset 2: step 1, T=5
    # r5 T=5 fails -> reset 3: step 1/2, T=T_good=4, pop r2 (model stays r2's)
    # r6 T=4 met -> T=4.5;  r7 T=4.5 met -> T=5;  r8 T=5 fails -> restore r7: step .25, T=4.75
    # r9 T=4.75 met -> T=5
    assert col("threshold") == [0.0, 4.0, 8.0, 6.0, 5.0, 4.0, 4.5, 5.0, 4.75]
    assert col("step") == [4.0, 4.0, 4.0, 2.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    assert col("accepted") == [True, True, False, False, False, True, True, False, True]
    assert col("resets") == [0, 0, 1, 2, 0, 0, 0, 1, 0]
    assert col("good") == [[1], [1, 2], [1, 2], [1, 2], [1], [1, 6], [1, 6, 7], [1, 6, 7], [1, 6, 7, 9]]
    assert col("from_round") == [0, 1, 2, 2, 2, 2, 6, 7, 7]
    assert col("next_threshold")[-1] == 5.0 and col("next_step")[-1] == 0.25
    assert [hidden(r.graph_module) for r in rounds] == [11, 7, 3, 5, 6, 7, 7, 6, 7]
    assert history.stop_reason == "budget" and evaluate.calls == 10
    assert history.best.round == 9 and hidden(history.graph_module) == 7


def test_adaptive_stops_when_the_good_stack_empties():
    model = aiap_model()
    # the model 'collapses' after round 1: every later round misses the target
    evaluate = Counter(lambda gm: 90.0 if evaluate.calls <= 2 else 0.0)
    history = adaptive(model, X, lambda0=1.0, rounds=20, evaluate=evaluate, progress=False)
    # r1 T=0 met -> good [r1], T=1;  r2 T=1 fails -> step .5, T=.5;  r3 fails -> step .25, T=.25
    # r4 fails -> reset 3: step .125, T=0, pop r1 -> good is empty: stop
    assert [r.metrics["threshold"] for r in history.rounds[1:]] == [0.0, 1.0, 0.5, 0.25]
    assert history.rounds[-1].metrics["next_step"] == 0.125
    assert history.rounds[-1].metrics["good"] == []
    assert history.stop_reason == "no good checkpoint" and history.best.round == 1


def test_adaptive_stops_when_round_one_misses_the_target():
    model = aiap_model()
    # T=0 removes channel 0 (score 0); the target needs all 12
    history = adaptive(model, X, evaluate=lambda gm: 90.0 if hidden(gm) == 12 else 0.0, progress=False)
    assert len(history.rounds) == 2 and history.stop_reason == "no good checkpoint"
    assert history.best.round == 0 and hidden(history.graph_module) == 12


def test_adaptive_params_target_approaches_the_reduction_from_below():
    model = aiap_model()
    history = adaptive(model, X, lambda0=4.0, rounds=12, target="params", target_value=0.5,
                       progress=False)
    total = 12 * (4 + 1 + 2) + 2                               # each hidden channel costs 7 params
    best = history.best.metrics
    assert best["accuracy"] is None                            # no evaluate: not measured
    assert 1 - best["params_ratio"] == pytest.approx(6 * 7 / total)   # 7 channels would exceed 50%
    assert all(1 - r.metrics["params_ratio"] <= 0.5 for r in history.rounds if r.accepted)
    assert any(not r.accepted for r in history.rounds)


def test_adaptive_macs_share_and_validation():
    model = conv_net()
    history = adaptive(model, XC, lambda0=0.5, rounds=3, share="macs", target="macs",
                       target_value=0.6, progress=False)
    assert len(history.rounds) == 4
    with pytest.raises(ConfigError, match="needs evaluate"):
        adaptive(model, XC, target="accuracy", progress=False)
    with pytest.raises(ConfigError, match="reduction fraction"):
        adaptive(model, XC, target="params", target_value=2.0, progress=False)
    with pytest.raises(ConfigError, match="target must be one of"):
        adaptive(model, XC, target="latency", progress=False)


def test_adaptive_resume_matches_an_uninterrupted_run(tmp_path):
    evaluate = lambda gm: 90.0 if hidden(gm) >= 7 else 80.0   # noqa: E731
    reference = adaptive(aiap_model(), X, lambda0=4.0, rounds=9, evaluate=evaluate, progress=False)

    def interrupting(gm):
        interrupting.calls += 1
        if interrupting.calls == 5:
            raise KeyboardInterrupt
        return gm

    interrupting.calls = 0
    with pytest.raises(KeyboardInterrupt):
        adaptive(aiap_model(), X, lambda0=4.0, rounds=9, evaluate=evaluate, finetune=interrupting,
                 checkpoint_dir=tmp_path, progress=False)
    counted = Counter(evaluate)
    resumed = adaptive(aiap_model(), X, lambda0=4.0, rounds=9, evaluate=counted,
                       finetune=lambda gm: gm, checkpoint_dir=tmp_path, progress=False)
    assert counted.calls == 5                                  # rounds 5..9
    same_history(resumed, reference)


# ---------------------------------------------------------------------------
# one-shot (HAP)
# ---------------------------------------------------------------------------
def test_one_shot_caps_every_group_at_max_ratio():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 2))
    with torch.no_grad():
        model[0].weight.mul_(1e-3)                              # group 0 scores far below group 1
    evaluate = Counter(lambda gm: 75.0)
    finetune = Counter(lambda gm: None)                         # trains in place
    history = one_shot(model, X, ratio=0.6, evaluate=evaluate, finetune=finetune, progress=False)
    gm = history.graph_module
    # 48 of 80 channels go; group 0 may lose at most floor(0.95 * 40) = 38, group 1 the other 10
    assert gm.get_submodule("0").out_features == 2 and gm.get_submodule("2").out_features == 30
    assert history.best.round == 1 and history.stop_reason == "done"
    assert history.best.metrics["channels_removed"] == 48
    assert evaluate.calls == 2 and finetune.calls == 1
    uncapped = one_shot(model, X, ratio=0.6, max_ratio=1.0, progress=False).graph_module
    assert uncapped.get_submodule("0").out_features == 1        # only min_channels stops it


def test_one_shot_with_a_data_driven_scorer_and_rewind():
    if "activation" not in fxprune.scoring.SCORERS:
        pytest.skip("activation scorer not registered")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    data = [(torch.randn(8, 4),) for _ in range(2)]
    rewind = {k: v * 0 + 0.5 for k, v in model.state_dict().items()}
    history = one_shot(model, X, scorer="activation", ratio=0.5, data=data, rewind_state=rewind,
                       progress=False)
    gm = history.graph_module
    assert gm.get_submodule("0").out_features == 8
    assert all(torch.all(p == 0.5) for p in gm.parameters())
