"""The rewrite's direct check run (fxprune.rewrite.verify, issue 14): used only where it cannot write what it reads.

A module whose layers' rules declare they write nothing of their own runs directly, on
its own state and the example inputs in place, and gets exactly the shapes
``propagate_shapes`` gives; anything that might write its state, its inputs or
a module attribute is left to ``propagate_shapes`` (copies); and the
verification still refuses a broken rewrite either way.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

import fxprune
from fxprune import ir
from fxprune.analysis.shapes import propagate_shapes
from fxprune.rewrite import channels as rw
from fxprune.rewrite.verify import run_owned
from fxprune.testing import zoo


def _specs(gm: fx.GraphModule) -> dict:
    return {n.name: n.meta.get(ir.SPEC, "absent") for n in gm.graph.nodes}


def _state(module: nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_a_direct_run_gives_propagate_shapes_specs_and_writes_nothing():
    model, inputs = zoo.mobilenet_v3()
    gm = fx.symbolic_trace(model)
    before, x = _state(gm), [t.clone() for t in inputs]
    assert run_owned(gm, inputs)
    direct = _specs(gm)
    propagate_shapes(gm, inputs)
    assert direct == _specs(gm)
    assert all(torch.equal(v, before[k]) for k, v in gm.state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(inputs, x))


class _InplaceOnInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.skip = nn.Identity()
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(self.act(self.skip(x)))   # the in-place ReLU writes the input through the identity


class _InplaceOnWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        self.fc.bias.add_(0.0)
        return self.fc(x)


class _Custom(nn.Linear):
    def forward(self, x):
        return super().forward(x)


class _KeepsCustom(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _Custom) or super().is_leaf_module(m, qualname)


def _trace(model: nn.Module) -> fx.GraphModule:
    return fx.GraphModule(model, _KeepsCustom().trace(model))


@torch.fx.wrap
def _scaled(x):
    return x * 2


class _Wrapped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(_scaled(x))


def _hooked() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 4)).eval()
    model[0].register_forward_hook(lambda m, i, o: None)
    return model


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train(),   # statistics update
    lambda: _InplaceOnInput().eval(),
    lambda: _InplaceOnWeight().eval(),
    lambda: nn.Sequential(_Custom(4, 4)).eval(),                          # not a known layer
    lambda: _Wrapped().eval(),                                            # user code given the input
    _hooked,
    lambda: nn.Sequential(nn.Embedding(10, 4, max_norm=1.0)).eval(),     # renormalises its weight
], ids=["train-batchnorm", "inplace-on-input", "inplace-on-weight", "custom-layer", "wrapped-function", "hook",
        "embedding-max-norm"])
def test_anything_that_may_write_is_left_to_propagate_shapes(make):
    model = make()
    x = torch.randint(0, 10, (2, 3)) if isinstance(model[0] if isinstance(model, nn.Sequential) else None,
                                                    nn.Embedding) else torch.randn(2, 4)
    gm = _trace(model)
    state, x0 = _state(gm), x.clone()
    assert not run_owned(gm, (x,))
    assert torch.equal(x, x0) and all(torch.equal(v, state[k]) for k, v in gm.state_dict().items())
    assert run_owned(fx.symbolic_trace(nn.Sequential(nn.Linear(4, 4)).eval()), (torch.randn(2, 4),))


def test_the_rewrite_checks_an_eligible_module_without_propagate_shapes(monkeypatch):
    model, inputs = zoo.resnet_basic()
    analysis = fxprune.analyze(model, inputs)
    plan = fxprune.prune(model, inputs, analysis=analysis).plan
    expected = _specs(rw.apply_plan(analysis, plan))
    monkeypatch.setattr(rw, "propagate_shapes", lambda *a: pytest.fail("the direct run should do"))
    assert _specs(rw.apply_plan(analysis, plan)) == expected


def test_a_wrong_prediction_is_caught_on_the_direct_run(monkeypatch):
    model, inputs = zoo.resnet_basic()
    analysis = fxprune.analyze(model, inputs)
    plan = fxprune.prune(model, inputs, analysis=analysis).plan
    real = rw.plan_mask

    class _Wrong:  # predicts the unpruned width everywhere
        def __init__(self, mask):
            self._mask = mask

        def __getattr__(self, name):
            return getattr(self._mask, name)

        def shape(self, spec, labels):
            return tuple(spec.shape) if isinstance(spec, ir.TensorSpec) else self._mask.shape(spec, labels)

    monkeypatch.setattr(rw, "plan_mask", lambda a, p: _Wrong(real(a, p)))
    monkeypatch.setattr(rw, "propagate_shapes", lambda *a: pytest.fail("the direct run should do"))
    with pytest.raises(fxprune.errors.RewriteError, match="differs from the predicted"):
        rw.apply_plan(analysis, plan)


def test_a_module_is_run_directly_only_through_its_rule():
    """What a layer writes is the registry's knowledge: a rule without ``writes_state`` says nothing."""
    gm = fx.symbolic_trace(nn.Sequential(nn.Linear(4, 4)).eval())
    registry = fxprune.ops.default_registry()
    assert run_owned(gm, (torch.randn(2, 4),), registry)
    registry.register(dataclasses.replace(fxprune.ops.LINEAR_MODULE, writes_state=None))
    assert not run_owned(gm, (torch.randn(2, 4),), registry)


class _InplaceOnView(nn.Module):
    def forward(self, x):
        y = x.flatten(1)        # a view of the input: the in-place op below would write it
        y.mul_(2)
        return y


def test_an_in_place_write_of_a_view_of_the_input_stops_the_run():
    gm = fx.symbolic_trace(_InplaceOnView())
    x = torch.randn(2, 4)
    x0 = x.clone()
    assert not run_owned(gm, (x,))
    assert torch.equal(x, x0)
    assert run_owned(fx.symbolic_trace(nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True)).eval()),
                     (torch.randn(2, 4),))  # an in-place op on a fresh tensor is fine
