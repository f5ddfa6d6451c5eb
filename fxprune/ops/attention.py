"""Attention modules: ``nn.MultiheadAttention``, whole heads.

``nn.MultiheadAttention`` projects ``query``/``key``/``value`` with the thirds of
``in_proj_weight`` (or ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` when
``kdim``/``vdim`` differ from ``embed_dim``), attends per head and projects back
with ``out_proj``.  Its code ties three widths to one number, ``embed_dim``: the
query's features, the heads' total width (``num_heads * head_dim``) and, on its
fused fast path, ``out_proj``'s output.  The rule therefore maps one channel
space for all three, index by index:

* row ``j`` of the q, k and v thirds (and of ``in_proj_bias``, ``bias_k``,
  ``bias_v``, column ``j`` of ``out_proj.weight``) belong together: removing
  it from q and k alone would change the softmax of its head;
* the rows of a head are one unit (whole heads only: ``head_dim`` and the
  softmax scale ``1/sqrt(head_dim)`` never change);
* the query's feature ``j`` (column ``j`` of the q third) and ``out_proj``'s
  output ``j`` join channel ``j``: in a transformer they are the residual
  stream, which thus loses whole blocks of ``head_dim`` channels with the heads;
* ``key``/``value`` features: the k and v columns (``kdim``/``vdim``, free when the
  weights are separate, the query's when packed).

Attention weights averaged over heads (``need_weights=True``, the default) change
when a head goes: the heads are then *mixing*; per-head weights
(``average_attn_weights=False``) carry the heads on their dim 1.  The module is
resized in place (``embed_dim``, ``num_heads``, ``kdim``, ``vdim``, ``out_proj``).
Labels on the batch or sequence dims, and on masks, are fixed (positions, not channels).

Example:
    >>> import torch, fxprune
    >>> class Block(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.inp, self.out = torch.nn.Linear(3, 8), torch.nn.Linear(8, 1)
    ...         self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    ...     def forward(self, x):
    ...         x = self.inp(x)
    ...         return self.out(x + self.attn(x, x, x, need_weights=False)[0])
    >>> g = fxprune.analyze(Block(), (torch.randn(1, 4, 3),)).group_of("attn.in_proj_weight", 0)[0]
    >>> g.size   # two heads: two prunable units
    2
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..ir import Role, Zeros
from .context import EmitContext, OpContext, Unsupported, Value, static_value
from .registry import Keys, Rule, writes_nothing

__all__ = ["MULTIHEAD_ATTENTION", "RULES"]


@dataclass(frozen=True)
class _Projections:
    """The q/k/v row labels (inner channels), and the weight reading each input (its dim 1)."""

    rows: tuple[np.ndarray, np.ndarray, np.ndarray]
    readers: tuple[Value, Value, Value]

    @property
    def cols(self) -> tuple[np.ndarray, ...]:
        return tuple(w.labels[1] for w in self.readers)


def _inputs(ctx: OpContext) -> tuple[Value, Value, Value]:
    qkv = tuple(ctx.arg(i, name) for i, name in enumerate(("query", "key", "value")))
    if not all(isinstance(t, Value) and t.is_tensor for t in qkv):
        raise Unsupported("query, key and value must be tensors")
    for t in qkv:
        for lab in t.labels[:-1]:
            ctx.fix(lab, "batch or sequence dim of an attention input")
    for index, name in ((3, "key_padding_mask"), (5, "attn_mask")):
        mask = ctx.arg(index, name)
        if isinstance(mask, Value) and mask.is_tensor:
            ctx.fix_value(mask, f"{name} (positions, not channels)")
    return qkv  # type: ignore[return-value]


def _projections(ctx: OpContext, embed: int) -> _Projections:
    """Declare the in-projection weights' roles; their row and column labels."""
    packed = ctx.param("in_proj_weight")
    if packed is not None:
        ctx.role(packed, 0, Role.PRODUCER)
        ctx.role(packed, 1, Role.CONSUMER)
        rows = packed.labels[0]
        return _Projections((rows[:embed], rows[embed:2 * embed], rows[2 * embed:]), (packed,) * 3)
    weights = [ctx.param(f"{p}_proj_weight") for p in "qkv"]
    if any(w is None for w in weights):
        raise Unsupported("in-projection weights missing")
    for w in weights:
        ctx.role(w, 0, Role.PRODUCER)
        ctx.role(w, 1, Role.CONSUMER)
    return _Projections(tuple(w.labels[0] for w in weights), tuple(weights))


