"""Rule soundness: every rule, checked node by node against zero-masking.

In the spirit of JAX's batching-rule tests, :func:`check_rules` runs a model
once for real, then for every node handled by a rule it removes a random set of
the node's channels (any atom the rule's labels mention, except those flagged
as channel-mixing) and compares two computations of that single op:

* **sliced** -- the inputs and the module's parameters sliced to their kept
  indices, the module resized by the rule's ``resize`` and the call's constant
  arguments re-emitted by the rule's ``emit``;
* **masked** -- the unsliced op on inputs whose removed indices are zero, its
  output then sliced to the kept indices the rule claims.

They must agree to float tolerance.  A rule declaring ``zeros=Zeros.KEEP`` is
also held to it: with every input masked, the output's removed indices are
zero.  Nothing here knows any particular op: a
newly registered rule is covered as soon as any model the suite checks uses it,
and users call :func:`check_rules` on their own models and registries.

Example:
    >>> import torch, torch.nn as nn
    >>> from fxprune.testing.soundness import check_rules
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8).eval(), nn.Flatten(), nn.Linear(8 * 4 * 4, 2))
    >>> report = check_rules(model, (torch.randn(2, 3, 6, 6),))
    >>> sorted(report.families)
    ['conv', 'linear', 'norm', 'reshape']
"""
from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.fx as fx

from .. import ir
from ..analysis.analysis import Analysis, analyze
from ..ir import KeepMask, Role, Zeros, iter_label_arrays
from ..modules import get_attr, set_attr
from ..ops.context import EmitContext
from ..ops.registry import node_key

__all__ = ["RuleSoundnessError", "SoundnessReport", "check_rules"]


class RuleSoundnessError(AssertionError):
    """A rule's sliced op differs from the zero-masked op; names the node and the rule."""


@dataclass(frozen=True)
class SoundnessReport:
    """What :func:`check_rules` exercised.

    Attributes:
        families: rule family -> nodes handled by a rule of it.
        keys: registry key -> nodes it matched (the key as registered: the base
            class for an inheriting module, the packet for an ATen overload).
        checked_keys: registry key -> nodes whose rule was actually checked
            (some channel could be removed there).
        rules: ids of the rules used.
        nodes_checked: node checks run (``trials`` per node with channels).
        max_abs_diff: the largest sliced-vs-masked difference seen.
    """

    families: dict[str, int]
    keys: dict[Any, int]
    rules: frozenset[int] = field(default_factory=frozenset)
    nodes_checked: int = 0
    max_abs_diff: float = 0.0
    checked_keys: dict[Any, int] = field(default_factory=dict)


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n.name] = out
        return out


def _labels_of(node: fx.Node) -> Any:
    return node.meta.get(ir.CHANNELS)


def _map_args(args: Any, values: dict[str, Any], fn: Any) -> Any:
    return fx.node.map_aggregate(args, lambda a: fn(a) if isinstance(a, fx.Node) else a)


def _flatten_out(v: Any, labels: Any) -> list[tuple[torch.Tensor, Any]]:
    if isinstance(v, torch.Tensor):
        return [(v, labels)]
    if isinstance(v, (tuple, list)) and isinstance(labels, tuple) and len(labels) == len(v):
        out = []
        for x, l in zip(v, labels):
            out.extend(_flatten_out(x, l))
        return out
    return []


