"""Regression tests for the verification holes adversarial probes found (issue 8, part A).

Each test is named after the behaviour it holds fxprune to, and failed on the
main branch before the fix (commit b50a4cb).
"""
from __future__ import annotations


import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxprune
from fxprune import ir
from fxprune.testing import check_pruning


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------------------- 1. in-place ops


class _UnusedInplace(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.a, self.b, self.op = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 2, 1), op

    def forward(self, x):
        y = self.a(x)
        self.op(y)          # result not reassigned: only the side effect matters
        return self.b(y)


@pytest.mark.parametrize("op", [
    lambda y: y.clamp_(min=0), lambda y: y.mul_(2.0), torch.relu_, lambda y: F.relu(y, inplace=True),
    lambda y: F.relu(y, True), lambda y: y.add_(y), lambda y: y.__imul__(3.0),
], ids=["clamp_", "mul_", "torch.relu_", "F.relu(inplace=True)", "F.relu(y, True)", "add_", "__imul__"])
def test_unused_inplace_ops_survive_the_rewrite(op):
    model, x = _UnusedInplace(op).eval(), torch.randn(2, 3, 5, 5)
    analysis = fxprune.analyze(model, (x,))
    assert torch.equal(fxprune.apply(analysis, {})(x), model(x))
    check_pruning(model, (x,))


def test_inplace_module_with_unused_output_survives_the_rewrite():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.act, self.b = nn.Conv2d(3, 6, 1), nn.ReLU(inplace=True), nn.Conv2d(6, 2, 1)

        def forward(self, x):
            y = self.a(x) - 0.5
            self.act(y)
            return self.b(y)

    model, x = M().eval(), torch.randn(2, 3, 5, 5)
    assert torch.equal(fxprune.apply(fxprune.analyze(model, (x,)), {})(x), model(x))


def test_inplace_write_makes_later_reads_see_its_channels():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(4, 6)

        def forward(self, x):
            y = self.a(x)
            y.add_(1.0)                 # y's removed channels are 1 from here on
            return y.sum(-1) + self.b(x).sum(-1) * 0

    model, x = M().eval(), torch.randn(3, 4)
    analysis = fxprune.analyze(model, (x,))
    assert analysis.group_of("a.weight", 0)[0].mixing
    check_pruning(model, (x,))


# --------------------------------------------------------------------------- 2. weight standardisation


