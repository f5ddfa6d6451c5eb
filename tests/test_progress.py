"""Progress displays on every long step: calibration, Hessian probes, latency measurement, target
searches, schedule rounds; ``progress=False`` (the default of ``prune``) is silent, and so is every
rank but 0 of a distributed run."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune.latency import LatencyConfig, latency_table
from fxprune.schedules import iterative
from fxprune.scoring import ScoreContext
from fxprune.scoring.hessian import HessianScorer

X = (torch.randn(2, 4),)
DATA = [(torch.randn(8, 4), torch.randn(8, 2)) for _ in range(2)]


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))


def quick(tmp_path):
    return LatencyConfig(warmup=0, repeat=1, min_time=0.0, model_min_time=0.0, cache=False, cache_dir=str(tmp_path))


def long_steps(tmp_path, progress):
    """Every long step of fxprune once, with ``progress``."""
    model = mlp()
    a = fxprune.analyze(model, X)
    HessianScorer(tol=0.2, max_probes=5, warn_error=None)(
        a, ScoreContext(data=DATA, loss_fn=nn.functional.mse_loss, progress=progress))
    latency_table(a, quick(tmp_path), progress=progress)
    fxprune.prune(model, X, target_macs=0.5, scorer="activation", data=[x for x, _ in DATA], progress=progress)
    iterative(model, X, rounds=1, evaluate=lambda gm: 1.0, scorer="activation", data=[x for x, _ in DATA],
              progress=progress)


def test_every_long_step_shows_progress(tmp_path, capsys):
    long_steps(tmp_path, True)
    err = capsys.readouterr().err
    for display in ("hessian traces", "probes=", "latency table", "target search", "activation scores",
                    "iterative"):
        assert display in err, display


def test_progress_false_is_silent_and_prune_defaults_to_it(tmp_path, capsys):
    long_steps(tmp_path, False)
    fxprune.prune(mlp(), X, target_macs=0.5)
    assert capsys.readouterr().err == ""


def test_other_ranks_show_nothing(tmp_path, capsys, monkeypatch):
    import types

    import fxprune.progress

    # the display sees rank 1 of an initialised run (the scorers' own all-reduces see a single process)
    rank1 = types.SimpleNamespace(is_available=lambda: True, is_initialized=lambda: True, get_rank=lambda: 1)
    monkeypatch.setattr(fxprune.progress, "torch", types.SimpleNamespace(distributed=rank1))
    long_steps(tmp_path, True)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("tqdm_installed", [True, False])
def test_hessian_probes_show_without_tqdm_too(tmp_path, capsys, monkeypatch, tqdm_installed):
    import builtins

    real_import = builtins.__import__
    if not tqdm_installed:
        def no_tqdm(name, *args, **kwargs):
            if name.startswith("tqdm"):
                raise ImportError(name)
            return real_import(name, *args, **kwargs)
        monkeypatch.setattr(builtins, "__import__", no_tqdm)
    a = fxprune.analyze(mlp(), X)
    HessianScorer(n_probes=2, warn_error=None)(a, ScoreContext(data=DATA, loss_fn=nn.functional.mse_loss,
                                                                progress=True))
    err = capsys.readouterr().err
    assert "hessian traces" in err and "probes=2" in err