def check_rules(
    model: torch.nn.Module,
    example_inputs: Sequence[Any],
    *,
    trials: int = 2,
    seed: int = 0,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    analysis: Analysis | None = None,
    **analyze_kwargs: Any,
) -> SoundnessReport:
    """Check every rule used by ``model`` against zero-masking (see the module docstring).

    Raises:
        RuleSoundnessError: naming the node, its rule family and the largest difference.
    """
    inputs = tuple(example_inputs)
    if analysis is None:
        analysis = analyze(model, inputs, **analyze_kwargs)
    gm = analysis.graph_module
    rec = _Recorder(gm)
    with torch.no_grad():
        rec.run(*inputs)
    atoms = analysis.state.atoms
    roots = atoms.roots()
    mixing = np.zeros(len(roots), dtype=bool)
    fixed = np.zeros(len(roots), dtype=bool)
    if analysis.state.op_mixing:  # a sum over non-zero dead channels is exact locally (inputs masked)
        mixing[np.fromiter(analysis.state.op_mixing, dtype=np.int64)] = True
    if atoms.fixed_roots():
        fixed[np.fromiter(atoms.fixed_roots(), dtype=np.int64)] = True
    rng = np.random.default_rng(seed)
    families: Counter = Counter()
    keys: Counter = Counter()
    checked_keys: Counter = Counter()
    rule_ids: set[int] = set()
    checked = 0
    worst = 0.0
    for node in gm.graph.nodes:
        rule = node.meta.get(ir.RULE)
        if rule is None or node.op not in ("call_module", "call_function", "call_method"):
            continue
        rule_ids.add(id(rule))
        families[rule.family] += 1
        hit = analysis.registry.match(node_key(node, gm))
        key = hit.key if hit is not None else node_key(node, gm)
        keys[key] += 1
        out_val = rec.values.get(node.name)
        outs = _flatten_out(out_val, _labels_of(node))
        if not outs:
            if _labels_of(node) is None:  # no tensor out: the rule's claim (no channels flow) holds
                checked_keys[key] += 1
            continue
        module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        param_labels = {}
        if module is not None:
            for pname, _ in list(module.named_parameters()) + list(module.named_buffers()):
                q = f"{node.target}.{pname}"
                if q in analysis.state.param_labels:
                    param_labels[pname] = analysis.state.param_labels[q]
        arrays: list[np.ndarray] = []
        fx.node.map_aggregate((node.args, node.kwargs),
                              lambda a: arrays.extend(iter_label_arrays(_labels_of(a)))
                              if isinstance(a, fx.Node) else None)
        arrays.extend(iter_label_arrays(_labels_of(node)))
        for labs in param_labels.values():
            arrays.extend(l for l in labs if l is not None)
        if not arrays:
            continue
        # Candidates exclude fixed atoms (tied to a fixed-size dimension, so slicing
        # them alone would be inconsistent).  Mixing atoms (norm statistics) are not
        # exact by design: where only they remain, shapes are checked, not values.
        candidates = np.unique(roots[np.concatenate(arrays)])
        candidates = candidates[~fixed[candidates]]
        exact = candidates[~mixing[candidates]]
        values_checked = exact.size > 0
        candidates = exact if values_checked else candidates
        if candidates.size == 0:
            continue
        biases = _bias_roots(node, param_labels, analysis, roots)
        for _ in range(trials):
            removed = np.zeros(len(roots), dtype=bool)
            n = int(rng.integers(1, max(2, candidates.size)))
            removed[rng.choice(candidates, size=min(n, candidates.size), replace=False)] = True
            # keep at least one index of every labelled dim
            for lab in arrays:
                if removed[roots[lab]].all():
                    removed[roots[lab[0]]] = False
            diff = _check_node(node, rule, module, param_labels, rec.values, KeepMask(roots, removed),
                               rtol, atol, values_checked, biases)
            worst = max(worst, diff)
            checked += 1
            checked_keys[key] += 1
    return SoundnessReport(dict(families), dict(keys), frozenset(rule_ids), checked, worst, dict(checked_keys))


