"""``frontend="fx"`` tracing from example values (issue 14): models plain symbolic tracing cannot trace.

Where ``torch.fx`` fails, the model is traced again with proxies that carry their
values (fake tensors): decorated ``forward`` with ``**kwargs``, branches on sizes
and dtypes, buffers sliced by traced sizes.  Whatever the trace froze is checked
when the emitted module runs: another input where the frozen branch would go
the other way raises :class:`fxprune.errors.GuardError`, never a silently wrong
result; sizes that only feed tensor ops stay graph values (other batch sizes
and sequence lengths work).  Then the Hugging Face suite: which front end
``auto`` picks, ``materialize``, and the input model left as it was.
"""
from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune import GuardError, TraceError, ir
from fxprune.testing import check_pruning
from fxprune.testing.check import mask_original


def keywords_only(forward):
    """A Hugging Face style decorator: ``(*args, **kwargs)`` around the real forward."""
    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        return forward(self, *args, **kwargs)
    return wrapper


class Decorated(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    @keywords_only
    def forward(self, x, scale=None, **kwargs):
        return self.b(torch.relu(self.a(x)))


class SizeBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        y = torch.relu(self.a(x))
        if x.shape[0] > 1:          # frozen (True), checked at run time
            y = y * 2
        return self.b(y.view(*y.shape[:-1], 2, -1).flatten(-2))   # sizes: graph values


class Positions(nn.Module):
    """Bert's ``self.position_ids[:, :seq_length]``: a buffer sliced by a traced size."""

    def __init__(self):
        super().__init__()
        self.emb, self.pos, self.out = nn.Embedding(10, 8), nn.Embedding(16, 8), nn.Linear(8, 10)
        self.register_buffer("position_ids", torch.arange(16).unsqueeze(0), persistent=False)

    @keywords_only
    def forward(self, input_ids, attention_mask=None):
        batch, seq = input_ids.shape
        if batch != input_ids.shape[0]:      # masking_utils: a branch on sizes that always holds
            raise AssertionError
        h = self.emb(input_ids) + self.pos(self.position_ids[:, :seq])
        if attention_mask is not None:
            h = h * attention_mask[..., None]
        return self.out(torch.relu(h))


class IntSize(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        n = int(x.shape[1])                 # a size as a Python int: frozen, checked
        return self.b(torch.relu(self.a(x))[:, list(range(n))[-1]])


class DtypeBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    @keywords_only
    def forward(self, x):
        if x.dtype != self.a.weight.dtype:  # frozen: the input dtype is checked
            x = x.to(self.a.weight.dtype)
        return self.b(torch.relu(self.a(x)))


class ValueBranch(SizeBranch):
    @keywords_only
    def forward(self, x):
        y = torch.relu(self.a(x))
        if y.sum() > 0:                     # a branch on tensor values: never frozen
            y = y * 2
        return self.b(y)


def test_a_decorated_forward_with_kwargs_is_traced_with_one_placeholder_per_input():
    model = Decorated().eval()
    x = torch.randn(3, 4)
    analysis = fxprune.analyze(model, (x,))
    gm = analysis.graph_module
    assert [n.target for n in gm.graph.nodes if n.op == "placeholder"] == ["x"]
    assert any(n.startswith("fx: traced from the example values") for n in analysis.notes)
    assert torch.equal(gm(x), model(x)) and torch.equal(gm(x=x), model(x))
    check_pruning(model, (x,))


def test_a_size_branch_is_frozen_and_checked_and_reshapes_stay_dynamic():
    model = SizeBranch().eval()
    analysis = fxprune.analyze(model, (torch.randn(3, 4),))
    result = fxprune.prune(model, (torch.randn(3, 4),), ratio=0.5, analysis=analysis)
    for batch in (2, 7):                    # another batch where the branch holds: right
        x = torch.randn(batch, 4)
        assert torch.allclose(result.graph_module(x), mask_original(analysis, result.plan)(x), atol=1e-6)
    with pytest.raises(GuardError, match=r"x.shape\[0\] > 1"):   # where it would not: loud
        result.graph_module(torch.randn(1, 4))
    check_pruning(model, (torch.randn(3, 4),))


def test_a_buffer_sliced_by_a_traced_size_runs_at_other_lengths():
    model = Positions().eval()
    ids, mask = torch.randint(0, 10, (2, 5)), torch.ones(2, 5)
    result = fxprune.prune(model, example_kwargs={"input_ids": ids, "attention_mask": mask}, ratio=0.5)
    assert result.analysis.frontend == "fx"
    for batch, seq in ((1, 5), (3, 9)):
        ids, mask = torch.randint(0, 10, (batch, seq)), torch.rand(batch, seq)
        want = mask_original(result.analysis, result.plan)(ids, mask)
        assert torch.allclose(result.graph_module(ids, mask), want, atol=1e-6)
    with pytest.raises(GuardError, match="input 'attention_mask' was None"):
        fxprune.prune(model, (ids, None), ratio=0.5).graph_module(ids, mask)   # captured without a mask


def test_a_size_used_as_a_python_int_is_checked():
    model = IntSize().eval()
    result = fxprune.prune(model, (torch.randn(2, 3, 4),), ratio=0.5)
    result.graph_module(torch.randn(5, 3, 4))
    with pytest.raises(GuardError, match=r"int\(x.shape\[1\]\)"):
        result.graph_module(torch.randn(2, 6, 4))


def test_a_dtype_branch_is_frozen_and_the_input_dtype_checked():
    model = DtypeBranch().eval()
    result = fxprune.prune(model, (torch.randn(2, 4),), ratio=0.5)
    assert result.analysis.frontend == "fx"
    with pytest.raises(GuardError, match="the dtype of input 'x' was torch.float32"):
        result.graph_module(torch.randn(2, 4, dtype=torch.float64))
    with pytest.raises(GuardError, match="the rank of input 'x' was 2"):
        result.graph_module(torch.randn(2, 2, 4))


def test_a_branch_on_tensor_values_is_not_frozen():
    with pytest.raises(TraceError, match="a branch on tensor values"):
        fxprune.analyze(ValueBranch().eval(), (torch.randn(3, 4),))


def test_the_guards_survive_the_rewrite_and_a_second_trace():
    model = SizeBranch().eval()
    result = fxprune.prune(model, (torch.randn(3, 4),), ratio=0.5)
    again = fxprune.analyze(copy.deepcopy(result.graph_module), (torch.randn(3, 4),), frontend="fx")
    with pytest.raises(GuardError):
        again.graph_module(torch.randn(1, 4))


class _SizedFactory(torch.nn.Module):
    """OPT's ``torch.ones(inputs_embeds.shape[0], seq_length)``: sizes as varargs, one of them traced."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        mask = torch.ones(x.shape[0], 3, device=x.device)
        return self.fc(x) * mask.sum(-1, keepdim=True)


_GELU = torch.nn.GELU()  # a module-level activation (RoBERTa's lm head calls one), not a submodule


class _StrangerModule(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.out = torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.out(_GELU(self.fc(x)))


@pytest.mark.parametrize("model", [_SizedFactory(), _StrangerModule()], ids=["vararg_sizes", "stranger_module"])
def test_vararg_size_factories_and_parameter_free_stranger_modules_trace(model):
    """Regressions (OPT, RoBERTa): both failed the fx trace, so ``auto`` exported them."""
    x = torch.randn(2, 4)
    analysis = fxprune.analyze(model, (x,))
    assert analysis.frontend == "fx"
    torch.testing.assert_close(analysis.graph_module(x), model(x))
    torch.testing.assert_close(analysis.graph_module(torch.randn(5, 4)).shape, model(torch.randn(5, 4)).shape)
    check_pruning(model, (x,), ratio=0.5)
    assert torch.ones(2, 3).shape == (2, 3)   # the factories are themselves again


def test_a_stranger_module_with_weights_is_still_refused():
    shared = torch.nn.Linear(4, 4)

    class Borrower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x):
            return shared(self.fc(x))

    with pytest.raises(TraceError, match="not installed as a submodule"):
        fxprune.analyze(Borrower(), (torch.randn(2, 4),), frontend="fx")


# --------------------------------------------------------------------------- Hugging Face
T = pytest.importorskip("transformers")

from fxprune.testing import hf_zoo  # noqa: E402

#: the models ``auto`` still captures with export, and why (their fx trace from example values fails)
EXPORT_STILL: dict[str, str] = {}


@pytest.mark.parametrize("name", sorted(hf_zoo.SUITE))
def test_auto_captures_the_suite_with_fx_where_it_can(name):
    model, inputs = hf_zoo.build(name)
    analysis = fxprune.analyze(model, inputs, frontend="auto")
    assert analysis.frontend == ("export" if name in EXPORT_STILL else "fx"), analysis.notes[0]
    if analysis.frontend == "fx":
        assert analysis.notes[0] == "frontend='auto' used fx: it left no channel barrier"
        out = analysis.graph_module(*inputs)
        assert type(out) is type(model(*inputs))       # the model's own ModelOutput


@pytest.mark.parametrize("name", ["llama", "bert", "vit", "resnet"])
def test_fx_captured_hf_models_materialize_and_stay_untouched(name):
    """(ResNetConfig cannot express a pruned stem, with either front end: the resized copy is checked.)"""
    model, inputs = hf_zoo.build(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    attrs = {n: dict(vars(m)) for n, m in model.named_modules()}
    result = fxprune.prune(model, inputs, ratio=0.5, frontend="fx", uniform=True)
    own = result.materialize(hf_config=name != "resnet")
    assert type(own) is type(model)
    with torch.no_grad():
        want = result.graph_module(*inputs)
        got = own(*inputs)
    key = "logits" if "logits" in want else "last_hidden_state"
    assert torch.allclose(got[key], want[key], atol=1e-5)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert {n: dict(vars(m)) for n, m in model.named_modules()} == attrs


# --------------------------------------------------------------------------- values on real, meta and fake tensors
from fxprune.analysis import capture as _capture  # noqa: E402
from fxprune.analysis import shapes as _shapes  # noqa: E402
from fxprune.analysis import tracer as _tracer  # noqa: E402
from fxprune.analysis.values import ValuesOn  # noqa: E402

REAL, META, FAKE = ValuesOn.REAL, ValuesOn.META, ValuesOn.FAKE


def _traces(monkeypatch):
    """Spy on the traces: ``[(path, 'ok' or the error type)]``, path ``None`` for a plain symbolic trace
    (which fails before it starts where the placeholders of ``forward`` cannot be made)."""
    seen, original, placeholders = [], _tracer._trace_module, _tracer.check_root_arguments

    def check(model):
        try:
            placeholders(model)
        except Exception as exc:
            seen.append((None, type(exc).__name__))
            raise
    monkeypatch.setattr(_tracer, "check_root_arguments", check)

    def spy(*args, **kwargs):
        path = kwargs.get("values_on") if kwargs.get("example_inputs") is not None else None
        try:
            gm = original(*args, **kwargs)
        except Exception as exc:
            seen.append((path, type(exc).__name__))
            raise
        seen.append((path, "ok"))
        return gm
    monkeypatch.setattr(_tracer, "_trace_module", spy)
    return seen


def _only(monkeypatch, *paths):
    """Traces from example values try ``paths`` only."""
    monkeypatch.setattr(_tracer, "value_paths", lambda *a: paths)


def _fake_only(monkeypatch):
    _only(monkeypatch, FAKE)


class DeviceFactory(nn.Module):
    """``torch.ones(..., device=x.device)`` and a BatchNorm in train mode (running statistics written)."""

    def __init__(self):
        super().__init__()
        self.a, self.bn, self.b = nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)

    @keywords_only
    def forward(self, x):
        mask = torch.ones(x.shape[0], 8, device=x.device, dtype=x.dtype)
        if x.device.type == "cpu" and x.is_cpu and not x.is_meta:
            mask = mask * 2
        return self.b(self.bn(torch.relu(self.a(x)) * mask))


class ConstantItem(nn.Module):
    """A leaf whose value needs a constant's data: fake tensors keep it, meta tensors have none."""

    def forward(self, x):
        return x * torch.tensor(2.0).item()


class MetaFails(Decorated):
    def __init__(self):
        super().__init__()
        self.c = ConstantItem()

    @keywords_only
    def forward(self, x):
        if x.shape[0] > 1:                  # plain torch.fx cannot trace it
            x = x * 2
        return self.b(self.c(torch.relu(self.a(x))))


@pytest.mark.parametrize("model", [DeviceFactory().train(), Positions().eval(), SizeBranch().eval()],
                         ids=["device-factory-train", "positions", "size-branch"])
def test_values_on_real_meta_and_fake_tensors_capture_the_same_graph(model, monkeypatch):
    inputs = (torch.randint(0, 10, (2, 5)),) if isinstance(model, Positions) else (torch.randn(3, 4),)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    seen = _traces(monkeypatch)
    gm = fxprune.analyze(model, inputs).graph_module
    assert seen[-1] == (REAL, "ok")
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # BatchNorm stats untouched
    assert not any(t.is_meta for t in [*gm.parameters(), *gm.buffers()])
    assert "meta" not in gm.code
    for path in (META, FAKE):
        _only(monkeypatch, path)
        other = fxprune.analyze(model, inputs).graph_module
        assert seen[-1] == (path, "ok")
        # regression: the fake path ran leaf modules themselves, and BatchNorm's num_batches_tracked += 1
        # (no fake argument) reached the user's buffer
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
        assert gm.code == other.code
    with torch.no_grad():
        torch.testing.assert_close(gm(*inputs), copy.deepcopy(model)(*inputs))


def test_a_device_argument_is_recorded_as_the_examples_device():
    gm = fxprune.analyze(DeviceFactory().eval(), (torch.randn(3, 4),)).graph_module
    assert "device = device(type='cpu')" in gm.code and "meta" not in gm.code
    with torch.device("meta"):  # torch's list of factories (cached on first use) not taken while they were wrapped
        assert torch.ones(1).is_meta and nn.Linear(2, 2).weight.is_meta


def test_values_meta_tensors_cannot_compute_are_traced_again_on_fake_tensors(monkeypatch):
    model, inputs = MetaFails().eval(), (torch.randn(3, 4),)
    seen = _traces(monkeypatch)
    gm = fxprune.analyze(model, inputs, leaf_modules=[ConstantItem]).graph_module
    # real values refuse the .item() (a read of tensor data), meta tensors have no data: fake tensors trace it
    assert seen == [(None, "TraceError"), (REAL, "ValuesFailed"), (META, "ValuesFailed"), (FAKE, "ok")]
    _fake_only(monkeypatch)
    assert fxprune.analyze(model, inputs, leaf_modules=[ConstantItem]).graph_module.code == gm.code
    with torch.no_grad():
        torch.testing.assert_close(gm(*inputs), model(*inputs))


@pytest.mark.parametrize("name", ["bert", "llama", "mobilenet_v2"])
def test_hf_values_on_real_tensors_equal_the_meta_and_fake_traces(name, monkeypatch):
    model, inputs = hf_zoo.build(name)
    seen = _traces(monkeypatch)
    analysis = fxprune.analyze(model, inputs, frontend="auto")
    assert (REAL, "ok") in seen
    for path in (META, FAKE):
        _only(monkeypatch, path)
        other = fxprune.analyze(model, inputs, frontend="auto")
        assert (path, "ok") in seen
        assert analysis.graph_module.code == other.graph_module.code
        assert analysis.to_json() == other.to_json()


@pytest.mark.parametrize("name", ["bert", "llama", "mobilenet_v2"])
@pytest.mark.parametrize("path", [REAL, META, FAKE])
def test_a_trace_from_example_values_gives_the_specs_shape_propagation_would(name, path, monkeypatch):
    model, inputs = hf_zoo.build(name)
    _only(monkeypatch, path)
    gm = _capture.trace(model, example_inputs=inputs)
    traced = {n.name: repr(n.meta[ir.SPEC]) for n in gm.graph.nodes}  # every node has one
    for n in gm.graph.nodes:
        del n.meta[ir.SPEC]
    _shapes.propagate_shapes(gm, inputs)
    assert {n.name: repr(n.meta[ir.SPEC]) for n in gm.graph.nodes} == traced


def test_the_analysis_runs_shapes_once_where_the_trace_from_values_gave_them(monkeypatch):
    from fxprune.analysis import analysis as _analysis

    calls = []
    real = _analysis.propagate_shapes
    monkeypatch.setattr(_analysis, "propagate_shapes", lambda *a: (calls.append(1), real(*a))[1])
    fxprune.analyze(Decorated(), (torch.randn(3, 4),))                    # traced from example values
    assert calls == []
    fxprune.analyze(nn.Sequential(nn.Linear(4, 8)), (torch.randn(3, 4),))  # plain symbolic trace
    assert calls == [1]


class _RealState(nn.Module):
    """What a real run would write: a buffer and the input in place, BatchNorm statistics, random numbers."""

    def __init__(self):
        super().__init__()
        self.a, self.bn, self.b = nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)
        self.register_buffer("step", torch.zeros(()))

    @keywords_only
    def forward(self, x, **kwargs):
        self.step.add_(1)
        x.mul_(1.0)
        h = torch.nn.functional.dropout(self.bn(self.a(x)), 0.5, self.training)
        return self.b(h + torch.rand_like(h))


def test_real_values_leave_the_model_its_inputs_and_the_random_state_as_they_were(monkeypatch):
    model, x = _RealState().train(), torch.randn(3, 4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    versions = [t._version for t in [*model.parameters(), *model.buffers()]]
    attrs = {n: dict(vars(m)) for n, m in model.named_modules()}
    x_before, x_version, rng = x.clone(), x._version, torch.get_rng_state()
    seen = _traces(monkeypatch)
    result = fxprune.prune(model, (x,), ratio=0.5)
    assert (REAL, "ok") in seen
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert [t._version for t in [*model.parameters(), *model.buffers()]] == versions
    assert {n: dict(vars(m)) for n, m in model.named_modules()} == attrs
    assert torch.equal(x, x_before) and x._version == x_version
    assert torch.equal(torch.get_rng_state(), rng)
    assert "step" in dict(result.graph_module.named_buffers())


class _TensorAttribute(Decorated):
    def __init__(self):
        super().__init__()
        self.scale = torch.ones(2)  # a plain tensor attribute: the user's, and a real run could write it

    @keywords_only
    def forward(self, x):
        return self.b(torch.relu(self.a(x))) * self.scale


def test_real_values_are_tried_where_the_cpu_shape_pass_runs_on_cpu_kernels(monkeypatch):
    x = (torch.randn(3, 4),)
    assert _tracer.value_paths(Decorated(), x) == (REAL, META, FAKE)
    assert _tracer.value_paths(_TensorAttribute(), x) == (META, FAKE)
    assert _tracer.value_paths(Decorated(), (x[0].to("meta"),)) == (FAKE,)
    monkeypatch.setattr(_shapes, "REAL_RUN_MAX_STATE", 10)
    assert _tracer.value_paths(Decorated(), x) == (META, FAKE)


def test_real_values_over_their_time_budget_are_traced_again_on_meta_tensors(monkeypatch):
    model, x = Decorated(), (torch.randn(3, 4),)
    want = fxprune.analyze(model, x).graph_module.code
    monkeypatch.setattr(_shapes, "REAL_RUN_SECONDS_PER_NODE", 0.0)
    monkeypatch.setattr(_shapes, "REAL_RUN_MIN_SECONDS", 0.0)
    seen = _traces(monkeypatch)
    assert fxprune.analyze(model, x).graph_module.code == want
    assert seen[1:] == [(REAL, "ValuesFailed"), (META, "ok")]


# --------------------------------------------------------------------------- branches on tensor data
# Real values hold the example's data: each read of it must fail as on meta tensors (which have none),
# else a branch on it would be frozen from the example, silently wrong for other inputs.


class _ItemBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    @keywords_only
    def forward(self, x):
        if x.sum().item() > 0:
            return self.fc(x) * 2
        return self.fc(x)


class _BoolBranch(_ItemBranch):
    @keywords_only
    def forward(self, x):
        return self.fc(x) * 2 if x.sum() > 0 else self.fc(x)


class _ToListBranch(_ItemBranch):
    @keywords_only
    def forward(self, x):
        return self.fc(x) * 2 if x.sum(0).tolist()[0] > 0 else self.fc(x)


class _NumpyBranch(_ItemBranch):
    @keywords_only
    def forward(self, x):
        return self.fc(x) * 2 if x.sum().numpy().item() > 0 else self.fc(x)


class _DataPtrBranch(_ItemBranch):
    @keywords_only
    def forward(self, x):
        return self.fc(x) * 2 if x.data_ptr() % 2 == 0 else self.fc(x)


class _EqualBranch(_ItemBranch):
    @keywords_only
    def forward(self, x):
        return self.fc(x) * 2 if torch.equal(x, x.abs()) else self.fc(x)


class _MaskLoop(_ItemBranch):
    """A loop as long as a boolean mask's count: unrolled from real values, it would not be checked."""

    @keywords_only
    def forward(self, x):
        out = self.fc(x)
        for row in x[x.sum(1) > 0].unbind(0):
            out = out + row
        return out


class _NonzeroLoop(_ItemBranch):
    @keywords_only
    def forward(self, x):
        out = self.fc(x)
        for i in torch.nonzero(x[:, 0] > 0).flatten().unbind(0):
            out = out + x[i]
        return out


_DATA_BRANCHES = [_ItemBranch, _BoolBranch, _ToListBranch, _NumpyBranch, _EqualBranch, _MaskLoop, _NonzeroLoop]


@pytest.mark.parametrize("model_type", _DATA_BRANCHES, ids=lambda t: t.__name__.strip("_"))
def test_a_branch_on_tensor_data_is_never_traced_from_the_example_values(model_type, monkeypatch):
    model = model_type().eval()
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0], [-1.0, 0.5, 0.5, 0.5]])
    other = -x                                # every data-dependent branch and count goes the other way
    seen = _traces(monkeypatch)
    with pytest.raises(TraceError):
        _capture.trace(model, example_inputs=(x,))
    assert (REAL, "ok") not in seen and (META, "ok") not in seen and (FAKE, "ok") not in seen
    try:
        analysis = fxprune.analyze(model, (x,), frontend="auto")
    except TraceError:
        return                                # neither fx nor export captured it: refused loudly
    assert analysis.frontend == "export"
    try:
        got = analysis.graph_module(other)
    except Exception:                         # export's own guards refuse the other input: loudly too
        return
    with torch.no_grad():
        torch.testing.assert_close(got, model(other))


def test_what_meta_tensors_answer_without_data_is_left_to_them(monkeypatch):
    """``data_ptr()`` (0 on meta tensors) and the like are refused on real values: the meta trace
    decides, as it did before real values (the frozen condition is checked at run time)."""
    model, x = _DataPtrBranch().eval(), torch.randn(3, 4)
    seen = _traces(monkeypatch)
    gm = _capture.trace(model, example_inputs=(x,))
    assert seen[1:] == [(REAL, "ValuesFailed"), (META, "ok")]
    _only(monkeypatch, META)
    assert _capture.trace(model, example_inputs=(x,)).code == gm.code
    assert "check_traced" in gm.code
