"""Indexing and tensor metadata: ``x[...]``, ``narrow``, ATen ``slice``/``select``, ``.shape``, ``size()``.

Slices keep the labels of the indices they select (bounds are re-emitted for
the pruned graph: the kept indices stay in order, so bound ``v`` becomes the
number of kept indices before it); an integer index into a channel dimension
fixes that channel.  Tensor (advanced) indices gather along the dims they
index -- a relative-position-bias table read by ``table[index]`` -- which are
fixed; the other dims keep their labels, so the table's per-head dim stays a
channel (``aten.index`` likewise).  Boolean masks, and tensor indices mixed with
ints or ``None``, are barriers.  ``gather(x, dim, index)`` fixes ``dim``; along
the other dims output, ``x`` and ``index`` share their channels (``x[i]`` and
``index[i]`` make ``out[i]``).  Metadata reads
carry no channels: their values are re-derived from the pruned tensors when
the new graph runs.

Example:
    >>> import torch, fxprune
    >>> class M(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b = torch.nn.Linear(2, 6), torch.nn.Linear(3, 1)
    ...     def forward(self, x):
    ...         return self.b(self.a(x)[:, 3:])
    >>> g = fxprune.analyze(M(), (torch.randn(1, 2),)).groups[0]
    >>> [(m.param, m.index_map.tolist()) for m in g.members][-1]
    ('b.weight', [3, 4, 5])
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch.fx as fx

import torch

from ..ir import SPEC, Algebra, TensorSpec, Zeros
from ..modules import check_traced
from .context import (EmitContext, OpContext, Unsupported, Value, check_labels, first_tensor,
                      normalize_dim, static_value)
from .layout import MATRIX_T
from .registry import Keys, Rule

__all__ = ["ATTRIBUTE", "GATHER", "GETITEM", "GUARDS", "INDEX", "METADATA", "NARROW", "RULES", "SELECT", "SLICE",
           "TRACED_GUARDS", "new_bound"]


def _attribute(ctx: OpContext) -> Any:
    name = ctx.arg(1)
    x = ctx.arg(0)
    if not isinstance(x, Value) or not x.is_tensor:
        return None
    if not isinstance(ctx.out, TensorSpec):
        return None  # .shape, .dtype, .device ...: no channels flow
    if name in ("T", "mT", "mH", "H") and x.ndim >= 2:
        return MATRIX_T.propagate(ctx)
    raise Unsupported(f"tensor attribute {name!r}")


def _metadata(ctx: OpContext) -> None:
    if isinstance(ctx.out, TensorSpec):
        raise Unsupported("a metadata query returned a tensor")
    return None


METADATA = Rule("metadata", _metadata,
                doc="size()/dim()/numel()...: read shapes, carry no channels (the values are "
                    "re-derived from the pruned tensors when the new graph runs).",
                keys=Keys(methods=("size", "dim", "numel", "ndimension", "nelement", "stride",
                                   "is_contiguous", "is_floating_point", "element_size"),
                          torch=("numel",), builtins=("len",),
                          aten=("sym_size", "sym_numel", "_assert_tensor_metadata")), zeros=Zeros.KEEP,
                algebra=Algebra.SIZES)

ATTRIBUTE = Rule("attribute", _attribute,
                 doc="getattr(x, name): .shape etc. carry no channels; .T/.mT transpose.",
                 keys=Keys(builtins=("getattr",)), zeros=Zeros.KEEP, algebra=Algebra.ATTRIBUTE)


# ---------------------------------------------------------------------------
# indexing


def _index_items(ctx: OpContext, x: Value, idx: Any) -> list:
    items = list(idx) if isinstance(idx, tuple) else [idx]
    consumed = sum(1 for it in items if it is not None and it is not Ellipsis)
    out = []
    for it in items:
        if it is Ellipsis:
            out.extend([slice(None)] * (x.ndim - consumed))
        else:
            out.append(it)
    return out



def _getitem(ctx: OpContext) -> Any:
    x = ctx.arg(0)
    idx = ctx.arg(1)
    if isinstance(x, Value) and not x.is_tensor:
        if isinstance(x.labels, tuple) and x.labels and not isinstance(x.labels[0], (np.ndarray, type(None))):
            # tuple of tensors: pick the element
            return x.labels[static_value(idx)] if isinstance(static_value(idx), int) else None
        if isinstance(x.labels, tuple) and isinstance(static_value(idx), int) and x.labels:
            return x.labels[static_value(idx)]
        return None
    if not isinstance(x, Value):
        return None
    items = _index_items(ctx, x, idx)
    if any(isinstance(it, Value) and it.is_tensor for it in items):
        return _gather(ctx, x, items)
    labels: list[Any] = []
    d = 0
    for it in items:
        if it is None:
            labels.append(None)
            continue
        if isinstance(it, Value) and it.is_tensor:
            raise Unsupported("advanced (tensor) indexing")
        lab = x.labels[d]
        size = x.shape[d]
        if isinstance(it, slice):
            start, stop, step = (static_value(it.start), static_value(it.stop), static_value(it.step))
            if lab is not None and step not in (None, 1):
                raise Unsupported("strided slice over channels")
            labels.append(None if lab is None else lab[slice(start, stop, step)])
        else:
            i = static_value(it)
            if not isinstance(i, int):
                raise Unsupported(f"index {it!r}")
            if lab is not None:
                ctx.fix(lab[i % size: i % size + 1], "a single channel is selected by index")
        d += 1
    labels.extend(x.labels[d:])
    return check_labels(ctx, tuple(labels))


def _gather(ctx: OpContext, x: Value, items: list) -> tuple:
    """``x[..., idx, ...]`` with integer tensor indices: the indexed dims are fixed and replaced by
    the broadcast index dims (in place when the indices are adjacent, else first, as NumPy does);
    full slices elsewhere keep their labels."""
    tensor_at = [i for i, it in enumerate(items) if isinstance(it, Value) and it.is_tensor]
    if any(it is None or isinstance(static_value(it), int) for it in items):
        raise Unsupported("advanced indexing mixed with ints or None")
    if any(items[i].spec.dtype in (torch.bool, torch.uint8) for i in tensor_at):
        raise Unsupported("boolean-mask indexing")
    if any(not (isinstance(it, slice) and it == slice(None)) for i, it in enumerate(items) if i not in tensor_at):
        raise Unsupported("advanced indexing with partial slices")
    for i in tensor_at:
        ctx.fix(x.labels[i], "a dim gathered by a tensor index")
        ctx.fix_value(items[i], "an index tensor (positions, not channels)")
    index_nd = len(ctx.out.shape) - (x.ndim - len(tensor_at))
    new = [None] * index_nd
    rest = [x.labels[i] for i in range(len(items)) if i not in tensor_at] + list(x.labels[len(items):])
    adjacent = tensor_at == list(range(tensor_at[0], tensor_at[-1] + 1))
    at = tensor_at[0] if adjacent else 0
    return check_labels(ctx, tuple(rest[:at] + new + rest[at:]))


def _emit_getitem(ctx: EmitContext) -> tuple:
    x, new_idx_arg = ctx.args[0], ctx.args[1]
    xl = ctx.labels_of(ctx.node.args[0])
    if not isinstance(xl, tuple) or not all(l is None or isinstance(l, np.ndarray) for l in xl):
        return ctx.node.target, ctx.args, ctx.kwargs  # indexing a tuple of tensors
    old_idx = ctx.node.args[1]
    packed = isinstance(old_idx, tuple)
    old_items = list(old_idx) if packed else [old_idx]
    new_items = list(new_idx_arg) if packed else [new_idx_arg]
    ndim = len(xl)
    consumed = sum(1 for it in old_items if it is not None and it is not Ellipsis)
    out = []
    d = 0
    for old, new in zip(old_items, new_items):
        if old is Ellipsis:
            out.append(new)
            d += ndim - consumed
            continue
        if old is None:
            out.append(new)
            continue
        lab = xl[d]
        d += 1
        if _is_tensor(old):  # a gathered dim: fixed, the index tensor is passed on
            out.append(new)
            continue
        if lab is None:
            out.append(_pin_changed(ctx, old, new))
            continue
        conv = new_bound(ctx, lab)
        if isinstance(old, slice):
            out.append(slice(conv(old.start), conv(old.stop), None))
        else:
            out.append(conv(old))
    idx = tuple(out) if packed else out[0]
    return ctx.node.target, (x, idx), ctx.kwargs


def _is_tensor(node: Any) -> bool:
    return isinstance(node, fx.Node) and isinstance(node.meta.get(SPEC), TensorSpec)


def new_bound(ctx: EmitContext, lab: np.ndarray) -> Callable[[Any], Any]:
    """Maps an index or slice bound along a labelled dim to the pruned dim.

    The kept indices stay in order, so bound ``v`` becomes the number of kept
    indices before it (negative bounds count from the end; ``None`` stays).
    """
    size = len(lab)
    csum = np.concatenate([[0], np.cumsum(ctx.kept(lab))])

    def conv(v: Any) -> Any:
        v = static_value(v)
        if v is None:
            return None
        v = max(0, min(size, v + size if v < 0 else v))
        return int(csum[v])

    return conv


def _pin_changed(ctx: EmitContext, old: Any, new: Any) -> Any:
    """On a fixed dim, dynamic bounds whose value may change are pinned to their old value."""
    def pin(o: Any, n: Any) -> Any:
        return static_value(o) if isinstance(o, fx.Node) and ctx.value_changed(o) else n

    if isinstance(old, slice):
        return slice(pin(old.start, new.start), pin(old.stop, new.stop), pin(old.step, new.step))
    return pin(old, new)



def _narrow(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    dim = normalize_dim(static_value(ctx.arg(1, "dim")), x.ndim)
    start, length = static_value(ctx.arg(2, "start")), static_value(ctx.arg(3, "length"))
    labels = list(x.labels)
    if labels[dim] is not None:
        start = start % x.shape[dim] if start < 0 else start
        labels[dim] = labels[dim][start:start + length]
    return check_labels(ctx, tuple(labels))


def _emit_narrow(ctx: EmitContext) -> tuple:
    xl = ctx.labels_of(ctx.node.args[0])
    dim = normalize_dim(static_value(ctx.old_arg(1, "dim")), len(xl))
    lab = xl[dim]
    if lab is None:
        return ctx.node.target, ctx.args, ctx.kwargs
    start, length = static_value(ctx.old_arg(2, "start")), static_value(ctx.old_arg(3, "length"))
    conv = new_bound(ctx, lab)
    start = start % len(lab) if start < 0 else start
    new_start = conv(start)
    new_len = conv(start + length) - new_start
    return ctx.node.target, (ctx.args[0], ctx.arg(1, "dim"), new_start, new_len), {}


NARROW = Rule("getitem", _narrow, emit=_emit_narrow, doc="narrow(dim, start, length): a slice.",
              keys=Keys(torch=("narrow",), methods=("narrow",), aten=("narrow",)), zeros=Zeros.KEEP)

GETITEM = Rule("getitem", _getitem, emit=_emit_getitem,
               doc="x[...] with ints/slices/None/Ellipsis; slice bounds follow pruning.",
               keys=Keys(operators=("getitem",)), zeros=Zeros.KEEP)


# ---------------------------------------------------------------------------


def _slice(ctx: OpContext) -> tuple:
    x = ctx.arg(0)
    dim = normalize_dim(static_value(ctx.arg(1, "dim", 0)), x.ndim)
    start, end, step = (static_value(ctx.arg(i, n, d)) for i, n, d in
                        ((2, "start", None), (3, "end", None), (4, "step", 1)))
    labels = list(x.labels)
    if labels[dim] is not None:
        if step not in (None, 1):
            raise Unsupported("strided slice over channels")
        labels[dim] = labels[dim][slice(start, end)]
    return check_labels(ctx, tuple(labels))


def _emit_slice(ctx: EmitContext) -> tuple:
    xl = ctx.labels_of(ctx.node.args[0])
    dim = normalize_dim(static_value(ctx.old_arg(1, "dim", 0)), len(xl))
    lab = xl[dim]
    if lab is None:
        return ctx.node.target, ctx.args, ctx.kwargs
    conv = new_bound(ctx, lab)
    start = conv(ctx.old_arg(2, "start", None))
    end = conv(ctx.old_arg(3, "end", None))
    return ctx.node.target, (ctx.args[0], ctx.arg(1, "dim", 0), start, end), {}


def _select(ctx: OpContext) -> tuple:
    x = ctx.arg(0)
    dim = normalize_dim(static_value(ctx.arg(1)), x.ndim)
    i = static_value(ctx.arg(2))
    lab = x.labels[dim]
    if lab is not None:
        ctx.fix(lab[i % len(lab): i % len(lab) + 1], "a single channel is selected by index")
    return check_labels(ctx, tuple(l for d, l in enumerate(x.labels) if d != dim))


def _emit_select(ctx: EmitContext) -> tuple:
    xl = ctx.labels_of(ctx.node.args[0])
    dim = normalize_dim(static_value(ctx.old_arg(1)), len(xl))
    lab = xl[dim]
    if lab is None:
        return ctx.node.target, ctx.args, ctx.kwargs
    i = static_value(ctx.old_arg(2))
    i = i % len(lab)
    new = int(np.cumsum(ctx.kept(lab))[i]) - 1
    return ctx.node.target, (ctx.args[0], ctx.args[1], new), {}


SLICE = Rule("getitem", _slice, emit=_emit_slice, doc="aten.slice(self, dim, start, end, step).",
             keys=Keys(aten=("slice",)), zeros=Zeros.KEEP)
SELECT = Rule("getitem", _select, emit=_emit_select, doc="aten.select(self, dim, index).",
              keys=Keys(aten=("select",)), zeros=Zeros.KEEP)



def _guards(ctx: OpContext) -> None:
    return None  # torch.export's input guards: they read input shapes, which never change


try:  # the guard module of exported programs (a private class of torch.export)
    from torch.export._unlift import GuardsFn as _GuardsFn
except ImportError:  # pragma: no cover - other torch versions
    _GuardsFn = None

GUARDS = Rule("metadata", _guards, doc="torch.export's _guards_fn (checks input shapes only).",
              keys=Keys(modules=(_GuardsFn,) if _GuardsFn is not None else ()), zeros=Zeros.KEEP)

TRACED_GUARDS = Rule("metadata", _metadata,
                     doc="fxprune.modules.check_traced: a branch, size, rank or dtype frozen by the fx capture "
                         "from example values, checked at run time (no channels flow).",
                     keys=Keys(functions=(check_traced,)), zeros=Zeros.KEEP)

def _aten_index(ctx: OpContext) -> tuple:
    x = ctx.arg(0)
    indices = [slice(None) if i is None else i for i in ctx.arg(1, "indices")]
    if not isinstance(x, Value) or not any(isinstance(i, Value) for i in indices):
        raise Unsupported("aten.index without tensor indices")
    return _gather(ctx, x, indices)


INDEX = Rule("getitem", _aten_index, doc="aten.index(x, [idx, ...]): gathered dims fixed, others kept.",
             keys=Keys(aten=("index",)), zeros=Zeros.KEEP)

def _gather_dim(ctx: OpContext) -> tuple:
    x, index = ctx.arg(0, "input"), ctx.arg(2, "index")
    if not (isinstance(x, Value) and isinstance(index, Value) and index.is_tensor) or x.ndim != index.ndim:
        raise Unsupported("gather with a non-tensor or differently ranked index")
    dim = normalize_dim(static_value(ctx.arg(1, "dim")), x.ndim)
    labels: list[Any] = []
    for d in range(x.ndim):
        if d == dim or x.shape[d] != index.shape[d]:
            ctx.fix(x.labels[d], "a gathered dim" if d == dim else "gathered from a larger dim")
            ctx.fix(index.labels[d], "a gather index's dim")
            labels.append(None)
        else:
            labels.append(ctx.unify(x.labels[d], index.labels[d], " (gather: input and index)"))
    return check_labels(ctx, tuple(labels))


GATHER = Rule("getitem", _gather_dim, doc="gather(x, dim, index): dim fixed; x, index and output share the others.",
              keys=Keys(torch=("gather",), methods=("gather",), aten=("gather",)), zeros=Zeros.KEEP)

RULES = (METADATA, ATTRIBUTE, GETITEM, INDEX, GATHER, NARROW, SLICE, SELECT, GUARDS, TRACED_GUARDS)
