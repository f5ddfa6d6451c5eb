"""fxprune.distributed: FSDP2-sharded models pruned on 2 gloo processes equal single-process pruning.

One ``torch.multiprocessing.spawn`` of two ranks (file rendezvous, CPU, gloo)
runs every distributed case; the parent process computes the single-process
references and compares.  Cases: a Llama-style decoder and a CNN, each with
``l1`` and ``activation`` (each rank scoring half of the calibration batches);
the per-rank memory bound while pruning; ranks that compute different plans
(both raise); a checkpoint saved from 2 ranks and loaded on 1, and one saved
on 1 process and loaded on 2.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune.testing import zoo

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")

CASES = [(m, s) for m in ("llama", "cnn") for s in ("l1", "activation")] + [("cnn", "taylor")]


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
                                  nn.Conv2d(24, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.body(x)
        return self.head(x.mean((2, 3)))


def _model(name: str, meta: bool = False) -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    if name == "llama":
        cls, x = zoo.Llama, (torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1)),)
    else:
        cls, x = SmallCNN, (torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)),)
    if meta:
        with torch.device("meta"):
            return cls().eval(), x
    model = cls()
    zoo.randomize_norms(model)
    return model.eval(), x


def _data(name: str) -> list:
    g = torch.Generator().manual_seed(2)
    if name == "llama":
        return [torch.randint(0, 64, (2, 8), generator=g) for _ in range(4)]
    return [(torch.randn(3, 3, 8, 8, generator=g), torch.randint(0, 10, (3,), generator=g)) for _ in range(4)]


def _options(scorer: str) -> dict:
    return {"loss_fn": nn.functional.cross_entropy} if scorer == "taylor" else {}


def _sharded(name: str, mesh) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    model, _ = _model(name)
    units = model.layers if name == "llama" else [model.body]
    for unit in units:
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _local_bytes(module: nn.Module) -> int:
    return sum(getattr(p, "_local_tensor", p).untyped_storage().nbytes() for p in module.parameters())


def _worker(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from fxprune.distributed import MemoryMeter, PlanMismatchError, load, prune_sharded, save
    from fxprune.errors import ConfigError
    from fxprune.modules import get_attr
    from fxprune.scoring import get_scorer
    from fxprune.scoring.base import member_keys

    torch.set_num_threads(1)
    if "lo" in {n for _, n in socket.if_nameindex()}:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        mesh = init_device_mesh("cpu", (2,))
        report: dict = {}
        for name, scorer in CASES:
            twin, x = _model(name, meta=True)
            result = prune_sharded(_sharded(name, mesh), twin, x, 0.5, scorer=scorer, data=_data(name)[rank::2],
                                   **_options(scorer))
            sd = result.full_state_dict()
            if rank == 0:
                torch.save(sd, f"{out}/{name}_{scorer}.pt")
            report[f"{name}_{scorer}"] = result.digest
            if (name, scorer) == ("llama", "l1"):
                save(result, f"{out}/ckpt2")
                y = result.graph_module(*x)          # the pruned model runs (and trains) under FSDP2
                y.float().pow(2).mean().backward()
        # memory: the whole prune (l1, source released) holds at most half the model plus its largest parameter
        model = _sharded("llama", mesh)
        full = [p.numel() * p.element_size() for p in _model("llama", meta=True)[0].parameters()]
        twin, x = _model("llama", meta=True)
        with MemoryMeter(model.parameters()) as meter:
            result = prune_sharded(model, twin, x, 0.5, release_source=True)
        # l1 keeps one float64 sum per scored channel (and a copy while all-reducing them)
        _, keys = member_keys(result.analysis, get_scorer("l1").roles)
        stats = 2 * 8 * sum(get_attr(result.analysis.graph_module, n).shape[d] for n, d in keys)
        report["memory"] = {"peak": meter.peak, "model": sum(full), "largest": max(full), "stats": stats,
                            "pruned_local": _local_bytes(result.graph_module),
                            "pruned": sum(p.numel() * p.element_size() for p in result.graph_module.parameters())}
        # different ratios on the two ranks: different plans, every rank raises before the rewrite
        twin, x = _model("cnn", meta=True)
        try:
            prune_sharded(_sharded("cnn", mesh), twin, x, 0.25 if rank == 0 else 0.5)
            report["mismatch"] = "no error"
        except PlanMismatchError as exc:
            report["mismatch"] = str(exc)
        # one rank runs out of calibration batches: every rank raises instead of hanging
        try:
            prune_sharded(_sharded("cnn", mesh), twin, x, 0.5, scorer="activation", data=_data("cnn")[:1 + rank])
            report["ragged"] = "no error"
        except ConfigError as exc:
            report["ragged"] = str(exc)
        # a checkpoint of one process, loaded on two ranks
        loaded = load(f"{out}/ckpt1", _model("llama", meta=True)[0])
        sd = loaded.full_state_dict()
        if rank == 0:
            torch.save(sd, f"{out}/loaded2.pt")
        report["loaded_digest"] = loaded.digest
        with open(f"{out}/rank{rank}.json", "w") as fh:
            json.dump(report, fh)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    bad = [k for k in want if got[k].shape != want[k].shape or not torch.equal(got[k], want[k])]
    assert not bad, bad


def test_sharded_pruning_equals_single_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.multiprocessing as mp

    from fxprune.distributed import load, plan_digest, save, prune_sharded

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", str(Path(fxprune.__file__).parent.parent))
    single = {}
    for name, scorer in CASES:
        model, x = _model(name)
        single[(name, scorer)] = fxprune.prune(model, x, 0.5, scorer=scorer, data=_data(name), **_options(scorer))
    save(single[("llama", "l1")], tmp_path / "ckpt1")          # no process group: world 1
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    for name, scorer in CASES:
        want = single[(name, scorer)]
        assert reports[0][f"{name}_{scorer}"] == reports[1][f"{name}_{scorer}"] == plan_digest(want.plan)
        _assert_same(torch.load(tmp_path / f"{name}_{scorer}.pt"), want.graph_module.state_dict())

    for rep in reports:
        mem = rep["memory"]
        bound = mem["model"] / 2 + mem["largest"] + mem["stats"]
        assert mem["peak"] <= bound, mem
        assert mem["pruned_local"] <= mem["pruned"] / 2 + mem["largest"], mem
        assert "different plans" in rep["mismatch"] and "ranks [0]" in rep["mismatch"], rep["mismatch"]
        assert "different numbers of calibration batches" in rep["ragged"], rep["ragged"]

    # saved from 2 ranks, loaded on 1 process; saved on 1, loaded on 2
    want = single[("llama", "l1")].graph_module.state_dict()
    loaded = load(tmp_path / "ckpt2", _model("llama", meta=True)[0])
    assert loaded.plan == single[("llama", "l1")].plan
    _assert_same(loaded.graph_module.state_dict(), want)
    x = _model("llama")[1]
    assert torch.equal(loaded.graph_module(*x), single[("llama", "l1")].graph_module(*x))
    assert reports[0]["loaded_digest"] == plan_digest(single[("llama", "l1")].plan)
    _assert_same(torch.load(tmp_path / "loaded2.pt"), want)


def test_prune_sharded_needs_a_process_group() -> None:
    from fxprune.distributed import prune_sharded
    from fxprune.errors import ConfigError

    model, x = _model("cnn")
    with pytest.raises(ConfigError, match="init_process_group"):
        prune_sharded(model, _model("cnn", meta=True)[0], x)


def test_scorers_that_cannot_run_on_shards_are_refused() -> None:
    from fxprune.distributed import sharded_scores
    from fxprune.errors import ConfigError
    from fxprune.scoring import ScoreContext, get_scorer

    model, x = _model("cnn")
    analysis = fxprune.analyze(model, x)
    with pytest.raises(ConfigError, match="double backward"):
        sharded_scores(model, analysis, get_scorer("hessian"), ScoreContext(data=_data("cnn")))

    def mine(analysis, ctx):
        return {}

    with pytest.raises(ConfigError, match="score_sharded"):
        sharded_scores(model, analysis, mine, ScoreContext())
    # one process, plain tensors: the sharded l1 is the ordinary l1
    ours, theirs = sharded_scores(model, analysis, get_scorer("l1"), ScoreContext()), get_scorer("l1")(analysis, ScoreContext())
    assert all((ours[g] == theirs[g]).all() for g in theirs)


def test_a_twin_of_another_model_is_refused() -> None:
    from fxprune.distributed import check_twin
    from fxprune.errors import ConfigError

    twin, x = _model("cnn", meta=True)
    other = SmallCNN()
    other.head = nn.Linear(16, 7)
    with pytest.raises(ConfigError, match="'head.weight'"):
        check_twin(other, fxprune.analyze(twin, x))


def test_loading_a_directory_that_is_not_a_checkpoint_fails_clearly(tmp_path: Path) -> None:
    from fxprune.distributed import load
    from fxprune.errors import LoadError

    (tmp_path / "fxprune.json").write_text('{"format": "something else"}')
    with pytest.raises(LoadError, match="not an fxprune distributed checkpoint"):
        load(tmp_path, _model("cnn", meta=True)[0])
    with pytest.raises(LoadError, match="missing"):
        load(tmp_path / "nowhere", _model("cnn", meta=True)[0])
