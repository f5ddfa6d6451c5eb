"""Helpers rewritten to keep analysis cost per node flat give the results of the code they replaced."""
from __future__ import annotations

import numpy as np
import pytest

from fxprune.analysis.groups import _first_holder_edges
from fxprune.ir import Atoms


def _edges_by_sorting(spaces, n_spaces):
    """The former formula: every root of every space sorted stably, edges from each root's first holder."""
    if not spaces:
        return []
    lengths = np.fromiter((len(f) for _, f in spaces), dtype=np.int64, count=len(spaces))
    sid = np.repeat(np.asarray([i for i, _ in spaces], dtype=np.int64), lengths)
    rid = np.concatenate([f for _, f in spaces])
    order_idx = np.argsort(rid, kind="stable")
    rid, sid = rid[order_idx], sid[order_idx]
    first = np.ones(len(rid), dtype=bool)
    first[1:] = rid[1:] != rid[:-1]
    head = np.maximum.accumulate(np.where(first, np.arange(len(rid)), 0))
    src = sid[head]
    keep = src != sid
    codes, counts = np.unique(src[keep] * n_spaces + sid[keep], return_counts=True)
    return [(*divmod(code, n_spaces), count) for code, count in zip(codes.tolist(), counts.tolist())]


@pytest.mark.parametrize("seed", range(20))
def test_first_holder_edges_equal_the_sorting_formula(seed):
    rng = np.random.default_rng(seed)
    n_roots = int(rng.integers(1, 60))
    indices = sorted(rng.choice(200, size=int(rng.integers(0, 40)), replace=False).tolist())
    spaces = [(i, np.unique(rng.integers(0, n_roots, size=int(rng.integers(1, 30))))) for i in indices]
    assert _first_holder_edges(spaces, n_roots) == _edges_by_sorting(spaces, 200)


def test_atoms_keep_the_first_reason_across_growth():
    atoms = Atoms()
    a = atoms.fresh(3000)          # grows past the initial capacity
    atoms.fix(a[:10], "first")
    b = atoms.fresh(5000)
    atoms.fix(a[5:20], "second")   # atoms 5..9 keep "first"
    atoms.mark_mixing(b[:2], "mix")
    atoms.unify(a[:1], b[:1])
    fixed = atoms.fixed_roots()
    assert fixed[int(atoms.find(a[:1])[0])] == "first"
    assert fixed[int(a[7])] == "first" and fixed[int(a[12])] == "second"
    assert int(b[100]) not in fixed and int(a[25]) not in fixed
    assert atoms.mixing_roots() == {int(atoms.find(b[:1])[0]): "mix", int(b[1]): "mix"}
    roots, fixed_mask, mixing_mask = atoms.root_masks()
    assert fixed_mask.sum() == 20 and mixing_mask.sum() == 2 and len(roots) == 8000


def test_atoms_cached_roots_and_flags_follow_every_change():
    atoms = Atoms()
    a = atoms.fresh(4)
    roots = atoms.roots()
    assert roots.tolist() == [0, 1, 2, 3] and atoms.roots() is roots
    with pytest.raises(ValueError):
        roots[0] = 3                      # shared: read-only
    atoms.fix(a[3:], "out")
    assert atoms.fixed_roots() == {3: "out"}
    atoms.unify(a[2:3], a[3:4])           # the fixed atom's root becomes 2
    assert atoms.roots().tolist() == [0, 1, 2, 2] and atoms.find(a).tolist() == [0, 1, 2, 2]
    assert atoms.fixed_roots() == {2: "out"}
    b = atoms.fresh(2)
    assert atoms.roots().tolist() == [0, 1, 2, 2, 4, 5]
    atoms.fix(b[1:], "later")
    atoms.mark_mixing(a[:1], "norm")
    assert atoms.fixed_roots() == {2: "out", 5: "later"} and atoms.mixing_roots() == {0: "norm"}
    got = atoms.fixed_roots()
    got.clear()                           # a copy: the cache stays whole
    assert atoms.fixed_roots() == {2: "out", 5: "later"}
    atoms.unify(a[:1], b[1:])
    assert atoms.fixed_roots() == {2: "out", 0: "later"} and atoms.mixing_roots() == {0: "norm"}
    assert list(atoms.fixed_roots()) == [2, 0]   # in the order of each root's first flagged atom


