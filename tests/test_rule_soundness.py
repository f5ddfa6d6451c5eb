"""Registry-wide rule soundness: every rule, node by node, sliced vs zero-masked.

No test here names an op: the zoo, the gallery and generated architectures
exercise the rules.  Coverage per registry key (every key on its own
single-op model, both front ends) is checked in tests/test_rule_coverage.py.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

import fxprune
from fxprune.ops import UNARY
from fxprune.testing import zoo
from fxprune.testing.soundness import RuleSoundnessError, check_rules
from fxprune.testing.strategies import architectures

import _gallery


def _gallery_case(name):
    cls, make_inputs = _gallery.GALLERY[name]
    torch.manual_seed(0)
    return cls().eval(), make_inputs()


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_zoo_rules_are_sound(name):
    model, x = zoo.ZOO[name]()
    report = check_rules(model, x, trials=2)
    assert report.nodes_checked > 0


@pytest.mark.parametrize("name", ["resnet_basic", "llama", "vit", "convnext", "shufflenet_v2"])
def test_export_rules_are_sound(name):
    report = check_rules(*zoo.ZOO[name](), trials=1, frontend="export")
    assert report.nodes_checked > 0


@pytest.mark.parametrize("name", sorted(_gallery.GALLERY))
def test_gallery_rules_are_sound(name):
    model, x = _gallery_case(name)
    report = check_rules(model, x, trials=3)
    assert report.nodes_checked > 0


class Flip(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 6, 1)
        self.b = torch.nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.b(torch.flip(self.a(x), dims=[1]))


def test_a_wrong_rule_is_caught():
    """flip reverses the channels; declaring it shape-preserving-elementwise is unsound."""
    reg = fxprune.default_registry()
    reg.register(torch.flip, rule=UNARY)
    model, x = Flip().eval(), (torch.randn(1, 3, 4, 4),)
    with pytest.raises(RuleSoundnessError, match="flip"):
        check_rules(model, x, registry=reg, trials=4)


@settings(deadline=None)
@given(architectures(max_nodes=24))
def test_generated_architectures_rules_are_sound(arch):
    check_rules(arch.model, arch.example_inputs, trials=1)
