"""``deepcopy_module`` makes the copy ``copy.deepcopy`` makes (the rewrite's module tree copy)."""
from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from fxprune.analysis.copying import copy_container, deepcopy_module, shallow_copy_module
from fxprune.testing.zoo import ZOO


_NEW = object()  # an attribute a __deepcopy__ hook added


def _same(a, b, a_orig, b_orig, seen, originals=None):
    """``a`` (our copy) and ``b`` (deepcopy's) are equal copies: same types and values, and each is
    new exactly where the other is (relative to the originals ``a_orig`` / ``b_orig``)."""
    assert type(a) is type(b)
    assert (a is a_orig) == (b is b_orig), (type(a), a)
    if originals is not None:
        originals.add(id(a_orig))
    key = (id(a), id(b))
    if key in seen:
        return
    seen.add(key)
    if isinstance(a, torch.Tensor):
        assert a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
        assert type(a) is type(b) and a.requires_grad == b.requires_grad
        return
    if isinstance(a, nn.Module):
        assert list(vars(a)) == list(vars(b))
        for k in vars(a):
            _same(vars(a)[k], vars(b)[k], vars(a_orig).get(k, _NEW), vars(b_orig).get(k, _NEW), seen, originals)
        return
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _same(a[k], b[k], a_orig[k], b_orig[k], seen, originals)
        return
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y, xo, yo in zip(a, b, a_orig, b_orig):
            _same(x, y, xo, yo, seen, originals)
        return
    if isinstance(a, set):
        assert a == b
        return
    assert a == b or callable(a)


def _check(model: nn.Module) -> None:
    ours, theirs = {}, {}
    a = deepcopy_module(model, ours)
    b = copy.deepcopy(model, theirs)
    originals: set[int] = set()
    _same(a, b, model, model, set(), originals)
    # the memos map the same originals (tensors, modules, containers) to copies; deepcopy's also
    # holds its temporaries (state dicts, reduce arguments), which nothing else can refer to
    assert set(ours) & originals == set(theirs) & originals
    params = {id(t) for t in model.parameters()}
    assert params & set(ours) == params & set(theirs)
    # ties stay ties
    assert len({id(p) for p in a.parameters()}) == len({id(p) for p in b.parameters()})


@pytest.mark.parametrize("name", sorted(set(ZOO) - {"llama"}))
def test_zoo_copies_as_deepcopy_does(name):
    model, _ = ZOO[name]()
    _check(model)


class _WithDeepcopy(nn.Linear):
    def __deepcopy__(self, memo):
        new = nn.Linear(self.in_features, self.out_features)
        new.load_state_dict(self.state_dict())
        new.copied_by_hook = True
        memo[id(self)] = new
        return new


class _State(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.cache = [torch.zeros(2), {"a": torch.ones(1)}]
        self.plain = torch.arange(3)
        self.shapes = {(1, 2): "x"}
        self.names = OrderedDict(a=1)
        self.odd = frozenset({1, 2})

    def __getstate__(self):
        state = super().__getstate__()
        state["from_getstate"] = True
        return state


class _Ordered(OrderedDict):
    pass


def test_odd_modules_copy_as_deepcopy_does():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared, _WithDeepcopy(3, 3), _State(), nn.Conv2d(3, 3, 1))
    model[5].weight = model[0].weight if model[5].weight.shape == model[0].weight.shape else model[5].weight
    model.tied = nn.Linear(3, 3)
    model.tied.weight = shared.weight
    model[1].register_forward_hook(lambda m, i, o: o)
    model.sub_ordered = nn.Module()
    model.sub_ordered.table = _Ordered(x=torch.ones(1))
    torch.nn.utils.parametrizations.weight_norm(model.tied)
    _check(model)
    copied = deepcopy_module(model)
    assert copied[3].copied_by_hook and copied[4].from_getstate
    assert copied[0] is copied[2] and copied.tied.parametrizations.weight.original0 is not shared.weight


def _odd_model() -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 3), _WithDeepcopy(3, 3), _State())
    model[0].register_forward_hook(lambda m, i, o: o)
    model.table = _Ordered(x=torch.ones(1))
    torch.nn.utils.parametrizations.weight_norm(model[0])
    return model


@pytest.mark.parametrize("name", ["convnext", "densenet", "vit", "odd"])
def test_shallow_copies_as_copy_does(name):
    model = _odd_model() if name == "odd" else ZOO[name]()[0]
    for m in model.modules():
        try:
            theirs = copy.copy(m)
        except RuntimeError:  # a parametrized module refuses to be copied: so does ours
            with pytest.raises(RuntimeError):
                shallow_copy_module(m)
            continue
        ours = shallow_copy_module(m)
        assert type(ours) is type(theirs) and ours is not m
        assert list(vars(ours)) == list(vars(theirs))
        assert all(vars(ours)[k] is vars(theirs)[k] for k in vars(ours))  # shallow: the same values
        for v in vars(m).values():
            if isinstance(v, (dict, list, set)):
                c, d = copy_container(v), copy.copy(v)
                assert type(c) is type(d) and c == d and c is not v and vars(c) == vars(d) if hasattr(d, "__dict__") \
                    else type(c) is type(d) and c == d and c is not v


class _OwnState(nn.Linear):
    """Its own ``__setstate__``: the containers are copied after it ran, as before the one-pass copy."""

    def __setstate__(self, state):
        super().__setstate__(state)
        self.seen = [id(v) for v in state.values() if isinstance(v, (dict, list, set))]


