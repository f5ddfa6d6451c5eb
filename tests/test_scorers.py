"""Specifications of the data-driven scorers (activation/IAP, hessian/HAP, taylor) and random.

Reference values are computed by hand (numpy) from the models' weights, or
analytically (a linear model with a quadratic loss), or by brute force (the
exact Hessian of a tiny MLP).  Tolerances:

* hand / analytic cases: relative 1e-10 in float64;
* Hutchinson with 2000 probes against the exact traces of a tiny MLP: the
  relative error ``||est - exact|| / ||exact||`` is below 0.05;
* distributed (2 gloo ranks, half the batches each) against one process:
  relative 1e-10.
"""
from __future__ import annotations

import os
import re
import socket
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune.errors import ConfigError
from fxprune.scoring import SCORERS, ScoreContext, get_scorer
from fxprune.scoring.activation import ActivationPoint, ActivationScorer
from fxprune.scoring.calibration import (NO_TARGET, Accumulator, Batch, RecordingInterpreter,
                                         iter_batches, progress, record_activations)
from fxprune.scoring.hessian import HessianScorer, exact_channel_hessian_traces, weight_factor
from fxprune.scoring.random import RandomScorer
from fxprune.scoring.taylor import TaylorScorer

DOCS = Path(__file__).resolve().parents[1] / "docs" / "scorers.md"


def _close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-10) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                               rtol=rtol, atol=1e-300)


# --------------------------------------------------------------------------- batches


def test_iter_batches_convention() -> None:
    x, y, a, b = torch.zeros(2, 3), torch.ones(2), torch.zeros(2, 1), torch.zeros(2, 2)
    got = list(iter_batches([x, (x,), [x], (x, y), ((a, b), y), Batch((a, b)), Batch(x, None)]))
    assert [len(g.inputs) for g in got] == [1, 1, 1, 1, 2, 2, 1]
    assert [g.has_target for g in got] == [False, False, False, True, True, False, True]
    assert got[3].target is y and got[0].target is NO_TARGET
    assert len(list(iter_batches(torch.zeros(4, 3)))) == 1          # a tensor is one batch
    assert len(list(iter_batches([x] * 5, num_batches=2))) == 2
    with pytest.raises(ConfigError, match="sequence of 3 items"):
        list(iter_batches([(x, x, y)]))
    with pytest.raises(ConfigError, match="no target"):
        list(iter_batches([x], need_target=True))
    with pytest.raises(ConfigError, match="num_batches"):
        list(iter_batches([x], num_batches=0))


def test_recording_interpreter_captures_nodes_and_leaves_graph_intact() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    a = fxprune.analyze(model, (torch.randn(1, 3, dtype=torch.float64),))
    gm = a.graph_module
    code = gm.code
    seen: dict[str, torch.Tensor] = {}
    x = torch.randn(5, 3, dtype=torch.float64)
    out = RecordingInterpreter(gm, {"_1"}, lambda n, v: seen.__setitem__(n, v)).run(x)
    torch.testing.assert_close(seen["_1"], torch.relu(model[0](x)))
    torch.testing.assert_close(out, model(x))
    record_activations(gm, {"_0"}, iter_batches([x]), lambda n, v: seen.__setitem__(n, v))
    torch.testing.assert_close(seen["_0"], model[0](x))
    assert gm.code == code and not any(p.grad is not None for p in model.parameters())
    with pytest.raises(ConfigError, match="not in the graph"):
        record_activations(gm, {"nope"}, iter_batches([x]), lambda n, v: None)


def test_accumulator_is_float64_and_checks_shapes() -> None:
    acc = Accumulator()
    acc.add("k", torch.tensor([1.0, 2.0], dtype=torch.float32), count=2)
    acc.add("k", np.array([3.0, 4.0]), count=1)
    acc.reduce()
    assert acc.sum("k").dtype == np.float64 and acc.count("k") == 3
    _close(acc.mean("k"), [4 / 3, 2.0])
    with pytest.raises(ConfigError, match="changed shape"):
        acc.add("k", np.zeros(3))
    with pytest.raises(ConfigError, match="no batch"):
        Accumulator().reduce()


