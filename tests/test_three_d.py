"""3D pruning (issue 12): the accuracy model's fit, the budget-constrained optimiser, the schedule.

* the fit recovers a known low-rank polynomial from noisy samples, cross-validation
  picks the right degree, the full tensor is plain least squares;
* the design is a deterministic Latin hypercube with the box's corners;
* ``Space3D.macs`` is the emitted model's MACs exactly, and the optimiser's choice
  meets the budget while every candidate with a higher predicted accuracy does not;
* the schedule: phases, fine-tuning budgets, resized views for the callbacks,
  checkpoints, interrupt and resume (identical to an uninterrupted run), the recipe.
"""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxprune
from fxprune.analysis.blocks import ProjectionPolicy
from fxprune.analysis.cost import count_macs
from fxprune.errors import ConfigError, PlanError
from fxprune.modules import ResizeInputs
from fxprune.plan3d import Space3D
from fxprune.rewrite.record import RewriteRecord
from fxprune.schedules import History, ScheduleInterrupted, three_d
from fxprune.schedules.fit3d import PolyFit, design_points, fit_polynomial, maximise, select_fit
from fxprune.schedules.three_d import BlockScoring, ThreeDConfig, candidates, wrapped
from fxprune.testing import zoo


# ---------------------------------------------------------------------------
# the fit
# ---------------------------------------------------------------------------
def _cp_tensor(rng, degree, rank):
    a, b, c = (rng.normal(size=(degree + 1, rank)) for _ in range(3))
    return np.einsum("iq,jq,kq->ijk", a, b, c)


def test_fit_recovers_a_known_low_rank_polynomial_from_noisy_samples():
    rng = np.random.default_rng(3)
    truth = PolyFit(2, 2, 10.0 * _cp_tensor(rng, 2, 2))
    pts = rng.uniform((0.0, 0.2, 0.5), 1.0, size=(80, 3))
    noisy = truth.predict(pts) + rng.normal(0.0, 0.05, len(pts))
    fit = fit_polynomial(pts, noisy, degree=2, rank=2, ridge=1e-8)
    grid = np.array(list(itertools.product(np.linspace(0, 1, 6), np.linspace(0.2, 1, 6), np.linspace(0.5, 1, 6))))
    spread = np.ptp(truth.predict(grid))
    assert np.abs(fit.predict(grid) - truth.predict(grid)).max() < 0.02 * spread
    assert fit.degree == 2 and fit.rank == 2 and fit.coefficients.shape == (3, 3, 3)
    # without noise, closer still (alternating least squares converges slowly near the optimum, so the
    # function is recovered, not each coefficient: the full tensor's coefficients are tested below)
    exact = fit_polynomial(pts, truth.predict(pts), degree=2, rank=2, ridge=0.0)
    assert np.abs(exact.predict(grid) - truth.predict(grid)).max() < 0.005 * spread
    assert PolyFit.from_json(fit.to_json()).predict(grid) == pytest.approx(fit.predict(grid))


def test_the_full_tensor_is_least_squares_on_the_monomials():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0.0, 1.0, size=(30, 3))
    y = rng.normal(size=30)
    fit = fit_polynomial(pts, y, degree=1, rank=None, ridge=0.0)
    z = np.stack([pts[:, 0] ** i * pts[:, 1] ** j * pts[:, 2] ** k
                  for i, j, k in itertools.product(range(2), repeat=3)], axis=1)
    coef = np.linalg.lstsq(z, y, rcond=None)[0]
    assert np.allclose(fit.coefficients.ravel(), coef, atol=1e-8)


@pytest.mark.parametrize("degree, rank", [(1, 2), (2, 2), (3, 2), (2, 1)])
def test_cross_validation_picks_the_right_degree_and_rank(degree, rank):
    rng = np.random.default_rng(degree + 10 * rank)
    truth = {(1, 2): lambda p: 80 + 10 * p[:, 1] + 5 * p[:, 0] * p[:, 2],
             (2, 2): lambda p: 90 - 30 * (1 - p[:, 1]) ** 2 - 10 * (1 - p[:, 0]) * (1 - p[:, 2]),
             (3, 2): lambda p: 90 - 40 * (1 - p[:, 1]) ** 3 - 5 * p[:, 0] * p[:, 2],
             # a constant plus one separable product: rank 1
             (2, 1): lambda p: 60 + 30 * (0.5 + p[:, 0]) * p[:, 1] ** 2 * (0.2 + p[:, 2])}[degree, rank]
    pts = design_points(40, (0.0, 0.2, 0.5), (1.0, 1.0, 1.0), seed=degree + 10 * rank)
    y = truth(pts) + rng.normal(0.0, 0.05, len(pts))
    chosen = select_fit(pts, y, degrees=(1, 2, 3), ranks=(1, 2), full=False, seed=0)
    assert (chosen.fit.degree, chosen.fit.rank) == (degree, rank), chosen.table()
    assert chosen.chosen is not None and "*" in chosen.table()


