"""Tests for the hypothesis model generators in :mod:`fxprune.testing.strategies`."""

from __future__ import annotations

import operator
from typing import Callable, Iterator

import pytest
import torch
import torch.fx as fx
import torch.nn.functional as F
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from torch import nn

from fxprune.testing.strategies import (
    FAMILIES,
    MAX_CHANNELS,
    MAX_SPATIAL,
    Arch,
    ArchSpec,
    arch_specs,
    architectures,
)

SETTINGS = settings(deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    # The generated models are tiny; intra-op threading only adds overhead.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _call_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes
            if n.op in ("call_module", "call_function", "call_method")]


# --------------------------------------------------------------------------
# (a) every drawn model runs, is finite, traces, and the trace agrees
# --------------------------------------------------------------------------


@settings(SETTINGS, max_examples=60)
@given(architectures())
def test_models_run_and_trace(arch: Arch) -> None:
    model, inputs = arch.model, arch.example_inputs
    assert not model.training
    assert all(x.shape[0] == 2 for x in inputs)
    for shape in arch.spec.shapes():
        assert 1 <= shape.channels <= MAX_CHANNELS
        assert all(1 <= s <= MAX_SPATIAL for s in shape.spatial)
    for m in model.modules():  # BatchNorm must not be the identity in eval mode
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert not torch.allclose(m.running_var, torch.ones_like(m.running_var))
            assert not torch.allclose(m.running_mean, torch.zeros_like(m.running_mean))

    with torch.no_grad():
        out = model(*inputs)
        assert isinstance(out, torch.Tensor)
        assert out.shape == arch.spec.output_shape.dims()
        assert torch.isfinite(out).all()

        gm = fx.symbolic_trace(model)
        assert torch.equal(gm(*inputs), out)


# --------------------------------------------------------------------------
# (b) the printed source rebuilds the same model
# --------------------------------------------------------------------------


def _exec_source(source: str) -> dict[str, object]:
    namespace: dict[str, object] = {"__name__": "pasted_repro"}
    with torch.random.fork_rng(devices=[]):
        exec(compile(source, "<pasted>", "exec"), namespace)
    return namespace


@settings(SETTINGS, max_examples=40)
@given(architectures())
def test_source_rebuilds_model(arch: Arch) -> None:
    assert repr(arch) == arch.source == arch.spec.to_source()
    namespace = _exec_source(arch.source)
    rebuilt = namespace["model"]
    assert isinstance(rebuilt, nn.Module)
    assert type(rebuilt).__name__ == "Model"
    assert not rebuilt.training

    def signature(m: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
        return [(name, tuple(t.shape)) for name, t in m.state_dict().items()]

    assert signature(rebuilt) == signature(arch.model)
    # Same seed, same construction order: the weights are identical too.
    for (name, a), (_, b) in zip(rebuilt.state_dict().items(), arch.model.state_dict().items()):
        assert torch.equal(a, b), name

    inputs = namespace["example_inputs"]
    assert isinstance(inputs, tuple)
    assert all(torch.equal(a, b) for a, b in zip(inputs, arch.example_inputs))
    with torch.no_grad():
        assert torch.equal(rebuilt(*arch.example_inputs), arch.model(*arch.example_inputs))


def test_build_is_deterministic_and_leaves_global_rng_alone() -> None:
    spec = find(arch_specs(families=frozenset({"conv", "norm", "attention", "linear"})),
                lambda s: len(s.blocks) >= 3,
                settings=settings(database=None, derandomize=True, phases=[Phase.generate]))
    state = torch.random.get_rng_state()
    a, b = spec.build(), spec.build()
    assert torch.equal(state, torch.random.get_rng_state())
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    other = ArchSpec(spec.input, spec.blocks, seed=spec.seed + 1).build()
    params = [n for n, _ in a.named_parameters()]
    if params:
        assert any(not torch.equal(x, y) for x, y in
                   zip(a.parameters(), other.parameters()))


# --------------------------------------------------------------------------
# (c) each family, on its own, produces its characteristic ops
# --------------------------------------------------------------------------

_ACT_MODULES = (nn.ReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Tanh)
_ACT_FUNCTIONS = {F.relu, F.gelu, F.silu, F.hardswish, torch.sigmoid, torch.tanh}
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
          nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)


class _Graph:
    def __init__(self, gm: fx.GraphModule) -> None:
        self.modules = dict(gm.named_modules())
        self.nodes = _call_nodes(gm)

    def module_type(self, node: object) -> type | None:
        if isinstance(node, fx.Node) and node.op == "call_module":
            return type(self.modules[node.target])
        return None

    def is_module(self, node: object, types: type | tuple[type, ...]) -> bool:
        t = self.module_type(node)
        return t is not None and issubclass(t, types)

    def is_call(self, node: object, *targets: object) -> bool:
        return (isinstance(node, fx.Node) and node.op in ("call_function", "call_method")
                and node.target in targets)

    def any(self, pred: Callable[[fx.Node], bool]) -> bool:
        return any(pred(n) for n in self.nodes)


def _is_flatten(g: _Graph, n: object) -> bool:
    return (g.is_call(n, torch.flatten, "flatten", "view", "reshape")
            or g.is_module(n, nn.Flatten))