def test_progress_fallback_and_silence(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)   # tqdm not importable
    assert list(progress(range(3), total=3, desc="calib", enabled=True)) == [0, 1, 2]
    assert "calib: 3/3" in capsys.readouterr().err
    assert list(progress(range(3), enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- activation


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def _conv_bn_net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1)).double()
    with torch.no_grad():
        bn = model[1]
        bn.weight.copy_(torch.tensor([1.5, -0.5, 0.8]))
        bn.bias.copy_(torch.tensor([0.1, 0.3, -0.2]))
        bn.running_mean.copy_(torch.tensor([0.2, -0.1, 0.05]))
        bn.running_var.copy_(torch.tensor([0.5, 2.0, 1.2]))
    return model.eval()


def _batches(sizes: list[int], shape: tuple[int, ...], seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn((n,) + shape, generator=g, dtype=torch.float64) for n in sizes]


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_activation_conv_bn_relu_by_hand(power: float) -> None:
    model = _conv_bn_net()
    batches = _batches([3, 5, 1], (2, 4, 3))               # unequal batch sizes
    a = fxprune.analyze(model, (batches[0],))
    scores = ActivationScorer(power=power)(a, ScoreContext(data=batches))

    w = model[0].weight.detach().numpy()[:, :, 0, 0]
    b = model[0].bias.detach().numpy()
    bn = model[1]
    gamma, beta = bn.weight.detach().numpy(), bn.bias.detach().numpy()
    mean, var = bn.running_mean.numpy(), bn.running_var.numpy()
    x = np.concatenate([t.numpy() for t in batches])      # all 9 samples
    conv = np.einsum("ck,nkhw->nchw", w, x) + b[None, :, None, None]
    bnout = (conv - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + bn.eps)
    act = _relu(bnout * gamma[None, :, None, None] + beta[None, :, None, None])   # the ReLU output
    m = act.mean(0)                                       # mean over the batch: (C, H, W)
    expected = (m ** power).mean((1, 2))                  # power, then spatial mean
    assert set(scores) == {g.id for g in a.groups}
    _close(scores[0], expected)
    # the conv output (not what the consumer reads) would give a different ranking
    assert not np.allclose(scores[0], (np.abs(conv.mean(0)) ** power).mean((1, 2)))


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_activation_flatten_and_tokens_by_hand(power: float) -> None:
    # conv -> relu -> flatten -> linear: the consumer reads the flattened tensor; the channel
    # score is the mean over the channel's H*W indices, i.e. the same IAP statistic.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 2 * 2, 2)).double()
    batches = _batches([2, 3], (2, 2, 2), seed=3)
    a = fxprune.analyze(model, (batches[0],))
    got = ActivationScorer(power=power)(a, ScoreContext(data=batches, num_batches=2))
    w, b = model[0].weight.detach().numpy()[:, :, 0, 0], model[0].bias.detach().numpy()
    x = np.concatenate([t.numpy() for t in batches])
    act = _relu(np.einsum("ck,nkhw->nchw", w, x) + b[None, :, None, None])
    _close(got[0], (act.mean(0) ** power).mean((1, 2)))

    # tokens (B, T, C): mean over the batch, power, mean over the tokens
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    batches = _batches([2, 5], (6, 3), seed=4)
    a = fxprune.analyze(model, (batches[0],))
    got = ActivationScorer(power=power)(a, ScoreContext(data=batches))
    w, b = model[0].weight.detach().numpy(), model[0].bias.detach().numpy()
    act = _relu(np.einsum("ck,ntk->ntc", w, np.concatenate([t.numpy() for t in batches])) + b)
    _close(got[0], (act.mean(0) ** power).mean(0))


def test_activation_uses_relu_after_residual_add() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 3, 3, padding=1)
            self.head = nn.Conv2d(3, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.a(x) + self.b(x)))

    torch.manual_seed(0)
    model = Block().double().eval()
    batches = _batches([4, 2], (2, 5, 5), seed=5)
    a = fxprune.analyze(model, (batches[0],))
    got = ActivationScorer(power=2.0)(a, ScoreContext(data=batches))
    with torch.no_grad():
        x = torch.cat(batches)
        act = torch.relu(model.a(x) + model.b(x)).numpy()
    _close(got[0], (act.mean(0) ** 2).mean((1, 2)))