def test_few_samples_give_the_simplest_fit_and_bad_input_is_refused():
    chosen = select_fit([[1, 1, 1], [0.5, 0.5, 0.5], [0.2, 0.9, 0.6]], [90.0, 70.0, 60.0])
    assert (chosen.fit.degree, chosen.fit.rank, chosen.scores) == (1, 1, ())
    with pytest.raises(ConfigError, match="shape"):
        fit_polynomial(np.zeros((4, 2)), np.zeros(4), 1)
    with pytest.raises(ConfigError, match="finite"):
        fit_polynomial(np.zeros((2, 3)), [1.0, float("nan")], 1)


# ---------------------------------------------------------------------------
# the design
# ---------------------------------------------------------------------------
def test_the_design_is_a_deterministic_latin_hypercube_with_corners():
    lo, hi = (0.0, 0.25, 0.5), (1.0, 1.0, 1.0)
    pts = design_points(10, lo, hi, seed=4)
    assert np.array_equal(pts, design_points(10, lo, hi, seed=4))
    corners = {tuple(c) for c in itertools.product(*zip(lo, hi))} - {hi}
    assert corners == {tuple(p) for p in pts[:7]}
    lhs = (pts[7:] - lo) / (np.array(hi) - lo)
    for axis in range(3):  # one point in each of the 10 strata of every axis
        assert sorted(np.floor(lhs[:, axis] * 10).astype(int)) == list(range(10))
    flat = design_points(4, (1.0, 0.5, 0.5), hi, seed=0)   # a degenerate depth axis: no duplicate corners
    assert len({tuple(p) for p in flat}) == len(flat) == 3 + 4


# ---------------------------------------------------------------------------
# exact MACs and the optimiser
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet_space():
    model, inputs = zoo.resnet_basic()
    return Space3D(fxprune.analyze(model, inputs), projection=ProjectionPolicy.REPLACE)


def _macs_of(gm, size, channels=3):
    a = fxprune.analyze(gm, (torch.randn(1, channels, *size),))
    return count_macs(a.graph_module, a.registry)


def test_space_macs_are_the_emitted_models_macs(resnet_space):
    space = resnet_space
    rng = random.Random(0)
    for _ in range(5):
        p = space.point(rng.random(), rng.uniform(0.2, 1.0), rng.uniform(0.4, 1.0))
        gm = space.record(p).emit(space.analysis)
        assert space.macs(p) == _macs_of(gm, p.size), p
    assert space.macs(space.point(1.0, 1.0, 1.0)) == space.macs_original
    assert space.depths(0.5) == (0.5, 0.625, 0.75, 0.875, 1.0)   # 8 removable blocks under REPLACE


def test_the_optimiser_meets_the_budget_and_nothing_better_does(resnet_space):
    space = resnet_space
    cfg = ThreeDConfig(widths=9, resolutions=4, depth_min=0.5, projection="replace")
    budget = 0.3 * space.macs_original
    points, macs = candidates(space, cfg, budget)
    assert len(points) > 9 * 4 * 5            # the grid plus refined boundary widths
    # a fit that prefers width, then depth, then resolution
    coef = np.zeros((2, 2, 2))
    coef[0, 0, 0], coef[0, 1, 0], coef[1, 0, 0], coef[0, 0, 1] = 50.0, 30.0, 10.0, 5.0
    fit = PolyFit(1, None, coef)
    best = maximise(fit, [p.dwr for p in points], macs, budget)
    chosen = points[best]
    assert macs[best] <= budget
    f = fit.predict([p.dwr for p in points])
    assert all(m > budget for m, v in zip(macs, f) if v > f[best])
    assert _macs_of(space.record(chosen).emit(space.analysis), chosen.size) == macs[best] <= budget
    # each refined width (off the grid) is the largest within the budget at its depth and size, to the
    # bisection's tolerance
    step = (1.0 - cfg.width_min) / (cfg.widths - 1)
    grid = np.linspace(cfg.width_min, 1.0, cfg.widths)
    refined = [(p, m) for p, m in zip(points, macs) if not np.isclose(grid, p.width).any()]
    assert refined
    for p, m in refined:
        assert m <= budget < space.macs(space.point(p.depth, p.width + 2e-3 * step, p.resolution)), p
    with pytest.raises(ConfigError, match="no configuration meets"):
        maximise(fit, [p.dwr for p in points], macs, 10)


