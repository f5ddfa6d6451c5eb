"""Channel-space propagation: run every node's rule over channel labels.

This pass walks the graph once in topological order.  Parameters (and any
other tensor attribute of the model) get fresh atoms per dimension; inputs get
fixed (``None``) dimensions; each op's rule maps its inputs' labels to its
output's labels, unifying atoms that must be pruned together.  Nodes without a
rule, and patterns a rule cannot map exactly, become *barriers*: their inputs'
channels are fixed and their outputs' dimensions are fixed.  The model's
outputs are fixed too, so output shapes never change.

An in-place op (see :mod:`fxprune.ops.effects`) writes its argument: later
reads of that argument see the in-place op's result (its labels, its shape).
Once every label is mapped, :mod:`fxprune.analysis.zeros` follows which
removed channels hold zeros and marks parameter-free sums over non-zero ones
mixing.

Under ``split_policy="auto"`` (:class:`~fxprune.ops.layout.SplitPolicy`) the
pass first resolves every reshape that has a choice to ``heads``, then keeps
that where the chosen heads reach a dim a rule declared per-head (attention's
batch dims, :meth:`~fxprune.ops.context.OpContext.per_head`) and are not all
fixed, and resolves the others to ``inner``; if any was resolved to ``inner``,
the pass runs again with those choices (a model without such a split runs once).

A node without a rule whose inputs carry no channel at all (``arange``,
``cumsum`` over position ids, comparisons building a boolean mask) fixes
nothing: it is not a barrier, only counted (:attr:`ChannelState.inert`), so
reports list real barriers only.

Results are stored on nodes under :data:`fxprune.ir.CHANNELS`,
:data:`fxprune.ir.RULE`, :data:`fxprune.ir.BARRIER` and
:data:`fxprune.ir.ZEROS`, and summarised in a :class:`ChannelState`.
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch
import torch.fx as fx

from .. import ir
from ..errors import ConfigError, UnsupportedOpError
from ..ir import Atoms, Role, TensorSpec, fixed_labels, iter_label_arrays, sorted_unique
from ..modules import get_attr, submodule
from ..ops.context import OpContext, Split, Unsupported, Value
from ..ops.effects import mutated_args
from ..ops.layout import SplitPolicy
from ..ops.registry import Method, Registry, describe_key, node_key
from .zeros import propagate_zeros

__all__ = ["Barrier", "ChannelState", "SplitChoice", "propagate_channels"]

#: the split policies by name
POLICIES = tuple(p.value for p in SplitPolicy)


@dataclass(frozen=True)
class Barrier:
    """A node whose channels could not be mapped: they are not pruned."""

    node: str
    op: str
    reason: str
    hint: str


@dataclass(frozen=True, eq=False)
class SplitChoice:
    """A node where the split policy chose a factor: the policy asked for, the one applied, the split.

    ``policy`` is what the user set for the node (``auto`` included); ``resolved``
    the policy the rules applied (``auto`` resolved to ``heads`` or ``inner``).
    """

    node: str
    policy: Any
    resolved: Any
    split: Split


@dataclass
class ChannelState:
    """Everything the channel pass learned (consumed by :mod:`fxprune.analysis.groups`)."""

    atoms: Atoms
    param_labels: dict[str, tuple]
    param_specs: dict[str, TensorSpec]
    param_nodes: dict[str, str]
    roles: dict[tuple[str, int], Role]
    barriers: list[Barrier] = field(default_factory=list)
    #: nodes without a rule (or whose rule could not map them) that touch no channel: mask and
    #: index building; nothing is fixed there, so they are counted, not listed as barriers
    inert: list[Barrier] = field(default_factory=list)
    #: roots the rules marked mixing by themselves (statistics, softmax), before the
    #: dead-zero pass (:mod:`fxprune.analysis.zeros`) added sums over non-zero channels
    op_mixing: frozenset[int] = frozenset()
    #: what the report should say about the analysis (a split policy that fixed a whole split)
    notes: tuple[str, ...] = ()
    #: every node where a split policy chose a factor (read to resize head counts when materialising)
    splits: tuple[SplitChoice, ...] = ()


_STATE_READERS = ("named_parameters", "named_buffers", "_named_members", "named_modules")


def _named_state(module: torch.nn.Module, plain: dict[type, bool] | None = None) -> list[tuple[str, Any]]:
    """``[*module.named_parameters(), *module.named_buffers()]``; a module without children read from its
    own dicts, as those generators read them (``None`` entries and a tensor held twice skipped).

    ``plain`` remembers, per class, whether it keeps ``nn.Module``'s readers (a pass asks once per class).
    """
    cls = type(module)
    known = plain.get(cls) if plain is not None else None
    if known is None:
        known = all(getattr(cls, f) is getattr(torch.nn.Module, f) for f in _STATE_READERS)
        if plain is not None:
            plain[cls] = known
    if module._modules or not known:
        return list(module.named_parameters()) + list(module.named_buffers())
    out: list[tuple[str, Any]] = []
    for d in (module._parameters, module._buffers):
        seen: set[int] = set()
        for name, t in d.items():
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                out.append((name, t))
    return out


def _state_dims(gm: fx.GraphModule) -> int:
    """The summed sizes of every dimension of every parameter and buffer (a tensor held twice once),
    from the modules' own dicts in one walk (``parameters()`` and ``buffers()`` walk the tree twice)."""
    tensors: dict[int, torch.Tensor] = {}
    for m in gm.modules():
        for d in (m._parameters, m._buffers):
            for t in d.values():
                if t is not None:
                    tensors[id(t)] = t
    return sum(sum(t.shape) for t in tensors.values())


