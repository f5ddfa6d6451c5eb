"""The invariant checker: hold any model's pruning to fxprune's promises.

:func:`check_pruning` analyses a float64 copy of a model (the model itself is
never run) and checks, raising :class:`InvariantError` with a readable message
on the first failure:

1. **identity** -- the empty plan gives bit-identical outputs and the same
   parameter count, in the model's mode and in the other one (the emitted
   module follows its own ``train()``/``eval()``; skipped where capture
   reported a frozen branch on ``self.training``);
2. **dead channels** -- for random plans over every group without channel-mixing
   normalisation, the pruned model equals the original with the removed
   channels masked out (producer rows, biases and consumer columns zeroed), to
   float tolerance, in eval mode;
3. **shapes** -- output shapes never change, for random plans over *all* groups;
4. **re-trace** -- the pruned module re-traces with ``symbolic_trace`` and its
   graph lints;
5. **ties** -- tied parameters stay one tensor under every plan;

and that the input model is bit-identical afterwards.  Every run is on a fresh
copy from the same state and random seed, so models that update buffers in
``forward`` (BatchNorm in train mode, counters) and train-mode dropout compare
like for like.

Example:
    >>> import torch, torch.nn as nn
    >>> from fxprune.testing import check_pruning
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    >>> summary = check_pruning(model, (torch.randn(2, 3, 8, 8),), ratio=0.5)
    >>> summary.groups_checked
    1
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx

from ..analysis.analysis import Analysis, analyze
from ..analysis.capture import bind_example_inputs
from ..analysis.tracer import trace_module
from ..api import apply, prune
from .. import ir
from ..errors import FxPruneError
from ..ir import Role
from ..modules import get_attr

__all__ = ["InvariantError", "CheckSummary", "check_pruning", "mask_original", "random_plan"]


class InvariantError(AssertionError):
    """An fxprune invariant does not hold; the message names group, member and difference."""


@dataclass(frozen=True)
class CheckSummary:
    """What :func:`check_pruning` verified."""

    groups: int
    groups_checked: int
    mixing_groups: int
    barriers: int
    plans: int
    max_abs_diff: float


def _outputs(module: torch.nn.Module, inputs: Sequence[Any], *, training: bool | None = None,
             seed: int = 0) -> list[torch.Tensor]:
    """The flat tensor outputs of a run on a copy of ``module`` (its buffers and mode untouched).

    Every run starts from the same state and the same random seed, so modules
    that update buffers in ``forward`` and train-mode dropout compare like for like.
    """
    module = copy.deepcopy(module)
    inputs = copy.deepcopy(tuple(inputs))  # a model may write its inputs in place
    if training is not None:
        for m in module.modules():  # not .train(): exported GraphModules refuse it
            m.training = training
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = module(*inputs)
    flat: list[torch.Tensor] = []
    fx.node.map_aggregate(out, lambda v: flat.append(v) if isinstance(v, torch.Tensor) else None)
    return flat


def _ties(module: torch.nn.Module) -> set[frozenset[str]]:
    """The parameter names that share one tensor (tied weights), as sets of two or more."""
    by_id: dict[int, set[str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), set()).add(name)
    return {frozenset(names) for names in by_id.values() if len(names) > 1}


def _in_dtype(value: Any, dtype: torch.dtype) -> Any:
    """Floating tensors of a (nested) value converted to ``dtype``."""
    return fx.node.map_aggregate(
        value, lambda v: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)


def _snapshot(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], str, bool]:
    state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    return state, repr(model), model.training


def _unchanged(model: torch.nn.Module, snap: tuple[dict[str, torch.Tensor], str, bool]) -> str | None:
    state, structure, training = snap
    now = model.state_dict(keep_vars=True)
    if set(now) != set(state):
        return f"state_dict keys changed: {sorted(set(now) ^ set(state))[:5]}"
    for k, v in state.items():
        w = now[k]
        if w.shape != v.shape or w.dtype != v.dtype or not torch.equal(w.detach(), v):
            return f"tensor {k!r} changed"
    if repr(model) != structure:
        return "module structure changed"
    if model.training != training:
        return "training flag changed"
    return None


def random_plan(analysis: Analysis, rng: np.random.Generator, *, include_mixing: bool,
                max_fraction: float = 0.75) -> dict[int, list[int]]:
    """A random plan removing up to ``max_fraction`` of each group's prunable channels."""
    plan: dict[int, list[int]] = {}
    for g in analysis.groups:
        if g.mixing and not include_mixing:
            continue
        prunable = list(g.prunable)
        limit = min(len(prunable), g.size - 1, int(np.ceil(max_fraction * len(prunable))))
        if limit <= 0:
            continue
        n = int(rng.integers(0, limit + 1))
        if not n:
            continue
        chosen = g.take(rng.permutation(prunable).tolist(), n)
        if chosen:
            plan[g.id] = sorted(chosen)
    return plan


