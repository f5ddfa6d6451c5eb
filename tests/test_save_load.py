"""fxprune.save / fxprune.load: bit-identical round trips, clear errors, and no code executed on load."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune.errors import ConfigError, LoadError
from fxprune.testing import zoo
from _saving import CreatesAFile

REPO = pathlib.Path(__file__).resolve().parent.parent


def same_result(a: fxprune.PruneResult, b: fxprune.PruneResult, x: tuple) -> None:
    """``b`` equals ``a`` bit for bit: code, every tensor, outputs, plan, scores, report."""
    assert b.graph_module.code == a.graph_module.code
    sa, sb = a.graph_module.state_dict(), b.graph_module.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    with torch.no_grad():
        oa, ob = a.graph_module(*x), b.graph_module(*x)
    oa, ob = (oa, ob) if isinstance(oa, torch.Tensor) else (oa[0], ob[0])
    assert torch.equal(oa, ob)
    assert b.plan == a.plan and list(b.scores) == list(a.scores)
    for gid in a.scores:
        assert b.scores[gid].dtype == a.scores[gid].dtype
        assert b.scores[gid].tobytes() == a.scores[gid].tobytes()
    assert str(b.report) == str(a.report) and b.report.to_json() == a.report.to_json()
    assert [m.training for m in b.graph_module.modules()] == [m.training for m in a.graph_module.modules()]


@pytest.mark.parametrize("name,frontend", [
    ("lenet5", "fx"), ("resnet_basic", "fx"), ("densenet", "fx"), ("shufflenet_v2", "fx"), ("vit", "fx"),
    ("llama", "fx"), ("lenet5", "export"), ("vit", "export"), ("llama", "export"), ("inception", "export"),
])
def test_save_then_load_gives_the_same_result_bit_for_bit(tmp_path, name, frontend):
    model, x = zoo.ZOO[name]()
    model.eval()
    result = fxprune.prune(model, x, ratio=0.5, frontend=frontend)
    path = fxprune.save(result, tmp_path / "pruned.fxp")
    fresh, _ = zoo.ZOO[name]()
    loaded = fxprune.load(path, fresh.eval())
    same_result(result, loaded, x)
    assert loaded.analysis.config == result.analysis.config
    assert [p for p in tmp_path.iterdir()] == [tmp_path / "pruned.fxp"]  # no temporary file left


def test_the_example_saves_and_loads_in_a_fresh_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, str(REPO / "examples" / "save_load.py")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "loaded in a fresh process: identical outputs" in run.stdout
    assert "the torch.export program gives the same outputs" in run.stdout


def test_targets_notes_options_and_module_types_round_trip(tmp_path):
    model, x = zoo.resnet_basic()
    leaf = type(model.layer1[0])
    result = fxprune.prune(model, x, target_macs=0.6, scorer="l2", leaf_modules=[leaf], ignore=["fc"],
                           split_policy="outer")
    loaded = fxprune.load(fxprune.save(result, tmp_path / "r.fxp"), zoo.resnet_basic()[0])
    same_result(result, loaded, x)
    assert loaded.report.notes == result.report.notes and loaded.report.notes
    assert loaded.analysis.config.leaf_modules == (leaf,)


def test_frozen_parameters_training_modes_and_fine_tuned_weights_are_restored(tmp_path):
    model, x = zoo.lenet5()
    result = fxprune.prune(model, x, ratio=0.5)
    gm = result.graph_module
    with torch.no_grad():
        gm.conv1.weight.add_(0.5)         # fine-tuned after pruning: the saved weights are these
    gm.conv1.weight.requires_grad_(False)
    gm.eval()
    gm.fc1.train()
    loaded = fxprune.load(fxprune.save(result, tmp_path / "r.fxp"), zoo.lenet5()[0])
    assert torch.equal(loaded.graph_module.conv1.weight, gm.conv1.weight)
    assert not loaded.graph_module.conv1.weight.requires_grad and loaded.graph_module.conv1.bias.requires_grad
    assert [m.training for m in loaded.graph_module.modules()] == [m.training for m in gm.modules()]


# ---------------------------------------------------------------------------
# another model
# ---------------------------------------------------------------------------
def mlp(width: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))


X = (torch.randn(2, 4),)


@pytest.fixture
def saved(tmp_path):
    result = fxprune.prune(mlp(), X, ratio=0.5)
    return result, fxprune.save(result, tmp_path / "mlp.fxp")


def test_loading_onto_another_architecture_is_refused_naming_the_difference(saved):
    with pytest.raises(ConfigError, match=r"tensor '0.weight': shape \(8, 4\) in the saved model, \(16, 4\) here"):
        fxprune.load(saved[1], mlp(width=16))
    other = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    with pytest.raises(ConfigError, match="module '1': ReLU.* in the saved model, Tanh.* here"):
        fxprune.load(saved[1], other)


def test_other_weights_are_refused_unless_check_weights_is_false(saved):
    result, path = saved
    with pytest.raises(ConfigError, match="other weights.*check_weights=False"):
        fxprune.load(path, mlp(seed=1))
    loaded = fxprune.load(path, mlp(seed=1), check_weights=False)
    assert torch.equal(loaded.graph_module(*X), result.graph_module(*X))


def test_a_registry_that_changes_the_groups_is_named(saved):
    data = read_manifest(saved[1])
    data["groups"][0][1] = "0" * 64
    write_manifest(saved[1], data)
    with pytest.raises(ConfigError, match=r"other coupled groups.*registry="):
        fxprune.load(saved[1], mlp())


# ---------------------------------------------------------------------------
# damaged, altered and foreign files; nothing executed
# ---------------------------------------------------------------------------
def read_manifest(path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("manifest.json"))


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _write_zip(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def write_manifest(path, data: dict, *, fix_checksum: bool = True) -> None:
    """Replace the manifest (re-sealing its checksum, as a deliberate editor would)."""
    if fix_checksum:
        body = {k: v for k, v in data.items() if k != "checksum"}
        data["checksum"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    members = _members(path)
    members["manifest.json"] = json.dumps(data).encode()
    _write_zip(path, members)


def replace_tensors(path, data: bytes, *, fix_checksums: bool) -> None:
    members = _members(path)
    members["tensors.pt"] = data
    _write_zip(path, members)
    if fix_checksums:
        manifest = read_manifest(path)
        manifest["tensors_sha256"] = hashlib.sha256(data).hexdigest()
        write_manifest(path, manifest)


def test_a_flipped_byte_in_the_tensors_is_refused_naming_the_file(saved):
    path = saved[1]
    data = bytearray(_members(path)["tensors.pt"])
    data[len(data) // 2] ^= 0xFF
    replace_tensors(path, bytes(data), fix_checksums=False)
    with pytest.raises(LoadError, match=r"mlp.fxp \(tensors.pt\): its checksum does not match"):
        fxprune.load(path, mlp())


def test_an_edited_plan_is_refused(saved):
    path = saved[1]
    data = read_manifest(path)
    data["plan"] = [[0, [0, 1, 2]]]
    write_manifest(path, data, fix_checksum=False)
    with pytest.raises(LoadError, match=r"mlp.fxp \(manifest.json\): the manifest was altered"):
        fxprune.load(path, mlp())
    write_manifest(path, data)  # even re-sealed, the plan does not rebuild the saved structure
    with pytest.raises(LoadError, match="does not rebuild the saved model"):
        fxprune.load(path, mlp())


@pytest.mark.parametrize("payload", ["torch_zip", "plain_pickle"])
def test_a_malicious_pickle_is_refused_without_running_it(saved, tmp_path, payload):
    path, marker = saved[1], tmp_path / "pwned"
    buf = io.BytesIO()
    if payload == "torch_zip":
        torch.save({"model/0.weight": CreatesAFile(str(marker))}, buf)
    else:
        import pickle

        pickle.dump({"model/0.weight": CreatesAFile(str(marker))}, buf, protocol=2)
    replace_tensors(path, buf.getvalue(), fix_checksums=True)  # the checksums even match
    with pytest.raises(LoadError, match=r"tensors.pt\): not a tensor file that loads without executing code"):
        fxprune.load(path, mlp())
    assert not marker.exists()


def test_a_tensor_file_of_other_types_is_refused(saved):
    buf = io.BytesIO()
    torch.save({"model/0.weight": [1, 2]}, buf)
    replace_tensors(saved[1], buf.getvalue(), fix_checksums=True)
    with pytest.raises(LoadError, match="not the dict of named tensors"):
        fxprune.load(saved[1], mlp())


def test_foreign_missing_and_truncated_files_are_refused(tmp_path, saved):
    result, path = saved
    cases = {"random.bin": os.urandom(100), "doc.json": b'{"a": 1}'}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(LoadError, match=f"{name}: not a file written by fxprune.save"):
            fxprune.load(tmp_path / name, mlp())
    torch.save(result.graph_module, tmp_path / "gm.pt")
    with pytest.raises(LoadError, match="looks like a torch.save file"):
        fxprune.load(tmp_path / "gm.pt", mlp())
    with pytest.raises(LoadError, match="no such file"):
        fxprune.load(tmp_path / "missing.fxp", mlp())
    body = pathlib.Path(path).read_bytes()
    (tmp_path / "cut.fxp").write_bytes(body[: len(body) // 2])
    with pytest.raises(LoadError, match="cut.fxp"):
        fxprune.load(tmp_path / "cut.fxp", mlp())
    data = read_manifest(path)
    data["version"] = 99
    write_manifest(path, data)
    with pytest.raises(LoadError, match="format version 99"):
        fxprune.load(path, mlp())


def test_an_interrupted_save_leaves_the_previous_file_and_no_temporary(saved, monkeypatch):
    import fxprune.serialize.result as res

    result, path = saved
    before = pathlib.Path(path).read_bytes()

    def interrupted(fh, tensors):
        fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(res, "dump_tensors", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fxprune.save(result, path)
    assert pathlib.Path(path).read_bytes() == before
    assert os.listdir(pathlib.Path(path).parent) == ["mlp.fxp"]


def test_save_refuses_what_it_cannot_reload(tmp_path, saved):
    result = saved[0]
    with pytest.raises(ConfigError, match="does not exist"):
        fxprune.save(result, tmp_path / "no" / "dir" / "r.fxp")
    with pytest.raises(ConfigError, match="PruneResult"):
        fxprune.save(result.graph_module, tmp_path / "r.fxp")
    result.graph_module.add_module("extra", nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="no longer has the structure its plan emits"):
        fxprune.save(result, tmp_path / "r.fxp")


def test_a_module_type_option_that_resolves_nowhere_is_named(saved):
    path = saved[1]
    data = read_manifest(path)
    data["analysis"]["leaf_modules"] = [{"type": "not_imported_pkg.mod:Block"}]
    write_manifest(path, data)
    with pytest.raises(ConfigError, match="not_imported_pkg.mod:Block.*import not_imported_pkg.mod"):
        fxprune.load(path, mlp())


def test_export_results_can_also_be_pickled_with_torch_save():
    model, x = zoo.lenet5()
    gm = fxprune.prune(model, x, ratio=0.5, frontend="export").graph_module
    buf = io.BytesIO()
    torch.save(gm, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    assert torch.equal(again(*x), gm(*x))
    assert again(torch.randn(3, *x[0].shape[1:])).shape[0] == 3   # the batch dim is dynamic (issue 9)
    with pytest.raises(AssertionError, match="Guard failed"):   # the input guard of the static dims survives
        again(torch.randn(3, 1, 27, 28))
