"""Coupled channel groups and the coupling graph.

A *space* is one dimension of a parameter (a :class:`Member`) or of an
activation (a :class:`TensorMember`).  Two spaces are coupled when they share
an unfixed channel root.  The coupling graph (networkx) has spaces as nodes and
an edge wherever channels are shared; groups are its connected components.
:func:`group_spaces` finds them with one batched union-find over the spaces'
roots and returns a :class:`Coupling`, from which the networkx graph is built
only when asked (:func:`build_groups` builds it at once).

Every group lists, per member, the *index map* from the member's indices to
the group's channels: ``member.index_map[i]`` is the group channel that index
``i`` of dimension ``member.dim`` of ``member.param`` belongs to.  Pruning group
channel ``c`` removes exactly the indices ``member.indices([c])`` of every member.
This listing is public: external tools verify pruning with it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import networkx as nx
import numpy as np
import torch.fx as fx

from .. import ir
from ..errors import PlanError
from ..ir import Atoms, KeepMask, Role, sorted_unique
from .channels import ChannelState

__all__ = ["Member", "TensorMember", "Group", "Coupling", "build_groups", "group_spaces", "check_plan", "plan_mask", "take_channels"]


def take_channels(order: Iterable[int], n: int, counts: np.ndarray) -> list[int]:
    """The first ``n`` channels of ``order`` whose removal leaves every member with an index.

    ``counts[k, c]`` is how many indices of member ``k`` channel ``c`` owns (see
    :meth:`Group.member_counts`); a channel that would empty a member (the last
    channel of a concat input) is skipped.

    Example:
        >>> take_channels([2, 0, 1], 2, np.array([[1, 1, 1], [0, 0, 1]]))   # member 1 owns only channel 2
        [0, 1]
    """
    order = np.asarray(order if isinstance(order, np.ndarray) else list(order), dtype=np.int64)
    left = counts.sum(1)
    had = left > 0
    head = order[:n]
    if not (((left - counts[:, head].sum(1)) <= 0) & had).any():
        return head.tolist()  # the common case: the first n empty no member
    out: list[int] = []
    for c in order.tolist():
        if len(out) >= n:
            break
        after = left - counts[:, c]
        if ((after <= 0) & had).any():
            continue
        left = after
        out.append(int(c))
    return out


def _index_map(values: Any) -> np.ndarray:
    """A read-only int64 copy of an index map (a member's channel of each index, ``-1``: none)."""
    arr = np.array(values, dtype=np.int64).reshape(-1)
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class Member:
    """One parameter dimension in a group.

    Attributes:
        node: the fx node that uses the parameter (``call_module`` or ``get_attr``).
        param: qualified parameter/buffer name in the model.
        dim: the dimension of the parameter that carries the group's channels.
        role: ``producer``, ``consumer``, ``bias``, ``scale`` or ``coupled``.
        index_map: group channel of each index along ``dim`` (a read-only int64 array).
    """

    node: str
    param: str
    dim: int
    role: Role
    index_map: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "index_map", _index_map(self.index_map))

    @property
    def size(self) -> int:
        return len(self.index_map)

    def indices(self, channels: Iterable[int]) -> np.ndarray:
        """Indices along :attr:`dim` that belong to the given group channels."""
        chans = np.fromiter(channels, dtype=np.int64)
        return np.nonzero(np.isin(self.index_map, chans))[0]


@dataclass(frozen=True, eq=False)
class TensorMember:
    """One activation dimension in a group (used by activation-based scorers)."""

    node: str
    dim: int
    index_map: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "index_map", _index_map(self.index_map))

    def indices(self, channels: Iterable[int]) -> np.ndarray:
        chans = np.fromiter(channels, dtype=np.int64)
        return np.nonzero(np.isin(self.index_map, chans))[0]


