"""Reductions and softmax.

``sum`` over channels is exact where dead channels are zero (it declares the
sum with ``ctx.contract``: after ``sigmoid`` they are not, and the channels
become mixing); ``mean``, ``var``,
``amax``... over channels are channel statistics (*mixing*: removing a dead
channel changes the statistic of the kept ones); a p-norm with ``p >= 0`` is a
sum of ``|x|^p`` (exact over zero channels, like ``sum``).  ``softmax`` is
shape-preserving and mixing along its dim.

Example:
    >>> import torch, fxprune
    >>> class M(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = torch.nn.Linear(3, 4)
    ...     def forward(self, x):
    ...         return self.fc(x).mean(-1)
    >>> fxprune.analyze(M(), (torch.randn(2, 3),)).groups[0].mixing
    True
"""
from __future__ import annotations

from typing import Any

from ..ir import Zeros
from .context import OpContext, Unsupported, Value, check_labels, dims_arg, first_tensor, normalize_dim
from .elementwise import broadcast_labels
from .registry import Keys, Rule, writes_nothing

__all__ = ["LOGSUMEXP", "NORM_REDUCE", "REDUCE_MIXING", "REDUCE_SUM", "REDUCE_TUPLE", "RULES", "SOFTMAX",
           "SOFTMAX_MODULE"]


def _reduce(mixing: bool, dim_pos: int, keep_pos: int):
    def propagate(ctx: OpContext) -> Any:
        x = first_tensor(ctx)
        other = ctx.arg(dim_pos, "other")
        if isinstance(other, Value) and other.is_tensor:  # torch.max(a, b): elementwise
            return broadcast_labels(ctx, [x, other], ctx.out.shape)
        dims = dims_arg(ctx.arg(dim_pos, "dim", None))
        if isinstance(dims, tuple) and any(isinstance(d, Value) for d in dims):
            raise Unsupported("dynamic reduction dims")
        keep = bool(ctx.arg(keep_pos, "keepdim", False))
        red = set(range(x.ndim)) if dims is None else {normalize_dim(d, x.ndim) for d in dims}
        labels = []
        for d in range(x.ndim):
            lab = x.labels[d]
            if d in red:
                if lab is not None and mixing:
                    ctx.mixing(lab, "statistic over channels")
                elif lab is not None:
                    ctx.contract((x, d))
                if keep:
                    labels.append(None)
            else:
                labels.append(lab)
        if isinstance(ctx.out, tuple):  # (values, indices)
            return tuple(check_labels(ctx, tuple(labels), s) for s in ctx.out)
        return check_labels(ctx, tuple(labels))

    return propagate


REDUCE_SUM = Rule("reduce", _reduce(False, 1, 2), doc="sum: exact for dead channels.",
                  keys=Keys(torch=("sum", "nansum"), methods=("sum", "nansum"), aten=("sum", "nansum")), zeros=Zeros.KEEP)

_STATS = ("mean", "amax", "amin", "prod", "nanmean", "var", "std")
REDUCE_MIXING = Rule("reduce", _reduce(True, 1, 2),
                     doc="mean/var/std/amax/prod...: channel statistics (mixing).",
                     keys=Keys(torch=_STATS, methods=_STATS, aten=_STATS), zeros=Zeros.KEEP)
LOGSUMEXP = Rule("reduce", _reduce(True, 1, 2), doc="logsumexp: a statistic whose value over zeros is not zero.",
                 keys=Keys(torch=("logsumexp",), methods=("logsumexp",), aten=("logsumexp",)))
REDUCE_TUPLE = Rule("reduce", _reduce(True, 1, 2), doc="max/min: with dim (values, indices); of two tensors, elementwise.",
                    keys=Keys(torch=("max", "min"), methods=("max", "min"), aten=("max", "min")), zeros=Zeros.KEEP)
def _norm_reduce(ctx: OpContext) -> Any:
    """A p-norm over dims: zero channels add nothing to it when ``p >= 0`` ('fro', 'nuc', inf too)."""
    p = ctx.arg(1, "p", None)
    p = ctx.kwargs.get("ord", 2) if p is None else p
    negative = isinstance(p, (int, float)) and p < 0
    return _reduce(negative, 2, 3)(ctx)


NORM_REDUCE = Rule("reduce", _norm_reduce, doc="x.norm(p, dim, keepdim): a sum over channels for p >= 0.",
                   keys=Keys(torch=("norm",), methods=("norm",), aten=("linalg_vector_norm",)), zeros=Zeros.KEEP)


def _softmax(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    dim = ctx.arg(1, "dim", None)
    if dim is None:
        raise Unsupported("softmax without dim")
    d = normalize_dim(dim, x.ndim)
    ctx.mixing(x.labels[d], "softmax over channels")
    return x.labels


SOFTMAX = Rule("softmax", _softmax, doc="softmax/log_softmax: shape-preserving, mixing along dim.",
               keys=Keys(functional=("softmax", "log_softmax"), torch=("softmax", "log_softmax"),
                         methods=("softmax", "log_softmax"),
                         aten=("softmax", "log_softmax")))


def _softmax_module(ctx: OpContext) -> tuple:
    return _softmax(ctx.replace(args=(ctx.args[0], ctx.module.dim), kwargs={}))


SOFTMAX_MODULE = Rule("softmax", _softmax_module, doc="nn.Softmax(dim), nn.LogSoftmax(dim).",
                      keys=Keys(modules=("Softmax", "LogSoftmax")), writes_state=writes_nothing)

RULES = (REDUCE_SUM, REDUCE_MIXING, LOGSUMEXP, REDUCE_TUPLE, NORM_REDUCE, SOFTMAX, SOFTMAX_MODULE)