def test_activation_without_consumer_uses_last_tensor() -> None:
    # the hidden channels of a two-branch model whose second branch output is returned
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x)).sum(-1)

    torch.manual_seed(0)
    model = Net().double()
    batches = _batches([3], (3,), seed=6)
    a = fxprune.analyze(model, (batches[0],))
    assert a.groups and not any(m.role == "consumer" for m in a.groups[0].members)
    got = ActivationScorer()(a, ScoreContext(data=batches))
    with torch.no_grad():
        act = torch.relu(model.fc(batches[0])).numpy()
    _close(got[0], act.mean(0))


def test_activation_point_before_pooling_by_hand() -> None:
    # LeNet-style: conv -> ReLU -> max-pool -> conv -> ReLU -> max-pool -> flatten -> linear.
    # point="activation" scores the ReLU outputs before pooling (the authors' code), "consumed" the pooled
    # tensors the next layers read; for the linear layer (no pooling after its ReLU) both agree.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(5 * 2 * 2, 6), nn.ReLU(),
                          nn.Linear(6, 3)).double().eval()
    batches = _batches([3, 2], (1, 14, 14), seed=8)
    a = fxprune.analyze(model, (batches[0],))
    ctx = ScoreContext(data=batches)
    consumed = ActivationScorer()(a, ctx)
    at = ActivationScorer(point="activation")(a, ctx)
    x = torch.cat(batches)
    with torch.no_grad():
        r1 = model[1](model[0](x))
        r2 = model[4](model[3](model[2](r1)))
        r3 = model[8](model[7](model[6](model[5](r2))))
    _close(at[0], r1.mean(0).mean((1, 2)).numpy())
    _close(consumed[0], model[2](r1).mean(0).mean((1, 2)).numpy())
    _close(at[1], r2.mean(0).mean((1, 2)).numpy())
    _close(consumed[1], model[5](r2).mean(0).mean((1, 2)).numpy())
    _close(at[2], r3.mean(0).numpy())
    _close(consumed[2], r3.mean(0).numpy())
    assert not np.allclose(at[0], consumed[0])
    assert ActivationScorer(point="activation").point is ActivationPoint.ACTIVATION
    assert get_scorer("activation", point="activation").point is ActivationPoint.ACTIVATION   # TOML strings
    with pytest.raises(ConfigError, match="point"):
        ActivationScorer(point="pooled")


def test_activation_point_keeps_the_relu_after_the_add_and_pool_before_relu() -> None:
    # residual: the ReLU after the add is the nonlinearity (no reshaping): both points agree;
    # pool before the ReLU: the ReLU output (pooled) is the nonlinearity's output: both points agree
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 3, 3, padding=1)
            self.c, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.a(x) + self.b(x))
            return self.head(torch.relu(nn.functional.max_pool2d(self.c(h), 2)))

    torch.manual_seed(0)
    model = Net().double().eval()
    batches = _batches([4, 2], (2, 6, 6), seed=5)
    a = fxprune.analyze(model, (batches[0],))
    ctx = ScoreContext(data=batches)
    consumed, at = ActivationScorer()(a, ctx), ActivationScorer(point="activation")(a, ctx)
    assert set(consumed) == set(at) == {0, 1}
    for g in consumed:
        _close(at[g], consumed[g])


# --------------------------------------------------------------------------- hessian


def _linear_pair(w2: list[float]) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 2, bias=False)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.diag(torch.tensor(w2)))
    return model


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out - y) ** 2).sum(1).mean()


@pytest.mark.parametrize("n_probes", [1, 3])
def test_hessian_quadratic_loss_analytic(n_probes: int) -> None:
    # loss = 0.5 * mean_n ||W2 W1 x_n - y_n||^2 is quadratic in W1 with Hessian
    # (W2^T W2) (x) (X^T X / B).  W2 diagonal and X^T X diagonal make every Rademacher probe
    # exact: the trace of row c's block is w2_c^2 * sum_n ||x_n||^2 / B.
    model = _linear_pair([2.0, 3.0])
    scale = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 1.0, 0.0, 2.0])]
    data = []
    for k, s in enumerate(scale):
        x = torch.zeros(len(s), 3, dtype=torch.float64)
        x[torch.arange(len(s)), torch.arange(len(s)) % 3] = s.double()
        data.append((x, torch.randn(len(s), 2, dtype=torch.float64)))
    a = fxprune.analyze(model, (data[0][0],))
    ctx = ScoreContext(data=data, loss_fn=_mse)
    per_batch = [float((s.double() ** 2).sum() / len(s)) for s in scale]
    trace = np.array([4.0, 9.0]) * np.mean(per_batch)
    hs = HessianScorer(n_probes=n_probes, seed=7)
    _close(hs.traces(a, ctx)[("0.weight", 0)], trace)
    w1 = model[0].weight.detach().numpy()
    _close(hs(a, ctx)[0], trace * (w1 ** 2).sum(1) / 3)
    exact = exact_channel_hessian_traces(model, [("0.weight", 0), ("0.weight", 1)], data, _mse)
    _close(exact[("0.weight", 0)], trace)


