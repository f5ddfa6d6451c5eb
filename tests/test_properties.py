"""Property-based specifications: the four invariants on generated architectures."""
from __future__ import annotations

from hypothesis import given, settings

from fxprune.testing import check_pruning
from fxprune.testing.strategies import HAZARD_FAMILIES, architectures


@given(architectures(max_nodes=32))
def test_invariants_hold_on_generated_architectures(arch):
    check_pruning(arch.model, arch.example_inputs, plans=2, seed=0)


@given(architectures(max_nodes=16, families=frozenset({"attention", "shuffle", "split", "concat",
                                                       "channels_last_ln", "se", "flatten_linear"})))
def test_invariants_hold_on_coupling_heavy_architectures(arch):
    check_pruning(arch.model, arch.example_inputs, plans=2, seed=1, split_policy="inner")


@given(architectures(max_nodes=16, families=frozenset({"attention", "shuffle", "conv"})))
def test_invariants_hold_with_outer_split_policy(arch):
    check_pruning(arch.model, arch.example_inputs, plans=2, seed=2, split_policy="outer")


@settings(max_examples=max(5, settings().max_examples // 4))
@given(architectures(max_nodes=40, families=frozenset({"attention", "shuffle", "conv", "linear"})))
def test_invariants_hold_with_the_default_split_policy_on_attention_and_shuffles(arch):
    """``auto`` resolves each head split and shuffle on its own (whole heads, channels per group); at 40
    nodes attention (19 ops) is drawn often, the shuffles of small budgets are in the first property."""
    check_pruning(arch.model, arch.example_inputs, plans=2, seed=5)


@settings(max_examples=max(5, settings().max_examples // 5))
@given(architectures(max_nodes=24))
def test_invariants_hold_through_the_export_front_end(arch):
    check_pruning(arch.model, arch.example_inputs, plans=1, seed=3, frontend="export")


@given(architectures(max_nodes=24, families=HAZARD_FAMILIES | {"conv", "linear", "activation", "residual"}))
def test_invariants_hold_on_generated_hazard_architectures(arch):
    """The families that once hid verification holes (HAZARD_FAMILIES), with a few plain layers."""
    check_pruning(arch.model, arch.example_inputs, plans=2, seed=4)