class ScaledStdConv2d(nn.Conv2d):
    """NF-ResNet's weight-standardised conv (its own forward)."""

    def __init__(self, *args, eps=1e-6, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.rand(self.out_channels, 1, 1, 1) + 0.5)
        self.scale, self.eps = self.weight[0].numel() ** -0.5, eps

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         weight=(self.gain * self.scale).view(-1), training=True, momentum=0.,
                         eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class StdConv2d(nn.Conv2d):
    """Weight standardisation written with mean/var reductions."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.var(dim=(1, 2, 3), keepdim=True) + 1e-5).sqrt()
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


@pytest.mark.parametrize("conv", [ScaledStdConv2d, StdConv2d])
@pytest.mark.parametrize("kernel", [1, 3])
def test_weight_standardisation_makes_its_input_channels_mixing(conv, kernel):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), conv(8, 4, kernel, padding=kernel // 2),
                          nn.ReLU(), nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(2, 3, 6, 6)
    analysis = fxprune.analyze(model, (x,))
    groups = analysis.group_of("2.weight", 1)
    assert not groups or groups[0].mixing
    check_pruning(model, (x,))


def test_training_mode_batch_norm_statistics_over_a_channel_dim_are_mixing():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.out = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):               # [B, T, C] normalised per token: C is a statistics dim
            return self.out(F.batch_norm(self.fc(x), None, None, training=True))

    analysis = fxprune.analyze(M(), (torch.randn(2, 3, 4),))
    assert analysis.group_of("fc.weight", 0)[0].mixing


# --------------------------------------------------------------------------- 3. dead channels that are not zero


_NOT_ZERO = {"sigmoid": torch.sigmoid, "plus_one": lambda t: t + 1, "exp": torch.exp, "cos": torch.cos,
             "less_than": lambda t: (t < 1).float(), "softplus": F.softplus,
             "clamp_min": lambda t: t.clamp(min=0.5), "pad_value": lambda t: F.pad(t.transpose(1, 2), (1, 1), value=1.0).transpose(1, 2)}
_ZERO = {"relu": torch.relu, "gelu": F.gelu, "tanh": torch.tanh, "times_two": lambda t: t * 2,
         "greater_than_0_times": lambda t: (t > 0).float() * t, "clamp_0": lambda t: t.clamp(min=0)}


class _SumAfter(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.a, self.b, self.f = nn.Linear(4, 8), nn.Linear(4, 8), f

    def forward(self, x):
        h = self.f(self.a(x))
        return h.sum(-1, keepdim=True) + (self.f(self.b(x)) @ h.transpose(-1, -2)).sum(-1, keepdim=True)


@pytest.mark.parametrize("name", sorted(_NOT_ZERO))
def test_a_sum_over_channels_that_are_not_zero_once_removed_is_mixing(name):
    model, x = _SumAfter(_NOT_ZERO[name]).eval(), torch.randn(2, 3, 4)
    analysis = fxprune.analyze(model, (x,))
    assert analysis.group_of("a.weight", 0)[0].mixing
    check_pruning(model, (x,))


@pytest.mark.parametrize("name", sorted(_ZERO))
def test_a_sum_over_channels_that_stay_zero_is_exact(name):
    model, x = _SumAfter(_ZERO[name]).eval(), torch.randn(2, 3, 4)
    analysis = fxprune.analyze(model, (x,))
    assert not analysis.group_of("a.weight", 0)[0].mixing
    check_pruning(model, (x,))


def test_zeros_are_recorded_per_dimension():
    model, x = _SumAfter(torch.sigmoid).eval(), torch.randn(2, 3, 4)
    gm = fxprune.analyze(model, (x,)).graph_module
    zeros = {n.name: n.meta.get(ir.ZEROS) for n in gm.graph.nodes}
    assert zeros["a"] == (False, False, True) and zeros["sigmoid"] == (False, False, False)


class _SharedProbes(nn.Module):
    """Probes that look alike and are not: constants of other values or types, modules with other settings."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.keep, self.fill = nn.Threshold(0.5, 0.0), nn.Threshold(0.5, 2.0)   # at 0: 0.0 and 2.0
        self.keep2, self.prelu = nn.Threshold(0.5, 0.0), nn.PReLU()

    def forward(self, x):
        h = self.fc(x)
        parts = [h + 0, h + 1, h * 0.0, h - 0.0, h - 1.5, self.keep(h), self.fill(h), self.keep2(h), self.prelu(h),
                 torch.relu(h), torch.relu(h + 1), torch.where(h > 0, h, 0.0), torch.where(h > 0, h, 1.0)]
        return torch.stack([p.sum(-1) for p in parts], -1)


def test_remembered_probe_results_equal_probing_every_op():
    from fxprune.analysis import zeros as zeros_pass

    model, x = _SharedProbes().eval(), torch.randn(3, 4)
    reg = fxprune.ops.default_registry()
    reg.register(fxprune.ops.UNARY.with_keys(fxprune.ops.Keys(modules=(nn.Threshold,))))

    def flags():
        gm = fxprune.analyze(model, (x,), registry=reg).graph_module
        return {n.name: n.meta.get(ir.ZEROS) for n in gm.graph.nodes}

    remembered = flags()
    keyed = zeros_pass._probe_key
    zeros_pass._probe_key = lambda *a, **k: None     # no key: every evaluation runs
    try:
        fresh = flags()
    finally:
        zeros_pass._probe_key = keyed
    assert remembered == fresh
    kept = {name for name, z in remembered.items() if z == (False, True)}
    assert {"add", "mul", "sub", "keep", "keep2", "prelu", "relu"} <= kept
    assert not kept & {"add_1", "sub_1", "fill", "relu_1"}


def test_probing_random_ops_leaves_the_random_state_alone():
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.ReLU(), nn.Dropout(0.3)).train()
    torch.manual_seed(3)
    x = torch.randn(3, 4)
    before = torch.get_rng_state()
    zeros = {n.name: n.meta.get(ir.ZEROS) for n in fxprune.analyze(model, (x,)).graph_module.graph.nodes}
    assert torch.equal(torch.get_rng_state(), before)
    assert zeros["_1"] == zeros["_2"] == zeros["_3"] == (False, True)