@pytest.mark.parametrize("seed", range(20))
def test_first_occurrences_equal_unique_of_the_concatenation(seed):
    from fxprune.analysis.groups import _first_occurrences
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 50))
    arrays = [rng.integers(0, n, size=int(rng.integers(0, 20))) for _ in range(int(rng.integers(1, 8)))]
    seen = np.zeros(n, dtype=bool)
    both = np.concatenate(arrays)
    _, first_idx = np.unique(both, return_index=True)
    assert _first_occurrences(arrays, seen).tolist() == both[np.sort(first_idx)].tolist()
    assert not seen.any()


def test_tracer_names_parameters_and_buffers_as_torch_fx_does():
    import torch
    import torch.fx as fx

    from fxprune.analysis.tracer import trace_module

    class Block(torch.nn.Module):
        def __init__(self, shared):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(4))
            self.shared = shared                                  # one tensor under several names
            self.register_buffer("table", torch.arange(4.0))
            self.plain = torch.full((4,), 2.0)                     # not a parameter or buffer: a constant

        def forward(self, x):
            return x * self.scale * self.shared + self.table + self.scale * self.plain

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            shared = torch.nn.Parameter(torch.full((4,), 3.0))
            self.blocks = torch.nn.ModuleList(Block(shared) for _ in range(3))

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return x

    class Plain(fx.Tracer):
        proxy_buffer_attributes = True

    model = M()
    ours = trace_module(model).graph
    theirs = Plain().trace(model)

    def attrs(graph):
        return [(n.op, str(n.target)) for n in graph.nodes if n.op in ("get_attr", "placeholder", "output")]
    assert attrs(ours) == attrs(theirs)
    assert sum(n.target == "blocks.0.shared" for n in ours.nodes) == 1   # every block reads the first name


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("slice_size", [7, 1 << 20])
def test_roots_equal_find_of_every_atom(seed, slice_size, monkeypatch):
    monkeypatch.setattr("fxprune.ir._ROOTS_SLICE", slice_size)
    rng = np.random.default_rng(seed)
    atoms = Atoms()
    n = int(rng.integers(1, 300))
    atoms.fresh(n)
    for _ in range(int(rng.integers(0, 40))):
        k = int(rng.integers(1, 10))
        atoms.unify(rng.integers(0, n, k), rng.integers(0, n, k))
    atoms.find(np.zeros(0, dtype=np.int64))  # applies the recorded unions (Atoms.unify batches them)
    twin = Atoms()
    twin.fresh(n)
    twin._parent[:n] = atoms._parent[:n]    # the same forest, its roots found atom by atom
    assert atoms.roots().tolist() == twin.find(np.arange(n)).tolist()


def test_atoms_reserve_then_grow_past_it():
    atoms = Atoms()
    atoms.reserve(5000)
    a = atoms.fresh(3000)
    atoms.fix(a[2990:], "late")
    atoms.mark_mixing(a[:1], "early")
    b = atoms.fresh(4000)                  # past the reserve: grows, flags kept
    atoms.unify(a[2995:2996], b[:1])
    assert atoms.fixed_roots() == {int(x): "late" for x in a[2990:]}
    assert atoms.mixing_roots() == {0: "early"} and len(atoms) == 7000
    assert atoms.find(b[:1]).tolist() == [2995]


