"""The command line: help, listing, analysis exports, pruning to a file, clear errors."""
from __future__ import annotations

import json

import pytest
import torch

from fxprune.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("zoo", "analyze", "prune", "recipes"):
        assert cmd in out


def test_zoo_and_recipes(capsys):
    assert main(["zoo"]) == 0
    assert "resnet_basic" in capsys.readouterr().out.split()
    assert main(["recipes"]) == 0
    assert "iap" in capsys.readouterr().out
    assert main(["recipes", "hap"]) == 0
    assert 'name = "hessian"' in capsys.readouterr().out


def test_analyze_json(capsys):
    assert main(["analyze", "lenet5", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [g["size"] for g in data["groups"]] == [6, 16, 120, 84]


def test_prune_saves_a_smaller_module(tmp_path, capsys):
    import fxprune
    from fxprune.testing import zoo

    out, pt2 = tmp_path / "pruned.fxp", tmp_path / "pruned.pt2"
    assert main(["prune", "lenet5", "--ratio", "0.5", "--out", str(out), "--export-out", str(pt2)]) == 0
    assert "params:" in capsys.readouterr().out
    model, x = zoo.lenet5()
    gm = fxprune.load(out, model).graph_module
    assert gm.conv1.out_channels == 3
    assert gm(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    program = torch.export.load(str(pt2)).module()
    assert torch.equal(program(*x), gm(*x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned.fxp", "pruned.pt2"]   # no temporary file left


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_cli_out_saves_results_of_both_front_ends(tmp_path, frontend, capsys):
    import fxprune
    from fxprune.testing import zoo

    out = tmp_path / "pruned.fxp"
    assert main(["prune", "vit", "--frontend", frontend, "--out", str(out)]) == 0
    model, x = zoo.vit()
    ref = fxprune.prune(model, x, frontend=frontend).graph_module
    assert torch.equal(fxprune.load(out, model).graph_module(*x), ref(*x))


def test_errors_exit_2_with_a_message(capsys):
    assert main(["analyze", "not_a_model"]) == 2
    err = capsys.readouterr().err
    assert "unknown model" in err and "resnet_basic" in err
    assert main(["prune", "lenet5", "--ratio", "1.5"]) == 2
    assert "ratio" in capsys.readouterr().err


def test_prune_to_a_macs_target_prints_json_that_matches_the_api(capsys):
    import fxprune
    from fxprune.testing import zoo

    assert main(["prune", "resnet_basic", "--target-macs", "0.5", "--report", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    model, x = zoo.ZOO["resnet_basic"]()
    api = json.loads(fxprune.prune(model, x, target_macs=0.5).report.to_json())
    assert data == api and data["macs"]["after"] <= 0.5 * data["macs"]["before"]


def test_prune_with_calibration_data_markdown_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    calib = tmp_path / "calib.pt"
    torch.save({"inputs": [torch.randn(4, 1, 28, 28)], "targets": [torch.randint(0, 10, (4,))]}, calib)
    png = tmp_path / "groups.png"
    assert main(["prune", "lenet5", "--scorer", "taylor", "--calib", str(calib), "--loss", "cross_entropy",
                 "--report", "md", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| | before | after | ratio |") and "`conv1`" in out
    assert png.stat().st_size > 0


def test_bad_command_lines_exit_2_before_any_work(tmp_path, capsys):
    assert main(["prune", "mobilenet_v2", "--out", str(tmp_path / "no" / "such" / "dir.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["prune", "mobilenet_v2", "--export-out", str(tmp_path / "no" / "such" / "dir.pt2")]) == 2
    assert "--export-out" in capsys.readouterr().err
    assert main(["prune", "fxprune.testing.zoo:LeNet5", "--input-shape", "2,1,28x28"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
    bad = tmp_path / "calib.pt"
    torch.save({"x": 1}, bad)
    assert main(["prune", "lenet5", "--scorer", "activation", "--calib", str(bad)]) == 2
    assert "--calib" in capsys.readouterr().err


def test_uniform_gives_repeated_blocks_one_width(capsys):
    import fxprune
    from fxprune.testing import zoo

    def mlp_widths(data):
        return {row["name"]: row["width_after"] for row in data["layers"] if row["name"].endswith("gate_proj")}

    assert main(["prune", "llama", "--global", "--report", "json"]) == 0
    ragged = mlp_widths(json.loads(capsys.readouterr().out))
    assert main(["prune", "llama", "--global", "--uniform", "--report", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len({str(w) for w in mlp_widths(data).values()}) == 1 < len({str(w) for w in ragged.values()})
    model, x = zoo.ZOO["llama"]()
    assert data == json.loads(fxprune.prune(model, x, global_ranking=True, uniform=True).report.to_json())
