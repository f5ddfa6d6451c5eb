"""Concatenation and splitting: ``cat``, ``stack``, ``split``, ``chunk``, ``unbind``.

``cat`` concatenates label arrays (offset index maps: a consumer of a concat
sees each input's channels at their offset); ``split``/``chunk`` slice them,
and their section sizes are re-emitted for the pruned graph (``chunk``
becomes ``split`` when pruned sections differ).  ``stack`` ties its inputs and
adds a fixed dim; ``unbind`` over a channel dim fixes it.

Example:
    >>> import torch, fxprune
    >>> class M(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b, self.c = torch.nn.Linear(2, 3), torch.nn.Linear(2, 2), torch.nn.Linear(5, 1)
    ...     def forward(self, x):
    ...         return self.c(torch.cat([self.a(x), self.b(x)], 1))
    >>> [m.index_map.tolist() for m in fxprune.analyze(M(), (torch.randn(1, 2),)).group_of("c.weight", 1)[0].members
    ...  if m.param == "c.weight"]
    [[0, 1, 2, 3, 4]]
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..ir import Zeros
from .context import EmitContext, OpContext, Value, check_labels, first_tensor, normalize_dim
from .elementwise import broadcast_labels
from .registry import Keys, Rule

__all__ = ["CAT", "CHUNK", "RULES", "SPLIT", "SPLIT_ATEN", "STACK", "UNBIND"]



def _cat(ctx: OpContext) -> tuple:
    tensors = [t for t in ctx.arg(0, "tensors") if isinstance(t, Value) and t.is_tensor]
    tensors = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)]
    nd = len(ctx.out.shape)
    dim = normalize_dim(ctx.arg(1, "dim", 0), nd)
    labels: list[Any] = []
    for d in range(nd):
        if d == dim:
            parts = []
            for t in tensors:
                lab = t.labels[d]
                if lab is None:
                    lab = ctx.fresh(t.shape[d])
                    ctx.fix(lab, "concatenated with a fixed-size tensor")
                parts.append(lab)
            labels.append(np.concatenate(parts) if parts else None)
        else:
            base = None
            for t in tensors:
                base = t.labels[d] if base is None and t.labels[d] is not None else (
                    ctx.unify(base, t.labels[d]) if base is not None else base)
            if any(t.labels[d] is None for t in tensors) and base is not None:
                ctx.fix(base, "concatenated with a fixed-size tensor")
            labels.append(base)
    return check_labels(ctx, tuple(labels))


CAT = Rule("cat", _cat, doc="cat/concat: labels concatenate (offset index maps).",
           keys=Keys(torch=("cat", "concat", "concatenate"), aten=("cat", "concat", "concatenate")), zeros=Zeros.KEEP)


def _stack(ctx: OpContext) -> tuple:
    tensors = [t for t in ctx.arg(0, "tensors") if isinstance(t, Value) and t.is_tensor]
    nd = len(ctx.out.shape)
    dim = normalize_dim(ctx.arg(1, "dim", 0), nd)
    inner = broadcast_labels(ctx, tensors, tensors[0].shape)
    labels = list(inner)
    labels.insert(dim, None)
    return check_labels(ctx, tuple(labels))


STACK = Rule("stack", _stack, doc="stack: inputs tied, new dim fixed.",
             keys=Keys(torch=("stack",), aten=("stack",)), zeros=Zeros.KEEP)


def _split(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    dim = normalize_dim(ctx.arg(2, "dim", 0), x.ndim)
    lab = x.labels[dim]
    outs = []
    offset = 0
    for spec in ctx.out:
        n = spec.shape[dim]
        labels = list(x.labels)
        labels[dim] = None if lab is None else lab[offset:offset + n]
        outs.append(check_labels(ctx, tuple(labels), spec))
        offset += n
    return tuple(outs)


def _emit_split(ctx: EmitContext) -> tuple:
    x = ctx.args[0]
    xl = ctx.labels_of(ctx.node.args[0])
    old_dim = ctx.old_arg(2, "dim", 0)
    d = normalize_dim(old_dim, len(xl))
    if xl[d] is None:
        return ctx.node.target, ctx.args, ctx.kwargs
    sizes = [int(s[d]) for s in ctx.out_shape()]
    kwargs = {k: v for k, v in ctx.kwargs.items() if k not in ("split_size_or_sections", "split_size", "dim")}
    return ctx.node.target, (x, sizes, old_dim), kwargs


SPLIT = Rule("split", _split, emit=_emit_split, doc="split: section sizes follow pruning.",
             keys=Keys(torch=("split",), methods=("split",)), zeros=Zeros.KEEP)


def _emit_aten_split(ctx: EmitContext) -> tuple:
    target, args, kwargs = _emit_split(ctx)
    if isinstance(args[1], (list, tuple)):  # sizes: aten.split.Tensor takes one int
        return torch.ops.aten.split_with_sizes.default, args, kwargs
    return target, args, kwargs


SPLIT_ATEN = Rule("split", _split, emit=_emit_aten_split,
                  doc="aten.split / split_with_sizes: pruned sections become split_with_sizes.",
                  keys=Keys(aten=("split", "split_with_sizes")), zeros=Zeros.KEEP)


def chunk_sizes(total: int, chunks: int) -> list[int]:
    """The section sizes ``torch.chunk`` gives: ``ceil(total / chunks)`` each, the last smaller, and
    fewer than ``chunks`` sections when they do not all fit (``chunk(1 channel, 2)`` is one section).

    >>> chunk_sizes(5, 2), chunk_sizes(1, 2), chunk_sizes(0, 2)
    ([3, 2], [1], [0, 0])
    """
    if total == 0:
        return [0] * chunks
    per = -(-total // chunks)
    return [min(per, total - start) for start in range(0, total, per)]


def _emit_chunk(ctx: EmitContext) -> tuple:
    x = ctx.args[0]
    xl = ctx.labels_of(ctx.node.args[0])
    old_dim = ctx.old_arg(2, "dim", 0)
    d = normalize_dim(old_dim, len(xl))
    if xl[d] is None:
        return ctx.node.target, ctx.args, ctx.kwargs
    sizes = [int(s[d]) for s in ctx.out_shape()]
    if sizes == chunk_sizes(sum(sizes), len(sizes)):
        return ctx.node.target, ctx.args, ctx.kwargs
    if ctx.node.op == "call_method":
        return "split", (x, sizes, old_dim), {}
    return torch.split, (x, sizes, old_dim), {}


CHUNK = Rule("split", _split, emit=_emit_chunk,
             doc="chunk: becomes split(sizes) when pruned sections are unequal.",
             keys=Keys(torch=("chunk",), methods=("chunk",), aten=("chunk",)), zeros=Zeros.KEEP)


def _unbind(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    dim = normalize_dim(ctx.arg(1, "dim", 0), x.ndim)
    ctx.fix(x.labels[dim], "unbind over channels")
    labels = tuple(l for i, l in enumerate(x.labels) if i != dim)
    return tuple(labels for _ in ctx.out)


UNBIND = Rule("split", _unbind, doc="unbind: the unbound dim is fixed.",
              keys=Keys(torch=("unbind",), methods=("unbind",), aten=("unbind",)), zeros=Zeros.KEEP)

RULES = (CAT, STACK, SPLIT, SPLIT_ATEN, CHUNK, UNBIND)


#
