"""Specifications of latency tables and latency targets.

No absolute time is asserted here (timing targets live in ``bench/latency.py``):
these tests check that a table is produced, cached and reused, that the
search follows the table, and what the report says.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import fxprune
import fxprune.latency as latency_mod
from fxprune.analysis.latency import LatencyTable, NodeLatency, plan_work, table_key, _monotone
from fxprune.latency import LatencyConfig, latency_cost, latency_table
from fxprune.scoring import ScoreContext, SelectionConfig, get_scorer, select_plan
from fxprune.scoring.targets import Target, TargetKind, select_for_target
from fxprune.testing import zoo

X = (torch.randn(4, 8),)


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def quick(tmp_path, **kw):
    return LatencyConfig(**{"warmup": 0, "repeat": 1, "min_time": 0.0, "model_min_time": 0.0,
                            "cache_dir": str(tmp_path), **kw})


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FXPRUNE_CACHE", str(tmp_path / "default-cache"))


def test_a_table_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    a = fxprune.analyze(mlp(), X)
    cfg = quick(tmp_path)
    table = latency_table(a, cfg)
    calls = [n.name for n in a.graph_module.graph.nodes if n.op.startswith("call")]
    assert [n.name for n in table.nodes] == calls
    assert table.ratios == cfg.ratios and len(table.model_seconds) == len(cfg.ratios)
    assert table.threads == 1 and table.torch_version == torch.__version__ and table.device == "cpu"
    assert all(len(n.work) == len(n.seconds) == len(cfg.ratios) and min(n.seconds) > 0 for n in table.nodes)
    files = list((tmp_path / "latency").iterdir())
    assert [f.name for f in files] == [f"{table.key}.json"]            # one file, no temporary left behind

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(latency_mod, "time_nodes", no_measuring)
    again = latency_table(fxprune.analyze(mlp(), X), cfg)              # a new analysis of the same graph
    assert again == table
    # another thread count, grid or graph is another key: measured anew
    for other, inputs in ((dataclasses.replace(cfg, threads=2), X),
                          (dataclasses.replace(cfg, ratios=(0.0, 0.5)), X), (cfg, (torch.randn(2, 8),))):
        with pytest.raises(AssertionError, match="measured again"):
            latency_table(fxprune.analyze(mlp(), inputs), other)


def test_the_cache_can_be_switched_off_and_a_bad_file_is_remeasured(tmp_path):
    a = fxprune.analyze(mlp(), X)
    table = latency_table(a, quick(tmp_path, cache=False))
    assert not (tmp_path / "latency").exists()
    cfg = quick(tmp_path)
    path = tmp_path / "latency" / f"{table.key}.json"
    path.parent.mkdir()
    path.write_text("{not json")
    table = latency_table(a, cfg)
    assert LatencyTable.load(path) == table


def test_the_default_cache_directory_is_fxprune_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FXPRUNE_CACHE", str(tmp_path / "here"))
    table = latency_table(fxprune.analyze(mlp(), X), LatencyConfig(warmup=0, repeat=1, min_time=0.0,
                                                                   model_min_time=0.0))
    assert (tmp_path / "here" / "latency" / f"{table.key}.json").exists()


def test_measuring_leaves_modes_and_threads_as_they_were(tmp_path):
    model = mlp().train()
    threads = torch.get_num_threads()
    a = fxprune.analyze(model, X)
    latency_table(a, quick(tmp_path, threads=threads + 1))
    assert torch.get_num_threads() == threads
    assert a.graph_module.training and all(m.training for m in model.modules())


def test_a_table_round_trips_through_json(tmp_path):
    table = latency_table(fxprune.analyze(mlp(), X), quick(tmp_path))
    assert LatencyTable.from_dict(json.loads(json.dumps(table.to_dict()))) == table


def test_node_times_are_interpolated_monotonically_over_work():
    xs, ys = _monotone([4.0, 3.0, 2.0, 1.0, 1.0], [5.0, 6.0, 2.0, 1.0, 3.0])
    assert xs.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert ys.tolist() == [2.0, 2.0, 5.5, 5.5]                          # equal work averaged, violators pooled
    node = NodeLatency("n", "Linear", (100.0, 50.0), (2.0, 1.0))
    assert node.predict(75.0) == 1.5 and node.predict(1e9) == 2.0
    assert node.predict(30.0) == pytest.approx(0.6)              # the lowest segment extended (0 at 0 work)
    overhead = NodeLatency("n", "Linear", (100.0, 50.0), (2.0, 1.5))     # 1 s fixed + 0.01 s per unit
    assert overhead.predict(20.0) == pytest.approx(1.2)
    steep = NodeLatency("n", "Linear", (100.0, 50.0), (4.0, 1.0))        # convex: held at proportional
    assert steep.predict(25.0) == pytest.approx(0.5)


def fake_table(analysis, seconds_of):
    """A table whose node times are ``seconds_of(name, work)``, keyed for ``analysis`` (no timing)."""
    cfg = LatencyConfig(warmup=0, repeat=1, min_time=0.0, model_min_time=0.0, cache=False)
    zeros = {g.id: np.zeros(g.size) for g in analysis.groups}
    works = [plan_work(analysis, select_plan(analysis, zeros, SelectionConfig(ratio=r)) if r else {})
             for r in cfg.ratios]
    nodes = tuple(NodeLatency(name, "op", tuple(w[name] for w in works),
                              tuple(seconds_of(name, w[name]) for w in works)) for name in works[0])
    model = tuple(sum(n.seconds[i] for n in nodes) for i in range(len(cfg.ratios)))
    key = table_key(analysis, "cpu", cfg)
    return LatencyTable(key, "cpu", torch.__version__, 1, cfg.ratios, nodes, model, cfg)


def test_the_latency_search_follows_the_table():
    model = mlp()
    a = fxprune.analyze(model, X)
    scores = get_scorer("l1")(a, ScoreContext())
    # only the middle linear layer takes time, proportional to its MACs
    table = fake_table(a, lambda name, work: work * 1e-9 if name == "_2" else 0.0)
    plan, hit = select_for_target(a, scores, SelectionConfig(global_ranking=True), Target.parse("latency", 0.25),
                                  cost=latency_cost(a, table))
    assert hit.reached and hit.after[TargetKind.LATENCY] <= 0.25 * hit.before[TargetKind.LATENCY]
    assert plan_work(a, plan)["_2"] <= 0.25 * plan_work(a, {})["_2"]
    # a MACs target of the same fraction lands elsewhere: the latency cost is not the MACs count
    macs_plan, _ = select_for_target(a, scores, SelectionConfig(global_ranking=True), Target.parse("macs", 0.25))
    assert macs_plan != plan
    result = fxprune.prune(model, X, target_latency=0.25, latency=table, global_ranking=True)
    assert result.plan == plan
    note = result.report.notes[1]
    assert "predicted" in note and "measured" in note and "prediction error" in note


def test_prune_with_a_latency_target_reports_predicted_and_measured(tmp_path):
    model = mlp()
    result = fxprune.prune(model, X, target_latency=0.6, latency=quick(tmp_path))
    report = result.report
    assert report.notes[0].startswith("target latency <= ") and "ms" in report.notes[0]
    assert report.notes[1].startswith("latency on cpu (1 thread): predicted ")
    assert {r.name for r in report.latency} == {n.name for n in result.analysis.graph_module.graph.nodes
                                                if n.op.startswith("call")}
    data = json.loads(report.to_json())
    assert len(data["latency"]) == len(report.latency) and set(data["latency"][0]) == {"name", "op", "before", "after"}
    assert "ms after (predicted)" in report.to_markdown()
    # the table alone (no target): the report still gives predicted and measured latency
    plain = fxprune.prune(model, X, ratio=0.5, latency=quick(tmp_path))
    assert plain.report.notes[0].startswith("latency on cpu") and plain.report.latency


def test_latency_mistakes_are_clear_errors(tmp_path):
    model = mlp()
    a = fxprune.analyze(model, X)
    other = latency_table(fxprune.analyze(model, (torch.randn(2, 8),)), quick(tmp_path))
    with pytest.raises(fxprune.ConfigError, match="another graph"):
        fxprune.prune(model, X, target_latency=0.5, analysis=a, latency=other)
    with pytest.raises(fxprune.ConfigError, match=r"\(0, 1\]"):
        fxprune.prune(model, X, target_latency=1.5)
    with pytest.raises(fxprune.ConfigError, match="start with 0.0"):
        LatencyConfig(ratios=(0.25, 0.5))
    with pytest.raises(fxprune.ConfigError, match="threads"):
        LatencyConfig(threads=0)
    meta = mlp().to("meta")
    with pytest.raises(fxprune.ConfigError, match="meta device"):
        latency_table(fxprune.analyze(meta, (torch.randn(4, 8, device="meta"),)), quick(tmp_path))


def test_in_place_ops_are_timed_without_changing_the_values(tmp_path):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 16)

        def forward(self, x):
            y = self.fc(x)
            y.add_(1.0)
            return y.relu_().sum(-1, keepdim=True)

    from fxprune.analysis.latency import _NodeTimer
    model = M()
    gm = fxprune.analyze(model, X).graph_module
    timer = _NodeTimer(gm, quick(tmp_path, repeat=3, warmup=2), lambda: None, None)
    with torch.no_grad():
        out = timer.run(*X)                  # add_ ran 6 times while timed, and once for real
        assert torch.equal(out, model(*X))
    assert set(timer.seconds) == {"fc", "add_", "relu_", "sum_1"}


def test_progress_shows_the_measurement_and_the_search(tmp_path, capsys):
    model = mlp()
    latency_table(fxprune.analyze(model, X), quick(tmp_path, cache=False))
    assert capsys.readouterr().err == ""
    latency_table(fxprune.analyze(model, X), quick(tmp_path, cache=False), progress=True)
    assert "latency table" in capsys.readouterr().err
    a = fxprune.analyze(model, X)
    table = fake_table(a, lambda name, work: work * 1e-9)
    fxprune.prune(model, X, target_latency=0.5, latency=table, analysis=a, progress=True)
    assert "target search" in capsys.readouterr().err
    fxprune.prune(model, X, target_latency=0.5, latency=table, analysis=a)
    assert capsys.readouterr().err == ""


def test_the_cli_takes_a_latency_target(tmp_path, monkeypatch, capsys):
    from fxprune.cli import main

    monkeypatch.setenv("FXPRUNE_CACHE", str(tmp_path))
    assert main(["prune", "lenet5", "--target-latency", "0.9", "--report", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["notes"][0].startswith("target latency") and data["notes"][1].startswith("latency on cpu")
    assert len(data["latency"]) == 12 and list((tmp_path / "latency").glob("*.json"))
    assert main(["prune", "lenet5", "--target-latency", "2"]) == 2
    assert "(0, 1]" in capsys.readouterr().err


def test_the_cache_key_is_the_same_in_every_process():
    code = ("import fxprune; from fxprune.testing import zoo; "
            "from fxprune.analysis.latency import table_key, LatencyConfig; "
            "print([table_key(fxprune.analyze(*zoo.ZOO[n]()), 'cpu', LatencyConfig()) "
            "for n in ('lenet5', 'vit', 'llama', 'shufflenet_v2')])")
    root = pathlib.Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True,
                         env={**os.environ, "PYTHONPATH": str(root)}).stdout.strip()
    here = [table_key(fxprune.analyze(*zoo.ZOO[n]()), "cpu", LatencyConfig())
            for n in ("lenet5", "vit", "llama", "shufflenet_v2")]
    assert out == str(here)
    model, x = zoo.llama()
    assert table_key(fxprune.analyze(model, x, split_policy="inner"), "cpu", LatencyConfig()) != \
        table_key(fxprune.analyze(model, x), "cpu", LatencyConfig())          # other groups (head_dim), other grid


def test_the_result_says_where_the_target_search_landed(tmp_path):
    model = mlp()
    a = fxprune.analyze(model, X)
    table = fake_table(a, lambda name, work: work * 1e-9)
    result = fxprune.prune(model, X, target_latency=0.5, latency=table, analysis=a)
    hit = result.target
    assert hit.reached and 0 < hit.ratio < 1 and hit.after[TargetKind.LATENCY] == table.predict(a, result.plan)
    assert fxprune.prune(model, X, ratio=0.5).target is None
    assert fxprune.prune(model, X, target_macs=0.5).target.macs_after == fxprune.prune(
        model, X, target_macs=0.5).report.macs_after


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_latency_target_on_cuda(tmp_path):
    """The table is measured where the model lives (synchronised samples); its key names the device."""
    model = mlp().cuda()
    x = tuple(t.cuda() for t in X)
    result = fxprune.prune(model, x, target_latency=0.8, latency=quick(tmp_path))
    table = latency_table(result.analysis, quick(tmp_path))
    assert table.device.startswith("cuda") and table.original_seconds > 0
    assert result.report.notes[1].startswith("latency on cuda")
    assert result.target.reached and next(result.graph_module.parameters()).is_cuda
    with torch.no_grad():
        assert result.graph_module(*x).shape == model(*x).shape
