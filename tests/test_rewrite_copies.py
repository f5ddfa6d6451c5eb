"""The channel rewrite's cheaper construction (issue 14): what it copies, when it generates code, what the report reuses.

The rewrite copies only the modules and attributes its graph names, builds the
module tree ``fx.GraphModule`` would build, generates the Python code on first
use, and the report reuses the shapes the verification annotated.  None of it may
change the result or let it share a tensor with the input model.
"""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

import fxprune
from fxprune import ir
from fxprune.rewrite import channels as rw
from fxprune.testing import zoo


class _ReadsBeforeCalls(nn.Module):
    """Reads ``b.bias`` before ``b`` is called; ``c`` and ``d`` share a weight; ``spare`` is never called."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 8)
        self.c = nn.Linear(8, 2)
        self.d = nn.Linear(8, 2)
        self.d.weight = self.c.weight
        self.spare = nn.Linear(3, 3)
        self.register_buffer("offset", torch.ones(2))

    def forward(self, x):
        shift = self.b.bias.sum()
        h = torch.relu(self.a(x))
        h = torch.relu(self.b(h)) + shift
        return self.c(h) + self.d(h) + self.offset


def _storages(module: nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}


def test_the_module_tree_is_the_one_fx_builds_and_shares_nothing_with_the_input():
    model = _ReadsBeforeCalls().eval()
    x = torch.randn(3, 4)
    result = fxprune.prune(model, (x,), ratio=0.5)
    gm = result.graph_module
    assert any(result.plan.values())
    # fx.GraphModule from a full deep copy of the analysed module: the same tree, the same state-dict order
    reference = fx.GraphModule(copy.deepcopy(result.analysis.graph_module), copy.deepcopy(gm.graph))
    assert [n for n, _ in gm.named_modules()] == [n for n, _ in reference.named_modules()]
    assert list(gm.state_dict()) == list(reference.state_dict())
    assert not hasattr(gm, "spare")                       # never called: not copied, as fx drops it
    assert gm.get_submodule("c").weight is gm.get_submodule("d").weight   # the tie survives the slice
    assert gm.get_submodule("b").bias.shape[0] < 8
    assert not _storages(gm) & _storages(model)
    assert gm(x).shape == (3, 2)


def test_an_unchanged_module_is_copied_too():
    model, inputs = zoo.resnet_basic()
    gm = fxprune.prune(model, inputs, ratio=0.5, ignore=["fc"]).graph_module
    assert gm.get_submodule("relu") is not model.relu      # no module object is shared either
    assert not _storages(gm) & _storages(model)


def test_the_code_is_generated_once_on_first_use_and_the_module_saves_and_copies_before_it():
    model, inputs = zoo.resnet_basic()
    reference = fxprune.prune(model, inputs, ratio=0.5).graph_module
    expected = reference(*inputs)
    assert "self._modules['conv1']" in reference.code     # the module-dict code generator is kept

    fresh = fxprune.prune(model, inputs, ratio=0.5).graph_module
    assert torch.equal(copy.deepcopy(fresh)(*inputs), expected)
    buffer = io.BytesIO()
    torch.save(fresh, buffer)
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=False)(*inputs), expected)
    assert fresh.code == reference.code
    assert torch.equal(fresh(*inputs), expected)


class _Guarded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 2)

    def forward(self, x):
        torch._assert(x.shape[1] == 4, "four features")    # a node whose value is None
        return self.b(torch.relu(self.a(x)))


def test_the_report_reuses_the_verified_shapes_and_propagates_only_without_them(monkeypatch):
    model = _Guarded().eval()
    x = torch.randn(2, 4)
    analysis = fxprune.analyze(model, (x,))
    plan = fxprune.prune(model, (x,), analysis=analysis).plan
    gm = rw.apply_plan(analysis, plan)
    assert any(n.meta.get(ir.SPEC, "absent") is None for n in gm.graph.nodes if n.op != "output")
    expected = fxprune.report.build_report(analysis, plan, gm)

    calls = []
    monkeypatch.setattr(fxprune.report, "propagate_shapes", lambda *a: calls.append(a))
    assert fxprune.report.build_report(analysis, plan, gm) == expected
    assert not calls                                       # the verification annotated every node

    monkeypatch.undo()
    unverified = rw.apply_plan(analysis, plan, verify=False)
    assert fxprune.report.build_report(analysis, plan, unverified) == expected


def test_a_resize_the_rewrite_skips_is_still_caught(monkeypatch):
    # a module left at its old width: the verification's real run fails on it
    model, inputs = zoo.resnet_basic()
    analysis = fxprune.analyze(model, inputs)
    plan = fxprune.prune(model, inputs, analysis=analysis).plan
    real = rw._copy_root

    def unsliced_fc(gm, replacements):
        fc = gm.get_submodule("fc")
        return real(gm, {k: v for k, v in replacements.items() if k != id(fc.weight)})

    monkeypatch.setattr(rw, "_copy_root", unsliced_fc)
    with pytest.raises(fxprune.errors.RewriteError):
        rw.apply_plan(analysis, plan)
    rw.apply_plan(analysis, plan, verify=False)            # without the check it goes through