def mask_original(analysis: Analysis, plan: Mapping[int, Sequence[int]]) -> fx.GraphModule:
    """A copy of the traced original with the plan's channels masked out.

    Every member slice of a removed channel is zeroed except multiplicative
    ``scale`` members, so the channel is zero wherever it is produced and
    ignored wherever it is read.
    """
    masked = copy.deepcopy(analysis.graph_module)
    by_id = {g.id: g for g in analysis.groups}
    with torch.no_grad():
        for gid, chans in plan.items():
            g = by_id[gid]
            for m in g.members:
                if m.role is Role.SCALE:
                    continue
                idx = m.indices(chans)
                if len(idx):
                    t = get_attr(masked, m.param)
                    t.index_fill_(m.dim, torch.as_tensor(idx, dtype=torch.long), 0.0)
    return masked


def _fail(msg: str, analysis: Analysis, plan: Mapping[int, Sequence[int]] | None = None) -> None:
    lines = [msg]
    if plan:
        for gid in list(plan)[:6]:
            g = analysis.groups[gid]
            lines.append(f"  group {gid} removes {list(plan[gid])[:8]} of {g.size}: "
                         + ", ".join(f"{m.param}[{m.dim}]" for m in g.members[:6]))
    raise InvariantError("\n".join(lines))


def check_pruning(
    model: torch.nn.Module,
    example_inputs: Sequence[Any] | None = (),
    *,
    example_kwargs: Mapping[str, Any] | None = None,
    ratio: float = 0.5,
    plans: int = 3,
    seed: int = 0,
    rtol: float | None = None,
    atol: float | None = None,
    dtype: torch.dtype | None = torch.float64,
    **analyze_kwargs: Any,
) -> CheckSummary:
    """Check the invariants of fxprune on ``model`` (see the module docstring).

    Args:
        model: any traceable model, in either mode; it is never run nor modified: the
            checks run on a copy (``dtype``), every run on a fresh copy from the same
            state and random seed.
        example_inputs: a tuple of positional inputs.
        example_kwargs: keyword inputs (``input_ids=...``), placed at their positions in
            ``model.forward`` (:func:`~fxprune.analysis.capture.bind_example_inputs`).
        ratio: the ratio of the scorer-driven plan that is also checked.
        plans: how many random plans to check.
        seed: seed of the random plans and of every run.
        rtol, atol: tolerance of the dead-channel comparison; default ``1e-6`` in float64,
            ``1e-4`` in float32 (float32 sums of a few hundred terms reorder differently once
            channels are gone, and activations of 1e10 make that noise reach 1; an indexing
            bug shows as differences of the order of the activations).
        dtype: the floating dtype of the copy the checks run on (``float64`` by default;
            ``None`` keeps the model's own, e.g. for float32 noise studies).
        analyze_kwargs: passed to :func:`fxprune.analyze`.

    Raises:
        InvariantError: naming the invariant, the group, the member and the largest difference.
    """
    precise = dtype == torch.float64
    rtol = rtol if rtol is not None else (1e-6 if precise else 1e-4)
    atol = atol if atol is not None else (1e-6 if precise else 1e-4)
    snap = _snapshot(model)
    work = copy.deepcopy(model)
    inputs = bind_example_inputs(model, example_inputs, example_kwargs)
    if dtype is not None:
        work, inputs = work.to(dtype), _in_dtype(inputs, dtype)
    analysis = analyze(work, inputs, **analyze_kwargs)
    mode = bool(work.training)
    reference = _outputs(work, inputs, seed=seed)
    eval_reference = _outputs(work, inputs, training=False, seed=seed)
    rng = np.random.default_rng(seed)

    # 1. identity, in the model's mode and (unless capture froze a branch on the mode) in the other
    gm0 = apply(analysis, {})
    got = _outputs(gm0, inputs, seed=seed)
    if len(got) != len(reference) or not all(torch.equal(a, b) for a, b in zip(got, reference)):
        _fail("identity: pruning nothing changed the outputs", analysis)
    if sum(p.numel() for p in gm0.parameters()) != sum(p.numel() for p in work.parameters()):
        _fail("identity: pruning nothing changed the parameter count (tied weights untied?)", analysis)
    if not analysis.graph_module.meta.get(ir.MODE_BRANCHES):
        _check_other_mode(work, gm0, inputs, not mode, seed, analysis)

    max_diff = 0.0
    checked = set()
    all_plans: list[tuple[dict[int, list[int]], bool]] = []
    for i in range(plans):
        all_plans.append((random_plan(analysis, rng, include_mixing=False), True))
        all_plans.append((random_plan(analysis, rng, include_mixing=True), False))
    ties = _ties(work)
    for plan, exact in all_plans:
        try:
            pruned = apply(analysis, plan)
        except FxPruneError as exc:
            _fail(f"rewrite failed: {exc}", analysis, plan)
        # 5. ties
        kept, names = _ties(pruned), {n for n, _ in pruned.named_parameters(remove_duplicate=False)}
        lost = [sorted(common) for t in ties
                if len(common := t & names) > 1 and not any(common <= k for k in kept)]
        if lost:
            _fail(f"ties: tied parameters {lost[0]} are no longer one tensor", analysis, plan)
        out = _outputs(pruned, inputs, training=False, seed=seed)
        # 3. shapes
        for a, b in zip(out, eval_reference):
            if a.shape != b.shape:
                _fail(f"shapes: output shape {tuple(a.shape)} != original {tuple(b.shape)}", analysis, plan)
        # 2. dead channels (in eval mode: train-mode dropout draws differ once tensors shrink)
        if exact:
            masked = _outputs(mask_original(analysis, plan), inputs, training=False, seed=seed)
            for k, (a, b) in enumerate(zip(out, masked)):
                if a.dtype.is_floating_point:
                    diff = (a - b).abs().max().item() if a.numel() else 0.0
                    max_diff = max(max_diff, diff)
                    if not torch.allclose(a, b, rtol=rtol, atol=atol):
                        worst = _worst_group(analysis, plan, inputs, rtol, atol)
                        _fail(f"dead channels: output {k} differs from the masked original by "
                              f"{diff:.3g}{worst}", analysis, plan)
                elif not torch.equal(a, b):
                    _fail(f"dead channels: integer output {k} differs", analysis, plan)
            checked.update(plan)
        # 4. re-capture (with the analysis' front end) and lint
        try:
            if analysis.frontend == "export":
                re = torch.export.export(copy.deepcopy(pruned), inputs).module()
            else:  # fxprune's tracer: buffers are graph values (x = buffer[:, :n] with a traced n)
                re = trace_module(copy.deepcopy(pruned))
            re.graph.lint()
        except Exception as exc:  # noqa: BLE001
            _fail(f"re-trace: the pruned module does not re-trace: {exc}", analysis, plan)
    # the scorer's plan at `ratio`
    result = prune(work, inputs, ratio=ratio, analysis=analysis)
    for a, b in zip(_outputs(result.graph_module, inputs, seed=seed), reference):
        if a.shape != b.shape:
            _fail("shapes: scorer plan changed an output shape", analysis, result.plan)
    problem = _unchanged(model, snap)
    if problem:
        raise InvariantError(f"input model mutated: {problem}")
    return CheckSummary(len(analysis.groups), len(checked),
                        sum(1 for g in analysis.groups if g.mixing), len(analysis.barriers),
                        len(all_plans) + 1, max_diff)