@dataclass(frozen=True, eq=False)
class Group:
    """A set of channels that must be pruned together, with every member slice.

    Attributes:
        id: stable id within one analysis (order of the first member in the graph).
        size: number of group channels (independent pruning units).
        members: parameter dimensions, producers first.
        tensors: activation dimensions carrying the group's channels.
        fixed: group channels that may not be pruned (barriers, outputs, ignores).
        fixed_reasons: why, one line per distinct reason.
        mixing: True if channels pass through a channel-mixing op (LayerNorm
            statistics, mean over channels, softmax), so removing a dead channel
            is not exactly function-preserving there.
        roots: internal atom root of each channel (used by the rewriter).
    """

    id: int
    size: int
    members: tuple[Member, ...]
    tensors: tuple[TensorMember, ...]
    fixed: frozenset[int]
    fixed_reasons: tuple[str, ...]
    mixing: bool
    mixing_reasons: tuple[str, ...]
    roots: tuple[int, ...] = field(repr=False)

    @property
    def prunable(self) -> tuple[int, ...]:
        """Group channels that may be removed."""
        return tuple(c for c in range(self.size) if c not in self.fixed)

    def producers(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.role is Role.PRODUCER)

    def member_counts(self) -> np.ndarray:
        """``counts[k, c]``: how many indices of member ``k`` channel ``c`` owns."""
        out = np.zeros((len(self.members), self.size), dtype=np.int64)
        for k, m in enumerate(self.members):
            idx = m.index_map
            out[k] = np.bincount(idx[idx >= 0], minlength=self.size)[: self.size]
        return out

    def take(self, order: Iterable[int], n: int) -> list[int]:
        """The first ``n`` channels of ``order`` that leave every member non-empty (:func:`take_channels`)."""
        return take_channels(order, n, self.member_counts())

    def emptied_member(self, channels: Iterable[int]) -> Member | None:
        """The first member that removing ``channels`` would leave without indices."""
        counts = self.member_counts()
        chans = sorted(set(int(c) for c in channels))
        left = counts.sum(1) - counts[:, chans].sum(1)
        for k in np.nonzero((left <= 0) & (counts.sum(1) > 0))[0]:
            return self.members[int(k)]
        return None

    def describe(self) -> str:
        """A multi-line listing of the group (the golden-test format)."""
        lines = [f"group {self.id}: {self.size} channels"
                 + (f", {len(self.fixed)} fixed" if self.fixed else "")
                 + (", mixing" if self.mixing else "")]
        for m in self.members:
            lines.append(f"  {m.role:<9} {m.param}[dim {m.dim}] ({m.size})")
        return "\n".join(lines)


def _is_int(x: Any) -> bool:
    return hasattr(x, "__index__") and not isinstance(x, (bool, np.bool_))


def check_plan(plan: Any, what: str = "plan") -> dict[int, list[int]]:
    """``plan`` as ``{int group id: sorted distinct int channels}``, after checking its form.

    Raises:
        PlanError: ``plan`` is not a mapping of integer group ids to collections of
            integer channels (e.g. a list, or ``{0: 3}``).

    Example:
        >>> check_plan({1: [3, 0, 3]})
        {1: [0, 3]}
        >>> check_plan([0, 1])
        Traceback (most recent call last):
        ...
        fxprune.errors.PlanError: a plan maps group ids to the channels removed, e.g. {0: [3, 7]}; got a list: [0, 1]
    """
    if not isinstance(plan, Mapping):
        raise PlanError(f"a {what} maps group ids to the channels removed, e.g. {{0: [3, 7]}}; "
                        f"got a {type(plan).__name__}: {str(plan)[:80]}")
    out: dict[int, list[int]] = {}
    for gid, chans in plan.items():
        if not _is_int(gid):
            raise PlanError(f"{what}: group ids are integers, got {gid!r}")
        if isinstance(chans, (str, bytes)) or not isinstance(chans, Iterable):
            raise PlanError(f"{what}: group {gid} maps to {chans!r}, not a collection of channels (e.g. [{chans!r}])")
        chans = list(chans)
        bad = [c for c in chans if not _is_int(c)]
        if bad:
            raise PlanError(f"{what}: group {gid}'s channels must be integers, got {bad[:5]}")
        out[int(gid)] = sorted({int(c) for c in chans})
    return out