@pytest.mark.parametrize("seed", range(10))
def test_batched_unions_give_the_roots_of_unions_applied_one_by_one(seed):
    """Atoms.unify records unions and applies them in one batch when roots are read: the roots
    (the smallest atom of each set) are those of applying each union at once, also when roots
    are read between unions (a rule's find mid-pass) and with many unions on one atom."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 200))
    batched, eager = Atoms(), Atoms()
    batched.fresh(n)
    eager.fresh(n)
    for _ in range(int(rng.integers(1, 60))):
        k = int(rng.integers(1, 12)) if rng.random() < 0.9 else 700  # a large union is applied at once
        a, b = rng.integers(0, n, k), rng.integers(0, n, k)
        if rng.random() < 0.2:  # a star: one atom unified with many
            a = np.full(k, a[0])
        batched.unify(a, b)
        eager.unify(a, b)
        eager.find(np.zeros(0, dtype=np.int64))  # applied now
        if rng.random() < 0.3:
            probe = rng.integers(0, n, 5)
            assert batched.find(probe).tolist() == eager.find(probe).tolist()
    everything = np.arange(n)
    assert batched.roots().tolist() == eager.find(everything).tolist()
    # a root is the smallest atom of its set
    roots = batched.roots()
    assert all(roots[i] == min(np.flatnonzero(roots == roots[i])) for i in range(n))


@pytest.mark.parametrize("seed", range(5))
def test_batched_flags_keep_the_first_reason_of_each_atom(seed):
    """Atoms.fix/mark_mixing record flags and apply them when flags are read: each root keeps the
    reason of its first flagged atom, each atom the first reason recorded for it, also when flags
    are read between records and atoms are allocated (arrays grown) in between."""
    rng = np.random.default_rng(seed)
    atoms = Atoms()
    atoms.fresh(50)
    first: dict[int, str] = {}
    for step in range(40):
        if rng.random() < 0.2:
            atoms.fresh(int(rng.integers(1, 2000)))  # grows the arrays past their first pages
        ids = rng.integers(0, len(atoms), int(rng.integers(1, 6)))
        reason = f"reason {step}"
        atoms.fix(ids, reason)
        for i in ids.tolist():
            first.setdefault(i, reason)
        if rng.random() < 0.3:
            expected = {}
            for i in sorted(first):
                expected.setdefault(int(atoms.find(np.array([i]))[0]), first[i])
            assert atoms.fixed_roots() == expected
    _, fixed, mixing = atoms.root_masks()
    assert sorted(np.flatnonzero(fixed).tolist()) == sorted(atoms.fixed_roots())
    assert not mixing.any() and atoms.mixing_roots() == {}


@pytest.mark.parametrize("seed", range(5))
def test_sorted_unique_is_np_unique(seed):
    from fxprune.ir import sorted_unique

    rng = np.random.default_rng(seed)
    for n in (0, 1, 2, 17, 5000):
        values = rng.integers(0, max(n // 3, 1), n)
        assert sorted_unique(values).tolist() == np.unique(values).tolist()


def test_inplace_flag_reads_what_getattr_reads():
    """mutated_args reads a module's ``inplace`` without nn.Module.__getattr__ raising for modules
    without one; a property, a class attribute or a __getattr__ of the module's own still answer."""
    import torch
    from fxprune.ops.effects import _inplace_flag

    class Prop(torch.nn.Module):
        @property
        def inplace(self):
            return True

    class ClassAttr(torch.nn.Module):
        inplace = True

    class Dynamic(torch.nn.Module):
        def __getattr__(self, name):
            return True if name == "inplace" else super().__getattr__(name)

    modules = [torch.nn.ReLU(inplace=True), torch.nn.ReLU(), torch.nn.Conv2d(1, 1, 1), Prop(), ClassAttr(), Dynamic()]
    assert [_inplace_flag(m) for m in modules] == [getattr(m, "inplace", False) is True for m in modules]
    assert [_inplace_flag(m) for m in modules] == [True, False, False, True, True, True]


def _partition(labels):
    """The partition of indices by label, as a set of frozensets."""
    out = {}
    for i, c in enumerate(labels):
        out.setdefault(c, set()).add(i)
    return {frozenset(v) for v in out.values()}


@pytest.mark.parametrize("seed", range(10))
def test_components_by_edges_equal_components_by_roots(seed, monkeypatch):
    """group_spaces joins spaces through first-holder edges past EDGES_FROM free roots and by one
    union over the roots below: the same components either way."""
    import fxprune.analysis.groups as groups

    rng = np.random.default_rng(seed)
    n_roots = int(rng.integers(5, 200))
    free, rep = [], []
    for i in range(int(rng.integers(1, 40))):
        if free and rng.random() < 0.2:  # a space with the label array of an earlier one
            k = int(rng.integers(0, len(free)))
            free.append(free[k])
            rep.append(rep[k])
            continue
        free.append(np.unique(rng.integers(0, n_roots, int(rng.integers(1, 8)))))
        rep.append(i)
    monkeypatch.setattr(groups, "EDGES_FROM", 1 << 30)
    by_roots = groups._components(free, rep, n_roots)
    monkeypatch.setattr(groups, "EDGES_FROM", 0)
    by_edges = groups._components(free, rep, n_roots)
    assert _partition(by_roots) == _partition(by_edges)


def test_groups_by_edges_equal_groups_by_roots(monkeypatch):
    import fxprune
    import fxprune.analysis.groups as groups
    from fxprune.testing import zoo

    model, x = zoo.ZOO["shufflenet_v2"]()
    a = fxprune.analyze(model, x)
    monkeypatch.setattr(groups, "EDGES_FROM", 0)
    by_edges, _ = groups.group_spaces(a.graph_module, a.state)
    assert [g.describe() for g in by_edges] == [g.describe() for g in a.groups]
    assert [g.roots for g in by_edges] == [g.roots for g in a.groups]
