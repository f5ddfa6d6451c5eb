"""Schedule checkpoints: code-free files, fingerprinted models, refused swaps, implants, clear errors."""
from __future__ import annotations

import io
import json
import math
import shutil

import pytest
import torch
import torch.nn as nn

from fxprune.errors import ConfigError, LoadError
from fxprune.schedules import History, iterative, one_shot
from fxprune.serialize.files import sha256_file
from fxprune.testing import zoo
from _saving import XC, CreatesAFile, conv_net, shrink


def accuracy(gm):
    return 80.0 + sum(p.numel() for p in gm.parameters()) / 1000.0


def run(ckpt, model=None, **kw):
    kw = {"percentile": 25.0, "rounds": 3, "tolerance": 50.0, "finetune": shrink, "evaluate": accuracy, **kw}
    return iterative(conv_net() if model is None else model, XC, checkpoint_dir=ckpt, progress=False, **kw)


def same(a: History, b: History) -> None:
    assert a.metrics == b.metrics and (a.best_round, a.stop_reason) == (b.best_round, b.stop_reason)
    for ra, rb in zip(a.rounds, b.rounds, strict=True):
        assert ra.graph_module.code == rb.graph_module.code
        sa, sb = ra.graph_module.state_dict(), rb.graph_module.state_dict()
        assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def reseal(ckpt, name: str) -> None:
    """Record a replaced file's checksum in state.json, as someone covering their tracks would."""
    state = json.loads((ckpt / "state.json").read_text())
    state["files"][name] = sha256_file(ckpt / name)
    (ckpt / "state.json").write_text(json.dumps(state))


def test_a_checkpoint_directory_holds_only_json_and_tensor_files(tmp_path):
    history = run(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["inputs.pt"] + [f"round_{r:04d}.{e}" for r in range(4) for e in ("json", "pt")] + ["state.json"]
    for p in tmp_path.glob("*.pt"):
        data = torch.load(p, weights_only=True)
        assert isinstance(data, dict) and all(type(v) is torch.Tensor for v in data.values())
    same(History.load(tmp_path, conv_net()), history)


def test_resuming_with_a_different_model_of_the_same_size_is_refused(tmp_path):
    run(tmp_path, rounds=1)
    with pytest.raises(ConfigError, match=r"another model: other weights: \['0.weight'"):
        run(tmp_path, conv_net(seed=1), rounds=2)
    with pytest.raises(ConfigError, match=r"tensor '0.weight': shape \(8, 3, 3, 3\) in the saved model, "
                                          r"\(6, 3, 3, 3\) here"):
        run(tmp_path, conv_net(width=6), rounds=2)
    with pytest.raises(ConfigError, match="other weights"):
        History.load(tmp_path, conv_net(seed=1))
    assert len(History.load(tmp_path, conv_net(seed=1), check_weights=False).rounds) == 2


def test_resuming_with_other_example_inputs_is_refused(tmp_path):
    run(tmp_path, rounds=1)
    with pytest.raises(ConfigError, match="other example inputs"):
        iterative(conv_net(), (torch.randn(2, 3, 7, 7),), rounds=2, evaluate=accuracy, checkpoint_dir=tmp_path,
                  percentile=25.0, tolerance=50.0, progress=False)


def test_a_swapped_round_file_is_refused_naming_it(tmp_path):
    run(tmp_path)
    shutil.copy(tmp_path / "round_0002.pt", tmp_path / "round_0001.pt")
    with pytest.raises(LoadError, match=r"round_0001.pt: its checksum does not match"):
        History.load(tmp_path, conv_net())
    with pytest.raises(LoadError, match="round_0001.pt"):
        run(tmp_path, rounds=4)


def test_a_swapped_round_file_with_a_matching_checksum_is_still_refused(tmp_path):
    run(tmp_path)
    shutil.copy(tmp_path / "round_0002.pt", tmp_path / "round_0001.pt")
    reseal(tmp_path, "round_0001.pt")
    with pytest.raises(LoadError, match=r"round_0001.json: the tensor file does not match|round_0001.json: tensor"):
        History.load(tmp_path, conv_net())


def test_missing_and_corrupt_files_raise_an_fxprune_error_naming_the_file(tmp_path):
    run(tmp_path)
    (tmp_path / "round_0002.json").unlink()
    with pytest.raises(LoadError, match=r"round_0002.json: the file is missing"):
        History.load(tmp_path, conv_net())
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(LoadError, match=r"state.json: not valid UTF-8 JSON"):
        History.load(tmp_path, conv_net())
    with pytest.raises(LoadError, match="state.json: not valid"):
        run(tmp_path)
    with pytest.raises(LoadError, match="no schedule checkpoint"):
        History.load(tmp_path / "empty", conv_net())


def test_an_old_pickled_checkpoint_is_not_unpickled(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"format": 1, "schedule": "iterative", "rounds": [0]}))
    with pytest.raises(LoadError, match="pickled models.*not read"):
        History.load(tmp_path, conv_net())


