"""Rule for ``F.scaled_dot_product_attention``.

``q [..., L, E]``, ``k [..., S, E]``, ``v [..., S, Ev]`` -> ``[..., L, Ev]``:
batch/head dims broadcast together, ``E`` of q and k is one contraction space,
``S`` of k and v another.  The default softmax scale is ``1/sqrt(E)``; when
pruning shrinks ``E`` the emitted call pins the original scale so the function
of the remaining channels is unchanged.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .generic import broadcast_labels
from .registry import EmitContext, OpContext, Rule, Unsupported, Value

__all__ = ["SDPA"]


def _sdpa(ctx: OpContext) -> tuple:
    q, k, v = ctx.arg(0, "query"), ctx.arg(1, "key"), ctx.arg(2, "value")
    mask = ctx.arg(3, "attn_mask")
    if ctx.kwargs.get("enable_gqa"):
        raise Unsupported("enable_gqa")
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise Unsupported("attention over 1-d tensors")
    ctx.unify(q.labels[-1], k.labels[-1], " (attention q.k contraction)")
    ctx.unify(k.labels[-2], v.labels[-2], " (attention key/value positions)")
    ctx.mixing(k.labels[-2], "softmax over key positions")
    ops = [Value(_shape(x.shape[:-2]), x.labels[:-2]) for x in (q, k, v)]
    if isinstance(mask, Value) and mask.is_tensor:
        ops.append(Value(_shape(mask.shape[:-2]), mask.labels[:-2]))
        if mask.labels[-1] is not None or mask.labels[-2] is not None:
            raise Unsupported("attention mask with channel labels")
    batch = broadcast_labels(ctx, ops, ctx.out.shape[:-2])
    return tuple(batch) + (q.labels[-2], v.labels[-1])


def _shape(shape: Any) -> Any:
    import torch

    from ..analysis.capture import TensorSpec

    return TensorSpec(tuple(shape), torch.float32)


def _emit_sdpa(ctx: EmitContext) -> tuple:
    qnode = ctx.node.args[0]
    old_e = qnode.meta["fxprune.spec"].shape[-1]
    new_e = ctx.new_shape(qnode)[-1]
    scale = ctx.old_arg(6, "scale")
    if new_e == old_e or scale is not None:
        return ctx.node.target, ctx.args, ctx.kwargs
    kwargs = dict(ctx.kwargs)
    args = list(ctx.args)
    if len(args) > 6:
        args[6] = 1.0 / math.sqrt(old_e)
    else:
        kwargs["scale"] = 1.0 / math.sqrt(old_e)
    return ctx.node.target, tuple(args), kwargs


def _macs(ctx: OpContext) -> int:
    q, k, v = ctx.arg(0, "query"), ctx.arg(1, "key"), ctx.arg(2, "value")
    batch = int(np.prod(ctx.out.shape[:-2]))
    return batch * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])


SDPA = Rule("attention", _sdpa, emit=_emit_sdpa, macs=_macs,
            doc="F.scaled_dot_product_attention: heads coupled, scale pinned when E shrinks.")
