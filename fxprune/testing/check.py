"""The invariant checker: hold any model's pruning to fxprune's four promises.

:func:`check_pruning` analyses a model and checks, raising
:class:`InvariantError` with a readable message on the first failure:

1. **identity** -- the empty plan (ratio 0) gives bit-identical outputs;
2. **dead channels** -- for random plans over every group without channel-mixing
   normalisation, the pruned model equals the original with the removed
   channels masked out (producer rows, biases and consumer columns zeroed), to
   float tolerance;
3. **shapes** -- output shapes never change, for random plans over *all* groups;
4. **re-trace** -- the pruned module re-traces with ``symbolic_trace`` and its
   graph lints;

and that the input model is bit-identical afterwards.

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
from ..api import apply, prune
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


def _outputs(module: torch.nn.Module, inputs: Sequence[Any]) -> list[torch.Tensor]:
    with torch.no_grad():
        out = module(*inputs)
    flat: list[torch.Tensor] = []
    fx.node.map_aggregate(out, lambda v: flat.append(v) if isinstance(v, torch.Tensor) else None)
    return flat


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
    example_inputs: Sequence[Any],
    *,
    ratio: float = 0.5,
    plans: int = 3,
    seed: int = 0,
    rtol: float = 1e-4,
    atol: float = 1e-4,
    **analyze_kwargs: Any,
) -> CheckSummary:
    """Check the four invariants of fxprune on ``model`` (see the module docstring).

    Args:
        model: any traceable model (put it in eval mode for deterministic BatchNorm).
        example_inputs: a tuple of positional inputs.
        ratio: the ratio of the scorer-driven plan that is also checked.
        plans: how many random plans to check.
        seed: seed of the random plans.
        rtol, atol: tolerance of the dead-channel comparison (float32 sums of a few hundred
            terms reorder differently once channels are gone: differences of 1e-5 are noise,
            an indexing bug shows as differences of the order of the activations).
        analyze_kwargs: passed to :func:`fxprune.analyze`.

    Raises:
        InvariantError: naming the invariant, the group, the member and the largest difference.
    """
    inputs = tuple(example_inputs)
    snap = _snapshot(model)
    analysis = analyze(model, inputs, **analyze_kwargs)
    reference = _outputs(model, inputs)
    rng = np.random.default_rng(seed)

    # 1. identity
    gm0 = apply(analysis, {})
    got = _outputs(gm0, inputs)
    if len(got) != len(reference) or not all(torch.equal(a, b) for a, b in zip(got, reference)):
        _fail("identity: pruning nothing changed the outputs", analysis)

    max_diff = 0.0
    checked = set()
    all_plans: list[tuple[dict[int, list[int]], bool]] = []
    for i in range(plans):
        all_plans.append((random_plan(analysis, rng, include_mixing=False), True))
        all_plans.append((random_plan(analysis, rng, include_mixing=True), False))
    for plan, exact in all_plans:
        try:
            pruned = apply(analysis, plan)
        except FxPruneError as exc:
            _fail(f"rewrite failed: {exc}", analysis, plan)
        out = _outputs(pruned, inputs)
        # 3. shapes
        for a, b in zip(out, reference):
            if a.shape != b.shape:
                _fail(f"shapes: output shape {tuple(a.shape)} != original {tuple(b.shape)}", analysis, plan)
        # 2. dead channels
        if exact:
            masked = _outputs(mask_original(analysis, plan), inputs)
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
            if analysis.config.frontend == "export":
                re = torch.export.export(pruned, inputs).module()
            else:
                re = fx.symbolic_trace(pruned)
            re.graph.lint()
        except Exception as exc:  # noqa: BLE001
            _fail(f"re-trace: the pruned module does not re-trace: {exc}", analysis, plan)
    # the scorer's plan at `ratio`
    result = prune(model, inputs, ratio=ratio, analysis=analysis)
    for a, b in zip(_outputs(result.graph_module, inputs), reference):
        if a.shape != b.shape:
            _fail("shapes: scorer plan changed an output shape", analysis, result.plan)
    problem = _unchanged(model, snap)
    if problem:
        raise InvariantError(f"input model mutated: {problem}")
    return CheckSummary(len(analysis.groups), len(checked),
                        sum(1 for g in analysis.groups if g.mixing), len(analysis.barriers),
                        len(all_plans) + 1, max_diff)


def _worst_group(analysis: Analysis, plan: Mapping[int, Sequence[int]], inputs: Sequence[Any],
                 rtol: float, atol: float) -> str:
    """Find one group whose plan alone breaks equality (for the message)."""
    for gid, chans in plan.items():
        sub = {gid: chans}
        try:
            a = _outputs(apply(analysis, sub), inputs)
        except FxPruneError as exc:
            return f"; group {gid} alone fails to rewrite: {exc}"
        b = _outputs(mask_original(analysis, sub), inputs)
        if not all(torch.allclose(x, y, rtol=rtol, atol=atol) for x, y in zip(a, b)
                   if x.dtype.is_floating_point):
            g = analysis.groups[gid]
            return (f"; group {gid} alone breaks it (members: "
                    + ", ".join(f"{m.role} {m.param}[{m.dim}]" for m in g.members) + ")")
    return ""