@pytest.mark.parametrize("name", ["round_0001.pt", "inputs.pt"])
def test_a_malicious_round_file_is_refused_without_running_it(tmp_path, name):
    ckpt, marker = tmp_path / "ckpt", tmp_path / "pwned"
    run(ckpt)
    buf = io.BytesIO()
    torch.save({"0.weight": CreatesAFile(str(marker))}, buf)
    (ckpt / name).write_bytes(buf.getvalue())
    reseal(ckpt, name)
    with pytest.raises(LoadError, match=f"{name}: not a tensor file that loads without executing code"):
        History.load(ckpt, conv_net())
    with pytest.raises(LoadError, match=name):
        run(ckpt, rounds=4)
    assert not marker.exists()


def test_rewind_state_of_a_wider_model_is_refused():
    wider = {k: v for k, v in conv_net(width=16).state_dict().items()}
    with pytest.raises(ConfigError, match=r"rewind_state\['0.weight'\] has shape \(16, 3, 3, 3\)"):
        run(None, rewind_state=wider)
    with pytest.raises(ConfigError, match="not parameters or buffers of the model"):
        run(None, rewind_state={"module.0.weight": torch.zeros(8, 3, 3, 3)})


def test_finetune_that_changes_the_structure_is_refused_when_checkpointing(tmp_path):
    def replace(gm):
        gm.add_module("extra", nn.Linear(1, 1))
        return gm

    assert len(run(None, finetune=replace, rounds=1).rounds) == 2    # without checkpoints nothing is saved
    with pytest.raises(ConfigError, match="finetune changed the model's structure.*extra"):
        run(tmp_path, finetune=replace, rounds=1)


@pytest.mark.parametrize("bad", [None, math.nan, "90", math.inf])
def test_evaluate_returning_nan_or_none_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match="evaluate returned .* for round 0; it must return the accuracy"):
        run(None, evaluate=lambda gm: bad)
    calls = []

    def late(gm):
        calls.append(1)
        return 90.0 if len(calls) == 1 else bad

    with pytest.raises(ConfigError, match="for round 1"):
        run(None, evaluate=late)


LENET_X = (torch.randn(2, 1, 28, 28),)


@pytest.mark.parametrize("kind,families", [("pointwise", ("conv",)), ("lowrank", ("conv", "linear")),
                                           ("dwpw", ("conv",))])
def test_implanted_one_shot_runs_resume_and_reload_from_checkpoints(tmp_path, kind, families):
    kw = dict(ratio=0.5, implant_ratio=0.5, implant_kind=kind, implant_rank=2, implant_families=families,
              progress=False, checkpoint_dir=tmp_path)
    history = one_shot(zoo.lenet5()[0], LENET_X, evaluate=lambda gm: 1.0, **kw)
    assert history.best.metrics["channels_implanted"] > 0
    implanted = {type(m).__name__ for m in history.graph_module.modules() if "Implanted" in type(m).__name__}
    assert implanted == ({"ImplantedConv2d", "ImplantedLinear"} if "linear" in families else {"ImplantedConv2d"})
    same(History.load(tmp_path, zoo.lenet5()[0]), history)
    calls = []
    again = one_shot(zoo.lenet5()[0], LENET_X, evaluate=lambda gm: calls.append(1) or 1.0, **kw)
    assert not calls
    same(again, history)


def test_export_front_end_runs_checkpoint_and_reload(tmp_path):
    history = run(tmp_path, rounds=2, analysis={"frontend": "export"})
    same(History.load(tmp_path, conv_net()), history)
