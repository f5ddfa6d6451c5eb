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
    >>> ctx = ScoreContext(model=model, data=data, loss_fn=nn.functional.mse_loss)
    >>> HessianScorer(n_probes=8)(a, ctx)[0].shape
    (8,)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..analysis.analysis import Analysis
from ..errors import ConfigError
from .base import Key, ScoreContext, aggregate_members, check_roles, member_keys, slice_sums
from .calibration import (Accumulator, batch_loss, distributed_rank, iter_batches,
                          model_device, num_batches_of, private_state, progress, require_data)

__all__ = ["HessianScorer", "exact_channel_hessian_traces", "weight_factor"]

def _rademacher(like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    v = torch.randint(0, 2, tuple(like.shape), generator=gen).to(like.dtype).mul_(2).sub_(1)
    return v.to(like.device)


def weight_factor(w: torch.Tensor, dim: int) -> np.ndarray:
    """HAP's ``||W_i||^2 / numel(W_i)`` for every slice ``i`` along ``dim``."""
    w64 = w.detach().to(torch.float64)
    return (slice_sums(w64 * w64, dim) / (w64.numel() / w64.shape[dim])).cpu().numpy()


@dataclass(frozen=True)
class HessianScorer:
    """HAP: ``score_i = trace(H_ii) * ||W_i||^2 / numel(W_i)``, traces by Hutchinson.

    Args:
        n_probes: Rademacher probes per calibration batch (HAP default 3; more is better).
        seed: seed of the probes (deterministic given the data).
        roles: member roles whose parameters are scored (falls back to all
            members of a group with none of these roles).
        aggregate: how members' channel scores combine (``sum``, ``mean``, ``max``).
    """

    n_probes: int = 3
    seed: int = 0
    roles: tuple[str, ...] = ("producer",)
    aggregate: str = "sum"

    name = "hessian"

    def __post_init__(self) -> None:
        if isinstance(self.n_probes, bool) or not isinstance(self.n_probes, int) or self.n_probes < 1:
            raise ConfigError(f"n_probes must be a positive int, got {self.n_probes!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an int, got {self.seed!r}")
        object.__setattr__(self, "roles", check_roles(self.roles, self.aggregate))

    def traces(self, analysis: Analysis, ctx: ScoreContext) -> dict[Key, np.ndarray]:
        """``{(param, dim): Hutchinson trace of each slice's diagonal Hessian block}``."""
        require_data(self.name, ctx.data, ctx.loss_fn, need_loss=True)
        _, keys = member_keys(analysis, self.roles)
        return self._traces(analysis, ctx, keys)

    def _traces(self, analysis: Analysis, ctx: ScoreContext, keys: list[Key]) -> dict[Key, np.ndarray]:
        gm = analysis.graph_module
        names = list(dict.fromkeys(p for p, _ in keys))
        state = private_state(gm, grad=names)
        leaves = [state[n] for n in names]
        where = {n: i for i, n in enumerate(names)}
        gen = torch.Generator().manual_seed(self.seed + 1_000_003 * distributed_rank())
        device = model_device(gm)
        acc = Accumulator()
        batches = progress(iter_batches(ctx.data, ctx.num_batches, need_target=True),
                           total=num_batches_of(ctx.data, ctx.num_batches),
                           desc="hessian traces", enabled=ctx.progress)
        for batch in batches:
            if device is not None:
                batch = batch.to(device)
            # fused attention kernels have no double backward; the math kernel does
            with sdpa_kernel([SDPBackend.MATH]):
                loss = batch_loss(gm, state, batch, ctx.loss_fn)
            grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
            live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
            t = {k: torch.zeros(state[k[0]].shape[k[1]], dtype=torch.float64, device=state[k[0]].device)
                 for k in keys}
            for probe in range(self.n_probes):
                vs = [_rademacher(leaf, gen) for leaf in leaves]
                if not live:
                    continue  # the loss is at most linear in the parameters: H = 0
                try:
                    hv = torch.autograd.grad([grads[i] for i in live], leaves,
                                             grad_outputs=[vs[i] for i in live],
                                             retain_graph=probe < self.n_probes - 1, allow_unused=True)
                except RuntimeError as exc:
                    if "not implemented" not in str(exc):
                        raise
                    raise ConfigError(f"scorer 'hessian' needs second derivatives, which PyTorch "
                                      f"lacks for an op of this model ({exc}); use a first-order "
                                      f"scorer such as 'taylor' or 'activation'") from exc
                for k in keys:
                    j = where[k[0]]
                    if hv[j] is not None:
                        t[k] += slice_sums(hv[j] * vs[j], k[1])
            for k in keys:
                acc.add(k, t[k] / self.n_probes, count=1)
            acc.step()
            del loss, grads
        acc.reduce()
        return {k: acc.mean(k) for k in keys}

    def __call__(self, analysis: Analysis, ctx: ScoreContext) -> dict[int, np.ndarray]:
        require_data(self.name, ctx.data, ctx.loss_fn, need_loss=True)
        per_group, keys = member_keys(analysis, self.roles)
        traces = self._traces(analysis, ctx, keys)
        gm = analysis.graph_module
        params = dict(gm.named_parameters())
        params.update(dict(gm.named_buffers()))
        index_scores = {k: traces[k] * weight_factor(params[k[0]], k[1]) for k in keys}
        return {g.id: aggregate_members(g, {pos: index_scores[k] for pos, k in per_group[g.id]},
                                        self.aggregate)
                for g in analysis.groups}


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
