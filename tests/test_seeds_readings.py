"""Specifications of the readings of issue 13 part B: IAP's exact-count percentile and AIAP's code variant.

Each deviation the issue lists is either fixed (the default) or an option; every
test names the deviation it pins down.  Models are tiny with hand-set weights and
fake callbacks, so the expected channels are worked out in the comments.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune.errors import ConfigError
from fxprune.schedules import IterativeConfig, iterative
from fxprune.schedules.iterative import PercentileRule, count_plan

X = (torch.randn(2, 4),)


def hidden(gm: nn.Module) -> int:
    return gm.get_submodule("0").out_features


class Fixed:
    """A scorer object returning fixed scores for group 0 (the hidden layer of a two-layer MLP)."""

    name = "fixed"

    def __init__(self, scores):
        self.scores = np.asarray(scores, dtype=np.float64)

    def __call__(self, analysis, ctx):
        return {g.id: self.scores[:g.size] if g.id == 0 else np.arange(g.size, dtype=np.float64)
                for g in analysis.groups}


def mlp_with_norms(norms) -> nn.Sequential:
    """Linear(4, H) -> ReLU -> Linear(H, 2) whose hidden channel c has producer L1 norm ``norms[c]``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, len(norms)), nn.ReLU(), nn.Linear(len(norms), 2))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[:, 0] = torch.tensor(norms, dtype=torch.float32)
    return model


# ---------------------------------------------------------------------------
# IAP: exact-count percentile with tie-breaking (the default) vs the threshold reading
# ---------------------------------------------------------------------------
def test_count_rule_removes_exactly_round_q_percent_and_breaks_ties_by_l1_then_index():
    # five channels tie at score 0; their L1 norms are 5, 3, 4, 3, 9: 20% of 10 is 2 channels,
    # the two smallest norms are the two 3s (channels 1 and 3)
    model = mlp_with_norms([5., 3., 4., 3., 9., 1., 1., 1., 1., 1.])
    scorer = Fixed([0., 0., 0., 0., 0., 1., 2., 3., 4., 5.])
    history = iterative(model, X, scorer=scorer, percentile=20.0, rounds=1, evaluate=lambda gm: 1.0,
                        progress=False)
    assert history.rounds[1].metrics["channels_removed"] == 2
    kept = history.graph_module.get_submodule("0").weight[:, 0].tolist()
    assert kept == [5., 4., 9., 1., 1., 1., 1., 1.]                      # channels 1 and 3 went
    # the threshold reading removes every channel tied at the percentile (0.0): all five
    history = iterative(model, X, scorer=scorer, percentile=20.0, rounds=1, evaluate=lambda gm: 1.0,
                        percentile_rule="threshold", progress=False)
    assert history.rounds[1].metrics["channels_removed"] == 5


def test_count_rule_ties_in_score_and_norm_go_by_channel_index():
    a = fxprune.analyze(mlp_with_norms([2.] * 10), X)
    assert count_plan(a, {0: np.zeros(10)}, 30.0) == {0: [0, 1, 2]}


@pytest.mark.parametrize("n, q, removed", [(10, 20.0, 2), (8, 20.0, 2), (6, 20.0, 1), (5, 10.0, 1),
                                           (4, 10.0, 0), (2, 20.0, 0), (10, 25.0, 3), (10, 100.0, 9)])
def test_count_rule_rounds_half_up_and_keeps_min_channels(n, q, removed):
    # round(q% of n), halves up (5 * 10% = 0.5 -> 1; 10 * 25% = 2.5 -> 3); 100% keeps one channel
    a = fxprune.analyze(mlp_with_norms([float(c + 1) for c in range(n)]), X)
    plan = count_plan(a, {0: np.arange(n, dtype=np.float64)}, q)
    assert len(plan.get(0, [])) == removed
    assert plan.get(0, []) == list(range(removed))                     # lowest scores first


