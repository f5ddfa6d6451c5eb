"""Contractions: ``matmul``/``bmm``/``@``, ``addmm``/``baddbmm``, ``einsum`` and ``F.scaled_dot_product_attention``.

A contraction ties the contracted dims of both operands (one channel space)
and declares the parameter-free sum (``ctx.contract``): exact where either
operand's removed channels are zero;
batch dims broadcast like elementwise ops.  ``addmm(input, a, b)`` and
``baddbmm`` add ``input`` to the product, broadcast like a bias (GPT-2's
``Conv1D`` is ``addmm(bias, x, W[in, out])``: ``W``'s rows consume, its
columns produce).  ``einsum`` reads its subscripts: the dims one letter
names are unified (size-1 dims broadcast), letters missing from the output are
summed (``ctx.contract``: exact where removed channels are zero), output letters
carry their labels; the equation never changes.  For attention, ``q [..., L, E]``,
``k [..., S, E]``, ``v [..., S, Ev]`` -> ``[..., L, Ev]``: ``E`` of q and k is
one contraction space, ``S`` of k and v another (mixing: the softmax runs over
it).  The batch dims of attention, and of any batched contraction of two
activations (``q @ k.transpose(-2, -1)``, ``attn @ v``, ``bmm`` over
``[B * heads, ...]``, ``einsum("bhqd,bhkd->bhqk", ...)``), are computed one head
at a time: they are declared so (``ctx.per_head``), and ``split_policy="auto"``
prunes the splits reaching them by whole heads.  The default softmax scale is ``1/sqrt(E)``; when pruning shrinks ``E``
the emitted call pins the original scale so the function of the remaining
channels is unchanged.

Example:
    >>> import torch, fxprune
    >>> class M(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.q, self.k = torch.nn.Linear(4, 6), torch.nn.Linear(4, 6)
    ...     def forward(self, x):
    ...         return self.q(x) @ self.k(x).transpose(-1, -2)
    >>> [m.param for m in fxprune.analyze(M(), (torch.randn(1, 3, 4),)).groups[0].members]
    ['q.weight', 'q.bias', 'k.weight', 'k.bias']
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..ir import Role, TensorSpec, Zeros
from .context import EmitContext, OpContext, Unsupported, Value, check_labels
from .elementwise import broadcast_labels
from .registry import Keys, Rule

__all__ = ["ADD_MATMUL", "EINSUM", "MATMUL", "RULES", "SDPA", "einsum_subscripts"]


def _matmul(ctx: OpContext) -> tuple:
    a = ctx.arg(0)
    b = ctx.arg(1, "other") if ctx.arg(1, "other") is not None else ctx.arg(1, "mat2")
    if not (isinstance(a, Value) and isinstance(b, Value)) or a.ndim < 2 or b.ndim < 2:
        raise Unsupported("matmul with a 1-d operand")
    ctx.unify(a.labels[-1], b.labels[-2], " (matmul contraction)")
    ctx.contract((a, -1), (b, -2), why="matmul contraction")
    batch = broadcast_labels(ctx, [a.part(slice(None, -2)), b.part(slice(None, -2))], ctx.out.shape[:-2])
    _declare_heads(ctx, (a, b), batch)
    return check_labels(ctx, tuple(batch) + (a.labels[-2], b.labels[-1]))


def _declare_heads(ctx: OpContext, operands: tuple[Value, ...], batch: Any) -> None:
    """A contraction of two activations, batched on both sides (``q @ k.transpose(-2, -1)`` over
    ``[B, heads, L, E]``), runs one batch index at a time: its batch dims are heads (``ctx.per_head``).
    A parameter operand makes it a projection, not attention."""
    if all(v.param is None and v.ndim >= 3 for v in operands):
        ctx.per_head(*batch)


def _macs_matmul(ctx: OpContext) -> int:
    a = ctx.arg(0)
    return int(np.prod(ctx.out.shape)) * int(a.shape[-1])


MATMUL = Rule("matmul", _matmul, macs=_macs_matmul,
              doc="matmul/bmm/@: contraction dims tied, batch dims broadcast.",
              keys=Keys(torch=("matmul", "bmm"), operators=("matmul",),
                        methods=("matmul", "bmm", "__matmul__"), aten=("matmul", "bmm")), zeros=Zeros.KEEP)


def _operand(ctx: OpContext, index: int, names: tuple[str, ...]) -> Value:
    for name in names:
        v = ctx.arg(index, name)
        if v is not None:
            break
    if not isinstance(v, Value) or not v.is_tensor:
        raise Unsupported(f"a non-tensor operand {index}")
    return v


def _add_matmul(ctx: OpContext) -> tuple:
    """``beta * input + alpha * (a @ b)`` (``addmm``: 2-d operands, ``baddbmm``: 3-d)."""
    inp = _operand(ctx, 0, ("input", "self"))
    a = _operand(ctx, 1, ("mat1", "batch1"))
    b = _operand(ctx, 2, ("mat2", "batch2"))
    if a.ndim != b.ndim or a.ndim not in (2, 3):
        raise Unsupported("addmm/baddbmm operands must be 2-d/3-d alike")
    for v, rows, cols in ((a, Role.PRODUCER, Role.CONSUMER), (b, Role.CONSUMER, Role.PRODUCER)):
        ctx.role(v, -2, rows)  # a parameter operand: a's rows / b's columns make the outputs
        ctx.role(v, -1, cols)
    ctx.unify(a.labels[-1], b.labels[-2], " (matmul contraction)")
    ctx.contract((a, -1), (b, -2), why="matmul contraction")
    batch = broadcast_labels(ctx, [a.part(slice(None, -2)), b.part(slice(None, -2))], ctx.out.shape[:-2])
    _declare_heads(ctx, (a, b), batch)
    product = Value(TensorSpec(tuple(ctx.out.shape), ctx.out.dtype), tuple(batch) + (a.labels[-2], b.labels[-1]))
    return check_labels(ctx, broadcast_labels(ctx, [inp, product], ctx.out.shape, Role.BIAS))


def _macs_add_matmul(ctx: OpContext) -> int:
    return int(np.prod(ctx.out.shape)) * int(_operand(ctx, 1, ("mat1", "batch1")).shape[-1])


ADD_MATMUL = Rule("matmul", _add_matmul, macs=_macs_add_matmul,
                  doc="addmm/baddbmm: beta * input + alpha * (a @ b); input broadcast like a bias "
                      "(GPT-2's Conv1D at the ATen level).",
                  keys=Keys(torch=("addmm", "baddbmm"), methods=("addmm", "baddbmm"), aten=("addmm", "baddbmm")),
                  zeros=Zeros.KEEP)


def einsum_subscripts(equation: str, ndims: list[int]) -> tuple[list[list[Any]], list[Any]]:
    """Per-operand symbol lists and the output's, for an einsum equation.

    Letters stand for themselves; the dims an ellipsis covers become ``("...", k)``, ``k``
    counted from the right (they broadcast right-aligned).  Without ``->`` the output is
    the ellipsis, then the letters used once, in alphabetical order.

    >>> einsum_subscripts("bhqd,bhkd->bhqk", [4, 4])[1]
    ['b', 'h', 'q', 'k']
    >>> einsum_subscripts("...ij,jk", [3, 2])
    ([[('...', 0), 'i', 'j'], ['j', 'k']], [('...', 0), 'i', 'k'])
    """
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ndims):
        raise Unsupported(f"einsum equation {equation!r} for {len(ndims)} operands")

    def expand(term: str, ndim: int) -> list[Any]:
        if "..." not in term:
            return list(term)
        head, _, tail = term.partition("...")
        n = ndim - len(head) - len(tail)
        return list(head) + [("...", k) for k in range(n - 1, -1, -1)] + list(tail)

    inputs = [expand(t, n) for t, n in zip(terms, ndims)]
    if any(len(syms) != n for syms, n in zip(inputs, ndims)):
        raise Unsupported(f"einsum equation {equation!r} does not fit its operands")
    width = max((sum(1 for x in syms if isinstance(x, tuple)) for syms in inputs), default=0)
    ellipsis = [("...", k) for k in range(width - 1, -1, -1)]
    if arrow:
        head, dots, tail = rhs.partition("...")
        output = list(head) + (ellipsis if dots else []) + list(tail)
    else:
        letters = [c for syms in inputs for c in syms if isinstance(c, str)]
        output = ellipsis + sorted(c for c in set(letters) if letters.count(c) == 1)
    return inputs, output


def _einsum_operands(ctx: OpContext) -> tuple[str, list[Value]]:
    equation = ctx.arg(0, "equation")
    rest = list(ctx.args[1:])
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        rest = list(rest[0])
    if not isinstance(equation, str) or not all(isinstance(v, Value) and v.is_tensor for v in rest):
        raise Unsupported("einsum without a literal equation and tensor operands")
    return equation, rest


def _einsum(ctx: OpContext) -> tuple:
    equation, operands = _einsum_operands(ctx)
    inputs, output = einsum_subscripts(equation, [v.ndim for v in operands])
    uses: dict[Any, list[tuple[Value, int]]] = {}
    for v, syms in zip(operands, inputs):
        for d, sym in enumerate(syms):
            uses.setdefault(sym, []).append((v, d))
    labels: dict[Any, Any] = {}
    for sym, occurrences in uses.items():
        size = max(v.shape[d] for v, d in occurrences)
        parts = [Value(TensorSpec((v.shape[d],)), (v.labels[d],)) for v, d in occurrences]
        labels[sym] = broadcast_labels(ctx, parts, (size,))[0]
        if sym not in output:
            ctx.contract(*[(v, d) for v, d in occurrences if v.shape[d] == size], why=f"einsum sum over {sym!r}")
    summed = any(sym not in output and len(occ) > 1 for sym, occ in uses.items())
    if summed and len(operands) > 1 and all(v.param is None for v in operands):
        # a contraction of activations ("bhqd,bhkd->bhqk"): the letters every operand and the output share
        # are its batch, computed one index at a time, like attention's heads
        ctx.per_head(*(labels[sym] for sym in output if len({id(v) for v, _ in uses[sym]}) == len(operands)))
    return check_labels(ctx, tuple(labels[sym] for sym in output))


def _macs_einsum(ctx: OpContext) -> int:
    equation, operands = _einsum_operands(ctx)
    inputs, _ = einsum_subscripts(equation, [v.ndim for v in operands])
    sizes: dict[Any, int] = {}
    for v, syms in zip(operands, inputs):
        for d, sym in enumerate(syms):
            sizes[sym] = max(sizes.get(sym, 1), int(v.shape[d]))
    return int(np.prod(list(sizes.values()))) if len(operands) > 1 else 0


EINSUM = Rule("matmul", _einsum, macs=_macs_einsum,
              doc="einsum: letters unify their dims, summed letters contract, the equation is kept.",
              keys=Keys(torch=("einsum",), aten=("einsum",)), zeros=Zeros.KEEP)


def _sdpa(ctx: OpContext) -> tuple:
    q, k, v = ctx.arg(0, "query"), ctx.arg(1, "key"), ctx.arg(2, "value")
    mask = ctx.arg(3, "attn_mask")
    if ctx.kwargs.get("enable_gqa"):
        raise Unsupported("enable_gqa")
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise Unsupported("attention over 1-d tensors")
    ctx.unify(q.labels[-1], k.labels[-1], " (attention q.k contraction)")
    ctx.contract((q, -1), (k, -1), why="attention q.k contraction")
    ctx.unify(k.labels[-2], v.labels[-2], " (attention key/value positions)")
    ctx.mixing(k.labels[-2], "softmax over key positions")
    ops = [x.part(slice(None, -2)) for x in (q, k, v)]
    if isinstance(mask, Value) and mask.is_tensor:
        _tie_mask(ctx, mask, q.labels[-2], k.labels[-2])
        ops.append(mask.part(slice(None, -2)))
    batch = broadcast_labels(ctx, ops, ctx.out.shape[:-2])
    ctx.per_head(*batch)  # one softmax per head: split_policy="auto" prunes the splits reaching them by heads
    return tuple(batch) + (q.labels[-2], v.labels[-1])


def _tie_mask(ctx: OpContext, mask: Value, queries: Any, keys: Any) -> None:
    """A mask's last two dims index query and key positions: a position removed from ``k``
    (a ``bias_k`` row concatenated to the keys) must leave the mask too; a fixed mask fixes it."""
    if mask.ndim < 2 and mask.ndim and mask.shape[-1] != 1:
        ctx.unify(mask.labels[-1], keys, " (attention mask over key positions)")
        return
    for dim, positions in ((-1, keys), (-2, queries)):
        if mask.ndim >= -dim and mask.shape[dim] != 1:
            ctx.unify(mask.labels[dim], positions, " (attention mask positions)")


def _emit_sdpa(ctx: EmitContext) -> tuple:
    qnode = ctx.node.args[0]
    old_e = ctx.old_shape(qnode)[-1]
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


def _macs_sdpa(ctx: OpContext) -> int:
    q, k, v = ctx.arg(0, "query"), ctx.arg(1, "key"), ctx.arg(2, "value")
    batch = int(np.prod(ctx.out.shape[:-2]))
    return batch * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])


SDPA = Rule("attention", _sdpa, emit=_emit_sdpa, macs=_macs_sdpa,
            doc="F.scaled_dot_product_attention: heads coupled, scale pinned when E shrinks.",
            keys=Keys(functional=("scaled_dot_product_attention",),
                      aten=("scaled_dot_product_attention",)))

RULES = (MATMUL, ADD_MATMUL, EINSUM, SDPA)