def _tie_heads(ctx: OpContext, proj: _Projections, heads: int, head_dim: int) -> np.ndarray:
    """Unify row ``j`` of q, k and v, and every row of a head: whole heads. Returns the inner labels."""
    inner = proj.rows[0]
    ctx.unify(inner, proj.rows[1], " (q and k of a head)")
    ctx.unify(inner, proj.rows[2], " (q and v of a head)")
    for h in range(heads):
        ctx.atoms.unify_all(inner[h * head_dim:(h + 1) * head_dim])
    bias = ctx.param("in_proj_bias")
    if bias is not None:
        ctx.role(bias, 0, Role.BIAS)
        ctx.unify(np.concatenate(proj.rows), bias.labels[0])
    for name in ("bias_k", "bias_v"):
        extra = ctx.param(name)
        if extra is not None:
            ctx.role(extra, -1, Role.BIAS)
            ctx.unify(inner, extra.labels[-1])
    return inner


def _out_projection(ctx: OpContext, inner: np.ndarray) -> np.ndarray:
    w, b = ctx.param("out_proj.weight"), ctx.param("out_proj.bias")
    if w is None:
        raise Unsupported("out_proj.weight missing")
    ctx.role(w, 1, Role.CONSUMER)
    ctx.role(w, 0, Role.PRODUCER)
    ctx.unify(inner, w.labels[1], " (out_proj input: the heads)")
    ctx.unify(inner, w.labels[0], " (out_proj output: embed_dim)")
    if b is not None:
        ctx.role(b, 0, Role.BIAS)
        ctx.unify(w.labels[0], b.labels[0])
    return w.labels[0]


def _weights_labels(ctx: OpContext, inner: np.ndarray, head_dim: int) -> Any:
    spec = ctx.out[1] if isinstance(ctx.out, tuple) and len(ctx.out) == 2 else None
    if spec is None:
        return None
    if static_value(ctx.arg(6, "average_attn_weights", True)):
        ctx.mixing(inner, "attention weights averaged over heads")
        return tuple(None for _ in spec.shape)
    labels: list[Any] = [None] * len(spec.shape)
    labels[-3] = inner[::head_dim]  # [(B,) H, L, S]: one index per head
    return tuple(labels)


def _multihead_attention(ctx: OpContext) -> tuple:
    m = ctx.module
    query, key, value = _inputs(ctx)
    embed, heads = int(m.embed_dim), int(m.num_heads)
    head_dim = embed // heads
    proj = _projections(ctx, embed)
    inner = _tie_heads(ctx, proj, heads, head_dim)
    ctx.per_head(inner)  # one atom per head
    for x, w in zip((query, key, value), proj.readers):
        ctx.unify(x.labels[-1], w.labels[1], " (attention input features)")
        ctx.contract((x, -1), (w, 1), why="in-projection")  # exact: a weight's dead columns are zero
    ctx.unify(inner, proj.cols[0], " (the query's features: embed_dim)")
    out = _out_projection(ctx, inner)
    attn = tuple(None for _ in query.labels[:-1]) + (out,)
    if not isinstance(ctx.out, tuple):
        raise Unsupported("nn.MultiheadAttention returned a single value")
    return attn, _weights_labels(ctx, inner, head_dim)


def _resize_multihead_attention(m: torch.nn.Module, ctx: EmitContext) -> None:
    query = ctx.old_arg(0, "query")
    key, value = ctx.old_arg(1, "key"), ctx.old_arg(2, "value")
    embed = int(ctx.new_shape(query)[-1])
    head_dim = m.embed_dim // m.num_heads
    m.embed_dim, m.num_heads, m.head_dim = embed, embed // head_dim, head_dim
    m.kdim, m.vdim = int(ctx.new_shape(key)[-1]), int(ctx.new_shape(value)[-1])
    m.out_proj.in_features = m.out_proj.out_features = embed


def _length(m: torch.nn.Module, x: Value) -> int:
    return int(x.shape[1] if x.ndim == 3 and m.batch_first else x.shape[0])


def _macs_multihead_attention(ctx: OpContext) -> int:
    m = ctx.module
    query, key, value = (ctx.arg(i, n) for i, n in enumerate(("query", "key", "value")))
    embed = int(ctx.param("out_proj.weight").shape[1])
    n_q = int(np.prod(query.shape[:-1]))
    n_k = int(np.prod(key.shape[:-1]))
    projections = n_q * query.shape[-1] * embed + n_k * (key.shape[-1] + value.shape[-1]) * embed
    attention = 2 * n_q * _length(m, key) * embed
    return int(projections + attention + n_q * embed * embed)


MULTIHEAD_ATTENTION = Rule(
    "attention", _multihead_attention, resize=_resize_multihead_attention, macs=_macs_multihead_attention,
    leaf=True, zeros=Zeros.LOSE, keys=Keys(modules=("MultiheadAttention",)), writes_state=writes_nothing,
    doc="nn.MultiheadAttention: whole heads, tied to embed_dim (packed or separate q/k/v weights).")

RULES = (MULTIHEAD_ATTENTION,)
