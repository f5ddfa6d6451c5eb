"""Every Python example in docs/ runs (blocks of a page share one namespace, in order)."""
from __future__ import annotations

import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md"))


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    namespace: dict = {"__name__": "__docs__"}
    for i, block in enumerate(blocks):
        if block.lstrip().startswith(">>>"):
            continue  # doctest-style blocks run under --doctest-glob
        exec(compile(block, f"{page.name} block {i}", "exec"), namespace)


def test_the_issue_snippet_imports():
    from fxprune.testing import architectures, check_pruning  # noqa: F401
