"""First-order Taylor scorer: ``|sum over slice i of w * dL/dw|``, averaged over batches.

For the parameters of the chosen members (producers by default) and every
calibration batch ``b``::

    g = grad(loss_fn(gm(*inputs), target), params)
    t_i(b) = | sum over slice i (along the member's dim) of w * g |

The score of index ``i`` is the mean of ``t_i(b)`` over the calibration
batches: the absolute value is taken *per batch*, then averaged (so gradients
of opposite sign in different batches do not cancel; each batch counts once).
``t_i`` estimates the change of the loss when slice ``i`` is zeroed, to first
order.  Index scores are folded into group channels by
:func:`~fxprune.scoring.base.aggregate_members` (sum over a channel's indices,
then ``aggregate`` over members).

The model runs in the mode it is in and is never modified (see
:mod:`fxprune.scoring.calibration`); in a distributed run the per-batch sums
and batch counts are all-reduced.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> from fxprune.scoring import ScoreContext
    >>> from fxprune.scoring.taylor import TaylorScorer
    >>> model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 1, bias=False))
    >>> with torch.no_grad():
    ...     _ = model[0].weight.copy_(torch.tensor([[1., 2.], [3., -4.]]))
    ...     _ = model[1].weight.copy_(torch.tensor([[1., 2.]]))
    >>> a = fxprune.analyze(model, (torch.randn(1, 2),))
    >>> data = [(torch.tensor([[1., 1.]]), None)]          # dL/dW1[c] = W2[c] * x
    >>> ctx = ScoreContext(data=data, loss_fn=lambda out, y: out.sum())
    >>> TaylorScorer()(a, ctx)[0].tolist()
    [3.0, 2.0]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..analysis.analysis import Analysis
from .base import ScoreContext, aggregate_members, check_roles, member_keys, slice_sums
from .calibration import (Accumulator, batch_loss, iter_batches, model_device, num_batches_of,
                          private_state, progress, require_data)

__all__ = ["TaylorScorer"]


@dataclass(frozen=True)
class TaylorScorer:
    """First-order Taylor importance ``mean over batches of |sum_slice w * dL/dw|``.

    Args:
        roles: member roles whose parameters are scored (falls back to all
            members of a group with none of these roles).
        aggregate: how members' channel scores combine (``sum``, ``mean``, ``max``).
    """

    roles: tuple[str, ...] = ("producer",)
    aggregate: str = "sum"

    name = "taylor"

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", check_roles(self.roles, self.aggregate))

    def __call__(self, analysis: Analysis, ctx: ScoreContext) -> dict[int, np.ndarray]:
        require_data(self.name, ctx.data, ctx.loss_fn, need_loss=True)
        per_group, keys = member_keys(analysis, self.roles)
        gm = analysis.graph_module
        names = list(dict.fromkeys(p for p, _ in keys))
        state = private_state(gm, grad=names)
        leaves = [state[n] for n in names]
        where = {n: i for i, n in enumerate(names)}
        device = model_device(gm)
        acc = Accumulator()
        batches = progress(iter_batches(ctx.data, ctx.num_batches, need_target=True),
                           total=num_batches_of(ctx.data, ctx.num_batches),
                           desc="taylor scores", enabled=ctx.progress)
        for batch in batches:
            if device is not None:
                batch = batch.to(device)
            loss = batch_loss(gm, state, batch, ctx.loss_fn)
            grads = torch.autograd.grad(loss, leaves, allow_unused=True)
            for k in keys:
                j = where[k[0]]
                if grads[j] is None:
                    acc.add(k, torch.zeros(leaves[j].shape[k[1]], dtype=torch.float64, device=leaves[j].device),
                            count=1)
                else:
                    acc.add(k, slice_sums(leaves[j] * grads[j], k[1]).abs(), count=1)
            acc.step()
        acc.reduce()
        return {g.id: aggregate_members(g, {pos: acc.mean(k) for pos, k in per_group[g.id]},
                                        self.aggregate)
                for g in analysis.groups}
