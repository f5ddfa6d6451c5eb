"""Smoke test of ``bench/compare_tp.py`` (fxprune side by side with Torch-Pruning).

Skipped unless ``torch_pruning`` (the ``bench`` extra, ``torch-pruning==1.6.1``)
is installed.  Two small zoo models, one repeat: the table has a row per model,
fxprune's result passes the dead-channel check on both, and Torch-Pruning's
ResNet too (TP prunes a plain residual CNN correctly).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch_pruning")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "compare_tp.py"


def test_compare_tp_runs_two_zoo_models_and_prints_the_table():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--models", "zoo/lenet5,zoo/resnet_basic", "--repeat", "1",
                           "--latency-runs", "1", "--timeout", "60"], cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert "torch-pruning 1.6.1" in out and "TP config plain" in out
    header = next(line for line in out.splitlines() if line.startswith("| model |"))
    for column in ("analysis s fx", "analysis s TP", "prune s fx", "prune s TP", "TP/fx", "check fx", "check TP",
                   "params fx", "params TP", "MACs fx", "MACs TP", "lat/MACs fx", "lat/MACs TP"):
        assert column in header
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines() if line.startswith("| zoo/")}
    assert set(rows) == {"zoo/lenet5", "zoo/resnet_basic"}, out
    assert rows["zoo/resnet_basic"][0] == "1x3x64x64"     # resized to 64x64; LeNet keeps its 28x28
    assert rows["zoo/lenet5"][0] == "2x1x28x28"
    for cells in rows.values():
        assert cells[7].startswith("dead ") and cells[7] != "dead n/a", cells   # fxprune's check
        assert float(cells[9].rstrip("%")) < 60                                  # fxprune's params left
    assert rows["zoo/resnet_basic"][8].startswith("dead "), rows                 # TP's check on a ResNet
