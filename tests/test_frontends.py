"""``frontend="auto"``, keyword example inputs and dynamic export shapes (issue 9, "Reach")."""
from __future__ import annotations

import pytest
import torch
import torch.fx
import torch.nn as nn

import fxprune
from fxprune import ExampleInputError, ir
from fxprune.analysis.capture import bind_example_inputs
from fxprune.testing import check_pruning
from fxprune.testing.check import mask_original


def pad_rows(x, ws: int):
    """Pads the rows of ``(B, H, C)`` to a multiple of ``ws`` (repeating the last): a branch on a size,
    which torch.fx cannot trace."""
    H = x.shape[1]
    if H % ws:
        x = torch.cat([x] + [x[:, -1:]] * (ws - H % ws), dim=1)
    return x


torch.fx.wrap("pad_rows")


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class RowLoop(Mlp):
    """Loops over the rows of a tensor in forward: fx cannot trace it (not even from the example
    values: a branch on a size it would freeze and check, see tests/test_fx_values.py), export can."""

    def forward(self, x):
        y = torch.relu(self.a(x))
        y = torch.stack([row * 2 for row in y])
        return self.b(y)


class PaddedRows(nn.Module):
    """A wrapped helper fx must keep as one call (a barrier) while export traces through it."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(torch.relu(pad_rows(self.a(x), 2)))


class Keywords(nn.Module):
    """A forward with optional keyword inputs, as Hugging Face models have."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x, scale=None, shift=None, gate=None):
        y = torch.relu(self.a(x))
        if gate is not None:
            y = y * gate                                               # a per-sample gate: (batch, 1)
        return self.b(y)


X = (torch.randn(3, 4),)


# --------------------------------------------------------------------------- frontend="auto"
def test_auto_uses_fx_when_fx_leaves_no_barrier():
    analysis = fxprune.analyze(Mlp(), X, frontend="auto")
    assert analysis.frontend == "fx" and analysis.config.frontend == "auto"
    assert analysis.notes == ("frontend='auto' used fx: it left no channel barrier",)


def test_auto_uses_export_when_fx_cannot_trace():
    model = RowLoop().eval()
    with pytest.raises(fxprune.TraceError):
        fxprune.analyze(model, X)
    analysis = fxprune.analyze(model, X, frontend="auto")
    assert analysis.frontend == "export"
    assert "used export: torch.fx could not capture the model" in analysis.notes[0]
    assert len(analysis.groups) == 1
    result = fxprune.prune(model, X, ratio=0.5, frontend="auto")
    assert result.report.notes[0] == analysis.notes[0]
    check_pruning(model, X, frontend="auto")


def test_auto_uses_export_when_fx_leaves_a_barrier_export_does_not():
    model, x = PaddedRows().eval(), (torch.randn(2, 3, 4),)
    fx_analysis = fxprune.analyze(model, x)
    assert [n.target for n in fx_analysis.graph_module.graph.nodes if ir.KEPT_CALL in n.meta] == [pad_rows]
    assert fx_analysis.barriers and not fx_analysis.groups
    analysis = fxprune.analyze(model, x, frontend="auto")
    assert analysis.frontend == "export" and not analysis.barriers and len(analysis.groups) == 1
    assert "fx left 1 channel barrier(s) (pad_rows), export 0" in analysis.notes[0]


