"""Shape propagation: meta tensors where they suffice, fake tensors where a graph needs them.

Specification: both paths give the same specs; the cheap meta path is the one taken on the
zoo and on exported graphs that carry device arguments; a graph that reads tensor values
falls back to fake tensors and still gets its specs.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from fxprune import ir
from fxprune.analysis import capture, shapes
from fxprune.testing import zoo


def _specs(gm):
    return {n.name: n.meta.get(ir.SPEC) for n in gm.graph.nodes}


def _refuse_fake(monkeypatch):
    def refuse(*_):
        raise AssertionError("the fake-tensor path ran")
    monkeypatch.setattr(shapes, "_propagate_on_fake", refuse)


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_zoo_runs_on_meta_with_the_specs_of_fake_tensors(name, monkeypatch):
    model, inputs = zoo.ZOO[name]()
    gm = capture.trace(model)
    shapes._propagate_on_fake(gm, shapes.as_example_inputs(inputs))
    want = _specs(gm)
    _refuse_fake(monkeypatch)
    capture.propagate_shapes(gm, inputs)
    assert _specs(gm) == want


class _Devices(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        pos = torch.arange(x.shape[1], device=torch.device("cpu"))
        return self.lin(x).to(torch.device("cpu")) + pos.to(x.dtype)


def test_exported_device_arguments_run_on_meta(monkeypatch):
    gm = capture.export(_Devices().eval(), (torch.randn(2, 4),), dynamic=False)
    _refuse_fake(monkeypatch)
    capture.propagate_shapes(gm, (torch.randn(2, 4),))
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    out = out[0] if isinstance(out, (tuple, list)) else out
    assert tuple(out.meta[ir.SPEC].shape) == (2, 4)


class _Branchy(nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x[:, :1].expand_as(x)  # reads a value


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.branchy = nn.Linear(2, 2), _Branchy()

    def forward(self, x):
        return self.branchy(self.lin(x))


def test_a_leaf_module_reading_values_falls_back_to_fake_tensors(monkeypatch):
    gm = capture.trace(_Net(), leaf_modules=[_Branchy])
    calls = []
    real = shapes._propagate_on_fake
    monkeypatch.setattr(shapes, "_propagate_on_fake", lambda *a: (calls.append(1), real(*a)))
    capture.propagate_shapes(gm, (torch.randn(3, 2),))
    assert calls == [1]
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    assert tuple(out.meta[ir.SPEC].shape) == (3, 2)