# ---------------------------------------------------------------------------
# the rewrite record
# ---------------------------------------------------------------------------
def test_a_3d_rewrite_record_round_trips_and_is_validated():
    record = RewriteRecord({1: [0, 2]}, blocks=[3, 1, 3], projection="replace", input_size=[20, 20])
    assert record.blocks == (1, 3) and record.projection is ProjectionPolicy.REPLACE and record.is_3d
    assert RewriteRecord.from_json(record.to_json()) == record
    assert RewriteRecord({0: [1]}).to_json() == {"plan": [[0, [1]]]}          # unchanged for 2D records
    with pytest.raises(PlanError, match="implants"):
        RewriteRecord({}, {0: [1]}, "pointwise", blocks=(0,))
    with pytest.raises(PlanError, match="input_size"):
        RewriteRecord(input_size=(0, 4))
    with pytest.raises(PlanError, match="malformed"):
        RewriteRecord.from_json({"plan": [], "blocks": 3})


# ---------------------------------------------------------------------------
# the schedule
# ---------------------------------------------------------------------------
class TinyRes(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a1, self.a2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.b1, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(x + self.a2(F.relu(self.a1(x))))
        x = F.relu(x + self.b2(F.relu(self.b1(x))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _model():
    torch.manual_seed(0)
    return TinyRes()


X = (torch.randn(2, 3, 8, 8),)
SMALL = dict(samples=3, corners=False, degrees=(1,), ranks=(1,), widths=5, resolutions=3, full_tensor=False,
             progress=False)


class Calls:
    """Deterministic callbacks recording what they were given."""

    def __init__(self, interrupt_at=None):
        self.evaluated, self.tuned, self.interrupt_at = [], [], interrupt_at

    def evaluate(self, m):
        out = m(torch.ones(1, 3, 8, 8))                    # always fed the original size
        assert out.shape == (1, 4)
        size = m.sizes[0] if isinstance(m, ResizeInputs) else (8, 8)
        self.evaluated.append(size)
        gm = m.module if isinstance(m, ResizeInputs) else m
        return 40.0 + sum(p.numel() for p in gm.parameters()) / 50.0 + size[0]

    def finetune(self, m):
        self.tuned.append(type(m).__name__)
        if self.interrupt_at is not None and len(self.tuned) == self.interrupt_at:
            raise KeyboardInterrupt
        with torch.no_grad():
            for p in m.parameters():
                p.mul_(0.999)


def test_the_schedule_samples_fits_and_prunes_within_the_budget():
    calls = Calls()
    history = three_d(_model(), X, evaluate=calls.evaluate, finetune=calls.finetune, macs_target=0.4,
                      sample_finetunes=2, final_finetunes=3, **SMALL)
    phases = [r.metrics["phase"] for r in history.rounds[1:]]
    assert phases == ["sample"] * 3 + ["final"] and history.stop_reason == "done"
    assert history.best.round == 4 and history.best is history.rounds[-1]
    assert len(calls.tuned) == 3 * 2 + 3
    assert "ResizeInputs" in calls.tuned and (8, 8) in calls.evaluated and len(calls.evaluated) == 1 + 4
    m = history.best.metrics
    assert m["macs"] == m["macs_predicted"] <= m["macs_budget"] == 0.4 * history.rounds[0].metrics["macs"]
    assert m["fit_degree"] == 1 and m["fit_rank"] == 1 and m["predicted_accuracy"] > 0
    for r in history.rounds[1:]:
        size = r.metrics["input_size"]
        assert r.graph_module(torch.randn(1, 3, *size)).shape == (1, 4)
    assert wrapped(history)(torch.randn(2, 3, 8, 8)).shape == (2, 4)
    assert "three_d: 5 rounds, stopped: done" in history.summary()


def _depth_cheap(m):
    """A metric that barely cares about depth: the fit should trade blocks away first."""
    size = m.sizes[0][-1] if isinstance(m, ResizeInputs) else 8
    gm = m.module if isinstance(m, ResizeInputs) else m
    convs = sum(hasattr(gm, n) for n in ("a1", "a2", "b1", "b2"))
    return 40 + 2 * convs / 4 + 20 * (gm.stem.out_channels / 8) ** 0.5 + 20 * (size / 8) ** 0.5


@pytest.mark.parametrize("metric, reduced", [("calls", ("width", "resolution")), ("depth_cheap", ("depth",))])
def test_the_result_has_the_chosen_depth_width_and_resolution_and_is_a_sound_graph(metric, reduced):
    model = _model()
    evaluate = Calls().evaluate if metric == "calls" else _depth_cheap
    history = three_d(model, X, evaluate=evaluate, finetune=Calls().finetune, macs_target=0.2,
                      **{**SMALL, "samples": 6, "degrees": (1, 2)})
    m = history.best.metrics
    gm, size = history.graph_module, tuple(m["input_size"])
    inputs = (torch.randn(2, 3, *size),)
    # the chosen point, rebuilt independently from the original model (same block and channel scores)
    space = Space3D(fxprune.analyze(model, X))
    point = space.point(m["depth"], m["width"], m["resolution"])
    assert (list(point.blocks), list(point.size)) == (m["blocks_removed"], m["input_size"])
    assert all(getattr(point, axis) < 1.0 for axis in reduced), point    # the axes this metric trades away
    reference = space.record(point).emit(space.analysis)
    assert {k: v.shape for k, v in gm.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    # depth: the re-analysed result lists exactly the blocks that were kept
    result = fxprune.analyze(gm, inputs)
    assert len(result.blocks) == space.n_blocks - len(point.blocks) == round(point.depth * space.n_blocks)
    # width: every conv and linear keeps about w of its prunable output channels (the head's outputs stay)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d) and hasattr(gm, name):
            kept = getattr(gm, name).out_channels
            assert abs(kept - point.width * mod.out_channels) <= 1, (name, kept, point.width)
    assert gm.head.out_features == 4
    assert m["macs"] == count_macs(result.graph_module, result.registry) <= m["macs_budget"]
    # the result is a sound graph in its own right: the dead-channel and block-removal invariants hold on it
    gm.eval()
    fxprune.testing.check_pruning(gm, inputs, plans=2)
    if result.blocks:
        fxprune.testing.check_block_removal(gm, inputs, subsets=1)
    fxprune.testing.check_block_removal(model.eval(), X, subsets=1)
    assert torch.equal(model.stem.weight, _model().stem.weight)          # the input model is never mutated


def test_checkpoints_interrupt_and_resume_give_the_uninterrupted_run(tmp_path):
    full = three_d(_model(), X, evaluate=Calls().evaluate, finetune=Calls().finetune, **SMALL)
    calls = Calls(interrupt_at=3)
    with pytest.raises(ScheduleInterrupted) as exc:
        three_d(_model(), X, evaluate=calls.evaluate, finetune=calls.finetune, checkpoint_dir=tmp_path, **SMALL)
    assert [r.round for r in exc.value.history.rounds] == [0, 1, 2]
    again = Calls()
    resumed = three_d(_model(), X, evaluate=again.evaluate, finetune=again.finetune, checkpoint_dir=tmp_path, **SMALL)
    assert len(again.evaluated) == 2                       # rounds 3 and 4 only
    strip = lambda h: [{k: v for k, v in r.metrics.items()} for r in h.rounds]  # noqa: E731
    assert strip(resumed) == strip(full)
    for a, b in zip(resumed.rounds, full.rounds):
        assert all(torch.equal(x, y) for x, y in zip(a.graph_module.state_dict().values(),
                                                      b.graph_module.state_dict().values()))
    loaded = History.load(tmp_path, _model())
    assert loaded.best.round == 4 and loaded.best.metrics["input_size"] == full.best.metrics["input_size"]
    assert torch.equal(loaded.graph_module(torch.ones(1, 3, *full.best.metrics["input_size"])),
                       full.graph_module(torch.ones(1, 3, *full.best.metrics["input_size"])))
    with pytest.raises(ConfigError, match="macs_target"):
        three_d(_model(), X, evaluate=again.evaluate, checkpoint_dir=tmp_path, **{**SMALL, "macs_target": 0.3})


def test_settings_are_validated_and_the_recipe_runs():
    for bad, match in (({"macs_target": 0.0}, "macs_target"), ({"uniform": True}, "uniform"),
                       ({"block_scoring": "norm"}, "block_scoring"), ({"degrees": []}, "degrees"),
                       ({"widths": 1}, "widths")):
        with pytest.raises(ConfigError, match=match):
            ThreeDConfig(**bad)
    assert ThreeDConfig(block_scoring="accuracy_drop").block_scoring is BlockScoring.ACCURACY_DROP
    assert ThreeDConfig(samples=4).budget == 4 + 7 + 1
    with pytest.raises(ConfigError, match="evaluate"):
        three_d(_model(), X, progress=False)
    with pytest.raises(ConfigError, match="rewind_state"):
        three_d(_model(), X, evaluate=lambda m: 1.0, rewind_state=_model().state_dict(), progress=False)
    recipe = fxprune.recipe("three_d")
    assert recipe.schedule == "three_d" and recipe.config().macs_target == 0.5
    history = recipe.run(_model(), X, evaluate=Calls().evaluate, block_scoring="accuracy_drop",
                         **{k: v for k, v in SMALL.items()})
    assert history.best.metrics["macs"] <= 0.5 * history.rounds[0].metrics["macs"]
