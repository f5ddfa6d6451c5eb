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
    out = tmp_path / "pruned.pt"
    assert main(["prune", "lenet5", "--ratio", "0.5", "--out", str(out)]) == 0
    assert "params:" in capsys.readouterr().out
    gm = torch.load(out, weights_only=False)
    assert gm.conv1.out_channels == 3
    assert gm(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_errors_exit_2_with_a_message(capsys):
    assert main(["analyze", "not_a_model"]) == 2
    err = capsys.readouterr().err
    assert "unknown model" in err and "resnet_basic" in err
    assert main(["prune", "lenet5", "--ratio", "1.5"]) == 2
    assert "ratio" in capsys.readouterr().err