def _check_node(node: fx.Node, rule: Any, module: torch.nn.Module | None, param_labels: dict,
                values: dict[str, Any], local: KeepMask, rtol: float, atol: float,
                compare_values: bool = True, biases: Sequence[np.ndarray] = ()) -> float:
    def value(n: fx.Node) -> Any:
        return values[n.name]

    sliced_args = _map_args(node.args, values, lambda n: local.slice(value(n), _labels_of(n)))
    sliced_kwargs = _map_args(dict(node.kwargs), values, lambda n: local.slice(value(n), _labels_of(n)))
    masked_args = _map_args(node.args, values, lambda n: local.mask(value(n), _labels_of(n)))
    masked_kwargs = _map_args(dict(node.kwargs), values, lambda n: local.mask(value(n), _labels_of(n)))

    def shape_of(n: fx.Node) -> Any:
        return local.shape(n.meta.get(ir.SPEC), _labels_of(n))

    ectx = EmitContext(node=node, args=sliced_args, kwargs=sliced_kwargs, old_args=node.args,
                       old_kwargs=dict(node.kwargs), new_shape=shape_of, labels_of=_labels_of, kept=local.kept)
    with torch.no_grad():
        if module is not None:
            small = copy.deepcopy(module)
            big = copy.deepcopy(module)
            for pname, labs in param_labels.items():
                t = get_attr(module, pname)
                set_attr(small, pname, _frozen(local.slice(t, labs), t))
                set_attr(big, pname, _frozen(local.mask(t, labs), t))
            if rule.resize is not None:
                ectx.module = small
                rule.resize(small, ectx)
            got = small(*sliced_args, **sliced_kwargs)
            ref = big(*masked_args, **masked_kwargs)
        else:
            target, args, kwargs = (rule.emit(ectx) if rule.emit is not None
                                    else (node.target, sliced_args, sliced_kwargs))
            got = _call("call_method" if isinstance(target, str) else "call_function",
                        target, args, kwargs)
            ref = _call(node.op, node.target, masked_args, masked_kwargs)
    diff = 0.0
    for (g, _), (r, labels) in zip(_flatten_out(got, _labels_of(node)), _flatten_out(ref, _labels_of(node))):
        if compare_values and rule.zeros is Zeros.KEEP and r.is_floating_point():
            _check_keeps_zeros(node, rule, r, labels, local, biases)
        r = local.slice(r, labels)
        if g.shape != r.shape:
            raise RuleSoundnessError(
                f"node '{node.name}' ({rule.family} rule): sliced op gives shape {tuple(g.shape)}, "
                f"the rule claims {tuple(r.shape)}")
        if not compare_values:
            continue
        if g.is_floating_point():
            finite = torch.isfinite(r)
            d = float((g[finite] - r[finite]).abs().max()) if finite.any() else 0.0
            diff = max(diff, d)
            if not torch.allclose(g[finite], r[finite], rtol=rtol, atol=atol):
                raise RuleSoundnessError(
                    f"node '{node.name}' ({rule.family} rule, target "
                    f"{getattr(node.target, '__name__', node.target)}): sliced and zero-masked "
                    f"results differ by {d:.3g}")
        elif not torch.equal(g, r):
            raise RuleSoundnessError(f"node '{node.name}' ({rule.family} rule): integer results differ")
    return diff


def _bias_roots(node: fx.Node, param_labels: dict, analysis: Analysis, roots: np.ndarray) -> list[np.ndarray]:
    """The roots of each additive (role ``bias``) parameter the node reads."""
    held = {f"{node.target}.{p}": labs for p, labs in param_labels.items()}
    fx.node.map_aggregate((node.args, node.kwargs), lambda a: held.setdefault(
        str(a.target), analysis.state.param_labels.get(str(a.target)))
        if isinstance(a, fx.Node) and a.op == "get_attr" else None)
    roles = analysis.state.roles
    return [np.concatenate([roots[lab] for lab in labs if lab is not None] or [np.zeros(0, dtype=np.int64)])
            for name, labs in held.items()
            if labs is not None and any(roles.get((name, d)) is Role.BIAS for d in range(len(labs)))]


def _check_keeps_zeros(node: fx.Node, rule: Any, ref: torch.Tensor, labels: Any, local: KeepMask,
                       biases: Sequence[np.ndarray]) -> None:
    """A rule declaring ``Zeros.KEEP``: with every input masked, the removed indices of each output
    dim are zero (dims along which a bias parameter is broadcast aside, as the zeros pass has it)."""
    for d, lab in enumerate(labels if isinstance(labels, tuple) else ()):
        if lab is None or any(not np.isin(b, local.roots[lab]).any() for b in biases):
            continue
        gone = np.nonzero(~local.kept(lab))[0]
        sub = ref.index_select(d, torch.as_tensor(gone, dtype=torch.long)) if gone.size else None
        if sub is not None and bool((sub != 0).any()):
            raise RuleSoundnessError(
                f"node '{node.name}' ({rule.family} rule, target {getattr(node.target, '__name__', node.target)}): "
                f"declares zeros=KEEP, but removed channels of zero inputs are "
                f"{sub[sub != 0][:4].tolist()} (declare Zeros.PROBE or Zeros.LOSE)")


def _frozen(value: torch.Tensor, like: Any) -> torch.Tensor:
    return torch.nn.Parameter(value, requires_grad=False) if isinstance(like, torch.nn.Parameter) else value


def _call(op: str, target: Any, args: Any, kwargs: Any) -> Any:
    if op == "call_method":
        self_obj, *rest = args
        return getattr(self_obj, target)(*rest, **kwargs)
    return target(*args, **kwargs)