_CHARACTERISTIC: dict[str, Callable[[_Graph], bool]] = {
    "conv": lambda g: g.any(lambda n: g.is_module(n, (nn.Conv1d, nn.Conv2d))),
    "linear": lambda g: g.any(lambda n: g.is_module(n, nn.Linear)),
    "norm": lambda g: g.any(lambda n: g.is_module(n, _NORMS)),
    "activation": lambda g: g.any(lambda n: g.is_module(n, _ACT_MODULES)
                                  or g.is_call(n, *_ACT_FUNCTIONS)),
    "residual": lambda g: g.any(lambda n: g.is_call(n, operator.add, torch.add)
                                and all(isinstance(a, fx.Node) for a in n.args[:2])),
    "concat": lambda g: g.any(lambda n: g.is_call(n, torch.cat)),
    "split": lambda g: g.any(lambda n: g.is_call(n, torch.split, torch.chunk,
                                                 "split", "chunk")),
    "flatten_linear": lambda g: g.any(lambda n: g.is_module(n, nn.Linear)
                                      and _is_flatten(g, n.args[0])),
    "shuffle": lambda g: g.any(lambda n: g.is_call(n, "transpose")
                               and n.args[1:] == (1, 2)
                               and g.is_call(n.args[0], "view")
                               and len(n.args[0].args) in (5, 6)),
    "channels_last_ln": lambda g: g.any(lambda n: g.is_module(n, nn.LayerNorm)
                                        and g.is_call(n.args[0], "permute", "transpose")),
    "se": lambda g: g.any(lambda n: g.is_call(n, operator.mul) and any(
        g.is_call(a, torch.sigmoid, F.hardsigmoid) for a in n.args)),
    "attention": lambda g: g.any(lambda n: g.is_call(n, "softmax")
                                 and g.is_call(n.args[0], operator.mul)
                                 and g.is_call(n.args[0].args[0], operator.matmul)),
    "sequence": lambda g: g.any(lambda n: g.is_module(n, (nn.Conv1d, nn.Linear))),
    "pool": lambda g: g.any(lambda n: g.is_module(n, _POOLS) or g.is_call(
        n, F.max_pool1d, F.max_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
        "mean", operator.getitem)),
    "upsample": lambda g: g.any(lambda n: (g.is_call(n, F.interpolate)
                                           or g.is_module(n, nn.Upsample))
                                and g.any(lambda m: n in m.args
                                          and g.is_module(m, (nn.Conv1d, nn.Conv2d)))),
}


def _tied(g: _Graph) -> bool:
    seen: dict[int, int] = {}
    for m in g.modules.values():
        for p in m.parameters(recurse=False):
            seen[id(p)] = seen.get(id(p), 0) + 1
    return any(n > 1 for n in seen.values())


def _method_name(n: object) -> str:
    return str(n.target) if isinstance(n, fx.Node) and n.op == "call_method" else \
        getattr(getattr(n, "target", None), "__name__", "")


_CHARACTERISTIC.update({
    "inplace": lambda g: g.any(lambda n: _method_name(n).endswith("_") or n.kwargs.get("inplace") is True),
    "tied": _tied,
    "stateful": lambda g: g.any(lambda n: g.is_call(n, operator.mul)
                                and any(isinstance(a, fx.Node) and a.op == "get_attr" for a in n.args)),
    "own_forward": lambda g: g.any(lambda n: n.op == "call_function"
                                   and _method_name(n) in ("linear", "conv1d", "conv2d")),
    "weight_std": lambda g: g.any(lambda n: g.is_call(n, F.batch_norm) and g.is_call(n.args[0], "reshape")),
    "autograd_fn": lambda g: g.any(lambda n: g.is_call(n, "clamp") and n.args[1:] == (-2.0, 2.0)),
    "train_dropout": lambda g: g.any(lambda n: g.is_call(n, F.dropout, F.dropout2d)
                                     or g.is_module(n, nn.Dropout)),
    "channel_sum": lambda g: g.any(lambda n: g.is_call(n, "sum") and n.kwargs.get("keepdim") is True),
})


def test_characteristic_table_is_complete() -> None:
    assert set(_CHARACTERISTIC) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_alone_shows_its_ops(family: str) -> None:
    seen_inputs: set[str] = set()

    @settings(SETTINGS, max_examples=10)
    @given(architectures(families=frozenset({family})))
    def check(arch: Arch) -> None:
        assert family in arch.spec.families()
        graph = _Graph(fx.symbolic_trace(arch.model))
        assert _CHARACTERISTIC[family](graph), arch.source
        with torch.no_grad():
            assert torch.isfinite(arch.model(*arch.example_inputs)).all()
        seen_inputs.add(arch.spec.input.kind)

    check()
    assert seen_inputs


@pytest.mark.parametrize("family", FAMILIES)
def test_default_strategy_reaches_every_family(family: str) -> None:
    spec = find(arch_specs(), lambda s: family in s.families(),
                settings=settings(database=None, derandomize=True, max_examples=3000,
                                  phases=[Phase.generate]))
    assert family in spec.families()


# --------------------------------------------------------------------------
# (d) max_nodes bounds the traced graph
# --------------------------------------------------------------------------


@settings(SETTINGS, max_examples=60)
@given(st.data())
def test_max_nodes_bounds_graph_size(data: st.DataObject) -> None:
    max_nodes = data.draw(st.integers(1, 60), label="max_nodes")
    arch = data.draw(architectures(max_nodes=max_nodes), label="arch")
    traced = len(_call_nodes(fx.symbolic_trace(arch.model)))
    assert traced <= 4 * max_nodes
    assert arch.spec.num_ops <= max_nodes
    # num_ops is documented as the exact traced op count
    assert traced == arch.spec.num_ops


# --------------------------------------------------------------------------
# argument validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {"families": frozenset({"conv", "transformer"})},
    {"families": frozenset()},
    {"max_nodes": 0},
    {"max_nodes": 10, "families": frozenset({"attention"})},
])
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        architectures(**kwargs)
