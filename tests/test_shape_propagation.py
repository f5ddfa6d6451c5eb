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
    _no_cpu_path(monkeypatch)


def _no_cpu_path(monkeypatch):
    monkeypatch.setattr(shapes, "REAL_RUN_MAX_STATE", -1)  # the meta path is what these tests specify


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
    _no_cpu_path(monkeypatch)  # (CPU kernels read the values fine)
    calls = []
    real = shapes._propagate_on_fake
    monkeypatch.setattr(shapes, "_propagate_on_fake", lambda *a: (calls.append(1), real(*a)))
    capture.propagate_shapes(gm, (torch.randn(3, 2),))
    assert calls == [1]
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    assert tuple(out.meta[ir.SPEC].shape) == (3, 2)


class _Mutates(nn.Module):
    """In-place ops on its input and on a parameter, a BatchNorm in train mode, and a random op."""

    def __init__(self):
        super().__init__()
        self.lin, self.bn = nn.Linear(4, 4), nn.BatchNorm1d(4)

    def forward(self, x):
        x.mul_(2)
        self.lin.weight.data.add_(1)  # weight clipping-style code in a forward
        return self.bn(self.lin(x)) + torch.rand(1)


def _no_time_budget(monkeypatch):
    """The CPU path's budget is wall time; tests that need the path to run lift it (no flakes on a busy machine)."""
    monkeypatch.setattr(shapes, "REAL_RUN_SECONDS_PER_NODE", 1.0)


def test_the_cpu_path_writes_none_of_the_users_tensors_nor_the_rng_state(monkeypatch):
    _no_time_budget(monkeypatch)
    model, x = _Mutates().train(), torch.randn(3, 4)
    gm = capture.trace(model)
    before = {k: v.clone() for k, v in [*model.state_dict().items(), ("x", x)]}
    rng = torch.get_rng_state()
    assert shapes._propagate_on_real(gm, (x,))
    after = {**model.state_dict(), "x": x}
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert torch.equal(torch.get_rng_state(), rng)
    out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    assert tuple(out.meta[ir.SPEC].shape) == (3, 4)


def test_the_cpu_path_is_skipped_for_meta_state_and_large_state_and_given_up_past_its_budget(monkeypatch):
    _no_time_budget(monkeypatch)
    model, x = zoo.resnet_basic()
    gm = capture.trace(model)
    assert shapes._propagate_on_real(gm, x)
    assert not shapes._propagate_on_real(gm, tuple(t.to("meta") for t in x))   # meta inputs: not real
    monkeypatch.setattr(shapes, "REAL_RUN_MAX_STATE", 10)
    assert not shapes._propagate_on_real(gm, x)                                # state over the cap
    monkeypatch.setattr(shapes, "REAL_RUN_MAX_STATE", 10**9)
    monkeypatch.setattr(shapes, "REAL_RUN_SECONDS_PER_NODE", 0.0)
    monkeypatch.setattr(shapes, "REAL_RUN_MIN_SECONDS", 0.0)
    assert not shapes._propagate_on_real(gm, x)                                # over the time budget
    shapes.propagate_shapes(gm, x)                                             # ... then meta decides
    assert all(n.meta.get(ir.SPEC) is not None for n in gm.graph.nodes if n.op != "output")


@pytest.mark.parametrize("name", ["densenet", "llama", "shufflenet_v2"])
def test_the_cpu_path_gives_the_specs_of_meta_tensors(name, monkeypatch):
    _no_time_budget(monkeypatch)
    model, inputs = zoo.ZOO[name]()
    gm = capture.trace(model)
    assert shapes._propagate_on_meta(gm, inputs)
    want = _specs(gm)
    assert shapes._propagate_on_real(gm, inputs)
    assert _specs(gm) == want


class _Accumulates(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = torch.zeros(4)  # a plain attribute, not a buffer: the user's tensor, shared by the capture

    def forward(self, x):
        self.seen.add_(x.detach().sum(0))
        return x


class _WithAccumulator(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.acc, self.b = nn.Linear(4, 4), _Accumulates(), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(self.acc(self.a(x)))


def test_a_leaf_modules_plain_tensor_attribute_is_never_written(monkeypatch):
    # Regression: the CPU path ran a leaf module for real, and its in-place update of a plain tensor
    # attribute (shared with the user's model by the capture) reached the user's tensor.
    _no_time_budget(monkeypatch)
    model, x = _WithAccumulator(), torch.randn(3, 4)
    gm = capture.trace(model, leaf_modules=[_Accumulates])
    assert not shapes._propagate_on_real(gm, (x,))
    for _ in range(2):
        shapes.propagate_shapes(gm, (x,))
    assert torch.equal(model.acc.seen, torch.zeros(4))
