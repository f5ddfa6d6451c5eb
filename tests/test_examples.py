"""Every script in examples/ runs (Hugging Face examples only where transformers is installed).

Each runs in a temporary working directory, without command-line arguments, with
``FXPRUNE_CACHE`` (the latency-table cache) there too.
"""
from __future__ import annotations

import importlib.util
import pathlib
import runpy
import sys

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).resolve().parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, tmp_path, monkeypatch, capsys):
    if "import transformers" in script.read_text() and importlib.util.find_spec("transformers") is None:
        pytest.skip("needs transformers (the test extra)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script)])
    monkeypatch.setenv("FXPRUNE_CACHE", str(tmp_path / "cache"))
    runpy.run_path(str(script), run_name="__main__")
    assert capsys.readouterr().out


def test_examples_write_what_they_say(tmp_path, monkeypatch, capsys):
    """The CNN example writes its report and plot; the recipe example resumes and plots its history."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "img").mkdir()
    for name, png in (("cnn_macs_target.py", "groups.png"), ("recipe_finetune_resume.py", "history.png")):
        script = EXAMPLES[0].parent / name
        monkeypatch.setattr(sys, "argv", [str(script), "--plot", str(tmp_path / "img" / png)])
        runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "interrupted; finished rounds: [0, 1]" in out and "resumed:" in out
    for written in ("report.json", "report.md", "img/groups.png", "img/history.png"):
        assert (tmp_path / written).stat().st_size > 0, written