def test_count_rule_skips_a_channel_that_would_empty_a_concat_input_and_takes_the_next():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 1, 1), nn.Conv2d(5, 2, 1)

        def forward(self, x):
            return self.c(torch.relu(torch.cat([self.a(x), self.b(x)], 1)))

    x = (torch.randn(1, 3, 4, 4),)
    a = fxprune.analyze(Cat(), x)
    gid = next(g.id for g in a.groups if g.size == 5)
    # b's only channel (group channel 4) scores lowest; removing it would empty b: channel 0 goes instead
    plan = count_plan(a, {g.id: (np.array([1., 2., 3., 4., 0.]) if g.id == gid else np.arange(g.size, dtype=float))
                          for g in a.groups}, 20.0)
    assert plan[gid] == [0]


def test_iap_dead_relu_units_no_longer_all_go_in_round_one():
    # the issue: dead ReLU units tie at activation score 0 and the threshold reading removed them all
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.rand(10, 4) + 0.1)
        model[0].bias.fill_(0.0)
        model[0].bias[:5] = -100.0                     # channels 0-4: always 0 after the ReLU (dead)
        model[0].weight[:5] *= torch.tensor([[5.], [1.], [4.], [2.], [3.]])   # their L1 norms differ
    data = [(torch.randn(32, 4),) for _ in range(2)]
    scores = fxprune.scoring.get_scorer("activation")(fxprune.analyze(model, X),
                                                      fxprune.scoring.ScoreContext(data=data))[0]
    assert (scores[:5] == 0).all() and (scores[5:] > 0).all()
    l1 = model[0].weight.detach().abs().sum(1)
    dead_by_norm = sorted(range(5), key=lambda c: float(l1[c]))
    ran = {}
    for rule in ("count", "threshold"):
        history = fxprune.recipe("iap").run(model, X, data=data, evaluate=lambda gm: 90.0, rounds=1,
                                            progress=False, percentile_rule=rule)
        ran[rule] = history.rounds[1].metrics["channels_removed"]
        if rule == "count":                            # the two dead units with the smallest weights
            kept = history.graph_module.get_submodule("0").weight
            removed = [c for c in range(10) if not any(torch.equal(model[0].weight[c], k) for k in kept)]
            assert removed == sorted(dead_by_norm[:2])
    assert ran == {"count": 2, "threshold": 5}


def test_percentile_rule_is_an_enum_converted_from_strings_and_validated():
    assert IterativeConfig().percentile_rule is PercentileRule.COUNT
    assert IterativeConfig(percentile_rule="threshold").percentile_rule is PercentileRule.THRESHOLD
    with pytest.raises(ConfigError, match=r"percentile_rule must be one of \['count', 'threshold'\]"):
        IterativeConfig(percentile_rule="ties")
    r = fxprune.recipe("iap").replace(percentile_rule="threshold")    # a recipe passes the TOML string
    assert r.config().percentile_rule is PercentileRule.THRESHOLD
    assert fxprune.recipe("l1").config().percentile_rule is PercentileRule.COUNT


# ---------------------------------------------------------------------------
# AIAP: faithful_to="code" (the released code's loop) next to the spec's loop
# ---------------------------------------------------------------------------
def ten_scores() -> nn.Sequential:
    """Linear(4, 10) -> ReLU -> Linear(10, 2) whose hidden channel c has L1 score c + 1 (one group, share 1)."""
    return mlp_with_norms([float(c + 1) for c in range(10)])