@pytest.mark.parametrize("name", ["convnext", "densenet", "vit", "odd", "own_state"])
def test_shallow_copies_with_their_containers_as_copy_then_copy_container_does(name):
    """``containers=True``: the two-pass copy (``copy.copy``, then each container attribute copied)."""
    model = _OwnState(2, 2) if name == "own_state" else _odd_model() if name == "odd" else ZOO[name]()[0]
    model.register_forward_hook(lambda *a: None)
    for m in model.modules():
        try:
            theirs = copy.copy(m)
        except RuntimeError:  # a parametrized module refuses to be copied: so does ours
            continue
        for k, v in list(vars(theirs).items()):
            if isinstance(v, (dict, list, set)):
                vars(theirs)[k] = copy_container(v)
        ours = shallow_copy_module(m, containers=True)
        assert type(ours) is type(theirs) and list(vars(ours)) == list(vars(theirs))
        for k, v in vars(ours).items():
            if k == "seen":
                continue
            w, orig = vars(theirs)[k], vars(m).get(k)
            if isinstance(v, (dict, list, set)):
                assert type(v) is type(w) and v == w and v is not orig
            else:
                assert v is w
    if name == "own_state":  # its __setstate__ saw the originals: the containers were copied after it
        assert set(shallow_copy_module(model, containers=True).seen) <= {id(v) for v in vars(model).values()}


class _Shadow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(1, 1)
        self.b = nn.Sequential(nn.ReLU())

    @property
    def b(self):  # a property shadowing the child of the same name
        return self._modules["a"]

    @b.setter
    def b(self, value):
        self._modules["b"] = value


class _Getattr(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.ReLU()

    def __getattr__(self, name):
        if name == "a":
            return nn.Identity()  # its own lookup: get_submodule sees this one
        return super().__getattr__(name)


def test_submodule_finds_what_get_submodule_finds():
    from fxprune.modules import submodule
    def found(lookup, name):
        try:
            m = lookup(name)
        except AttributeError as exc:
            return str(exc)
        return type(m) if isinstance(m, nn.Identity) else m  # _Getattr makes a new one per lookup

    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2)), _Shadow(), _Getattr())
    names = [name for name, _ in model.named_modules()] + ["0.1", "0.0.weight", "3", "1.b.0"]
    for name in names:
        assert found(lambda n: submodule(model, n), name) == found(model.get_submodule, name), name
    assert submodule(model, "1.b") is model[1].a
    assert "has no attribute" in found(model.get_submodule, "1.b.0")


# -- the rewrite's check still catches a wrong rewrite (its shape run takes the lean interpreter) ---------
def _small():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    return model, (torch.randn(1, 3, 8, 8),)


def test_a_rewrite_that_misses_a_slice_is_refused(monkeypatch):
    import fxprune
    from fxprune.rewrite import channels as rw
    model, inputs = _small()
    analysis = fxprune.analyze(model, inputs)
    plan = fxprune.prune(model, inputs, analysis=analysis).plan
    assert any(plan.values())
    real = rw.sliced_tensors

    def unsliced_mean(tensors, mask):  # the BatchNorm's running mean keeps its pruned channels
        out = real(tensors, mask)
        del out[id(model[1].running_mean)]
        return out

    monkeypatch.setattr(rw, "sliced_tensors", unsliced_mean)
    with pytest.raises(fxprune.errors.RewriteError, match="does not run on the example inputs"):
        rw.apply_plan(analysis, plan)


def test_a_rewrite_whose_shapes_differ_from_the_prediction_is_refused(monkeypatch):
    import fxprune
    from fxprune.rewrite import channels as rw
    model, inputs = _small()
    analysis = fxprune.analyze(model, inputs)
    plan = fxprune.prune(model, inputs, analysis=analysis).plan
    real = rw.plan_mask

    class _Wrong:  # predicts the unpruned width for the ReLU: a wrong slice somewhere
        def __init__(self, mask):
            self._mask = mask

        def __getattr__(self, name):
            return getattr(self._mask, name)

        def shape(self, spec, labels):
            shape = self._mask.shape(spec, labels)
            return tuple(spec.shape) if spec is not None and tuple(spec.shape[:2]) == (1, 8) \
                and len(spec.shape) == 4 and shape != tuple(spec.shape) else shape

    monkeypatch.setattr(rw, "plan_mask", lambda a, p: _Wrong(real(a, p)))
    with pytest.raises(fxprune.errors.RewriteError, match="differs from the predicted"):
        rw.apply_plan(analysis, plan)


class _Keywords(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)

    def forward(self, x, scale=None, shift=None):
        return self.fc(x) * scale + shift


def test_the_analysed_module_generates_its_code_on_first_use_and_behaves_as_a_plain_one():
    import inspect

    import torch.fx as fx

    import fxprune
    from fxprune.analysis.copying import code_generated

    model, x = _Keywords().eval(), torch.randn(2, 4)
    kwargs = {"scale": torch.tensor(2.0), "shift": torch.tensor(1.0)}
    gm = fxprune.analyze(model, (x,), example_kwargs=kwargs).graph_module
    assert isinstance(gm, fx.GraphModule) and "_code" not in vars(gm)     # nothing generated by the analysis
    # keyword inputs bound through the analysed module's real forward
    again = fxprune.analyze(gm, (x,), example_kwargs=kwargs)
    assert [g.size for g in again.groups] == [g.size for g in fxprune.analyze(model, (x,), example_kwargs=kwargs).groups]
    assert list(inspect.signature(code_generated(gm).forward).parameters) == ["x", "scale", "shift"]
    plain = fx.GraphModule(model, copy.deepcopy(gm.graph), "_Keywords")
    assert gm.code == plain.code
    fresh = fxprune.analyze(model, (x,), example_kwargs=kwargs).graph_module
    expected = model(x, **kwargs)
    for m in (fresh, copy.deepcopy(fresh)):
        assert torch.equal(m(x, kwargs["scale"], kwargs["shift"]), expected)