def _check_other_mode(work: torch.nn.Module, gm0: torch.nn.Module, inputs: Sequence[Any], training: bool,
                      seed: int, analysis: Analysis) -> None:
    """The emitted module follows its own ``train()``/``eval()`` like the original (empty plan)."""
    try:
        want = _outputs(work, inputs, training=training, seed=seed)
    except Exception:  # noqa: BLE001 - the original does not run in that mode (BatchNorm on one value)
        return
    got = _outputs(gm0, inputs, training=training, seed=seed)
    if len(got) != len(want) or not all(torch.equal(a, b) for a, b in zip(got, want)):
        _fail(f"identity: in {'train' if training else 'eval'} mode the emitted module differs from the "
              "original (its train/eval behaviour is frozen)", analysis)


def _worst_group(analysis: Analysis, plan: Mapping[int, Sequence[int]], inputs: Sequence[Any],
                 rtol: float, atol: float) -> str:
    """Find one group whose plan alone breaks equality (for the message)."""
    for gid, chans in plan.items():
        sub = {gid: chans}
        try:
            a = _outputs(apply(analysis, sub), inputs, training=False)
        except FxPruneError as exc:
            return f"; group {gid} alone fails to rewrite: {exc}"
        b = _outputs(mask_original(analysis, sub), inputs, training=False)
        if not all(torch.allclose(x, y, rtol=rtol, atol=atol) for x, y in zip(a, b)
                   if x.dtype.is_floating_point):
            g = analysis.groups[gid]
            return (f"; group {gid} alone breaks it (members: "
                    + ", ".join(f"{m.role} {m.param}[{m.dim}]" for m in g.members) + ")")
    return ""