def test_aiap_code_starts_at_lambda0_with_the_baseline_as_good_checkpoint_and_goes_on_after_the_pop():
    # every prune fails: the accuracy drops unless all 10 channels are kept
    evaluate = lambda gm: 90.0 if hidden(gm) == 10 else 80.0  # noqa: E731
    spec = fxprune.schedules.adaptive(ten_scores(), X, lambda0=4.0, rounds=6, evaluate=evaluate, progress=False)
    # spec: round 1 at T = 0 removes nothing (accepted); T = 4, 2, 1 fail; the third reset pops round 1,
    # the stack is empty: stop
    assert [r.metrics["threshold"] for r in spec.rounds[1:]] == [0.0, 4.0, 2.0, 1.0]
    assert spec.stop_reason == "no good checkpoint"
    # (the MLP has no convolution: rank its linear group, as the code's loop ranks convolutions)
    code = fxprune.schedules.adaptive(ten_scores(), X, lambda0=4.0, rounds=6, evaluate=evaluate, progress=False,
                                      faithful_to="code", rank_families=("linear",))
    m = [r.metrics for r in code.rounds[1:]]
    # code: round 1 at T = lambda0 = 4 fails and restores the baseline (a good checkpoint: T = 0);
    # retries at 0 + 4/2 and 0 + 4/4 fail; the third reset pops the baseline, T = 0, step 0.5, and the run
    # goes on: round 4 prunes the baseline at T = 0 (nothing goes, accepted), round 5 at 0.5, round 6 at 1.0
    assert [x["threshold"] for x in m] == [4.0, 2.0, 1.0, 0.0, 0.5, 1.0]
    assert [x["from_round"] for x in m[:5]] == [0, 0, 0, 0, 4]
    assert [r.accepted for r in code.rounds[1:]] == [False, False, False, True, True, False]
    assert m[0]["good"] == [0] and m[2]["good"] == [] and m[2]["next_step"] == 0.5
    assert code.stop_reason == "budget" and code.best.round == 5
    # the next failure with an empty stack stops the code's loop too: round 4 fails as well here
    calls = iter([90.0, 80.0, 80.0, 80.0, 80.0, 90.0, 90.0])
    stopped = fxprune.schedules.adaptive(ten_scores(), X, lambda0=4.0, rounds=6, faithful_to="code",
                                         rank_families=("linear",), evaluate=lambda gm: next(calls),
                                         progress=False)
    assert stopped.stop_reason == "no good checkpoint" and len(stopped.rounds) == 5


def test_aiap_code_prunes_convolutions_only_and_splits_the_threshold_among_them():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 8), nn.ReLU(),
                          nn.Linear(8, 2))
    x = (torch.randn(2, 1, 6, 6),)
    a = fxprune.analyze(model, x)
    conv, fc = (g.id for g in a.groups)
    scores = fxprune.scoring.get_scorer("l1")(a, fxprune.scoring.ScoreContext())
    lam = float(np.sort(scores[conv])[2]) + 1e-6          # the code's round 1: T = lambda0 on the conv alone
    h = fxprune.schedules.adaptive(model, x, lambda0=lam, rounds=1, evaluate=lambda gm: 1.0, progress=False,
                                   faithful_to="code")
    gm = h.rounds[1].graph_module
    assert gm.get_submodule("0").out_channels == 3 and gm.get_submodule("3").out_features == 8
    both = fxprune.schedules.adaptive(model, x, lambda0=1e6, rounds=1, evaluate=lambda gm: 1.0, progress=False,
                                      faithful_to="code", rank_families=("conv", "linear"))
    assert both.rounds[1].graph_module.get_submodule("3").out_features == 1    # linear pruned too when asked
    spec = fxprune.schedules.adaptive(model, x, lambda0=1e6, rounds=2, evaluate=lambda gm: 1.0, progress=False)
    assert spec.rounds[2].graph_module.get_submodule("3").out_features == 1    # the spec ranks every group


def test_faithful_to_is_an_enum_converted_from_strings_and_validated():
    from fxprune.schedules import AdaptiveConfig
    from fxprune.schedules.reading import AdaptiveReading

    assert AdaptiveConfig().faithful_to is AdaptiveReading.SPEC
    cfg = fxprune.recipe("aiap").replace(faithful_to="code", rank_families=["conv"]).config()
    assert cfg.faithful_to is AdaptiveReading.CODE and cfg.rank_families == ("conv",)
    with pytest.raises(ConfigError, match=r"faithful_to must be one of \['spec', 'code'\]"):
        AdaptiveConfig(faithful_to="paper")


def test_aiap_code_on_a_model_without_convolutions_says_to_name_the_families():
    with pytest.raises(ConfigError, match=r"families \['conv'\] and this model has none.*rank_families"):
        fxprune.schedules.adaptive(ten_scores(), X, lambda0=4.0, rounds=2, evaluate=lambda gm: 90.0,
                                   progress=False, faithful_to="code")