def plan_mask(groups: Sequence[Group], roots: np.ndarray, plan: Mapping[int, Sequence[int]]) -> KeepMask:
    """The :class:`~fxprune.ir.KeepMask` of a plan, after checking the plan against the groups.

    ``roots`` is the root of every atom (``analysis.state.atoms.roots()``).

    Raises:
        PlanError: the plan names unknown or fixed channels, removes a whole group, or
            empties a member.
    """
    removed = np.zeros(len(roots), dtype=bool)
    by_id = {g.id: g for g in groups}
    for gid, chans in check_plan(plan).items():
        if gid not in by_id:
            raise PlanError(f"plan names group {gid}, but the analysis has groups "
                            f"0..{len(groups) - 1}")
        g = by_id[gid]
        if not chans:
            continue
        bad = [c for c in chans if not 0 <= c < g.size]
        if bad:
            raise PlanError(f"group {gid} has channels 0..{g.size - 1}; plan removes {bad[:5]}")
        fixed = [c for c in chans if c in g.fixed]
        if fixed:
            raise PlanError(f"group {gid}: channels {fixed[:5]} are fixed "
                            f"({'; '.join(g.fixed_reasons[:2])})")
        if len(chans) >= g.size:
            raise PlanError(f"group {gid}: a plan may not remove all {g.size} channels")
        emptied = g.emptied_member(chans)
        if emptied is not None:
            raise PlanError(f"group {gid}: the plan removes every channel of "
                            f"{emptied.param} (dim {emptied.dim}); keep at least one")
        removed[np.asarray([g.roots[c] for c in chans], dtype=np.int64)] = True
    return KeepMask(roots, removed)


def _space_roots(labels: Sequence[Any], roots: np.ndarray) -> list[np.ndarray]:
    return [None if lab is None else roots[lab] for lab in labels]


def _index_dtype(largest: int) -> type:
    """int32 where every value up to ``largest`` fits (half the memory of a table over every root), else int64."""
    return np.int32 if largest < np.iinfo(np.int32).max else np.int64


def _first_holder_edges(spaces: Sequence[tuple[int, np.ndarray]], n_roots: int) -> list[tuple[int, int, int]]:
    """``(a, b, shared)`` for every pair of spaces where ``a`` is the first space holding a root
    that ``b`` also holds, ``shared`` such roots; sorted by ``(a, b)``.

    ``spaces`` lists ``(space index, distinct roots)`` in increasing space index.  One pass
    with a root -> first-holder table: linear in the roots, where sorting every root of
    every space grew faster than the graph.

    Example:
        >>> _first_holder_edges([(0, np.array([1, 2])), (2, np.array([2, 3])), (5, np.array([1, 2, 3]))], 4)
        [(0, 2, 1), (0, 5, 2), (2, 5, 1)]
    """
    # root -> 1 + the first space holding it, 0: none yet (int32 where it fits; zeros, so only
    # the pages of roots written are touched: a table over every root is large)
    first = np.zeros(n_roots, dtype=_index_dtype(spaces[-1][0] + 1 if spaces else 0))
    codes: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    for i, free in spaces:
        holder = first[free]
        new = holder == 0
        first[free[new]] = i + 1
        src = holder[~new].astype(np.int64) - 1
        if src.size:
            srcs, count = np.unique(src, return_counts=True)
            codes.append(np.stack([srcs, np.full(len(srcs), i, dtype=np.int64)], axis=1))
            counts.append(count)
    if not codes:
        return []
    pairs = np.concatenate(codes)
    shared = np.concatenate(counts)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return [(a, b, c) for (a, b), c in zip(pairs[order].tolist(), shared[order].tolist())]


def _first_occurrences(arrays: Sequence[np.ndarray], seen: np.ndarray) -> np.ndarray:
    """The distinct values of ``arrays`` concatenated, in order of first occurrence.

    ``seen`` is an all-``False`` scratch table over the values, left all-``False``.  Values
    seen in an earlier array are dropped by one lookup each, so only new values are sorted:
    one group can span every layer of a model (a residual stream), and sorting all of its
    members' roots at once grew faster than the graph.

    Example:
        >>> _first_occurrences([np.array([3, 1, 3]), np.array([1, 4, 0])], np.zeros(5, dtype=bool)).tolist()
        [3, 1, 4, 0]
    """
    parts = []
    for arr in arrays:
        new = arr[~seen[arr]]
        if new.size:
            _, first = np.unique(new, return_index=True)
            new = new[np.sort(first)]
            seen[new] = True
            parts.append(new)
    out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    seen[out] = False
    return out


