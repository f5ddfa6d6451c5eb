"""Embeddings: ``nn.Embedding``, ``F.embedding``, ATen ``embedding`` (rows indexed by token ids are fixed).

Example:
    >>> import torch, fxprune
    >>> m = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 2))
    >>> [str(x.role) for x in fxprune.analyze(m, (torch.tensor([[1, 2]]),)).groups[0].members]
    ['producer', 'consumer']
"""
from __future__ import annotations

import torch

from ..ir import Role, Zeros
from .context import EmitContext, OpContext, Value, first_tensor
from .registry import Keys, Rule

__all__ = ["EMBEDDING_ATEN", "EMBEDDING_FUNCTION", "EMBEDDING_MODULE", "RULES"]


def _embedding(ctx: OpContext, idx: Value, w: Value) -> tuple:
    ctx.fix(w.labels[0], "embedding rows are indexed by token ids")
    ctx.role(w, 1, Role.PRODUCER)
    return tuple(idx.labels) + (w.labels[1],)


def _embedding_module(ctx: OpContext) -> tuple:
    return _embedding(ctx, first_tensor(ctx), ctx.param("weight"))


def _embedding_function(ctx: OpContext) -> tuple:
    return _embedding(ctx, ctx.arg(0, "input"), ctx.arg(1, "weight"))


def _resize_embedding(m: torch.nn.Module, ctx: EmitContext) -> None:
    m.embedding_dim = ctx.out_shape()[-1]


def _renormalises(m: torch.nn.Module) -> bool:
    """An embedding with ``max_norm`` rescales the rows it looks up in its weight, in place."""
    return m.max_norm is not None


EMBEDDING_MODULE = Rule("embedding", _embedding_module, resize=_resize_embedding, doc="nn.Embedding.",
                        keys=Keys(modules=("Embedding",)), zeros=Zeros.KEEP, writes_state=_renormalises)
EMBEDDING_FUNCTION = Rule("embedding", _embedding_function, doc="F.embedding.",
                          keys=Keys(functional=("embedding",)), zeros=Zeros.KEEP)
EMBEDDING_ATEN = Rule("embedding", lambda ctx: _embedding(ctx, ctx.arg(1), ctx.arg(0)),
                      doc="aten.embedding(weight, indices).", keys=Keys(aten=("embedding",)), zeros=Zeros.KEEP)

RULES = (EMBEDDING_MODULE, EMBEDDING_FUNCTION, EMBEDDING_ATEN)
