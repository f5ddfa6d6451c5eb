"""Dead-channel zeros: which removed channels are exactly zero, and sums that need them to be.

The channel pass (:mod:`fxprune.analysis.channels`) maps labels; this pass
runs after it, when every parameter's role is known, and follows the *values*
removed channels hold in the masked original (producer rows, biases and
consumer columns zeroed, multiplicative ``scale`` members kept):

* a parameter's dimension is zero there unless its role is ``scale``;
* each call's output dims follow its rule's :class:`~fxprune.ir.Zeros`
  declaration: ``KEEP`` (zero where every input dim sharing the channels is,
  and no ``bias`` parameter is broadcast along it: a linear layer's bias
  fills the removed rows of a labelled leading dim),
  ``PROBE`` (the elementwise op evaluated at zero, on one-element tensors,
  without autograd and each from the same random state; an evaluation reading
  what an earlier one read, the same op and constants, is not repeated),
  ``LOSE`` (never zero); a barrier's outputs are never zero;
* an in-place op that leaves non-zero values makes its channels non-zero in
  every tensor read afterwards (views of the written tensor included);
* a parameter-free sum a rule declared with ``ctx.contract`` reads dead
  channels: where none of its operands is zero there, the channels are marked
  *mixing* (removing them changes the sum of the kept ones).

The result is stored per node under :data:`fxprune.ir.ZEROS`.

Example:
    >>> import torch, fxprune
    >>> def model(f):
    ...     return torch.nn.Sequential(torch.nn.Linear(3, 4), f, torch.nn.Flatten(0))
    >>> x = (torch.randn(2, 3),)
    >>> [fxprune.analyze(model(f), x).graph_module.graph.find_nodes(op="call_module", target="1")[0]
    ...  .meta["fxprune.zeros"] for f in (torch.nn.ReLU(), torch.nn.Sigmoid())]
    [(False, True), (False, False)]
"""
from __future__ import annotations

from typing import Any, Collection, Iterator

import numpy as np
import torch
import torch.fx as fx

from .. import ir
from ..ir import Atoms, Role, TensorSpec, Zeros
from ..modules import submodule
from ..ops.context import Value
from ..ops.effects import mutated_args

__all__ = ["propagate_zeros"]

#: one-element values standing for "any value" in probe rounds (by dtype kind)
_ANY = {"float": (0.75, -1.5, 3.0), "int": (3, -2, 1), "bool": (True, False, True)}


def _is_tensor_labels(labels: Any) -> bool:
    """Whether ``labels`` are one tensor's (``None`` or an atom array per dim), not a tuple output's."""
    if not isinstance(labels, tuple):
        return False
    for lab in labels:  # a loop, not all(...): asked for every value read, on every node
        if lab is not None and not isinstance(lab, np.ndarray):
            return False
    return True


def _map_dims(labels: Any, fn: Any) -> Any:
    """``fn(labels_array)`` for every labelled dim (``False`` for fixed dims), nested like ``labels``."""
    if labels is None:
        return None
    if _is_tensor_labels(labels):
        return tuple(False if lab is None else bool(fn(lab)) for lab in labels)
    return tuple(_map_dims(l, fn) for l in labels)


def _pairs(labels: Any, flags: Any) -> Iterator[tuple[np.ndarray, bool]]:
    """``(labels array, zero flag)`` of every labelled dim of a (nested) value."""
    if labels is None or flags is None:
        return
    if _is_tensor_labels(labels):
        for lab, flag in zip(labels, flags):
            if lab is not None:
                yield lab, bool(flag)
        return
    for lab, flag in zip(labels, flags):
        yield from _pairs(lab, flag)


#: argument values a probe key holds as they are (others make an evaluation unkeyed: run every time)
_KEYED = (int, bool, str, type(None), type(Ellipsis), torch.dtype, torch.device, torch.layout, torch.memory_format)


class _Unkeyed(Exception):
    pass


def _key_of(a: Any, dead: set) -> Any:
    """What a probe evaluation reads of one argument: a value's dtype, rank and fill; a constant itself."""
    if isinstance(a, Value):
        if a.is_tensor:
            return ("tensor", a.spec.dtype, a.ndim, id(a) in dead)
        return ("value", _key_of(a.spec, dead))
    t = type(a)
    if t in _KEYED:
        return (t, a)
    if t is float:
        return (t, a.hex())  # 0.0 and -0.0 apart, nan equal to itself
    if t in (tuple, list, torch.Size, fx.immutable_collections.immutable_list):
        return (t, tuple(_key_of(x, dead) for x in a))
    if t in (dict, fx.immutable_collections.immutable_dict):
        return (t, tuple((k, _key_of(x, dead)) for k, x in a.items()))
    if t is slice:
        return (t, _key_of(a.start, dead), _key_of(a.stop, dead), _key_of(a.step, dead))
    raise _Unkeyed