@dataclass(frozen=True, eq=False)
class Coupling:
    """The spaces of an analysis and how they share channels, from which the coupling graph is built.

    Building the networkx graph costs more than finding the groups on small models,
    and only the exports read it (:meth:`fxprune.analysis.Analysis.to_networkx`,
    ``to_dot``): :func:`group_spaces` returns this, and :meth:`graph` builds the
    graph when asked, the same as :func:`build_groups` returns it.

    Attributes:
        spaces: ``(kind, name, dim, roots)`` of every space with an unfixed channel, in order.
        free: per space, its distinct unfixed roots.
        rep: per space, the first space with the same label array (itself if none).
        n_roots: the number of atoms (the size of a table over roots).
        roles: the parameters' roles (``(name, dim) -> Role``).
        param_nodes: the node using each parameter.
        group_of: per space, the id of its group (``None``: in no group).
    """

    spaces: tuple[tuple[str, str, int, np.ndarray], ...]
    free: tuple[np.ndarray, ...]
    rep: tuple[int, ...]
    n_roots: int
    roles: Mapping[tuple[str, int], Role]
    param_nodes: Mapping[str, str]
    group_of: tuple[int | None, ...]

    def graph(self) -> nx.Graph:
        """The coupling graph: spaces as nodes, an edge where spaces share channels (``shared``)."""
        graph = nx.Graph()
        spaces = self.spaces
        for i, (kind, name, d, r) in enumerate(spaces):
            attrs: dict[str, Any] = {"kind": kind, "name": name, "dim": d, "size": int(len(r))}
            if kind == "param":
                attrs["role"] = str(self.roles.get((name, d), Role.COUPLED))
                attrs["node"] = self.param_nodes.get(name, "")
            graph.add_node(_space_id(kind, name, d), **attrs)
        reps = [i for i, rep in enumerate(self.rep) if rep == i]
        # edges between distinct label arrays: from the first space holding a root to every other
        for a, b, count in _first_holder_edges([(i, self.free[i]) for i in reps], self.n_roots):
            graph.add_edge(_space_id(*spaces[a][:3]), _space_id(*spaces[b][:3]), shared=count)
        for i, rep in enumerate(self.rep):  # a space with the label array of an earlier one shares all of it
            if rep != i:
                graph.add_edge(_space_id(*spaces[rep][:3]), _space_id(*spaces[i][:3]), shared=len(self.free[i]))
        for (kind, name, d, _), gid in zip(spaces, self.group_of):
            if gid is not None:
                graph.nodes[_space_id(kind, name, d)]["group"] = gid
        return graph


def _spaces(gm: fx.GraphModule, state: ChannelState, roots: np.ndarray, fixed_mask: np.ndarray
            ) -> tuple[list[tuple[str, str, int, np.ndarray]], list[np.ndarray], list[int]]:
    """``(spaces, free, rep)`` of :class:`Coupling`: every parameter dim, then every activation dim,
    that holds an unfixed root.

    Ops that pass labels through share one label array: the roots and free roots of
    each distinct array are computed once, for all arrays in one batch (a few numpy
    calls per graph, not per space).
    """
    dims: list[tuple[str, str, int, int]] = []  # (kind, name, dim, distinct array index)
    arrays: list[np.ndarray] = []
    index: dict[int, int] = {}  # id(label array) -> its index in ``arrays`` (which keeps it alive)

    def add(kind: str, name: str, d: int, lab: np.ndarray) -> None:
        k = index.get(id(lab))
        if k is None:
            k = index[id(lab)] = len(arrays)
            arrays.append(lab)
        dims.append((kind, name, d, k))

    for name, labels in state.param_labels.items():
        for d, lab in enumerate(labels):
            add("param", name, d, lab)
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr", "output"):
            continue
        labels = node.meta.get(ir.CHANNELS)
        if not isinstance(labels, tuple) or not all(l is None or isinstance(l, np.ndarray) for l in labels):
            continue
        for d, lab in enumerate(labels):
            if lab is not None:
                add("tensor", node.name, d, lab)
    root_of, free_of = _distinct_free(arrays, roots, fixed_mask)

    spaces: list[tuple[str, str, int, np.ndarray]] = []
    free: list[np.ndarray] = []
    rep: list[int] = []
    first: dict[int, int] = {}  # array index -> its first space
    for kind, name, d, k in dims:
        if not len(free_of[k]):
            continue  # every channel fixed: no space
        rep.append(first.setdefault(k, len(spaces)))
        spaces.append((kind, name, d, root_of[k]))
        free.append(free_of[k])
    return spaces, free, rep