def test_probe_keys_tell_apart_what_the_evaluation_reads():
    from fxprune.analysis.zeros import _key_of, _module_key

    assert len({_key_of(c, set()) for c in (1, 1.0, True, -0.0, 0.0, "1", None)}) == 7
    assert _key_of((1, [2.5]), set()) == _key_of((1, [2.5]), set()) != _key_of((1, (2.5,)), set())
    assert _module_key(nn.ReLU()) == _module_key(nn.ReLU()) != _module_key(nn.ReLU(inplace=True))
    assert _module_key(nn.Threshold(0.5, 0.0)) != _module_key(nn.Threshold(0.5, 2.0))
    prelu = nn.PReLU()                                    # a parameter: the module itself
    assert _module_key(prelu) == ("module", id(prelu)) != _module_key(nn.PReLU())
    hooked = nn.ReLU()
    hooked.register_forward_hook(lambda *a: None)
    assert _module_key(hooked) == ("module", id(hooked))


def test_a_scale_parameter_reduced_on_its_own_is_not_zero_once_removed():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.gamma = nn.Linear(4, 6), nn.Parameter(torch.rand(6) + 0.5)

        def forward(self, x):
            h = self.fc(x) * self.gamma          # gamma is a scale: the mask keeps it
            return h.sum(-1) + self.gamma.sum()

    model, x = M().eval(), torch.randn(3, 4)
    assert fxprune.analyze(model, (x,)).groups[0].mixing
    check_pruning(model, (x,))


# --------------------------------------------------------------------------- 4. tied weights


class _GPT(nn.Module):
    def __init__(self, vocab=50, dim=16):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.h = nn.Linear(dim, dim)
        self.ln = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, tokens):
        return self.lm_head(self.ln(torch.relu(self.h(self.wte(tokens)))))


def test_tied_weights_survive_every_plan_and_the_empty_plan_keeps_the_parameter_count():
    model, t = _GPT().eval(), torch.randint(0, 50, (2, 5))
    analysis = fxprune.analyze(model, (t,))
    empty = fxprune.apply(analysis, {})
    assert _params(empty) == _params(model)
    assert empty.lm_head.weight is empty.wte.weight
    for plan in ({}, {g.id: list(g.prunable[:3]) for g in analysis.groups}):
        pruned = fxprune.apply(analysis, plan)
        assert pruned.lm_head.weight is pruned.wte.weight
    check_pruning(model, (t,))


# --------------------------------------------------------------------------- 5. custom autograd Functions


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _STEModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(_RoundSTE.apply(self.a(x)))


def test_custom_autograd_functions_keep_their_backward():
    model, x = _STEModel(), torch.randn(3, 4)
    analysis = fxprune.analyze(model, (x,))
    assert [b.op for b in analysis.barriers] == [f"{__name__}._RoundSTE.apply"]
    gm = fxprune.apply(analysis, {})
    gm(x).sum().backward()
    assert gm.a.weight.grad.abs().sum() > 0
    check_pruning(model, (x,))


def test_a_custom_autograd_function_with_a_registered_rule_is_pruned_through():
    reg = fxprune.default_registry()
    reg.register(_RoundSTE.apply, rule=fxprune.ops.UNARY)
    model, x = _STEModel(), torch.randn(3, 4)
    result = fxprune.prune(model, (x,), ratio=0.5, registry=reg)
    assert result.graph_module.a.out_features == 4 and not result.analysis.barriers
    result.graph_module(x).sum().backward()
    assert result.graph_module.a.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- 6. train/eval