def _tiny_mlp() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    g = torch.Generator().manual_seed(11)
    data = []
    for n in (8, 5):
        x = torch.randn(n, 4, generator=g, dtype=torch.float64)
        noise = torch.randn(n, 3, generator=g, dtype=torch.float64)
        with torch.no_grad():   # targets near the outputs, as for a trained model: traces > 0
            data.append((x, model(x) + 0.1 * noise))
    return model, data


def _rel_err(est: np.ndarray, exact: np.ndarray) -> float:
    return float(np.linalg.norm(est - exact) / np.linalg.norm(exact))


def test_hessian_matches_exact_traces_on_tiny_mlp() -> None:
    model, data = _tiny_mlp()
    a = fxprune.analyze(model, (data[0][0],))
    key = ("0.weight", 0)
    exact = exact_channel_hessian_traces(model, [key], data, _mse)[key]
    ctx = ScoreContext(data=data, loss_fn=_mse)
    est = HessianScorer(n_probes=2000, seed=0).traces(a, ctx)[key]
    assert _rel_err(est, exact) < 0.05
    # scores are the traces times HAP's ||W_c||^2 / numel(W_c) (one producer member here)
    assert [m.param for m in a.groups[0].members if m.role == "producer"] == ["0.weight"]
    hs = HessianScorer(n_probes=5, seed=1)
    _close(hs(a, ctx)[0], hs.traces(a, ctx)[key] * weight_factor(model[0].weight, 0))

    # the error shrinks with the number of probes (mean over seeds, one batch)
    ctx1 = ScoreContext(data=data[:1], loss_fn=_mse)
    exact1 = exact_channel_hessian_traces(model, [key], data[:1], _mse)[key]
    errs = {n: np.mean([_rel_err(HessianScorer(n_probes=n, seed=s).traces(a, ctx1)[key], exact1)
                        for s in range(3)]) for n in (10, 100, 1000)}
    assert errs[10] > errs[100] > errs[1000]
    assert errs[10] > 3 * errs[1000]


