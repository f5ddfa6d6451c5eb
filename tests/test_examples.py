"""Every script in examples/ runs (Hugging Face examples only where transformers is installed).

Each runs in a temporary working directory, without command-line arguments, with
``FXPRUNE_CACHE`` (the latency-table cache) there too; scripts that write files or resume are
checked for what they write and print.
"""
from __future__ import annotations

import importlib.util
import pathlib
import runpy
import sys

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).resolve().parent.parent / "examples").glob("*.py"))
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

# script -> (files it writes in its working directory, plots only with matplotlib; lines it prints)
WRITES = {
    "cnn_macs_target.py": (("report.json", "report.md") + (("groups.png",) if HAS_MATPLOTLIB else ()),
                           ("MACs ",)),
    "recipe_finetune_resume.py": (("history.png",) if HAS_MATPLOTLIB else (),
                                  ("interrupted; finished rounds: [0, 1]", "resumed:")),
}


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, tmp_path, monkeypatch, capsys):
    if "import transformers" in script.read_text() and importlib.util.find_spec("transformers") is None:
        pytest.skip("needs transformers (the test extra)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script)])
    monkeypatch.setenv("FXPRUNE_CACHE", str(tmp_path / "cache"))
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert out
    files, lines = WRITES.get(script.name, ((), ()))
    for line in lines:
        assert line in out, line
    for written in files:
        assert (tmp_path / written).stat().st_size > 0, written


def test_plot_option(tmp_path, monkeypatch, capsys):
    """``--plot PATH`` (how docs/img is regenerated) writes the picture there."""
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    script = EXAMPLES[0].parent / "cnn_macs_target.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--plot", str(tmp_path / "img" / "g.png")])
    (tmp_path / "img").mkdir()
    runpy.run_path(str(script), run_name="__main__")
    assert (tmp_path / "img" / "g.png").stat().st_size > 0
    assert not (tmp_path / "groups.png").exists()
