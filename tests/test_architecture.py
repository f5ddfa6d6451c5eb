"""The package's layering, checked from the source: a floor, three stages, no import cycle.

Every ``import`` of an fxprune module anywhere in ``fxprune/`` (including
imports inside functions) is an edge of the module graph.  The floor
(``fxprune.ir``, ``fxprune.errors``, ``fxprune.modules``) imports nothing above
it; ``fxprune.ops`` imports only the floor; the graph has no cycle, so no
import order is load-bearing.
"""
from __future__ import annotations

import ast
import pathlib

import networkx as nx
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "fxprune"

#: what each layer may import (besides itself)
ALLOWED = {
    "fxprune.ir": set(),
    "fxprune.errors": set(),
    "fxprune.gcpause": set(),
    "fxprune.modules": {"fxprune.errors"},
    "fxprune.ops": {"fxprune.ir", "fxprune.errors", "fxprune.modules"},
    "fxprune.analysis": {"fxprune.ir", "fxprune.errors", "fxprune.modules", "fxprune.ops", "fxprune.gcpause"},
    "fxprune.scoring": {"fxprune.ir", "fxprune.errors", "fxprune.modules", "fxprune.ops", "fxprune.analysis",
                        "fxprune.progress"},
    "fxprune.rewrite": {"fxprune.ir", "fxprune.errors", "fxprune.modules", "fxprune.ops", "fxprune.analysis",
                        "fxprune.gcpause"},
}


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: pathlib.Path) -> set[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "fxprune")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "fxprune":
                continue
            for alias in node.names:  # `from . import ir` imports a submodule
                sub = f"{mod}.{alias.name}"
                found.add(sub if (ROOT.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                          or (ROOT.parent / sub.replace(".", "/") / "__init__.py").exists() else mod)
    return found


def _graph() -> nx.DiGraph:
    g = nx.DiGraph()
    for path in ROOT.rglob("*.py"):
        src = _module_name(path)
        g.add_node(src)
        for dst in _imports(path):
            if dst != src:
                g.add_edge(src, dst)
    return g


def _layer(module: str) -> str | None:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def test_there_is_no_import_cycle():
    cycles = list(nx.simple_cycles(_graph()))
    assert not cycles, f"import cycles: {cycles[:5]}"


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_what_is_below_them(layer):
    bad = []
    for src, dst in _graph().edges:
        if _layer(src) != layer or _layer(dst) == layer:
            continue
        target = _layer(dst) or dst
        if target not in ALLOWED[layer]:
            bad.append(f"{src} imports {dst}")
    assert not bad, bad


def test_no_module_is_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 600 and p.name != "zoo.py"}
    assert not long, long


def test_optional_libraries_are_never_imported_at_module_level():
    """``transformers`` (and matplotlib) are optional: only imported inside functions, if at all."""
    bad = []
    for path in ROOT.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("transformers", "matplotlib")]
    assert not bad, bad