def test_hessian_error_estimate_matches_the_spread_over_seeds() -> None:
    # the standard error from the probes' spread predicts the spread of the estimate over seeds
    model, data = _tiny_mlp()
    a = fxprune.analyze(model, (data[0][0],))
    ctx = ScoreContext(data=data, loss_fn=_mse)
    key = ("0.weight", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ests = [HessianScorer(n_probes=20, seed=s).estimate(a, ctx) for s in range(30)]
    spread = np.stack([e.traces[key] for e in ests]).std(0)
    predicted = np.stack([e.stderr[key] for e in ests]).mean(0)
    assert np.all(predicted < 1.6 * spread) and np.all(spread < 1.6 * predicted), (predicted, spread)
    assert ests[0].probes == (20, 20) and ests[0].groups[key] == (0,)
    # one probe per batch: no spread to estimate the error from
    one = HessianScorer(n_probes=1, warn_error=None).estimate(a, ctx)
    assert np.isnan(one.stderr[key]).all() and np.isnan(one.rel_error(key))


def test_hessian_tol_draws_probes_until_the_trace_converges() -> None:
    model, data = _tiny_mlp()
    a = fxprune.analyze(model, (data[0][0],))
    key = ("0.weight", 0)
    ctx = ScoreContext(data=data, loss_fn=_mse)
    exact = exact_channel_hessian_traces(model, [key], data, _mse)[key]
    loose = HessianScorer(tol=0.05, max_probes=1000).estimate(a, ctx)
    tight = HessianScorer(tol=0.005, max_probes=1000).estimate(a, ctx)
    assert all(3 < p < 1000 for p in loose.probes) and min(tight.probes) > max(loose.probes)
    assert _rel_err(tight.traces[key], exact) < _rel_err(loose.traces[key], exact)
    assert tight.rel_error(key) < 0.1 and _rel_err(tight.traces[key], exact) < 3 * tight.rel_error(key)
    capped = HessianScorer(tol=1e-9, max_probes=7, warn_error=None).estimate(a, ctx)
    assert capped.probes == (7, 7)
    # the first n_probes probes are those of the fixed count; tol only adds more
    first = HessianScorer(n_probes=3, tol=1e9, max_probes=3).traces(a, ctx)[key]
    np.testing.assert_array_equal(first, HessianScorer(n_probes=3).traces(a, ctx)[key])
    # an exact case converges at once: every Rademacher probe gives the trace
    model2 = _linear_pair([2.0, 3.0])
    x = torch.zeros(3, 3, dtype=torch.float64)
    x[torch.arange(3), torch.arange(3)] = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    data2 = [(x, torch.randn(3, 2, dtype=torch.float64))]
    est = HessianScorer(tol=1e-6).estimate(fxprune.analyze(model2, (x,)),
                                           ScoreContext(data=data2, loss_fn=_mse))
    assert est.probes == (3,) and est.rel_error(("0.weight", 0)) == 0.0


def test_hessian_warns_when_noisy_and_reports_diagnostics() -> None:
    model, data = _tiny_mlp()
    a = fxprune.analyze(model, (data[0][0],))
    ctx = ScoreContext(data=data, loss_fn=_mse)
    with pytest.warns(UserWarning, match=r"noisy Hutchinson traces.*0\.weight \(group 0\).*3 probes per batch"):
        scores = HessianScorer(n_probes=3, warn_error=0.05)(a, ctx)
    d = scores.diagnostics
    assert isinstance(scores, dict) and set(scores) == {0}
    assert d["probes"] == 6 and d["batches"] == 2 and d["probes_per_batch"] == (3, 3)
    assert d["max_rel_error"] == d["rel_error"]["0.weight[dim 0]"] > 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HessianScorer(n_probes=3, warn_error=None)(a, ctx)
        HessianScorer(n_probes=3, warn_error=10.0)(a, ctx)
    for bad in (dict(tol=0), dict(tol=-1.0), dict(max_probes=0), dict(warn_error=0),
                dict(n_probes=5, tol=0.1, max_probes=4), dict(tol="small")):
        with pytest.raises(ConfigError):
            HessianScorer(**bad)


# --------------------------------------------------------------------------- taylor / random


def test_taylor_by_hand_abs_per_batch() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 1, bias=False)).double()
    x1 = torch.tensor([[1.0, 2.0, -1.0], [0.5, 0.0, 3.0]], dtype=torch.float64)
    data = [(x1, None), (-x1[:1], None)]                      # opposite-sign second batch
    a = fxprune.analyze(model, (x1,))
    got = TaylorScorer()(a, ScoreContext(data=data, loss_fn=lambda out, y: out.sum()))
    w1, w2 = model[0].weight.detach().numpy(), model[1].weight.detach().numpy()[0]
    per_batch = []
    for x, _ in data:
        grad = np.outer(w2, x.numpy().sum(0))                 # dL/dW1[c, j] = w2_c * sum_n x_nj
        per_batch.append(np.abs((w1 * grad).sum(1)))
    _close(got[0], np.mean(per_batch, axis=0))


def test_random_scorer_deterministic() -> None:
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 1))
    a = fxprune.analyze(model, (torch.randn(1, 3),))
    s1 = get_scorer("random", seed=3)(a, ScoreContext())
    s2 = RandomScorer(seed=3)(a, ScoreContext())
    s3 = RandomScorer(seed=4)(a, ScoreContext())
    assert set(s1) == {0, 1} and [len(s1[g]) for g in (0, 1)] == [5, 4]
    assert all(np.array_equal(s1[g], s2[g]) for g in s1)
    assert not np.array_equal(s1[0], s3[0])
    assert all(((v >= 0) & (v < 1)).all() and v.dtype == np.float64 for v in s1.values())


# --------------------------------------------------------------------------- integration


def _bn_train_net() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(6, 4))
    model.train()                                             # BN would update running stats
    g = torch.Generator().manual_seed(2)
    data = [(torch.randn(n, 3, 6, 6, generator=g), torch.randint(0, 4, (n,), generator=g)) for n in (4, 3)]
    return model, data


