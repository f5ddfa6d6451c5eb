"""Specifications of the rule registry: one registration per rule, loud failures, no inherited rules."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune.errors import RegistrationError
from fxprune.ops import CONV_MODULE, UNARY, Keys, Method, Rule, default_registry, describe_key
from fxprune.ops.builtin import RULES, TABLE, _table
from fxprune.testing import check_pruning


class DoubledConv(nn.Conv2d):
    """A conv subclass with its own forward (the base rule would be wrong for it)."""

    def forward(self, x):
        return super().forward(x) * 2.0


class PlainSubclass(nn.Conv2d):
    """A conv subclass that only changes construction: the base rule still holds."""

    def __init__(self):
        super().__init__(3, 8, 3, padding=1)


def _net(first):
    return nn.Sequential(first, nn.ReLU(), nn.Conv2d(8, 2, 1)).eval(), (torch.randn(2, 3, 6, 6),)


def test_a_subclass_with_its_own_forward_never_inherits_the_base_rule():
    reg = default_registry()
    assert reg.rule_for_key(DoubledConv) is None
    assert reg.rule_for_key(PlainSubclass) is CONV_MODULE
    model, x = _net(DoubledConv(3, 8, 3, padding=1))
    kept_whole = fxprune.analyze(model, x, leaf_modules=[DoubledConv])  # opaque: a barrier
    assert [b.op for b in kept_whole.barriers] == [describe_key(DoubledConv)]
    check_pruning(model, x)                                             # traced through: exact


def test_a_subclass_without_its_own_forward_uses_the_base_rule_as_a_leaf():
    model, x = _net(PlainSubclass())
    analysis = fxprune.analyze(model, x, leaf_modules=[PlainSubclass])
    assert not analysis.barriers and analysis.groups
    check_pruning(model, x, leaf_modules=[PlainSubclass])


def test_a_misspelt_key_fails_when_the_rule_is_built():
    with pytest.raises(RegistrationError, match="erfnv"):
        Keys(torch=("erfnv",))
    with pytest.raises(RegistrationError, match="not_a_method"):
        Keys(methods=("not_a_method",))
    with pytest.raises(RegistrationError, match="not_an_op"):
        Keys(aten=("not_an_op",))
    with pytest.raises(RegistrationError, match="tuple of names"):
        Keys(torch="relu")
    assert len(Keys(torch=("not_in_this_torch?",))) == 0  # optional names may be absent


def test_a_key_claimed_by_two_rules_is_refused():
    twin = Rule("unary", UNARY.propagate, doc="a twin", keys=Keys(torch=("relu",)))
    with pytest.raises(RegistrationError, match="torch.relu"):
        _table(RULES + (twin,))


def test_one_registration_names_every_key_of_a_rule():
    assert {TABLE[k] for k in UNARY.keys} == {UNARY}
    assert torch.relu in UNARY.keys and Method("relu") in UNARY.keys and nn.ReLU in UNARY.keys
    assert torch.ops.aten.relu in UNARY.keys
    reg = default_registry()
    reg.register(UNARY.with_keys(Keys(torch=("erfinv",), methods=("erfinv",))))
    assert reg.rule_for_key(torch.erfinv).propagate is UNARY.propagate
    assert reg.rule_for_key(Method("erfinv")) is reg.rule_for_key(torch.erfinv)
    assert default_registry().rule_for_key(torch.erfinv) is None  # no global state


@pytest.mark.parametrize("key", [torch.relu, torch.ops.aten.relu.default, torch.nn.functional.gelu,
                                 torch.nn.Conv2d, Method("view")], ids=str)
def test_keys_are_described_as_valid_python(key):
    text = describe_key(key)
    obj = eval(text, {"torch": torch, "operator": __import__("operator")})
    expected = key.overloadpacket if hasattr(key, "overloadpacket") else key
    assert obj is expected or (isinstance(key, Method) and obj is getattr(torch.Tensor, key.name))


def test_the_barrier_hint_is_runnable_advice():
    class Opaque(nn.Module):
        def forward(self, x):
            return x.flip(1)

    model = nn.Sequential(nn.Conv2d(3, 4, 1), Opaque(), nn.Conv2d(4, 2, 1))
    barrier = fxprune.analyze(model, (torch.randn(1, 3, 4, 4),), leaf_modules=[Opaque]).barriers[0]
    assert "reg.register(" in barrier.hint and "UNARY" in barrier.hint and "docs/rules.md" in barrier.hint


def test_capture_keys_follow_the_registry_and_equal_the_formula_over_its_items():
    import types

    def formula(reg):
        items = reg.items()
        return (tuple(k for k, r in items if r.leaf and isinstance(k, (type, types.FunctionType))),
                tuple(k for k, _ in items if isinstance(k, types.FunctionType)))

    def helper(x):
        return x

    base = fxprune.ops.default_registry()
    assert (base.leaf_types(), base.function_keys()) == formula(base)
    assert base.leaf_types() is fxprune.ops.default_registry().leaf_types()     # once per built-in table
    leaf_type = base.leaf_types()[0]
    own = fxprune.ops.default_registry()
    own.register(dataclasses.replace(fxprune.ops.UNARY, leaf=True, keys=fxprune.ops.Keys(functions=(helper,))))
    own.register(leaf_type, rule=fxprune.ops.UNARY)                             # a leaf rule overridden
    assert (own.leaf_types(), own.function_keys()) == formula(own)
    assert helper in own.leaf_types() and helper in own.function_keys() and leaf_type not in own.leaf_types()
    assert (base.leaf_types(), base.function_keys()) == formula(fxprune.ops.default_registry())
    mutable = {helper: dataclasses.replace(fxprune.ops.UNARY, leaf=True)}
    reg = fxprune.ops.Registry(types.MappingProxyType(mutable))                 # not a frozen table: read each time
    assert reg.leaf_types() == (helper,)
    mutable.clear()
    assert reg.leaf_types() == ()