def _module_key(m: torch.nn.Module) -> Any:
    """A module with no state (no parameters, buffers, children or hooks) by its type and attributes; else itself."""
    try:
        attrs = []
        for k, v in vars(m).items():
            if isinstance(v, (dict, set, list)):
                if v:
                    raise _Unkeyed
                attrs.append((k, type(v)))
            else:
                attrs.append((k, _key_of(v, set())))
        key = ("stateless", type(m), tuple(attrs))
        hash(key)
        return key
    except (_Unkeyed, TypeError):
        return ("module", id(m))  # alive for the whole pass (the graph module holds it)


def _probe_key(op: Any, args: Any, kwargs: Any, dead: set) -> tuple | None:
    """A key equal for two probes (each a round of evaluations) that compute the same things; ``None``
    where that is not known.

    ``op`` keys the op (:meth:`_ZeroPass.op_key`: the function object, the method name, a
    module without state by its type and attributes, any other module by identity) and,
    per argument, what :meth:`_ZeroPass._evaluate` builds from it: a one-element tensor
    of the value's dtype and rank, zero or the round's fill; constants by type and value.
    Every evaluation starts from the same RNG state, so equal keys give equal results.
    """
    try:
        key = (op, _key_of(args, dead), _key_of(kwargs, dead))
        hash(key)
    except (_Unkeyed, TypeError):  # TypeError: an unhashable constant inside
        return None
    return key


