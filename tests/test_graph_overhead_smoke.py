"""Smoke test of ``bench/graph_overhead.py`` (the pruned GraphModule against the eager module of the same widths).

Two tiny zoo models, few short rounds: the table has its columns and a row per model, the
GraphModule and the materialised eager model agree on the batch-8 inputs, and the ratios are
positive numbers (no timing claim: the machine running the tests may be busy).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "graph_overhead.py"


def test_graph_overhead_runs_two_tiny_models_and_prints_the_table():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--models", "resnet,llama", "--rounds", "2",
                           "--min-time", "0.005", "--warmup", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert "1 thread(s), batch 8, ratio 0.5" in out
    header = [c.strip() for c in next(line for line in out.splitlines() if line.startswith("| model |")).split("|")]
    for column in ("front end", "eager", "MACs", "graph/orig", "eager/orig", "graph/eager", "lat/MACs", "orig ms",
                   "max diff"):
        assert column in header, header
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines() if line.startswith("| zoo ")}
    assert set(rows) == {"zoo resnet_basic w8-32 8x3x16x16", "zoo llama d32 1 layer 8x8"}, out
    col = {name: i - 2 for i, name in enumerate(header) if name}
    for cells in rows.values():
        assert cells[col["eager"]] == "copy"                              # the user's class, resized
        assert float(cells[col["max diff"]]) <= 1e-5, cells      # the same model, numerically
        assert 0 < float(cells[col["MACs"]].rstrip("%")) < 60
        for name in ("graph/orig", "eager/orig", "graph/eager", "lat/MACs", "orig ms"):
            assert float(cells[col[name]]) > 0, (name, cells)


def test_graph_overhead_help():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "--round-to" in proc.stdout and "--tp" in proc.stdout