def test_scorers_registered() -> None:
    for name in ("activation", "hessian", "taylor", "random"):
        assert name in SCORERS and get_scorer(name).name == name


@pytest.mark.parametrize("scorer", ["activation", "hessian", "taylor", "random"])
def test_scorers_never_modify_model_and_work_through_prune(scorer: str) -> None:
    model, data = _bn_train_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    x = data[0][0]
    result = fxprune.prune(model, (x,), ratio=0.5, scorer=scorer, data=data,
                           loss_fn=nn.functional.cross_entropy, scorer_params={})
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in model.modules()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert result.graph_module.get_submodule("0").out_channels == 4
    assert result.graph_module(x).shape == (4, 4)
    assert all(np.isfinite(v).all() and v.dtype == np.float64 for v in result.scores.values())


@pytest.mark.parametrize("scorer", ["activation", "hessian", "taylor"])
def test_missing_data_or_loss_names_the_argument(scorer: str) -> None:
    model, data = _bn_train_net()
    with pytest.raises(ConfigError, match="data="):
        fxprune.prune(model, (data[0][0],), scorer=scorer, loss_fn=nn.functional.cross_entropy)
    if scorer != "activation":
        with pytest.raises(ConfigError, match="loss_fn="):
            fxprune.prune(model, (data[0][0],), scorer=scorer, data=data)
        with pytest.raises(ConfigError, match="no target"):
            fxprune.prune(model, (data[0][0],), scorer=scorer, data=[data[0][0]],
                          loss_fn=nn.functional.cross_entropy)


def test_bad_scorer_parameters() -> None:
    with pytest.raises(ConfigError):
        get_scorer("hessian", n_probes=0)
    with pytest.raises(ConfigError):
        get_scorer("activation", power=-1)
    with pytest.raises(ConfigError):
        get_scorer("taylor", roles=("nope",))
    with pytest.raises(ConfigError):
        get_scorer("activation", aggregate="median")


# --------------------------------------------------------------------------- distributed


def _dist_setup() -> tuple[nn.Module, list[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).double().eval()
    g = torch.Generator().manual_seed(9)
    xs = [torch.randn(n, 2, 4, 4, generator=g, dtype=torch.float64) for n in (3, 1, 4, 2)]
    pairs = [(x, torch.randn(len(x), 2, generator=g, dtype=torch.float64)) for x in xs]
    return model, xs, pairs


def _dist_scores(model: nn.Module, xs: list, pairs: list) -> dict[str, dict[int, np.ndarray]]:
    a = fxprune.analyze(model, (xs[0],))
    return {"activation": ActivationScorer(power=2.0)(a, ScoreContext(data=xs)),
            "taylor": TaylorScorer()(a, ScoreContext(data=pairs, loss_fn=_mse))}


def _dist_worker(rank: int, store: str, out_dir: str) -> None:
    """One rank: a file rendezvous (no port to race for, no TCPStore daemon thread in rank 0),
    the loopback interface for gloo, and a barrier before the process group is torn down, so no
    rank exits while the other still talks to it (a gloo/store thread destroyed mid-operation
    aborts the process: "terminate called without an active exception")."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    if "lo" in {name for _, name in socket.if_nameindex()}:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model, xs, pairs = _dist_setup()
        scores = _dist_scores(model, xs[rank::2], pairs[rank::2])   # half of the batches each
        np.savez(os.path.join(out_dir, f"rank{rank}.npz"),
                 **{f"{k}_{g}": v for k, s in scores.items() for g, v in s.items()})
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")
def test_distributed_calibration_equals_single_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.multiprocessing as mp

    monkeypatch.setenv("OMP_NUM_THREADS", "1")      # two ranks share the cores
    mp.spawn(_dist_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2, join=True)
    model, xs, pairs = _dist_setup()
    single = _dist_scores(model, xs, pairs)
    for rank in (0, 1):
        got = np.load(tmp_path / f"rank{rank}.npz")
        assert sorted(got.files) == sorted(f"{k}_{g}" for k, s in single.items() for g in s)
        for k, s in single.items():
            for g, v in s.items():
                _close(got[f"{k}_{g}"], v)


# --------------------------------------------------------------------------- docs


def test_docs_examples_run() -> None:
    text = DOCS.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 4
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), {"__name__": "docs_example"})