class _ZeroPass:
    def __init__(self, gm: fx.GraphModule, atoms: Atoms, roles: dict, calls: dict, sums: dict,
                 written: Collection[str] | None = None) -> None:
        self.gm = gm
        self.written = written  # nodes writing an argument in place, where the channel pass knows them
        self.atoms = atoms
        self.roles = roles
        self.calls = calls
        self.sums = sums
        self.roots = atoms.roots()
        self.dirty = np.zeros(len(self.roots), dtype=bool)  # non-zero wherever read (in-place writes)
        self.any_dirty = False  # ``dirty.any()``, kept up to date: scanning every atom per read is quadratic
        self._dirty_version = 0  # changes with ``dirty``
        self._cleaned: dict[tuple, tuple[int, Any]] = {}  # value -> (dirty version, its cleaned flags)
        self.scratch = np.zeros(len(self.roots), dtype=bool)
        self.rng: torch.Tensor | None = None  # the CPU RNG state before the first probe, restored after each
        self.probed: dict[tuple, bool] = {}  # probe results by what the evaluation reads (_probe_key)
        self.module_keys: dict[str, Any] = {}  # call_module target -> _module_key of its module
        self._param_flags: dict[tuple[str, int], tuple[bool, ...]] = {}  # (name, ndim) -> param_flags
        self._bias: dict[tuple[str, int], bool] = {}  # (name, ndim) -> _has_bias

    # -- flags of values -------------------------------------------------
    def param_flags(self, name: str, ndim: int) -> tuple[bool, ...]:
        """Per dim of a parameter, whether its removed channels are zero (all but ``scale`` dims);
        asked once per parameter (the roles do not change during the pass)."""
        key = (name, ndim)
        hit = self._param_flags.get(key)
        if hit is None:
            hit = self._param_flags[key] = tuple(self.roles.get((name, d)) is not Role.SCALE for d in range(ndim))
        return hit

    def flags(self, v: Value) -> Any:
        """Zero flags of a value as a rule read it (dirty channels are never zero)."""
        if v.param is not None and v.node is not None and v.node.op in ("get_attr", "call_module"):
            flags = self.param_flags(v.param, v.ndim)
        else:
            flags = v.node.meta.get(ir.ZEROS) if v.node is not None else None
        if flags is None:
            return _map_dims(v.labels, lambda lab: False)
        if not self.any_dirty:
            return flags
        # a value is read by every consumer: cleaned once per value and state of the dirty table
        key = (v.node, v.param, id(v.labels))
        hit = self._cleaned.get(key)
        if hit is None or hit[0] != self._dirty_version:
            hit = self._cleaned[key] = (self._dirty_version, self._clean(v.labels, flags))
        return hit[1]

    def _clean(self, labels: Any, flags: Any) -> Any:
        if labels is None or flags is None:
            return flags
        if _is_tensor_labels(labels):
            return tuple(bool(f) and (lab is None or not self.dirty[self.roots[lab]].any())
                         for lab, f in zip(labels, flags))
        return tuple(self._clean(l, f) for l, f in zip(labels, flags))

    # -- the rules' declarations -----------------------------------------------
    def _held(self, v: Value) -> bool:
        return v.param is not None and v.node is not None and v.node.op in ("get_attr", "call_module")

    def _has_bias(self, name: str, ndim: int) -> bool:
        """Whether a parameter has a dim of role ``bias`` (asked once per parameter)."""
        key = (name, ndim)
        hit = self._bias.get(key)
        if hit is None:
            hit = self._bias[key] = any(self.roles.get((name, d)) is Role.BIAS for d in range(ndim))
        return hit

    def _overlaps(self, marked: np.ndarray, lab: np.ndarray, other: np.ndarray) -> bool:
        """Whether ``other`` holds a root of ``lab`` (whose roots are set in the scratch table,
        ``marked``); the same array (an op passing labels through) without a lookup."""
        if other is lab:
            return bool(lab.size)
        return bool(self.scratch[self.roots[other]].any())

    def keep(self, out_labels: Any, inputs: list[Value]) -> Any:
        roles = self.roles
        # an additive parameter (role bias) broadcast along a dim fills that dim's removed channels:
        # the labelled dims of each such parameter
        biases: list[list[np.ndarray]] = []
        nonzero: list[np.ndarray] = []  # input dims whose removed channels may hold anything
        for v in inputs:
            flags = self.flags(v)
            if v.is_tensor:
                held = self._held(v)
                if held and self._has_bias(v.param, v.ndim):
                    biases.append([b for b in v.labels if b is not None])
                for d, (lab, f) in enumerate(zip(v.labels, flags)):
                    if lab is not None and not f and not (held and roles.get((v.param, d)) is Role.SCALE):
                        nonzero.append(lab)
            else:
                nonzero += [lab for lab, f in _pairs(v.labels, flags) if not f]

        def zero(lab: np.ndarray) -> bool:
            if not nonzero and not biases:
                return True
            r = self.roots[lab]
            self.scratch[r] = True
            try:
                return not any(self._overlaps(r, lab, other) for other in nonzero) \
                    and all(any(self._overlaps(r, lab, b) for b in labs) for labs in biases)
            finally:
                self.scratch[r] = False

        return _map_dims(out_labels, zero)

    def probe(self, node: fx.Node, out_labels: Any) -> Any:
        spec = node.meta.get(ir.SPEC)
        call = self.calls.get(node.name)
        if not isinstance(spec, TensorSpec) or call is None:
            return _map_dims(out_labels, lambda lab: False)
        args, kwargs, _ = call
        flat: list[Value] = []
        fx.node.map_aggregate((args, kwargs), lambda a: flat.append(a) if isinstance(a, Value) else None)
        flags = {id(v): self.flags(v) for v in flat if v.is_tensor}
        nd = len(spec.shape)
        op = self.op_key(node)

        def zero(lab: np.ndarray, d: int) -> bool:
            r = self.roots[lab]
            self.scratch[r] = True
            dead = set()
            for v in flat:
                k = d - (nd - v.ndim) if v.is_tensor else -1
                if k >= 0 and v.labels[k] is not None and v.shape[k] == spec.shape[d] \
                        and flags[id(v)][k] and self._overlaps(r, lab, v.labels[k]):
                    dead.add(id(v))
            self.scratch[r] = False
            return self._rounds(node, args, kwargs, dead, _probe_key(op, args, kwargs, dead))

        return tuple(False if lab is None else zero(lab, d) for d, lab in enumerate(out_labels))

    def op_key(self, node: fx.Node) -> Any:
        if node.op == "call_module":
            target = str(node.target)
            hit = self.module_keys.get(target)
            if hit is None:
                hit = self.module_keys[target] = _module_key(submodule(self.gm, target))
            return hit
        return (node.op, str(node.target) if node.op == "call_method" else id(node.target))

    def _rounds(self, node: fx.Node, args: Any, kwargs: Any, dead: set, key: tuple | None) -> bool:
        """Whether every round of :meth:`_evaluate` gives zero, remembered for probes that read the
        same things (``key``: :func:`_probe_key`; ``None``: evaluated every time)."""
        if key is not None and key in self.probed:
            return self.probed[key]
        zero = all(self._evaluate(node, args, kwargs, dead, i) for i in range(3))
        if key is not None:
            self.probed[key] = zero
        return zero

    def _evaluate(self, node: fx.Node, args: Any, kwargs: Any, dead: set, round_: int) -> bool:
        # run under no_grad (propagate_zeros); every evaluation starts from the RNG state of the first
        if self.rng is None:
            self.rng = torch.get_rng_state()

        def probe(a: Any) -> Any:
            if not isinstance(a, Value):
                return a
            if not a.is_tensor:
                return a.spec
            kind = "bool" if a.spec.dtype == torch.bool else "float" if a.spec.dtype.is_floating_point \
                else "int" if not a.spec.dtype.is_complex else None
            if kind is None:
                raise TypeError("complex probe")
            fill = 0 if id(a) in dead else _ANY[kind][round_]
            return torch.full((1,) * a.ndim, fill, dtype=a.spec.dtype)

        try:
            p_args = fx.node.map_aggregate(args, probe)
            p_kwargs = fx.node.map_aggregate(kwargs, probe)
            if node.op == "call_module":
                out = submodule(self.gm, str(node.target))(*p_args, **p_kwargs)
            elif node.op == "call_method":
                out = getattr(p_args[0], str(node.target))(*p_args[1:], **p_kwargs)
            else:
                out = node.target(*p_args, **p_kwargs)
            return isinstance(out, torch.Tensor) and out.device.type != "meta" and bool((out == 0).all())
        except Exception:  # noqa: BLE001 - an op that cannot be probed keeps nothing
            return False
        finally:
            torch.set_rng_state(self.rng)

    # -- the pass ------------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            labels = node.meta.get(ir.CHANNELS)
            if node.op == "output":
                continue
            if node.op == "get_attr":
                spec = node.meta.get(ir.SPEC)
                node.meta[ir.ZEROS] = self.param_flags(str(node.target), len(spec.shape)) \
                    if isinstance(spec, TensorSpec) and labels is not None else None
                continue
            rule = node.meta.get(ir.RULE)
            call = self.calls.get(node.name)
            if labels is None:
                flags = None
            elif rule is None or call is None or rule.zeros is Zeros.LOSE:
                flags = _map_dims(labels, lambda lab: False)
            elif rule.zeros is Zeros.PROBE and _is_tensor_labels(labels):
                flags = self.probe(node, labels)
            elif rule.zeros is Zeros.KEEP:
                flags = self.keep(labels, call[2])
            else:
                flags = _map_dims(labels, lambda lab: False)
            node.meta[ir.ZEROS] = flags
            for operands, why in self.sums.get(node.name, ()):
                self.resolve(node, operands, why)
            if labels is not None and self._writes(node):
                for lab, zero in _pairs(labels, flags):
                    if not zero and lab.size:
                        self.dirty[self.roots[lab]] = True
                        self.any_dirty = True
                        self._dirty_version += 1

    def _writes(self, node: fx.Node) -> bool:
        """Whether ``node`` writes an argument in place."""
        if self.written is not None:
            return node.name in self.written
        return bool(mutated_args(node, self.gm))

    def resolve(self, node: fx.Node, operands: tuple, why: str) -> None:
        if any(self.flags(v)[d] for v, d in operands):
            return
        reason = (f"node '{node.name}': {why} over channels that are not zero once removed "
                  f"(an op before it does not map zero to zero)")
        for v, d in operands:
            self.atoms.mark_mixing(v.labels[d], reason)


def propagate_zeros(gm: fx.GraphModule, atoms: Atoms, roles: dict, calls: dict, sums: dict,
                    written: Collection[str] | None = None) -> None:
    """Annotate every node with :data:`fxprune.ir.ZEROS` and resolve the rules' declared sums.

    ``calls`` maps a call node's name to the ``(args, kwargs, inputs)`` its rule
    saw (arguments wrapped as :class:`~fxprune.ops.context.Value`, ``inputs``
    every tensor input and module parameter); ``sums`` maps it to the sums its
    rule declared with :meth:`~fxprune.ops.context.OpContext.contract`;
    ``written`` names the nodes with a tensor output that write an argument in
    place (:func:`~fxprune.ops.effects.mutated_args`), where the channel pass has
    found them already (``None``: asked here, per node).
    """
    with torch.no_grad():  # the probes' evaluations (each restores the RNG state it found)
        _ZeroPass(gm, atoms, roles, calls, sums, written).run()