# --------------------------------------------------------------------------- keyword inputs
def test_keyword_inputs_are_placed_at_their_positions():
    model, x, b = Keywords(), torch.randn(3, 4), torch.randn(3, 1)
    assert bind_example_inputs(model, (), {"x": x}) == (x,)
    bound = bind_example_inputs(model, (x,), {"gate": b})
    assert bound[0] is x and bound[1:3] == (None, None) and bound[3] is b
    with pytest.raises(ExampleInputError, match=r"example_kwargs \['colour'\] are not .*parameters"):
        bind_example_inputs(model, (), {"colour": x})
    with pytest.raises(ExampleInputError, match=r"example_kwargs \['x'\] are given positionally too"):
        bind_example_inputs(model, (x,), {"x": x})
    with pytest.raises(ExampleInputError, match="'x' of Keywords.forward has no default"):
        bind_example_inputs(model, (), {"gate": b})
    with pytest.raises(ExampleInputError, match="example_kwargs="):
        fxprune.analyze(model, {"x": x})                               # a dict of inputs points to example_kwargs


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_analyze_prune_and_check_take_keyword_inputs(frontend):
    model, kw = Keywords().eval(), {"x": torch.randn(3, 4), "gate": torch.rand(3, 1)}
    analysis = fxprune.analyze(model, example_kwargs=kw, frontend=frontend)
    assert len(analysis.example_inputs) == 4 and analysis.example_inputs[3] is kw["gate"]
    assert len(analysis.groups) == 1
    result = fxprune.prune(model, example_kwargs=kw, ratio=0.5, frontend=frontend)
    assert result.graph_module.get_submodule("a").weight.shape == (4, 4)
    check_pruning(model, example_kwargs=kw, frontend=frontend)
    with pytest.raises(fxprune.ConfigError, match=r"\['example_kwargs'\] would be ignored"):
        fxprune.prune(model, example_kwargs=kw, analysis=analysis)
    with pytest.raises(fxprune.ConfigError, match=r"did you mean \['example_kwargs'\]"):
        fxprune.prune(model, example_kwarg=kw)


# --------------------------------------------------------------------------- dynamic export
def test_export_results_run_on_other_batch_sizes():
    model = Mlp().eval()
    result = fxprune.prune(model, (torch.randn(1, 4),), ratio=0.5, frontend="export")
    assert any("dynamic dims input 0 dim 0" in n for n in result.report.notes)
    for batch in (1, 7):
        x = torch.randn(batch, 4)
        want = mask_original(result.analysis, result.plan)(x)
        assert torch.allclose(result.graph_module(x), want, atol=1e-6)
    with pytest.raises(AssertionError, match="Guard failed"):
        result.graph_module(torch.randn(2, 5))                         # a static dim still has its guard


def test_export_falls_back_to_static_shapes_and_says_so():
    class Flat(Mlp):
        def forward(self, x):
            return self.b(torch.relu(self.a(x.reshape(4))))            # batch of one baked into the code

    analysis = fxprune.analyze(Flat().eval(), (torch.randn(1, 4),), frontend="export")
    assert any("captured with static shapes" in n for n in analysis.notes)
    assert len(analysis.groups) == 1


def test_a_model_that_special_cases_a_batch_of_one_is_captured_static():
    class One(Mlp):
        def forward(self, x):
            y = torch.relu(self.a(x))
            if x.shape[0] == 1:                                          # export at batch 2 would miss this
                y = y.exp()
            return self.b(y)

    model, x = One().eval(), (torch.randn(1, 4),)
    analysis = fxprune.analyze(model, x, frontend="export")
    assert any("special-cases a size of one" in n for n in analysis.notes)
    assert torch.allclose(analysis.graph_module(*x), model(*x))
    check_pruning(model, x, frontend="export")


def keywords_model():
    """A CLI factory returning a bare model whose inputs come from ``--example-kwargs``."""
    return Keywords().eval()


def test_the_cli_takes_keyword_inputs_and_the_new_options(capsys):
    from fxprune.cli import main, parse_example_kwargs

    kw = parse_example_kwargs(["x=3,4", "ids=2,5:long"])
    assert kw["x"].shape == (3, 4) and kw["ids"].dtype == torch.long and bool((kw["ids"] == 1).all())
    assert main(["analyze", "test_frontends:keywords_model", "--example-kwargs", "x=3,4", "gate=3,1",
                 "--frontend", "auto", "--split-policy", "heads"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 groups, 0 barriers") and "note: frontend='auto' used fx" in out
    assert main(["analyze", "test_frontends:keywords_model", "--example-kwargs", "x=3,four"]) == 2
    assert "--example-kwargs 'x=3,four': give NAME=SHAPE[:DTYPE]" in capsys.readouterr().err