def _distinct_free(arrays: Sequence[np.ndarray], roots: np.ndarray, fixed_mask: np.ndarray
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per label array: the roots of its atoms, and its distinct unfixed roots (sorted), in one batch.

    Example:
        >>> r, f = _distinct_free([np.array([2, 0, 2]), np.array([1])], np.arange(3), np.array([0, 1, 0], bool))
        >>> [a.tolist() for a in r], [a.tolist() for a in f]
        ([[2, 0, 2], [1]], [[0, 2], []])
    """
    if not arrays:
        return [], []
    sizes = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    flat = roots[np.concatenate(arrays)]
    root_of = _split(flat, sizes)
    owner = np.repeat(np.arange(len(arrays), dtype=np.int64), sizes)
    free = ~fixed_mask[flat]
    # (array, root) pairs as one int64 key each: unique sorts them by array, then root
    keys = sorted_unique(owner[free] * len(roots) + flat[free])
    counts = np.bincount(keys // len(roots), minlength=len(arrays))
    return root_of, _split(keys % len(roots), counts)


def _split(flat: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    """``flat`` cut into consecutive views of ``sizes`` (``np.split`` costs a few microseconds a piece)."""
    ends = np.cumsum(sizes).tolist()
    return [flat[a:b] for a, b in zip([0] + ends[:-1], ends)]


#: spaces holding more distinct free roots than this, in all, are joined through their first-holder
#: edges (:func:`_first_holder_edges`: linear, a few numpy calls per space); fewer, by one union over
#: their roots (a few numpy calls in all, where a large model's union would follow long chains)
EDGES_FROM = 1 << 16


def _components(free: Sequence[np.ndarray], rep: Sequence[int], n_roots: int) -> list[int]:
    """Per space, a label of its connected component (spaces sharing a root, transitively).

    Example:
        >>> free = [np.array([1, 2]), np.array([5]), np.array([2, 3]), np.array([5])]
        >>> c = _components(free, [0, 1, 2, 1], 6)   # spaces 0 and 2 share root 2; space 3 is space 1's array
        >>> c[0] == c[2], c[1] == c[3], c[0] != c[1]
        (True, True, True)
    """
    reps = [i for i, r in enumerate(rep) if r == i]
    if not reps:
        return []
    arrays = [free[i] for i in reps]
    atoms = Atoms()
    if sum(len(a) for a in arrays) > EDGES_FROM:
        edges = np.asarray([e[:2] for e in _first_holder_edges(list(zip(reps, arrays)), n_roots)],
                           dtype=np.int64).reshape(-1, 2)
        atoms.fresh(len(rep))
        atoms.unify(edges[:, 0], edges[:, 1])
        label = atoms.find(np.asarray(reps, dtype=np.int64))
    else:  # one union-find over the distinct free roots, each space's roots unified with its first
        flat = np.concatenate(arrays)
        distinct = sorted_unique(flat)
        compact = np.searchsorted(distinct, flat)
        sizes = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        atoms.fresh(len(distinct))
        atoms.unify(compact, np.repeat(compact[starts], sizes))
        label = atoms.find(compact[starts])
    of_rep = dict(zip(reps, label.tolist()))
    return [of_rep[r] for r in rep]


def group_spaces(gm: fx.GraphModule, state: ChannelState) -> tuple[list[Group], Coupling]:
    """The groups of a channel state, and the :class:`Coupling` their graph is built from."""
    atoms = state.atoms
    roots = atoms.roots()
    fixed = atoms.fixed_roots()
    mixing = atoms.mixing_roots()
    fixed_mask = np.zeros(len(roots), dtype=bool)
    if fixed:
        fixed_mask[np.fromiter(fixed.keys(), dtype=np.int64)] = True
    mixing_mask = np.zeros(len(roots), dtype=bool)
    if mixing:
        mixing_mask[np.fromiter(mixing.keys(), dtype=np.int64)] = True

    spaces, free_of, rep_of = _spaces(gm, state, roots, fixed_mask)
    by_component: dict[int, tuple[list[int], list[int]]] = {}
    for i, c in enumerate(_components(free_of, rep_of, len(roots))):
        by_component.setdefault(c, ([], []))[spaces[i][0] == "tensor"].append(i)

    order = {n.name: i for i, n in enumerate(gm.graph.nodes)}
    built = []
    seen = np.zeros(len(roots), dtype=bool)  # roots already listed by the component at hand
    for param_ids, tensor_ids in by_component.values():
        if not param_ids:
            continue
        params = [spaces[i] for i in param_ids]
        tensors = [spaces[i] for i in tensor_ids]
        # every key is distinct within a component: the order does not depend on the component's
        params.sort(key=lambda s: (order.get(state.param_nodes.get(s[1], ""), 0),
                                   state.roles.get((s[1], s[2]), Role.COUPLED).rank, s[1], s[2]))
        tensors.sort(key=lambda s: (order.get(s[1], 0), s[2]))
        channel_roots = _first_occurrences([s[3] for s in params], seen)
        built.append((params, tensors, channel_roots))
    built.sort(key=lambda b: (order.get(state.param_nodes.get(b[0][0][1], ""), 0), b[0][0][1], b[0][0][2]))

    groups = []
    group_of: dict[tuple[str, str, int], int] = {}
    # root -> 1 + group channel, 0: none (zeros, int32 where it fits: see _first_holder_edges),
    # reset after each group; members copy their index maps (channel, -1: none) as int64
    lookup = np.zeros(len(roots), dtype=_index_dtype(len(roots) + 1))
    for gid, (params, tensors, channel_roots) in enumerate(built):
        lookup[channel_roots] = np.arange(1, len(channel_roots) + 1)
        members = []
        for kind, name, d, r in params:
            members.append(Member(state.param_nodes.get(name, ""), name, d,
                                  state.roles.get((name, d), Role.COUPLED), lookup[r] - 1))
        tmembers = [TensorMember(name, d, lookup[r] - 1) for kind, name, d, r in tensors]
        lookup[channel_roots] = 0
        fixed_sel = fixed_mask[channel_roots]
        fixed_ch = frozenset(np.nonzero(fixed_sel)[0].tolist())
        reasons = tuple(dict.fromkeys(fixed[r] for r in channel_roots[fixed_sel].tolist()))
        mix_sel = mixing_mask[channel_roots]
        mix = bool(mix_sel.any())
        mix_reasons = tuple(dict.fromkeys(mixing[r] for r in channel_roots[mix_sel].tolist()))
        groups.append(Group(gid, len(channel_roots), tuple(members), tuple(tmembers), fixed_ch,
                            reasons, mix, mix_reasons, tuple(channel_roots.tolist())))
        for kind, name, d, _ in params + tensors:
            group_of[kind, name, d] = gid
    coupling = Coupling(tuple(spaces), tuple(free_of), tuple(rep_of), len(roots), state.roles, state.param_nodes,
                        tuple(group_of.get(s[:3]) for s in spaces))
    return groups, coupling


def build_groups(gm: fx.GraphModule, state: ChannelState) -> tuple[list[Group], nx.Graph]:
    """Compute the groups and the coupling graph from a channel state (:func:`group_spaces`, and
    :meth:`Coupling.graph` built at once)."""
    groups, coupling = group_spaces(gm, state)
    return groups, coupling.graph()


def _space_id(kind: str, name: str, dim: int) -> str:
    return f"{kind}:{name}:{dim}"