def _spec_has_tensor(spec: Any) -> bool:
    if isinstance(spec, TensorSpec):
        return True
    if isinstance(spec, (tuple, list)):
        return any(_spec_has_tensor(s) for s in spec)
    return False


def _validate(labels: Any, spec: Any) -> bool:
    if isinstance(spec, TensorSpec):
        if not isinstance(labels, tuple) or len(labels) != len(spec.shape):
            return False
        return all(l is None or (isinstance(l, np.ndarray) and len(l) == s)
                   for l, s in zip(labels, spec.shape))
    if isinstance(spec, (tuple, list)):
        if labels is None:
            return not _spec_has_tensor(spec)
        return (isinstance(labels, tuple) and len(labels) == len(spec)
                and all(_validate(l, s) for l, s in zip(labels, spec)))
    return labels is None


class _Propagator:
    def __init__(self, gm: fx.GraphModule, registry: Registry, strict: bool, split_policy: str,
                 split_overrides: dict[str, str], resolved: dict[str, SplitPolicy] | None = None) -> None:
        self.gm = gm
        self.registry = registry
        self.strict = strict
        self.split_policy = split_policy
        self.split_overrides = split_overrides
        #: ``auto`` nodes already resolved (by an earlier pass); the others try ``heads``
        self.resolved = dict(resolved or {})
        self.heads: list[np.ndarray] = []  # labels the rules declared per-head (ctx.per_head)
        self.atoms = Atoms()
        # nearly every atom is an index of a parameter or buffer dimension: room for them and a
        # quarter more at once (pages never written are never touched)
        dims = _state_dims(gm)
        self.atoms.reserve(dims + dims // 4)
        self.param_labels: dict[str, tuple] = {}
        self.param_specs: dict[str, TensorSpec] = {}
        self.param_nodes: dict[str, str] = {}
        self.roles: dict[tuple[str, int], Role] = {}
        self.barriers: list[Barrier] = []
        self.inert: list[Barrier] = []
        self._by_id: dict[int, str] = {}
        # in-place writes: a node written by a later call reads as that call's result from then on
        self._alias: dict[fx.Node, fx.Node] = {}
        self.written: set[str] = set()  # nodes with a tensor output that write an argument in place
        self.calls: dict[str, tuple] = {}  # node -> (args, kwargs, inputs) as its rule saw them
        self.sums: dict[str, list] = {}    # node -> the parameter-free sums its rule declared
        self.splits: list[SplitChoice] = []  # where a split policy chose
        self._matches: dict[Any, Any] = {}  # registry key -> its match (see match)
        self._plain: dict[type, bool] = {}  # module class -> whether it keeps nn.Module's state readers

    # -- parameters -------------------------------------------------------
    def param_value(self, qualname: str, tensor: torch.Tensor, node: fx.Node) -> Value:
        if qualname not in self.param_labels:
            self._label_params([(qualname, tensor)], node)
        return Value(self.param_specs[qualname], self.param_labels[qualname], node, qualname)

    def _label_params(self, named: list[tuple[str, torch.Tensor]], node: fx.Node) -> None:
        """Labels for parameters seen for the first time: fresh atoms per dimension, or the labels of
        the same tensor under another name (tied weights).

        The atoms of all of them are allocated at once (one call per module, not per
        dimension), in the order a call per dimension would allocate them.
        """
        shapes: list[tuple[str, tuple[int, ...]]] = []
        ties: list[tuple[str, str]] = []
        for qualname, tensor in named:
            if qualname in self.param_specs:
                continue
            shape = tuple(int(s) for s in tensor.shape)
            tied = self._by_id.setdefault(id(tensor), qualname)
            if tied != qualname:  # the same tensor under another name (tied weights)
                ties.append((qualname, tied))
            else:
                shapes.append((qualname, shape))
            self.param_specs[qualname] = TensorSpec(shape, tensor.dtype)
            self.param_nodes[qualname] = node.name
        total = sum(sum(shape) for _, shape in shapes)
        ids, at = self.atoms.fresh(total) if shapes else None, 0
        for qualname, shape in shapes:
            ends = np.cumsum((at,) + shape).tolist()
            self.param_labels[qualname] = tuple(ids[a:b] for a, b in zip(ends[:-1], ends[1:]))
            at = ends[-1]
        for qualname, tied in ties:
            self.param_labels[qualname] = self.param_labels[tied]

    def module_params(self, node: fx.Node, module: torch.nn.Module) -> dict[str, Value | None]:
        """Every parameter and buffer the called module holds, its submodules' included
        (``out_proj.weight`` of a ``nn.MultiheadAttention``), by name relative to the module."""
        prefix = str(node.target)
        named = [(name, t) for name, t in _named_state(module, self._plain)
                 if t is not None and (t.is_floating_point() or t.ndim != 0)]
        if not named:  # most parameter-free modules (activations, pooling)
            return {}
        self._label_params([(f"{prefix}.{name}", t) for name, t in named], node)
        specs, labels = self.param_specs, self.param_labels
        out: dict[str, Value | None] = {}
        for name, _ in named:
            qualname = f"{prefix}.{name}"
            out[name] = Value(specs[qualname], labels[qualname], node, qualname)
        return out

    # -- values ------------------------------------------------------------
    def value_of(self, n: fx.Node) -> Value:
        param = str(n.target) if n.op == "get_attr" and str(n.target) in self.param_labels else None
        src = self._alias.get(n, n)
        return Value(src.meta.get(ir.SPEC), src.meta.get(ir.CHANNELS), src, param)

    def match(self, key: Any) -> Any:
        """``registry.match(key)``, once per key and pass (the registry does not change during a pass)."""
        try:
            return self._matches[key]
        except KeyError:
            hit = self._matches[key] = self.registry.match(key)
            return hit
        except TypeError:  # an unhashable target
            return self.registry.match(key)

    # -- barriers ----------------------------------------------------------
    def barrier(self, node: fx.Node, reason: str, hint: str, values: Iterable[Any]) -> None:
        """Fix every channel ``values`` carry; a node touching none is counted in ``inert`` instead."""
        op = self.describe(node)
        why = f"node '{node.name}' ({op}): {reason}"
        arrays = [arr for v in values for arr in iter_label_arrays(v.labels if isinstance(v, Value) else None)]
        for arr in arrays:
            self.atoms.fix(arr, why)
        node.meta[ir.CHANNELS] = fixed_labels(node.meta.get(ir.SPEC))
        node.meta[ir.RULE] = None
        node.meta[ir.BARRIER] = reason
        (self.barriers if arrays else self.inert).append(Barrier(node.name, op, reason, hint))

    def describe(self, node: fx.Node) -> str:
        return describe_key(node_key(node, self.gm))

    # -- the pass --------------------------------------------------------------
    def run(self) -> None:
        for node in self.gm.graph.nodes:
            spec = node.meta.get(ir.SPEC)
            if node.op == "placeholder":
                node.meta[ir.CHANNELS] = fixed_labels(spec)
            elif node.op == "get_attr":
                attr = get_attr(self.gm, str(node.target))
                if isinstance(attr, torch.Tensor):
                    node.meta[ir.CHANNELS] = self.param_value(str(node.target), attr, node).labels
                else:
                    node.meta[ir.CHANNELS] = None
            elif node.op == "output":
                for v in self._wrapped(node)[2]:
                    for arr in iter_label_arrays(v.labels):
                        self.atoms.fix(arr, "model output (output shapes never change)")
            else:
                module = submodule(self.gm, str(node.target)) if node.op == "call_module" else None
                self.call(node, spec, module)
                if _spec_has_tensor(spec):
                    writes = mutated_args(node, self.gm, module)
                    if writes:
                        self.written.add(node.name)
                    for written in writes:
                        self._alias[written] = node

    def _wrapped(self, node: fx.Node) -> tuple[Any, dict, list[Value]]:
        """``(args, kwargs, inputs)``: the node's arguments with every node wrapped as a :class:`Value`,
        and those values in order (positional first), in one walk of each."""
        inputs: list[Value] = []
        value_of = self.value_of

        def wrap(a: Any) -> Any:
            if isinstance(a, fx.Node):
                v = value_of(a)
                inputs.append(v)
                return v
            return a

        args = fx.node.map_aggregate(node.args, wrap)
        kwargs = fx.node.map_aggregate(dict(node.kwargs), wrap) if node.kwargs else {}
        return args, kwargs, inputs

    def call(self, node: fx.Node, spec: Any, module: torch.nn.Module | None) -> None:
        """Run the node's rule (``module``: the module a ``call_module`` node calls)."""
        args, kwargs, inputs = self._wrapped(node)
        params = self.module_params(node, module) if module is not None else {}
        has_tensor_in = any(v.is_tensor or _spec_has_tensor(v.spec) for v in inputs) or bool(params)
        if not has_tensor_in and not _spec_has_tensor(spec):
            node.meta[ir.CHANNELS] = None
            node.meta[ir.RULE] = None
            return
        key = node_key(node, self.gm, module)
        hit = self.match(key)
        everything = inputs + [p for p in params.values() if p is not None]
        if module is not None and getattr(module, "_forward_pre_hooks", None) and hit is not None:
            self.barrier(node, "the module has forward pre-hooks, which run outside the captured graph "
                               "(old-style torch.nn.utils.weight_norm/spectral_norm recompute its weight there)",
                         "use torch.nn.utils.parametrizations.weight_norm/spectral_norm, or remove the hooks "
                         "before pruning", everything)
            return
        if hit is None:
            hint = _registration_hint(key, _shape_preserving(inputs, params, spec))
            kept = node.meta.get(ir.KEPT_CALL)
            if kept:
                keys = f"fxprune.ops.Keys(functions=({describe_key(key)},))"
                hint = (f"if it is stochastic depth (x times a per-sample mask), register it: "
                        f"reg.register(fxprune.ops.STOCHASTIC_DEPTH.with_keys({keys})); otherwise {hint}")
            if self.strict and _carries_channels(everything):
                raise UnsupportedOpError(
                    f"node '{node.name}' calls {describe_key(key)}, which has no channel rule "
                    f"(strict=True). To fix: {hint}. Without strict, its channels become a barrier.")
            reason = "no channel rule for this op"
            if kept:
                reason += f" (capture kept this torch.fx.wrap-ped function as one call: {kept})"
            self.barrier(node, reason, hint, everything)
            return
        rule = hit.rule
        asked = self.split_overrides.get(node.name, self.split_policy)
        policy = self.resolved.get(node.name, SplitPolicy.HEADS) if _is_auto(asked) else asked
        ctx = OpContext(node=node, args=tuple(args), kwargs=dict(kwargs), out=spec, atoms=self.atoms,
                        module=module, params=params, roles=self.roles, split_policy=policy, heads=self.heads)
        self.calls[node.name] = (tuple(args), dict(kwargs), everything)
        try:
            labels = rule.propagate(ctx)
        except Unsupported as exc:
            if self.strict:
                raise UnsupportedOpError(
                    f"node '{node.name}' ({self.describe(node)}): the '{rule.family}' rule cannot "
                    f"map this use exactly: {exc} (strict=True)") from exc
            self.barrier(node, f"{rule.family} rule: {exc}", "", everything)
            return
        except Exception as exc:  # a rule bug must never become a silent wrong result
            if self.strict:
                raise
            self.barrier(node, f"{rule.family} rule failed with {type(exc).__name__}: {exc} "
                               f"(an fxprune bug; please report)", "", everything)
            return
        if not _validate(labels, spec):
            self.barrier(node, f"{rule.family} rule returned labels that do not fit the output "
                               f"(an fxprune bug; please report)", "", everything)
            return
        node.meta[ir.CHANNELS] = labels
        node.meta[ir.RULE] = rule
        if ctx.sums:
            self.sums[node.name] = ctx.sums
        self.splits.extend(SplitChoice(node.name, asked, policy, split) for split in ctx.splits)

    def resolve_auto(self, notes: dict[str, str]) -> dict[str, SplitPolicy]:
        """``heads`` or ``inner`` for every ``auto`` node this pass tried with ``heads`` (not resolved before).

        ``heads`` where the chosen factor reaches a dim declared per-head and is not
        all fixed; ``inner`` otherwise.  Why an attention split falls back to
        ``inner`` (its heads are fixed) goes to ``notes``, by node.
        """
        if not any(_is_auto(c.policy) and c.node not in self.resolved for c in self.splits):
            return {}
        declared = np.concatenate(self.heads) if self.heads else np.zeros(0, dtype=np.int64)
        head_roots = set(self.atoms.find(declared).tolist())
        fixed = self.atoms.fixed_roots()
        out: dict[str, SplitPolicy] = {}
        for choice in self.splits:
            name = choice.node
            if not _is_auto(choice.policy) or name in self.resolved or out.get(name) is SplitPolicy.HEADS:
                continue
            roots = self.atoms.find(choice.split.labels).tolist()
            reaches = any(r in head_roots for r in roots)
            if reaches and not all(r in fixed for r in roots):
                out[name] = SplitPolicy.HEADS
                notes.pop(name, None)
                continue
            out[name] = SplitPolicy.INNER
            if reaches and choice.split.dim is not None:
                factors = choice.split.factors
                notes[name] = (f"split_policy='auto': node '{name}' splits {int(np.prod(factors))} channels into "
                               f"{tuple(factors)} for attention, but its heads (the factor of size "
                               f"{factors[choice.split.axis]}) are all fixed ({fixed[roots[0]]}): it prunes the "
                               f"inner factor (head_dim) instead")
        return out

    def split_notes(self) -> tuple[str, ...]:
        """Notes on splits whose chosen factor ended up entirely fixed: the policy kept the whole split."""
        fixed = self.atoms.fixed_roots()
        notes = []
        for choice in self.splits:
            split = choice.split
            if split.dim is None:  # a merge: its fixed dims are listed with the groups' fixed reasons
                continue
            roots = self.atoms.find(split.labels)
            if not all(int(r) in fixed for r in roots):
                continue
            factors, axis, varying = split.factors, split.axis, split.varying
            total = int(np.prod(factors))
            note = (f"split_policy={_shown(choice)}: node '{choice.node}' splits {total} channels into "
                    f"{tuple(factors)} and prunes the factor of size {factors[axis]}, whose channels are all fixed "
                    f"({fixed[int(roots[0])]}): none of these {total} channels is pruned")
            if len(varying) >= 3 and axis == varying[0]:
                note += ("; split_policy='heads' prunes whole heads instead (past a leading q/k/v factor)")
            notes.append(note)
        return tuple(dict.fromkeys(notes))

    def fix_orphans(self) -> None:
        """Fix the atoms of parameter dims that no activation carries (a parameter read by no op)."""
        distinct: dict[int, np.ndarray] = {}  # ops passing labels through share one array: find it once
        for node in self.gm.graph.nodes:
            if node.op in ("get_attr",):
                continue
            for lab in iter_label_arrays(node.meta.get(ir.CHANNELS)):
                distinct.setdefault(id(lab), lab)
        # every root once (fixing below changes flags, not roots); the live roots and each parameter
        # dim's dead atoms in a few numpy calls over all arrays at once, not a few per array
        roots = self.atoms.roots()
        live = np.zeros(len(self.atoms), dtype=bool)
        if distinct:
            live[roots[np.concatenate(list(distinct.values()))]] = True
        dims = [(name, d, lab) for name, labels in self.param_labels.items() for d, lab in enumerate(labels)]
        if not dims:
            return
        dead = np.flatnonzero(~live[roots[np.concatenate([lab for _, _, lab in dims])]])
        if not dead.size:
            return
        starts = np.cumsum([0] + [len(lab) for _, _, lab in dims])
        for k in sorted_unique(np.searchsorted(starts, dead, side="right") - 1).tolist():  # dims with a dead atom
            name, d, lab = dims[k]
            here = dead[(dead >= starts[k]) & (dead < starts[k + 1])] - starts[k]
            self.atoms.fix(lab[here], f"parameter '{name}' dim {d} is not a channel of any activation")


def _is_auto(policy: Any) -> bool:
    return isinstance(policy, str) and policy == SplitPolicy.AUTO


def _shown(choice: SplitChoice) -> str:
    """The policy as a note shows it: ``'heads'``, or ``'auto' (here 'inner')``."""
    asked = getattr(choice.policy, "value", choice.policy)
    if _is_auto(asked):
        return f"'auto' (here {getattr(choice.resolved, 'value', choice.resolved)!r})"
    return repr(asked)


def _carries_channels(values: Iterable[Any]) -> bool:
    """Whether any value carries a channel (a labelled dimension)."""
    return any(True for v in values for _ in iter_label_arrays(v.labels if isinstance(v, Value) else None))


def _keys_expr(key: Any) -> str:
    """The ``fxprune.ops.Keys(...)`` expression naming ``key``, as valid Python."""
    if isinstance(key, Method):
        return f"fxprune.ops.Keys(methods=({key.name!r},))"
    packet = getattr(key, "overloadpacket", key)
    if isinstance(packet, torch._ops.OpOverloadPacket):
        ns, _, name = packet._qualified_op_name.partition("::")
        if ns == "aten":
            return f"fxprune.ops.Keys(aten=({name!r},))"
    space = "modules" if isinstance(key, type) else "functions"
    return f"fxprune.ops.Keys({space}=({describe_key(key)},))"


def _registration_hint(key: Any, shape_preserving: bool = False) -> str:
    """How to give ``key`` a rule, as Python that runs; ``UNARY`` is offered only where it could fit:
    one tensor in, the same shape out, no parameters (and then only if the op is elementwise)."""
    keys = _keys_expr(key)
    hint = (f"write a Rule for it and register it: reg = fxprune.ops.default_registry(); "
            f"reg.register(fxprune.ops.Rule('my_op', propagate, keys={keys})); then pass registry=reg "
            f"(see docs/rules.md)")
    if shape_preserving:
        hint += (f"; if every output element reads only the input element at its own index (an activation), "
                 f"reg.register(fxprune.ops.UNARY.with_keys({keys})) is that rule")
    return hint


def _shape_preserving(inputs: list[Value], params: dict[str, Any], spec: Any) -> bool:
    """One tensor input, no parameters, an output of the same shape: the only calls UNARY can fit."""
    tensors = [v for v in inputs if v.is_tensor]
    return (not params and len(tensors) == 1 and isinstance(spec, TensorSpec)
            and tuple(tensors[0].shape) == tuple(spec.shape))


def propagate_channels(
    gm: fx.GraphModule,
    registry: Registry,
    *,
    strict: bool = False,
    split_policy: str = "auto",
    split_overrides: dict[str, str] | None = None,
) -> ChannelState:
    """Run the channel rules over a shape-annotated GraphModule.

    Requires :data:`fxprune.ir.SPEC` on every node (see
    :func:`fxprune.analysis.shapes.propagate_shapes`).
    """
    if split_policy not in POLICIES:
        raise ConfigError(f"split_policy must be one of {list(POLICIES)}, got {split_policy!r}")
    node_names = {n.name for n in gm.graph.nodes}
    for name, policy in (split_overrides or {}).items():
        if name not in node_names:
            close = difflib.get_close_matches(name, sorted(node_names), n=5)
            raise ConfigError(f"split_overrides names node {name!r}, which is not in the graph"
                              + (f"; did you mean {close}?" if close else ""))
        if policy not in POLICIES and not (isinstance(policy, int) and not isinstance(policy, bool)):
            raise ConfigError(f"split_overrides[{name!r}] must be one of {list(POLICIES)} or an int "
                              f"(which varying factor is pruned), got {policy!r}")
    resolved: dict[str, SplitPolicy] = {}
    auto_notes: dict[str, str] = {}
    while True:
        prop = _Propagator(gm, registry, strict, split_policy, dict(split_overrides or {}), resolved)
        prop.run()
        prop.fix_orphans()
        new = prop.resolve_auto(auto_notes)
        resolved.update(new)
        if all(p is SplitPolicy.HEADS for p in new.values()):
            break  # every auto node ran as it is resolved: this pass stands
        _clear_channels(gm)  # some auto nodes resolve to inner: run again with that
    op_mixing = frozenset(prop.atoms.mixing_roots())
    propagate_zeros(gm, prop.atoms, prop.roles, prop.calls, prop.sums, prop.written)
    notes = tuple(auto_notes[n] for n in sorted(auto_notes)) + prop.split_notes()
    return ChannelState(prop.atoms, prop.param_labels, prop.param_specs, prop.param_nodes,
                        prop.roles, prop.barriers, prop.inert, op_mixing, notes, tuple(prop.splits))


def _clear_channels(gm: fx.GraphModule) -> None:
    """Forget what a channel pass wrote on the nodes (before another pass)."""
    for node in gm.graph.nodes:
        for key in (ir.CHANNELS, ir.RULE, ir.BARRIER):
            node.meta.pop(key, None)


def resolve_ignore(state: ChannelState, model_names: Iterable[str], ignore: Iterable[str]) -> None:
    """Fix the channels produced by the ignored layers.

    An entry is a module or parameter name (it covers everything below it), or a
    shell-style pattern over module names (``"layer*.downsample"``,
    ``"*.attn.*"``; :mod:`fnmatch`) that must match at least one module.
    """
    names = list(model_names)
    params = list(state.param_labels)
    for entry in ignore:
        if any(ch in entry for ch in "*?["):
            modules = [n for n in names if fnmatch.fnmatchcase(n, entry)]
            if not modules:
                raise ConfigError(f"ignore pattern {entry!r} matches no module of the model "
                                  f"(module names look like {sorted(names)[1:6]})")
            hits = [p for p in params if any(p.startswith(m + ".") for m in modules)]
        else:
            hits = [p for p in params if p == entry or p.startswith(entry + ".")]
        if not hits:
            if entry in names or any(ch in entry for ch in "*?["):
                continue  # modules without parameters in the graph: nothing to fix
            close = difflib.get_close_matches(entry, names + params, n=5)
            raise ConfigError(
                f"ignore entry {entry!r} is not a module or parameter of the model"
                + (f"; did you mean {close}?" if close else
                   f"; valid names include {sorted(names)[:10]}"))
        for p in hits:
            labels = state.param_labels[p]
            dims = [d for d in range(len(labels))
                    if state.roles.get((p, d)) in (Role.PRODUCER, Role.BIAS, Role.SCALE)]
            for d in dims or range(len(labels)):
                state.atoms.fix(labels[d], f"ignored by the user ({entry})")
