"""Scores of a sharded model: each rank reads its own shards and batches, sums are all-reduced.

The analysis comes from the meta twin (same parameter names and global
shapes); the numbers come from the sharded model:

* ``l1`` / ``l2``: every rank sums ``|w|`` (``w * w``) of its local piece of
  each scored parameter over every dimension but the member's, in float64
  and in row blocks (so no copy of a whole shard is made), places the sums
  at the piece's global offset (or adds them, when the piece spans the
  member's whole dimension) and one all-reduce adds the ranks' vectors;
* ``activation``: the meta twin's graph runs on each rank's calibration
  batches against the sharded model, one FSDP2 unit unsharded at a time
  (:mod:`.running`), so each recorded value is the one a single process
  computes; the activation scorer's statistics are all-reduced and the
  scores are the scorer's own (``scores_from``);
* ``taylor``: forward and backward run under FSDP2; a hook on each scored
  parameter's *unsharded* tensor (the one FSDP2 all-gathered for this layer)
  sees the rank's own gradient before FSDP2 reduce-scatters it, so
  ``|sum over slice of w * dL_b/dw|`` is taken per batch as on one process;
  sums and batch counts are all-reduced;
* ``random``: from the analysis alone (the same on every rank);
* ``hessian`` is not available: it needs a double backward through the
  model, which FSDP2's backward hooks do not support (a ``ConfigError`` says
  so and names ``taylor`` and ``activation``).

The scores equal a single process's over the union of the ranks' batches up
to float64 rounding (sums are added in another order); every rank gets the
same numbers, since one all-reduce produces them.  A scorer object with a
method ``score_sharded(model, analysis, ctx)`` is called as is
(:class:`ShardedScorer`).

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> from fxprune.scoring import ScoreContext, get_scorer
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> a = fxprune.analyze(model, (torch.randn(1, 3),))
    >>> ours = sharded_scores(model, a, get_scorer("l1"), ScoreContext())  # one process: plain tensors
    >>> bool((ours[0] == get_scorer("l1")(a, ScoreContext())[0]).all())
    True
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np
import torch

from ..analysis.analysis import Analysis
from ..errors import ConfigError
from ..modules import get_attr
from ..scoring import ActivationScorer, HessianScorer, RandomScorer, ScoreContext, TaylorScorer
from ..scoring.activation import collect_activation, read_tensors, statistic_keys
from ..scoring.base import Key, aggregate_members, member_keys, slice_sums
from ..scoring.calibration import Accumulator, iter_batches, model_device, progress
from ..scoring.magnitude import MagnitudeScorer
from .running import kept_buffers, run_recording
from .shards import local_part, named_tensors, synced, world_and_rank

__all__ = ["ShardedScorer", "sharded_scores"]

_BLOCK = 1 << 22  # elements of a shard converted to float64 at a time


@runtime_checkable
class ShardedScorer(Protocol):
    """A scorer of your own for sharded models: called on every rank, returns the same scores on every rank."""

    name: str

    def score_sharded(self, model: torch.nn.Module, analysis: Analysis, ctx: ScoreContext) -> dict[int, np.ndarray]:
        ...


def sharded_scores(model: torch.nn.Module, analysis: Analysis, scorer: Any, ctx: ScoreContext) -> dict[int, np.ndarray]:
    """``{group id: per-channel scores}`` of the sharded ``model``, the same on every rank (module docstring).

    Raises:
        ConfigError: ``hessian``, or a scorer object this module cannot run
            on shards (it names the ones it can).
    """
    if isinstance(scorer, ShardedScorer):
        return scorer.score_sharded(model, analysis, ctx)
    run = _SHARDED.get(type(scorer))
    if run is not None:
        return run(model, analysis, scorer, ctx)
    raise ConfigError(f"fxprune.distributed scores sharded models with 'l1', 'l2', 'activation', 'taylor' and "
                      f"'random', or a scorer object with a score_sharded(model, analysis, ctx) method; got "
                      f"{getattr(scorer, 'name', type(scorer).__name__)!r}")


def _slice_norms(t: torch.Tensor, dim: int, p: int) -> torch.Tensor:
    """float64 ``sum |t|`` (``p=1``) or ``sum t*t`` (``p=2``) over every dim but ``dim``, in row blocks."""
    out = torch.zeros(t.shape[dim], dtype=torch.float64, device=t.device)
    rows = t.shape[0]
    step = max(1, _BLOCK // max(1, t[0].numel() if rows else 1))
    for i in range(0, rows, step):
        block = t[i:i + step].detach().to(torch.float64, copy=True)
        block = block.abs_() if p == 1 else block.mul_(block)
        if dim == 0:
            out[i:i + block.shape[0]] = slice_sums(block, 0)
        else:
            out += slice_sums(block, dim)
    return out


def _magnitude(model: torch.nn.Module, analysis: Analysis, scorer: MagnitudeScorer,
               _ctx: ScoreContext) -> dict[int, np.ndarray]:
    per_group, keys = member_keys(analysis, scorer.roles)
    tensors = named_tensors(model)
    _, rank = world_and_rank()
    acc = Accumulator()
    for name, dim in keys:
        local, layout = local_part(tensors[name])
        vec = torch.zeros(layout.shape[dim], dtype=torch.float64)
        if layout.contributes(rank) and local.numel():
            part = _slice_norms(local, dim, scorer.p).cpu()
            if layout.dim == dim:
                start, stop = layout.range(rank)
                vec[start:stop] = part
            else:
                vec += part
        acc.add((name, dim), vec)
    acc.step()
    acc.reduce()
    return {g.id: aggregate_members(g, {pos: acc.sum(k) for pos, k in per_group[g.id]}, scorer.aggregate)
            for g in analysis.groups}


def _batches(model: torch.nn.Module, ctx: ScoreContext, what: str, need_target: bool = False) -> Iterator[Any]:
    """This rank's calibration batches, in step with the other ranks'."""
    device = model_device(model)
    for batch in synced(progress(iter_batches(ctx.data, ctx.num_batches, need_target=need_target),
                                 desc=what, enabled=ctx.progress), what):
        yield batch if device is None else batch.to(device)


def _activation(model: torch.nn.Module, analysis: Analysis, scorer: ActivationScorer,
                ctx: ScoreContext) -> dict[int, np.ndarray]:
    if ctx.data is None:
        scorer(analysis, ctx)  # raises the scorer's own error naming data=
    plan = {g.id: read_tensors(analysis, g, scorer.point) for g in analysis.groups}
    keys = statistic_keys(plan)
    acc = Accumulator()

    def inputs() -> Iterator[tuple[Any, ...]]:
        for batch in _batches(model, ctx, "activation scores (sharded)"):
            acc.step()
            yield batch.inputs

    run_recording(model, analysis.graph_module, inputs(), {k[0] for k in keys},
                  lambda node, value: collect_activation(acc, keys, node, value))
    _reshard(model)
    acc.reduce()
    return scorer.scores_from(analysis, plan, acc)


def _reshard(model: torch.nn.Module) -> None:
    """Free the parameters FSDP2 keeps unsharded after a forward (the root's, by default)."""
    from torch.distributed.fsdp import FSDPModule

    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


@contextlib.contextmanager
def _grads_set_aside(model: torch.nn.Module) -> Iterator[None]:
    """Gradients the model holds are put back afterwards; scoring's own are dropped."""
    saved = [(p, p.grad) for p in model.parameters()]
    for p, _ in saved:
        p.grad = None
    try:
        yield
    finally:
        for p, g in saved:
            p.grad = g


def _taylor(model: torch.nn.Module, analysis: Analysis, scorer: TaylorScorer,
            ctx: ScoreContext) -> dict[int, np.ndarray]:
    if ctx.data is None or ctx.loss_fn is None:
        scorer(analysis, ctx)  # raises the scorer's own error naming data= / loss_fn=
    per_group, keys = member_keys(analysis, scorer.roles)
    dims: dict[str, list[int]] = {}
    for name, dim in keys:
        dims.setdefault(name, []).append(dim)
    frozen = [n for n in dims if not get_attr(model, n).requires_grad]
    if frozen:
        raise ConfigError(f"the taylor scorer needs gradients of {frozen[:3]}, which do not require grad; "
                          "set requires_grad=True on them for scoring")
    owners: dict[str, list[tuple[str, str]]] = {}
    for name in dims:
        path, _, attr = name.rpartition(".")
        owners.setdefault(path, []).append((name, attr))
    acc = Accumulator()
    stats: dict[Key, torch.Tensor] = {}
    handles: list[Any] = []
    hooked: set[str] = set()

    def on_grad(name: str, param: torch.Tensor) -> Any:
        def hook(grad: torch.Tensor) -> None:
            prod = param.detach() * grad.detach()
            for dim in dims[name]:
                stats[(name, dim)] = stats.get((name, dim), 0) + slice_sums(prod, dim)
        return hook

    def on_forward(path: str) -> Any:
        def pre(module: torch.nn.Module, _args: Any) -> None:
            for name, attr in owners[path]:
                p = getattr(module, attr)
                if name in hooked or not p.requires_grad:
                    continue
                if type(p).__name__ == "DTensor":
                    raise ConfigError(f"'{name}' is still sharded while its module runs: the taylor scorer reads "
                                      "it as FSDP2 unshards it for the module's forward")
                hooked.add(name)
                handles.append(p.register_hook(on_grad(name, p)))
        return pre

    module_hooks = [model.get_submodule(path).register_forward_pre_hook(on_forward(path)) for path in owners]
    try:
        with kept_buffers(model), _grads_set_aside(model):
            for batch in _batches(model, ctx, "taylor scores (sharded)", need_target=True):
                out = model(*batch.inputs)
                loss = ctx.loss_fn(out, batch.target)
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    raise ConfigError("loss_fn must return a scalar tensor")
                loss.reshape(()).backward()
                missing = sorted(set(dims) - hooked)
                if missing:
                    raise ConfigError(f"the modules holding {missing[:3]} did not run their forward, so their "
                                      "gradients cannot be read under FSDP2; use scorer='l1' or 'activation'")
                for key in keys:
                    value = stats.get(key)
                    n = get_attr(analysis.graph_module, key[0]).shape[key[1]]
                    acc.add(key, torch.zeros(n, dtype=torch.float64) if value is None else value.abs().cpu(), count=1)
                acc.step()
                stats.clear()
                hooked.clear()
                for h in handles:
                    h.remove()
                handles.clear()
                for p in model.parameters():
                    p.grad = None
    finally:
        for h in handles + module_hooks:
            h.remove()
    _reshard(model)
    acc.reduce()
    return {g.id: aggregate_members(g, {pos: acc.mean(k) for pos, k in per_group[g.id]}, scorer.aggregate)
            for g in analysis.groups}


def _random(_model: torch.nn.Module, analysis: Analysis, scorer: RandomScorer, ctx: ScoreContext) -> dict[int, np.ndarray]:
    return scorer(analysis, ctx)  # from the analysis alone: the same on every rank


def _hessian(*_: Any) -> dict[int, np.ndarray]:
    raise ConfigError("the hessian scorer needs a double backward through the model, which FSDP2's backward "
                      "hooks do not support; on a sharded model use scorer='taylor' (first order, with "
                      "gradients) or 'activation', or prune the gathered model on one process with fxprune.prune")


#: how each built-in scorer runs on a sharded model (looked up by the scorer's exact type)
_SHARDED: dict[type, Any] = {MagnitudeScorer: _magnitude, RandomScorer: _random, ActivationScorer: _activation,
                             TaylorScorer: _taylor, HessianScorer: _hessian}
