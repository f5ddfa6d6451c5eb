"""HAP Hessian-aware scorer: Hutchinson traces of per-channel diagonal Hessian blocks.

For the parameters of the chosen members (producers by default) and every
calibration batch::

    g  = grad(loss_fn(gm(*inputs), target), params, create_graph=True)
    for each of n_probes Rademacher probes v (+-1, shaped like the params):
        Hv  = grad(g, params, grad_outputs=v)           # Hessian-vector product
        t_i += <Hv[slice i], v[slice i]>               # slice i along the member's dim
    trace_i(batch) = t_i / n_probes

``trace_i`` is the mean of ``trace_i(batch)`` over the calibration batches
(each batch counts once; with a mean-reduced loss and equal batch sizes this is
the trace for the loss of the whole calibration set), and the score of index
``i`` is HAP's ``trace_i * ||W_i||^2 / numel(W_i)``.  Index scores are folded
into group channels by :func:`~fxprune.scoring.base.aggregate_members` (sum
over a channel's indices, then ``aggregate`` over members).

``E[<Hv[slice i], v[slice i]>] = trace(H_ii)`` exactly (Rademacher probes),
whichever parameters the probe covers; the variance falls as ``1/n_probes``.
Traces can be negative where the loss is not locally convex; scores keep their
sign (lower = pruned first).

Reading of the paper: the default ``n_probes=3`` is HAP's; the estimate is
averaged over all given calibration batches (HAP: "batched over the
calibration set").  The model is evaluated in the mode it is in (``train()``
or ``eval()``; BatchNorm in train mode uses batch statistics, on private copies
of the running buffers); the mode is never changed, so the training flag is
what it was.  Gradients are taken with :func:`torch.autograd.grad` with
respect to private leaves sharing the parameters' storage: no parameter and no
``.grad`` is written.  Scaled-dot-product attention runs on PyTorch's math
kernel (the fused kernels have no second derivative); ops without a second
derivative in PyTorch (``hardsigmoid``/``hardswish``) raise a
:class:`~fxprune.errors.ConfigError`.  In a distributed run the sums of per-batch traces and
the batch counts are all-reduced; rank ``r`` draws its probes from seed
``seed + 1_000_003 * r``.

**How many probes.**  With ``tol=None`` (the default) every batch draws
exactly ``n_probes`` probes.  With ``tol`` a number, every batch draws at least
``n_probes`` and then keeps drawing until the running mean of every scored
trace vector changes by less than ``tol`` (relative, in the Euclidean norm)
with one more probe, at most ``max_probes``.  Either way the spread of the
per-probe values gives each trace a standard error (per batch
``std / sqrt(probes)``, combined over batches like the mean); a trace whose
relative error ``||stderr|| / ||trace||`` exceeds ``warn_error`` (0.3) raises
a ``UserWarning`` naming the parameter and its groups (docs/scorers.md has
measured errors and rank correlations on LeNet-5).  The scores returned by a call are a
:class:`Scores` dict whose ``diagnostics`` (:meth:`TraceEstimate.summary`:
probes drawn, relative errors) a schedule can record;
:meth:`HessianScorer.estimate` returns the whole :class:`TraceEstimate`.

With ``ScoreContext(progress=True)`` a display counts the calibration batches
and shows the probes drawn in the current one (nothing on ranks other than 0).

:func:`exact_channel_hessian_traces` computes the same traces exactly with the
full Hessian, for tests on tiny models.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> from fxprune.scoring import ScoreContext
    >>> from fxprune.scoring.hessian import HessianScorer
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    >>> a = fxprune.analyze(model, (torch.randn(1, 4),))
    >>> data = [(torch.randn(16, 4), torch.randn(16, 2)) for _ in range(2)]
    >>> ctx = ScoreContext(data=data, loss_fn=nn.functional.mse_loss)
    >>> HessianScorer(n_probes=8)(a, ctx)[0].shape
    (8,)
    >>> scores = HessianScorer(tol=0.05, max_probes=200)(a, ctx)     # probes until the traces settle
    >>> sorted(scores.diagnostics)
    ['batches', 'max_rel_error', 'probes', 'probes_per_batch', 'rel_error']
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..analysis.analysis import Analysis
from ..errors import ConfigError
from .base import Scores, Key, ScoreContext, aggregate_members, check_roles, member_keys, slice_sums
from ..progress import Progress
from .calibration import (Accumulator, batch_loss, distributed_rank, iter_batches,
                          model_device, num_batches_of, private_state, require_data)

__all__ = ["HessianScorer", "Scores", "TraceEstimate", "exact_channel_hessian_traces", "weight_factor"]


def _rademacher(like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    v = torch.randint(0, 2, tuple(like.shape), generator=gen).to(like.dtype).mul_(2).sub_(1)
    return v.to(like.device)


def weight_factor(w: torch.Tensor, dim: int) -> np.ndarray:
    """HAP's ``||W_i||^2 / numel(W_i)`` for every slice ``i`` along ``dim``."""
    w64 = w.detach().to(torch.float64)
    return (slice_sums(w64 * w64, dim) / (w64.numel() / w64.shape[dim])).cpu().numpy()


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson traces with their noise: what :meth:`HessianScorer.estimate` returns.

    Attributes:
        traces: ``{(param, dim): trace of each slice's diagonal Hessian block}``.
        stderr: the standard error of each trace from the spread of the probes
            (per batch ``std / sqrt(probes)``, combined over batches as the mean
            is); ``nan`` where a batch drew a single probe.
        probes: probes drawn in each calibration batch of this process.
        groups: ``{(param, dim): ids of the groups it scores}`` (for messages).
    """

    traces: Mapping[Key, np.ndarray]
    stderr: Mapping[Key, np.ndarray]
    probes: tuple[int, ...]
    groups: Mapping[Key, tuple[int, ...]] = field(default_factory=dict)

    def rel_error(self, key: Key) -> float:
        """``||stderr|| / ||trace||`` of one key (``0`` for an all-zero trace, ``nan`` if unknown)."""
        norm = float(np.linalg.norm(self.traces[key]))
        err = float(np.linalg.norm(self.stderr[key]))
        return 0.0 if norm == 0.0 and err == 0.0 else (err / norm if norm else float("inf"))

    def noisy(self, threshold: float) -> list[Key]:
        """Keys whose relative error exceeds ``threshold``, worst first."""
        errs = {k: self.rel_error(k) for k in self.traces}
        return sorted((k for k, e in errs.items() if e > threshold), key=lambda k: -errs[k])

    def summary(self) -> dict[str, Any]:
        """Plain numbers for a schedule's history: probes per batch and relative errors."""
        errs = {f"{k[0]}[dim {k[1]}]": self.rel_error(k) for k in self.traces}
        finite = [e for e in errs.values() if np.isfinite(e)]
        return {"probes": int(sum(self.probes)), "batches": len(self.probes),
                "probes_per_batch": (min(self.probes), max(self.probes)) if self.probes else (0, 0),
                "max_rel_error": max(finite) if finite else float("nan"), "rel_error": errs}


@dataclass(frozen=True)
class HessianScorer:
    """HAP: ``score_i = trace(H_ii) * ||W_i||^2 / numel(W_i)``, traces by Hutchinson.

    Args:
        n_probes: Rademacher probes per calibration batch (HAP default 3); with
            ``tol``, the minimum per batch.
        seed: seed of the probes (deterministic given the data).
        roles: member roles whose parameters are scored (falls back to all
            members of a group with none of these roles).
        aggregate: how members' channel scores combine (``sum``, ``mean``, ``max``).
        tol: ``None`` (default): exactly ``n_probes`` probes per batch.  A number:
            keep drawing probes in each batch until the relative change of every
            scored trace vector, ``||t_k - t_(k-1)|| / ||t_k||`` for the running
            mean ``t_k`` after ``k`` probes, is below ``tol`` (PyHessian's
            criterion), at most ``max_probes``.
        max_probes: the cap on probes per batch with ``tol`` (default 100).
        warn_error: warn when a trace's estimated relative standard error
            (:meth:`TraceEstimate.rel_error`) exceeds this (default ``0.3``;
            ``None``: never).
    """

    n_probes: int = 3
    seed: int = 0
    roles: tuple[str, ...] = ("producer",)
    aggregate: str = "sum"
    tol: float | None = None
    max_probes: int = 100
    warn_error: float | None = 0.3

    name = "hessian"

    def __post_init__(self) -> None:
        for what in ("n_probes", "max_probes"):
            v = getattr(self, what)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{what} must be a positive int, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an int, got {self.seed!r}")
        for what in ("tol", "warn_error"):
            v = getattr(self, what)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
                raise ConfigError(f"{what} must be a positive number or None, got {v!r}")
        if self.tol is not None and self.max_probes < self.n_probes:
            raise ConfigError(f"max_probes ({self.max_probes}) must be at least n_probes ({self.n_probes})")
        object.__setattr__(self, "roles", check_roles(self.roles, self.aggregate))

    def traces(self, analysis: Analysis, ctx: ScoreContext) -> dict[Key, np.ndarray]:
        """``{(param, dim): Hutchinson trace of each slice's diagonal Hessian block}``."""
        est, _ = self._run(analysis, ctx)
        self._warn(est)
        return dict(est.traces)

    def estimate(self, analysis: Analysis, ctx: ScoreContext) -> TraceEstimate:
        """The traces with their standard errors and probe counts (warns if noisy, see ``warn_error``)."""
        est, _ = self._run(analysis, ctx)
        self._warn(est)
        return est

    def _run(self, analysis: Analysis, ctx: ScoreContext) -> tuple[TraceEstimate, dict]:
        require_data(self.name, ctx.data, ctx.loss_fn, need_loss=True)
        per_group, keys = member_keys(analysis, self.roles)
        return self._estimate(analysis, ctx, keys, per_group), per_group

    def _converged(self, t: Mapping[Key, torch.Tensor], prev: Mapping[Key, torch.Tensor], k: int) -> bool:
        """Whether every running mean changed by less than ``tol`` (relative) with probe ``k``."""
        for key, total in t.items():
            now, before = total / k, prev[key] / (k - 1)
            norm = float(torch.linalg.norm(now))
            if norm > 0 and float(torch.linalg.norm(now - before)) / norm >= self.tol:
                return False
        return True

    def _estimate(self, analysis: Analysis, ctx: ScoreContext, keys: list[Key],
                  per_group: Mapping[int, list[tuple[int, Key]]]) -> TraceEstimate:
        gm = analysis.graph_module
        names = list(dict.fromkeys(p for p, _ in keys))
        state = private_state(gm, grad=names)
        leaves = [state[n] for n in names]
        where = {n: i for i, n in enumerate(names)}
        gen = torch.Generator().manual_seed(self.seed + 1_000_003 * distributed_rank())
        device = model_device(gm)
        acc = Accumulator()
        drawn: list[int] = []
        bar = Progress("hessian traces", num_batches_of(ctx.data, ctx.num_batches), enabled=ctx.progress,
                       unit="batch", transient=True)
        fixed = self.tol is None
        cap = self.n_probes if fixed else self.max_probes
        with bar:
            for batch in iter_batches(ctx.data, ctx.num_batches, need_target=True):
                if device is not None:
                    batch = batch.to(device)
                # fused attention kernels have no double backward; the math kernel does
                with sdpa_kernel([SDPBackend.MATH]):
                    loss = batch_loss(gm, state, batch, ctx.loss_fn)
                grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
                live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
                t = {k: torch.zeros(state[k[0]].shape[k[1]], dtype=torch.float64, device=state[k[0]].device)
                     for k in keys}
                sq = {k: torch.zeros_like(v) for k, v in t.items()}
                probe = 0
                while probe < cap:
                    vs = [_rademacher(leaf, gen) for leaf in leaves]
                    prev = {k: v.clone() for k, v in t.items()} if not fixed else t
                    probe += 1
                    if live:  # else the loss is at most linear in the parameters: H = 0
                        hv = self._hvp(grads, live, leaves, vs, retain=not fixed or probe < self.n_probes)
                        for k in keys:
                            j = where[k[0]]
                            if hv[j] is not None:
                                s = slice_sums(hv[j] * vs[j], k[1])
                                t[k] += s
                                sq[k] += s * s
                    bar.update(0, postfix={"probes": probe})
                    if not fixed and probe >= max(2, self.n_probes) and self._converged(t, prev, probe):
                        break
                drawn.append(probe)
                bar.update(1, postfix={"probes": probe})
                for k in keys:
                    mean = t[k] / probe
                    acc.add(k, mean, count=1)
                    var = (sq[k] - probe * mean * mean).clamp_min(0) / (probe - 1) if probe > 1 \
                        else torch.full_like(mean, float("nan"))
                    acc.add(("var", k), var / probe, count=1)
                acc.step()
                del loss, grads
        acc.reduce()
        groups: dict[Key, list[int]] = {}
        for gid, rows in per_group.items():
            for _, k in rows:
                groups.setdefault(k, []).append(gid)
        est = TraceEstimate(traces={k: acc.mean(k) for k in keys},
                            stderr={k: np.sqrt(acc.mean(("var", k)) / acc.count(("var", k))) for k in keys},
                            probes=tuple(drawn), groups={k: tuple(v) for k, v in groups.items()})
        return est

    @staticmethod
    def _hvp(grads: Sequence[torch.Tensor], live: list[int], leaves: list[torch.Tensor],
             vs: list[torch.Tensor], retain: bool) -> tuple[torch.Tensor | None, ...]:
        try:
            return torch.autograd.grad([grads[i] for i in live], leaves, grad_outputs=[vs[i] for i in live],
                                       retain_graph=retain, allow_unused=True)
        except RuntimeError as exc:
            if "not implemented" not in str(exc):
                raise
            raise ConfigError(f"scorer 'hessian' needs second derivatives, which PyTorch "
                              f"lacks for an op of this model ({exc}); use a first-order "
                              f"scorer such as 'taylor' or 'activation'") from exc

    def _warn(self, est: TraceEstimate) -> None:
        if self.warn_error is None:
            return
        noisy = est.noisy(self.warn_error)
        if not noisy:
            return
        shown = ", ".join(f"{k[0]} (group {', '.join(map(str, est.groups.get(k, ()))) or '-'}): "
                          f"{est.rel_error(k):.2f}" for k in noisy[:5])
        more = f" and {len(noisy) - 5} more" if len(noisy) > 5 else ""
        lo, hi = (min(est.probes), max(est.probes)) if est.probes else (0, 0)
        probes = f"{lo}" if lo == hi else f"{lo} to {hi}"
        warnings.warn(f"hessian scorer: noisy Hutchinson traces, relative standard error above "
                      f"{self.warn_error} for {shown}{more} with {probes} probes per batch over "
                      f"{len(est.probes)} batches; the ranking may be close to random: pass a larger "
                      f"n_probes, or tol (e.g. 0.02) with max_probes to draw probes until the traces "
                      f"converge, or more calibration batches", stacklevel=3)

    def __call__(self, analysis: Analysis, ctx: ScoreContext) -> Scores:
        est, per_group = self._run(analysis, ctx)
        self._warn(est)
        keys = list(est.traces)
        gm = analysis.graph_module
        params = dict(gm.named_parameters())
        params.update(dict(gm.named_buffers()))
        index_scores = {k: est.traces[k] * weight_factor(params[k[0]], k[1]) for k in keys}
        out = Scores({g.id: aggregate_members(g, {pos: index_scores[k] for pos, k in per_group[g.id]},
                                              self.aggregate)
                      for g in analysis.groups})
        out.diagnostics = est.summary()
        return out


def exact_channel_hessian_traces(
    module: torch.nn.Module,
    keys: Sequence[Key],
    data: Iterable[Any],
    loss_fn: Callable[[Any, Any], torch.Tensor],
) -> dict[Key, np.ndarray]:
    """Exact per-slice traces of the diagonal Hessian blocks (brute force, tiny models only).

    For every ``(param, dim)`` in ``keys`` and every batch of ``data`` (the
    batch convention of :mod:`fxprune.scoring.calibration`), the full Hessian
    of the loss with respect to ``param`` is built with
    :func:`torch.autograd.functional.hessian`; its diagonal is summed per slice
    along ``dim`` and averaged over batches, as :class:`HessianScorer` does.

    Example:
        >>> import torch, torch.nn as nn
        >>> m = nn.Linear(2, 1, bias=False)
        >>> x = torch.tensor([[1., 0.], [0., 2.]])
        >>> loss = lambda out, y: 0.5 * (out ** 2).sum()   # H = X^T X = diag(1, 4)
        >>> exact_channel_hessian_traces(m, [("weight", 1)], [(x, None)], loss)[("weight", 1)].tolist()
        [1.0, 4.0]
    """
    names = list(dict.fromkeys(p for p, _ in keys))
    sums = {k: np.zeros(0) for k in keys}
    n = 0
    device = model_device(module)
    for batch in iter_batches(data):
        if device is not None:
            batch = batch.to(device)
        base = private_state(module)
        for name in names:
            shape = base[name].shape

            def f(flat: torch.Tensor, name: str = name, shape: torch.Size = shape) -> torch.Tensor:
                state = dict(base)
                state[name] = flat.reshape(shape)
                return batch_loss(module, state, batch, loss_fn)  # type: ignore[arg-type]

            h = torch.autograd.functional.hessian(f, base[name].detach().reshape(-1))
            diag = torch.diagonal(h).reshape(shape)
            for k in keys:
                if k[0] == name:
                    s = slice_sums(diag, k[1]).cpu().numpy()
                    sums[k] = s if sums[k].size == 0 else sums[k] + s
        n += 1
    if n == 0:
        raise ConfigError("exact_channel_hessian_traces: data yielded no batch")
    return {k: v / n for k, v in sums.items()}
