"""Specifications of the report: totals, per-layer rows, JSON and Markdown exports agree with the model."""
from __future__ import annotations

import json

import pytest

import fxprune
from fxprune.analysis.cost import count_params
from fxprune.testing import zoo


@pytest.mark.parametrize("name", ["resnet_basic", "vit", "llama"])
def test_report_exports_agree_with_the_pruned_model(name):
    model, x = zoo.ZOO[name]()
    result = fxprune.prune(model, x, ratio=0.5)
    report, gm = result.report, result.graph_module
    data = json.loads(report.to_json())
    assert data["params"]["after"] == count_params(gm) == report.params_after
    assert data["macs"]["before"] == report.macs_before and data["macs"]["after"] == report.macs_after
    assert [g["group"] for g in data["groups"]] == [g.id for g in result.analysis.groups]
    assert len(data["layers"]) == len(report.layers) > 0
    modules = dict(gm.named_modules())
    for row in report.layers:
        assert all(a <= b for a, b in zip(row.width_after, row.width_before))
        assert row.params_after <= row.params_before and row.macs_after <= row.macs_before
        if row.name in modules:  # a module layer: its parameters now, counted directly
            assert row.params_after == sum(p.numel() for p in modules[row.name].parameters())
    assert sum(r.macs_after for r in report.layers) == report.macs_after
    assert any(r.width_after < r.width_before for r in report.layers)
    md = report.to_markdown()
    assert all(f"`{r.name}`" in md for r in report.layers)


def test_an_empty_plan_reports_no_change():
    model, x = zoo.ZOO["mobilenet_v2"]()
    report = fxprune.prune(model, x, ratio=0.0).report
    assert report.params_ratio == 1.0 and report.macs_ratio == 1.0
    assert not any(row.changed for row in report.layers)


def test_plots_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    from fxprune.plot import plot_groups
    from fxprune.schedules import iterative

    model, x = zoo.ZOO["lenet5"]()
    result = fxprune.prune(model, x, ratio=0.5)
    png = plot_groups(result, tmp_path / "groups.png")
    assert (tmp_path / "groups.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.endswith("groups.png")
    accuracy = iter([99.0, 98.9, 98.5, 97.0])
    history = iterative(model, x, evaluate=lambda gm: next(accuracy), rounds=3, progress=False)
    assert history.plot(tmp_path / "history.png").endswith("history.png")
    assert (tmp_path / "history.png").stat().st_size > 1000
    with pytest.raises(fxprune.ConfigError, match="does not exist"):
        plot_groups(result, tmp_path / "missing" / "g.png")