def drop_path(x, p: float, training: bool):
    """Stochastic depth as timm writes it (a branch on the flag)."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class DropPath(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        return drop_path(x, self.p, self.training)


class _ModeModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.register_buffer("rm", torch.zeros(8))
        self.register_buffer("rv", torch.ones(8))
        self.drop = DropPath(0.5)

    def forward(self, x):
        h = F.dropout(self.a(x), 0.5, training=self.training)
        h = F.batch_norm(h, self.rm, self.rv, training=self.training, momentum=0.5)
        h = h + drop_path(self.b(h), 0.5, self.training)
        return self.c(self.drop(h))


def _stochastic_depth_registry():
    reg = fxprune.default_registry()
    reg.register(fxprune.ops.STOCHASTIC_DEPTH.with_keys(fxprune.ops.Keys(functions=(drop_path,),
                                                                          modules=(DropPath,))))
    return reg


def _run(module, x, training, seed=0):
    module = copy.deepcopy(module).train(training)
    torch.manual_seed(seed)
    return module(x)


def test_the_emitted_module_follows_its_own_train_and_eval():
    model, x = _ModeModel().eval(), torch.randn(6, 4)
    reg = _stochastic_depth_registry()
    analysis = fxprune.analyze(model, (x,), registry=reg)
    assert not analysis.graph_module.meta[ir.MODE_BRANCHES]
    gm = fxprune.apply(analysis, {})
    for training in (True, False):
        assert torch.equal(_run(gm, x, training), _run(model, x, training))
    assert not torch.equal(_run(gm, x, True), _run(gm, x, False))
    check_pruning(model, (x,), registry=reg)


def test_a_python_branch_on_self_training_is_reported():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            if self.training:
                x = x * 2
            return self.fc(x)

    with pytest.warns(fxprune.errors.TrainEvalWarning, match="if self.training"):
        analysis = fxprune.analyze(M().eval(), (torch.randn(2, 4),))
    assert "if self.training" in analysis.graph_module.meta[ir.MODE_BRANCHES][0]


def test_dropout_and_batch_norm_follow_the_mode_through_export():
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6), nn.Dropout(0.5), nn.Conv2d(6, 2, 1)).eval()
    x = torch.randn(2, 3, 4, 4)
    gm = fxprune.apply(fxprune.analyze(model, (x,), frontend="export"), {})
    for training in (True, False):
        assert torch.equal(_run(gm, x, training), _run(model, x, training))


def test_a_python_branch_on_self_training_is_reported_through_export():
    """torch.export leaves no trace of ``p if self.training else 0.0`` (Hugging Face attention): captured twice."""
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.out = nn.Linear(8, 24), nn.Linear(8, 8)

        def forward(self, x):
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            a = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5 if self.training else 0.0)
            return self.out(a)

    x = torch.randn(1, 5, 8)
    with pytest.warns(fxprune.errors.TrainEvalWarning, match="scaled_dot_product_attention.*in train mode"):
        analysis = fxprune.analyze(Attention().eval(), (x,), frontend="export")
    assert "a Python branch on self.training" in analysis.graph_module.meta[ir.MODE_BRANCHES][0]
    check_pruning(Attention().eval(), (x,), plans=1, frontend="export")  # the other mode is not compared
    # torch.nn modules' own train-mode code (BatchNorm counting batches) is followed, not reported
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6), nn.Dropout(0.5), nn.Conv2d(6, 2, 1)).eval()
    assert not fxprune.analyze(model, (torch.randn(2, 3, 4, 4),), frontend="export").graph_module.meta[
        ir.MODE_BRANCHES]


# --------------------------------------------------------------------------- 7. scores


def test_nan_or_infinite_scores_raise_naming_the_group():
    model, x = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), torch.randn(3, 4)

    def broken(analysis, ctx):
        return {g.id: np.r_[np.full(g.size - 1, 1.0), np.nan] for g in analysis.groups}

    for global_ranking in (False, True):
        with pytest.raises(fxprune.errors.ScoreError, match="group 0"):
            fxprune.prune(model, (x,), scorer=broken, global_ranking=global_ranking)


# --------------------------------------------------------------------------- 8. an analysis of another model


def test_prune_refuses_an_analysis_of_another_model():
    a = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    b = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(3, 4)
    with pytest.raises(fxprune.ConfigError, match="does not describe this model"):
        fxprune.prune(b, (x,), analysis=fxprune.analyze(a, (x,)))
    fxprune.prune(a, (x,), analysis=fxprune.analyze(a, (x,)))
    fxprune.prune(copy.deepcopy(a), (x,), analysis=fxprune.analyze(a, (x,)))  # equal weights: the same result


# --------------------------------------------------------------------------- 9, 10. the model is never touched


class _Stateful(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)
        self.register_buffer("step", torch.zeros(()))
        self.register_buffer("ema", torch.ones(8))
        self.cache = {}

    def forward(self, x):
        self.step.add_(1)
        h = self.a(x)
        self.ema.mul_(0.9).add_(0.1 * h.mean(0).detach())
        if "bias" not in self.cache:        # LeViT-style: computed from the input on first call
            self.cache["bias"] = x.new_zeros(2) + 0.5
        return self.b(h) + self.cache["bias"]


def test_analysis_never_updates_the_models_buffers():
    model, x = _Stateful(), torch.randn(3, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    analysis = fxprune.analyze(model, (x,))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    gm = fxprune.apply(analysis, {g.id: [0] for g in analysis.groups})
    gm(x)
    gm(x)
    assert gm.step.item() == 2 and model.step.item() == 0      # the emitted module keeps its own state


def test_capture_leaves_python_side_state_as_it_was():
    model, x = _Stateful(), torch.randn(3, 4)
    fxprune.analyze(model, (x,))
    assert model.cache == {}
    fxprune.analyze(model, (x,))                                # no proxy left behind to fail on
    model(x)
    analysis = fxprune.analyze(model, (x,))                     # a filled cache is a constant
    assert torch.equal(fxprune.apply(analysis, {})(x), _Stateful.forward(copy.deepcopy(model), x))


class _StatefulSizeBranch(_Stateful):
    """:class:`_Stateful` with a branch on a size: plain torch.fx cannot trace it, so it is traced from
    its example values, computed with CPU kernels on copies."""

    def forward(self, x):
        if x.shape[0] > 1:
            x = x * 1.0
        return super().forward(x)


def test_a_trace_from_example_values_on_cpu_kernels_never_updates_the_model():
    from fxprune.analysis.tracer import value_paths
    from fxprune.analysis.values import ValuesOn

    model, x = _StatefulSizeBranch(), torch.randn(3, 4)
    assert value_paths(model, (x,))[0] is ValuesOn.REAL
    before = {k: v.clone() for k, v in model.state_dict().items()}
    analysis = fxprune.analyze(model, (x,))
    assert "traced from the example values" in analysis.graph_module.meta[ir.CAPTURE_NOTES][0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # step, ema: not written
    assert model.cache == {}
    gm = fxprune.apply(analysis, {})
    assert torch.equal(gm(x), _Stateful.forward(copy.deepcopy(model), x))


# --------------------------------------------------------------------------- 11, 12. check_pruning itself


def test_check_pruning_never_updates_a_train_mode_model():
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 2, 1)).train()
    before = copy.deepcopy(model.state_dict())
    check_pruning(model, (torch.randn(2, 3, 6, 6),))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_check_pruning_compares_in_float64_where_float32_noise_is_large():
    torch.manual_seed(0)
    layers = []
    for i in range(6):
        conv = nn.Conv2d(3 if i == 0 else 32, 32, 3, padding=1)
        nn.init.normal_(conv.weight, std=2.0)
        layers += [conv, nn.ReLU()]
    model = nn.Sequential(*layers, nn.Conv2d(32, 4, 1)).eval()
    x = (torch.randn(2, 3, 8, 8) * 100,)
    assert model(*x).abs().max() > 1e9
    check_pruning(model, x, plans=2)
    with pytest.raises(fxprune.testing.InvariantError, match="dead channels"):
        check_pruning(model, x, plans=2, dtype=None)


# --------------------------------------------------------------------------- 16. threads


def test_concurrent_pruning_and_unrelated_inference_work():
    import threading

    errors: list[str] = []
    stop = threading.Event()

    def prune_one():
        try:
            m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(),
                              nn.Linear(4 * 4 * 4, 2)).eval()
            fxprune.prune(m, (torch.randn(1, 3, 8, 8),), ratio=0.5)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"prune: {exc!r}")

    def infer():
        m, x = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval(), torch.randn(2, 4)
        while not stop.is_set():
            try:
                with torch.no_grad():
                    assert isinstance(m(x), torch.Tensor)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"inference: {exc!r}")
                return

    other = threading.Thread(target=infer)
    other.start()
    workers = [threading.Thread(target=prune_one) for _ in range(8)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    other.join()
    assert not errors, errors[:3]


_TRACING, _RESUME = None, None


class _Pausing(nn.Module):
    """Waits, while it is being traced, until another thread has run its own model."""

    def forward(self, x):
        _TRACING.set()
        _RESUME.wait(10)
        return x


def test_inference_in_another_thread_runs_while_a_model_is_captured():
    import threading

    global _TRACING, _RESUME
    _TRACING, _RESUME = threading.Event(), threading.Event()
    model = nn.Sequential(nn.Linear(4, 8), _Pausing(), nn.ReLU(), nn.Linear(8, 2))
    done: list = []
    worker = threading.Thread(target=lambda: done.append(fxprune.analyze(model, (torch.randn(2, 4),))))
    worker.start()
    try:
        assert _TRACING.wait(10)
        other, x = nn.Sequential(nn.Linear(4, 4), nn.ReLU()), torch.randn(2, 4)
        with torch.no_grad():
            out = other(x)                       # while the worker's trace patches nn.Module.__call__
        assert isinstance(out, torch.Tensor) and torch.equal(out, torch.relu(other[0](x)))
    finally:
        _RESUME.set()
        worker.join()
    assert done and len(done[0].groups) == 1


# --------------------------------------------------------------------------- clear errors


@pytest.mark.parametrize("inputs, match", [({"x": torch.randn(2, 4)}, "dict"), (None, "NoneType"),
                                           ("abc", "got str")], ids=["dict", "None", "str"])
def test_example_inputs_that_are_not_a_tuple_raise_a_clear_error(inputs, match):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(fxprune.errors.ExampleInputError, match=match):
        fxprune.analyze(model, inputs)


def test_meta_example_inputs_work_with_a_cpu_model():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    result = fxprune.prune(model, (torch.empty(2, 4, device="meta"),), ratio=0.5)
    assert result.graph_module(torch.randn(2, 4)).shape == (2, 2)


@pytest.mark.parametrize("parametrize", ["weight_norm", "spectral_norm"])
def test_parametrized_layers_are_a_named_barrier(parametrize):
    from torch.nn.utils import parametrizations

    model = nn.Sequential(getattr(parametrizations, parametrize)(nn.Linear(4, 8)), nn.ReLU(),
                          nn.Linear(8, 2)).eval()
    x = torch.randn(3, 4)
    analysis = fxprune.analyze(model, (x,))
    assert any("parametrizations" in b.op for b in analysis.barriers)
    check_pruning(model, (x,))


def test_old_style_weight_norm_is_refused_clearly():
    with pytest.warns(FutureWarning):
        layer = torch.nn.utils.weight_norm(nn.Linear(4, 8))
    model, x = nn.Sequential(layer, nn.ReLU(), nn.Linear(8, 2)).eval(), torch.randn(3, 4)
    analysis = fxprune.analyze(model, (x,))
    assert "pre-hooks" in analysis.barriers[0].reason
    with pytest.raises(fxprune.errors.RewriteError, match="parametrizations"):
        fxprune.apply(analysis, {})


def test_shape_propagation_leaves_no_attribute_on_a_model_it_could_not_copy():
    # Regression: old-style weight_norm's pre-hook assigns module.weight; the model cannot be
    # deep-copied (non-leaf weight), so the capture shares its modules, and shape propagation
    # left a fake (later: meta) tensor as the user's layer.weight.
    with pytest.warns(FutureWarning):
        layer = torch.nn.utils.weight_norm(nn.Linear(4, 8))
    model, x = nn.Sequential(layer, nn.ReLU(), nn.Linear(8, 2)).eval(), torch.randn(3, 4)
    before = model(x)
    weight = layer.weight
    fxprune.analyze(model, (x,))
    assert layer.weight is weight
    torch.testing.assert_close(model(x), before)


def test_check_rules_holds_a_keep_declaration_to_zeros():
    import dataclasses

    from fxprune.ir import Zeros
    from fxprune.testing.single_op import OpSample, single_op_model
    from fxprune.testing.soundness import RuleSoundnessError, check_rules

    reg = fxprune.default_registry()
    reg.register(torch.sigmoid, rule=dataclasses.replace(fxprune.ops.UNARY, zeros=Zeros.KEEP))
    model, x = single_op_model(torch.sigmoid, OpSample())
    with pytest.raises(RuleSoundnessError, match="declares zeros=KEEP"):
        check_rules(model, x, registry=reg)
    check_rules(model, x)                         # the built-in PROBE declaration holds


def test_a_bias_broadcast_along_a_channel_dim_fills_its_removed_channels():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(5, 3)

        def forward(self, x):                       # x [B, 5, 4]
            y = self.b(self.a(x).transpose(1, 2))   # [B, 6, 3]: a's channels are b's rows, plus b's bias
            return y.sum(1)                         # a parameter-free sum over a's channels

    model, x = M().eval(), torch.randn(2, 5, 4)
    assert fxprune.analyze(model, (x,)).group_of("a.weight", 0)[0].mixing
    check_pruning(model, (x,))
