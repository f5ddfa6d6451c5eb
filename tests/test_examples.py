"""Every script in examples/ runs (Hugging Face examples only where transformers is installed)."""
from __future__ import annotations

import importlib.util
import pathlib
import runpy

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).resolve().parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, tmp_path, monkeypatch, capsys):
    if "import transformers" in script.read_text() and importlib.util.find_spec("transformers") is None:
        pytest.skip("needs transformers (the test extra)")
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    assert capsys.readouterr().out
