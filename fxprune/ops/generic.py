"""Generic rules shared by op families.

Each public constant is a :class:`~fxprune.ops.registry.Rule` that many keys
point at (``UNARY`` for activations, dropout, ``contiguous``...; ``ELEMENTWISE``
for broadcasting arithmetic; ``REDUCE_*`` for reductions; ``RESHAPE`` for
``view``/``reshape``/``flatten``...).  The label algebra they implement:

* a dimension of size ``n`` carries ``None`` (fixed) or ``n`` atom ids;
* broadcasting ties the labels of equal-size dimensions together; a fixed
  dimension tied to a labelled one fixes it;
* layout ops move labels between dimensions with exact index maps: a merge of
  dimensions repeats the single labelled one's atoms; a split assigns the atoms
  to the one output dimension they depend on, and if they depend on several (a
  channel dimension split into ``heads x head_dim`` or ``groups x channels``),
  atoms are unified across all but one output dimension chosen by the *split
  policy* (``inner``: prune the innermost factor uniformly, e.g. head_dim in
  every head or channels in every shuffle group; ``outer``: prune the outermost
  factor, e.g. whole heads).

Example:
    >>> import torch
    >>> from fxprune.ops.generic import split_labels
    >>> from fxprune.analysis.atoms import Atoms
    >>> atoms = Atoms(); c = atoms.fresh(6)
    >>> h, d = split_labels(atoms, c, (2, 3), "inner")   # 6 channels -> 2 heads x 3
    >>> h is None, len(set(atoms.find(d).tolist()))
    (True, 3)
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch.fx as fx

from .registry import (
    EmitContext,
    OpContext,
    Rule,
    Unsupported,
    Value,
    dims_arg,
    normalize_dim,
)

__all__ = [
    "UNARY",
    "ELEMENTWISE",
    "ELEMENTWISE_SCALE",
    "ELEMENTWISE_BIAS",
    "WHERE",
    "REDUCE_SUM",
    "REDUCE_MIXING",
    "REDUCE_TUPLE",
    "NORM_REDUCE",
    "SOFTMAX",
    "RESHAPE",
    "VIEW",
    "UNFLATTEN",
    "EXPAND",
    "REPEAT",
    "PERMUTE",
    "TRANSPOSE",
    "MATRIX_T",
    "GETITEM",
    "CAT",
    "STACK",
    "SPLIT",
    "CHUNK",
    "UNBIND",
    "MATMUL",
    "SPATIAL",
    "LIKE",
    "ATTRIBUTE",
    "METADATA",
    "NARROW",
    "split_labels",
    "new_bound",
    "reshape_labels",
    "broadcast_labels",
    "first_tensor",
]


# ---------------------------------------------------------------------------
# helpers


def first_tensor(ctx: OpContext) -> Value:
    for a in list(ctx.args) + list(ctx.kwargs.values()):
        if isinstance(a, Value) and a.is_tensor:
            return a
    raise Unsupported("no tensor argument")


def _check(ctx: OpContext, labels: tuple, spec: Any = None) -> tuple:
    spec = ctx.out if spec is None else spec
    if len(labels) != len(spec.shape):
        raise Unsupported(f"rule produced {len(labels)} dims for a {len(spec.shape)}-d output")
    for lab, size in zip(labels, spec.shape):
        if lab is not None and len(lab) != size:
            raise Unsupported("rule produced labels that do not match the output shape")
    return tuple(labels)


def broadcast_labels(ctx: OpContext, values: Sequence[Value], out_shape: Sequence[int],
                     role: str = "coupled") -> tuple:
    """Labels of a broadcasting elementwise result; ties equal-size dimensions."""
    nd = len(out_shape)
    result: list[Any] = []
    for d in range(nd):
        size = out_shape[d]
        present: list[np.ndarray] = []
        fixed = False
        for v in values:
            k = d - (nd - v.ndim)
            if k < 0:
                continue
            vsize = v.shape[k]
            lab = v.labels[k]
            if vsize == size and (size != 1 or lab is not None):
                if lab is None:
                    fixed = True
                else:
                    present.append(lab)
                    ctx.role(v, k, role)
            elif lab is not None:  # a labelled size-1 dim broadcast to many
                ctx.fix(lab, "a one-channel dimension is broadcast")
        if not present:
            result.append(None)
            continue
        base = present[0]
        for other in present[1:]:
            ctx.unify(base, other)
        if fixed:
            ctx.fix(base, "tied by broadcasting to a fixed-size dimension")
        result.append(base)
    return tuple(result)


def _tensor_values(ctx: OpContext) -> list[Value]:
    out = []
    for a in list(ctx.args) + list(ctx.kwargs.values()):
        if isinstance(a, Value) and a.is_tensor:
            out.append(a)
    return out


# ---------------------------------------------------------------------------
# unary / elementwise


def _unary(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    if tuple(x.shape) != tuple(ctx.out.shape):
        raise Unsupported("a shape-preserving rule saw the shape change")
    return x.labels


UNARY = Rule("unary", _unary, doc="Shape-preserving ops: activations, dropout, casts, identity.")


def _elementwise(role: str):
    def propagate(ctx: OpContext) -> tuple:
        return broadcast_labels(ctx, _tensor_values(ctx), ctx.out.shape, role)

    return propagate


ELEMENTWISE = Rule("elementwise", _elementwise("coupled"),
                   doc="Broadcasting n-ary arithmetic; ties channels of equal-size dims.")
ELEMENTWISE_SCALE = Rule("elementwise", _elementwise("scale"),
                         doc="Broadcasting multiply/divide; parameters involved are scales.")
ELEMENTWISE_BIAS = Rule("elementwise", _elementwise("bias"),
                        doc="Broadcasting add/subtract; parameters involved are biases.")
WHERE = ELEMENTWISE


def _like(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    if tuple(x.shape) != tuple(ctx.out.shape):
        return tuple(None for _ in ctx.out.shape)
    # A fresh tensor shaped like x: its channels follow x's, nothing reads x's values.
    return x.labels


LIKE = Rule("like", _like, doc="zeros_like / ones_like / empty_like: labels follow the template.")


# ---------------------------------------------------------------------------
# reductions


def _reduce(mixing: bool, dim_pos: int, keep_pos: int, tuple_out: bool):
    def propagate(ctx: OpContext) -> Any:
        x = first_tensor(ctx)
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
                if keep:
                    labels.append(None)
            else:
                labels.append(lab)
        if tuple_out:
            return tuple(_check(ctx, tuple(labels), s) for s in ctx.out)
        return _check(ctx, tuple(labels))

    return propagate


REDUCE_SUM = Rule("reduce", _reduce(False, 1, 2, False), doc="sum: exact for dead channels.")
REDUCE_MIXING = Rule("reduce", _reduce(True, 1, 2, False),
                     doc="mean/var/std/amax/prod...: channel statistics (mixing).")
REDUCE_TUPLE = Rule("reduce", _reduce(True, 1, 2, True), doc="max/min with dim: (values, indices).")
NORM_REDUCE = Rule("reduce", _reduce(True, 2, 3, False), doc="x.norm(p, dim, keepdim).")


def _softmax(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    dim = ctx.arg(1, "dim", None)
    if dim is None:
        raise Unsupported("softmax without dim")
    d = normalize_dim(dim, x.ndim)
    ctx.mixing(x.labels[d], "softmax over channels")
    return x.labels


SOFTMAX = Rule("softmax", _softmax, doc="softmax/log_softmax: shape-preserving, mixing along dim.")


# ---------------------------------------------------------------------------
# layout: split / merge / permute


def split_labels(atoms: Any, labels: np.ndarray, shape: Sequence[int], policy: str) -> list:
    """Distribute a flat labels array over a split into ``shape`` (row-major).

    Returns one entry per output dimension.  Labels that depend on one output
    dimension only go to it; otherwise atoms are unified along every other
    dimension so they depend on the policy's choice only: ``"inner"`` (the last
    varying factor), ``"outer"`` (the first) or an int indexing the varying
    factors (``1`` picks the heads of a fused ``(3, heads, head_dim)`` split).
    """
    shape = tuple(int(s) for s in shape)
    arr = labels.reshape(shape) if shape else labels.reshape(())
    nd = len(shape)
    if nd == 0:
        return []
    varying = []
    for ax in range(nd):
        if shape[ax] == 1:
            continue
        first = np.take(arr, [0], axis=ax)
        if not np.array_equal(np.broadcast_to(first, arr.shape), arr):
            varying.append(ax)
    if len(varying) >= 2:
        # check whether labels already depend on one axis only, modulo unions
        roots = atoms.find(arr.ravel()).reshape(shape)
        varying = [ax for ax in varying
                   if not np.array_equal(np.broadcast_to(np.take(roots, [0], axis=ax), shape), roots)]
        arr = roots
    out: list[Any] = [None] * nd
    if not varying:
        axis = next((ax for ax in range(nd) if shape[ax] != 1), None)
        if axis is None:
            return out
        idx = [0] * nd
        idx[axis] = slice(None)
        out[axis] = arr[tuple(idx)].copy()
        return out
    if len(varying) == 1:
        axis = varying[0]
    else:
        if isinstance(policy, int) and not isinstance(policy, bool):
            if not -len(varying) <= policy < len(varying):
                raise Unsupported(f"split policy {policy} but only {len(varying)} factors vary")
            axis = varying[policy]
        else:
            axis = varying[-1] if policy == "inner" else varying[0]
        moved = np.moveaxis(arr, axis, 0).reshape(shape[axis], -1)
        for row in moved:
            atoms.unify_all(row)
    idx = [0] * nd
    idx[axis] = slice(None)
    out[axis] = np.asarray(arr[tuple(idx)]).copy()
    return out


def _merge(labels: Sequence[Any], shape: Sequence[int]) -> np.ndarray | None:
    labelled = [i for i, lab in enumerate(labels) if lab is not None]
    if not labelled:
        return None
    if len(labelled) > 1:
        raise Unsupported("merging two channel dimensions into one")
    k = labelled[0]
    view = [1] * len(shape)
    view[k] = shape[k]
    return np.broadcast_to(labels[k].reshape(view), tuple(shape)).ravel()


def reshape_labels(ctx: OpContext, x: Value, out_shape: Sequence[int]) -> tuple:
    """Exact labels for any reshape (view, reshape, flatten, unflatten, squeeze, unsqueeze)."""
    in_shape = list(x.shape)
    out_shape = list(out_shape)
    labels = list(x.labels)
    for i, s in enumerate(in_shape):
        if s == 1 and labels[i] is not None:
            ctx.fix(labels[i], "a one-channel dimension is reshaped away")
    ins = [i for i, s in enumerate(in_shape) if s != 1]
    outs = [j for j, s in enumerate(out_shape) if s != 1]
    result: list[Any] = [None] * len(out_shape)
    if any(s == 0 for s in in_shape):
        for lab in labels:
            ctx.fix(lab, "empty tensor")
        return tuple(result)
    i = j = 0
    while i < len(ins) or j < len(outs):
        gi, gj = [ins[i]], [outs[j]]
        pi, pj = in_shape[ins[i]], out_shape[outs[j]]
        i += 1
        j += 1
        while pi != pj:
            if pi < pj:
                gi.append(ins[i]); pi *= in_shape[ins[i]]; i += 1
            else:
                gj.append(outs[j]); pj *= out_shape[outs[j]]; j += 1
        group_labels = [labels[k] for k in gi]
        try:
            merged = _merge(group_labels, [in_shape[k] for k in gi])
        except Unsupported:
            for lab in group_labels:
                ctx.fix(lab, "two channel dimensions merged into one")
            continue
        if merged is None:
            continue
        parts = split_labels(ctx.atoms, merged, [out_shape[k] for k in gj], ctx.split_policy)
        for k, lab in zip(gj, parts):
            result[k] = lab
    return tuple(result)


def _reshape(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    return _check(ctx, reshape_labels(ctx, x, ctx.out.shape))


def _size_args(args: tuple, kwargs: dict, start: int) -> tuple[list, bool]:
    rest = list(args[start:])
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        return list(rest[0]), True
    if not rest and "shape" in kwargs:
        return list(kwargs["shape"]), True
    if not rest and "size" in kwargs:
        return list(kwargs["size"]), True
    return rest, False


def _new_sizes(ctx: EmitContext, old: list, new: list, labels: tuple, new_shape: tuple,
               old_shape: tuple) -> list:
    """Size arguments for the pruned graph.

    A dimension whose size changes gets its new size as a constant; a dynamic
    size (an fx node) whose value may change in the pruned graph is pinned to the
    size the dimension must have; everything else (``-1``, batch sizes read from
    unpruned tensors) is kept as written.
    """
    out = []
    for o, s, lab, n, before in zip(old, new, labels, new_shape, old_shape):
        if isinstance(o, int) and o == -1:
            out.append(s)
        elif lab is not None and n != before:
            out.append(int(n))
        elif isinstance(o, fx.Node) and ctx.value_changed(o):
            out.append(int(n))
        else:
            out.append(s)
    return out


def _emit_sizes(start: int):
    def emit(ctx: EmitContext) -> tuple:
        sizes, packed = _size_args(ctx.args, ctx.kwargs, start)
        old, _ = _size_args(ctx.old_args, ctx.old_kwargs, start)
        labels = ctx.out_labels()
        if len(sizes) != len(labels):
            return ctx.node.target, ctx.args, ctx.kwargs
        new = _new_sizes(ctx, old, sizes, labels, ctx.out_shape(), ctx.node.meta["fxprune.spec"].shape)
        head = tuple(ctx.args[:start])
        kwargs = {k: v for k, v in ctx.kwargs.items() if k not in ("shape", "size")}
        if packed:
            return ctx.node.target, head + (tuple(new),), kwargs
        return ctx.node.target, head + tuple(new), kwargs

    return emit


RESHAPE = Rule("reshape", _reshape, doc="flatten/squeeze/unsqueeze: exact index maps, no size args.")
VIEW = Rule("reshape", _reshape, emit=_emit_sizes(1),
            doc="view/reshape (x.view(*sizes), torch.reshape(x, sizes)): sizes follow pruning.")


def _emit_unflatten(ctx: EmitContext) -> tuple:
    x = ctx.args[0]
    dim = ctx.arg(1, "dim")
    sizes = list(ctx.arg(2, "sizes"))
    old = list(ctx.old_arg(2, "sizes"))
    labels = ctx.out_labels()
    shape = ctx.out_shape()
    before = ctx.node.meta["fxprune.spec"].shape
    d = normalize_dim(dim, len(ctx.new_shape(ctx.node.args[0])))
    k = slice(d, d + len(sizes))
    new = _new_sizes(ctx, old, sizes, labels[k], shape[k], before[k])
    return ctx.node.target, (x, dim, tuple(new)), {}


UNFLATTEN = Rule("reshape", _reshape, emit=_emit_unflatten, doc="unflatten(dim, sizes).")


def _expand(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    nd = len(ctx.out.shape)
    labels: list[Any] = [None] * nd
    for k in range(x.ndim):
        d = nd - x.ndim + k
        if x.shape[k] == ctx.out.shape[d]:
            labels[d] = x.labels[k]
        elif x.labels[k] is not None:
            ctx.fix(x.labels[k], "a one-channel dimension is expanded")
    return tuple(labels)


EXPAND = Rule("expand", _expand, emit=_emit_sizes(1), doc="expand: new dims are fixed.")


def _repeat(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    reps, _ = _size_args_values(ctx, 1)
    nd = len(ctx.out.shape)
    labels: list[Any] = [None] * nd
    for k in range(x.ndim):
        d = nd - x.ndim + k
        lab = x.labels[k]
        if lab is not None:
            labels[d] = np.tile(lab, int(reps[d]))
    return _check(ctx, tuple(labels))


def _size_args_values(ctx: OpContext, start: int) -> tuple[list, bool]:
    rest = list(ctx.args[start:])
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        rest = list(rest[0])
    vals = [r.spec if isinstance(r, Value) else r for r in rest]
    return vals, True


REPEAT = Rule("repeat", _repeat, doc="repeat: labels tile.")


def _perm_args(ctx: OpContext, start: int) -> list[int]:
    vals, _ = _size_args_values(ctx, start)
    if not vals and "dims" in ctx.kwargs:
        vals = list(ctx.kwargs["dims"])
    return [int(v) for v in vals]


def _permute(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    perm = [normalize_dim(p, x.ndim) for p in _perm_args(ctx, 1)]
    return _check(ctx, tuple(x.labels[p] for p in perm))


PERMUTE = Rule("permute", _permute, doc="permute: labels follow their dims.")


def _transpose(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    a = normalize_dim(ctx.arg(1, "dim0"), x.ndim)
    b = normalize_dim(ctx.arg(2, "dim1"), x.ndim)
    labels = list(x.labels)
    labels[a], labels[b] = labels[b], labels[a]
    return _check(ctx, tuple(labels))


TRANSPOSE = Rule("permute", _transpose, doc="transpose/swapaxes.")


def _matrix_t(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    labels = list(x.labels)
    if len(labels) >= 2:
        labels[-1], labels[-2] = labels[-2], labels[-1]
    return _check(ctx, tuple(labels))


MATRIX_T = Rule("permute", _matrix_t, doc="t() / .T / .mT: swap the last two dims.")


# ---------------------------------------------------------------------------
# getattr on tensors


def _attribute(ctx: OpContext) -> Any:
    name = ctx.arg(1)
    x = ctx.arg(0)
    if not isinstance(x, Value) or not x.is_tensor:
        return None
    from ..analysis.capture import TensorSpec

    if not isinstance(ctx.out, TensorSpec):
        return None  # .shape, .dtype, .device ...: no channels flow
    if name in ("T", "mT", "mH", "H") and x.ndim >= 2:
        return _matrix_t(ctx)
    raise Unsupported(f"tensor attribute {name!r}")


def _metadata(ctx: OpContext) -> None:
    from ..analysis.capture import TensorSpec

    if isinstance(ctx.out, TensorSpec):
        raise Unsupported("a metadata query returned a tensor")
    return None


METADATA = Rule("metadata", _metadata,
                doc="size()/dim()/numel()...: read shapes, carry no channels (the values are "
                    "re-derived from the pruned tensors when the new graph runs).")

ATTRIBUTE = Rule("attribute", _attribute, doc="getattr(x, name): .shape etc. carry no channels; .T/.mT transpose.")


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


def _intval(v: Any) -> Any:
    if isinstance(v, Value):
        return v.spec
    return v


def _getitem(ctx: OpContext) -> Any:
    x = ctx.arg(0)
    idx = ctx.arg(1)
    if isinstance(x, Value) and not x.is_tensor:
        if isinstance(x.labels, tuple) and x.labels and not isinstance(x.labels[0], (np.ndarray, type(None))):
            # tuple of tensors: pick the element
            return x.labels[_intval(idx)] if isinstance(_intval(idx), int) else None
        if isinstance(x.labels, tuple) and isinstance(_intval(idx), int) and x.labels:
            return x.labels[_intval(idx)]
        return None
    if not isinstance(x, Value):
        return None
    items = _index_items(ctx, x, idx)
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
            start, stop, step = (_intval(it.start), _intval(it.stop), _intval(it.step))
            if lab is not None and step not in (None, 1):
                raise Unsupported("strided slice over channels")
            labels.append(None if lab is None else lab[slice(start, stop, step)])
        else:
            i = _intval(it)
            if not isinstance(i, int):
                raise Unsupported(f"index {it!r}")
            if lab is not None:
                ctx.fix(lab[i % size: i % size + 1], "a single channel is selected by index")
        d += 1
    labels.extend(x.labels[d:])
    return _check(ctx, tuple(labels))


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


def new_bound(ctx: EmitContext, lab: np.ndarray) -> Callable[[Any], Any]:
    """Maps an index or slice bound along a labelled dim to the pruned dim.

    The kept indices stay in order, so bound ``v`` becomes the number of kept
    indices before it (negative bounds count from the end; ``None`` stays).
    """
    size = len(lab)
    csum = np.concatenate([[0], np.cumsum(ctx.kept(lab))])

    def conv(v: Any) -> Any:
        v = _static(v)
        if v is None:
            return None
        v = max(0, min(size, v + size if v < 0 else v))
        return int(csum[v])

    return conv


def _pin_changed(ctx: EmitContext, old: Any, new: Any) -> Any:
    """On a fixed dim, dynamic bounds whose value may change are pinned to their old value."""
    def pin(o: Any, n: Any) -> Any:
        return _static(o) if isinstance(o, fx.Node) and ctx.value_changed(o) else n

    if isinstance(old, slice):
        return slice(pin(old.start, new.start), pin(old.stop, new.stop), pin(old.step, new.step))
    return pin(old, new)


def _static(v: Any) -> Any:
    """The analysis-time value of an index item (fx nodes carry theirs in meta)."""
    if isinstance(v, fx.Node):
        from .. import meta

        return v.meta.get(meta.SPEC)
    return v


def _narrow(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    dim = normalize_dim(_intval(ctx.arg(1, "dim")), x.ndim)
    start, length = _intval(ctx.arg(2, "start")), _intval(ctx.arg(3, "length"))
    labels = list(x.labels)
    if labels[dim] is not None:
        start = start % x.shape[dim] if start < 0 else start
        labels[dim] = labels[dim][start:start + length]
    return _check(ctx, tuple(labels))


def _emit_narrow(ctx: EmitContext) -> tuple:
    xl = ctx.labels_of(ctx.node.args[0])
    dim = normalize_dim(_static(ctx.old_arg(1, "dim")), len(xl))
    lab = xl[dim]
    if lab is None:
        return ctx.node.target, ctx.args, ctx.kwargs
    start, length = _static(ctx.old_arg(2, "start")), _static(ctx.old_arg(3, "length"))
    conv = new_bound(ctx, lab)
    start = start % len(lab) if start < 0 else start
    new_start = conv(start)
    new_len = conv(start + length) - new_start
    return ctx.node.target, (ctx.args[0], ctx.arg(1, "dim"), new_start, new_len), {}


NARROW = Rule("getitem", _narrow, emit=_emit_narrow, doc="narrow(dim, start, length): a slice.")

GETITEM = Rule("getitem", _getitem, emit=_emit_getitem,
               doc="x[...] with ints/slices/None/Ellipsis; slice bounds follow pruning.")


# ---------------------------------------------------------------------------
# concatenation and splitting


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
    return _check(ctx, tuple(labels))


CAT = Rule("cat", _cat, doc="cat/concat: labels concatenate (offset index maps).")


def _stack(ctx: OpContext) -> tuple:
    tensors = [t for t in ctx.arg(0, "tensors") if isinstance(t, Value) and t.is_tensor]
    nd = len(ctx.out.shape)
    dim = normalize_dim(ctx.arg(1, "dim", 0), nd)
    inner = broadcast_labels(ctx, tensors, tensors[0].shape)
    labels = list(inner)
    labels.insert(dim, None)
    return _check(ctx, tuple(labels))


STACK = Rule("stack", _stack, doc="stack: inputs tied, new dim fixed.")


def _sections(ctx: OpContext, x: Value, dim: int) -> list[int]:
    return [s.shape[dim] for s in ctx.out]


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
        outs.append(_check(ctx, tuple(labels), spec))
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


SPLIT = Rule("split", _split, emit=_emit_split, doc="split: section sizes follow pruning.")


def _emit_chunk(ctx: EmitContext) -> tuple:
    x = ctx.args[0]
    xl = ctx.labels_of(ctx.node.args[0])
    old_dim = ctx.old_arg(2, "dim", 0)
    d = normalize_dim(old_dim, len(xl))
    if xl[d] is None:
        return ctx.node.target, ctx.args, ctx.kwargs
    sizes = [int(s[d]) for s in ctx.out_shape()]
    chunks = len(sizes)
    total = sum(sizes)
    per = -(-total // chunks) if chunks else 0
    expected = [min(per, total - i * per) for i in range(chunks)]
    if sizes == expected:
        return ctx.node.target, ctx.args, ctx.kwargs
    import torch

    if ctx.node.op == "call_method":
        return "split", (x, sizes, old_dim), {}
    return torch.split, (x, sizes, old_dim), {}


CHUNK = Rule("split", _split, emit=_emit_chunk,
             doc="chunk: becomes split(sizes) when pruned sections are unequal.")


def _unbind(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    dim = normalize_dim(ctx.arg(1, "dim", 0), x.ndim)
    ctx.fix(x.labels[dim], "unbind over channels")
    labels = tuple(l for i, l in enumerate(x.labels) if i != dim)
    return tuple(labels for _ in ctx.out)


UNBIND = Rule("split", _unbind, doc="unbind: the unbound dim is fixed.")


# ---------------------------------------------------------------------------
# matmul


def _matmul(ctx: OpContext) -> tuple:
    a, b = ctx.arg(0), ctx.arg(1, "other") if ctx.arg(1) is not None else ctx.arg(1, "mat2")
    if not (isinstance(a, Value) and isinstance(b, Value)) or a.ndim < 2 or b.ndim < 2:
        raise Unsupported("matmul with a 1-d operand")
    ctx.unify(a.labels[-1], b.labels[-2], " (matmul contraction)")
    batch_a = Value(_spec_of_shape(a.shape[:-2]), a.labels[:-2])
    batch_b = Value(_spec_of_shape(b.shape[:-2]), b.labels[:-2])
    out_batch = ctx.out.shape[:-2]
    batch = broadcast_labels(ctx, [batch_a, batch_b], out_batch)
    return _check(ctx, tuple(batch) + (a.labels[-2], b.labels[-1]))


def _spec_of_shape(shape: Sequence[int]) -> Any:
    from ..analysis.capture import TensorSpec
    import torch

    return TensorSpec(tuple(shape), torch.float32)


def _macs_matmul(ctx: OpContext) -> int:
    a = ctx.arg(0)
    return int(np.prod(ctx.out.shape)) * int(a.shape[-1])


MATMUL = Rule("matmul", _matmul, macs=_macs_matmul,
              doc="matmul/bmm/@: contraction dims tied, batch dims broadcast.")


# ---------------------------------------------------------------------------
# spatial ops (pooling, interpolation)


def _spatial(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    from ..analysis.capture import TensorSpec

    out = ctx.out if isinstance(ctx.out, TensorSpec) else ctx.out[0]
    if x.ndim < 3 or len(out.shape) != x.ndim:
        raise Unsupported("spatial op on an unbatched or reshaped tensor")
    for d in range(2, x.ndim):
        if x.labels[d] is not None:
            raise Unsupported("pooling over a channel dimension")
    labels = (x.labels[0], x.labels[1]) + tuple(None for _ in range(2, x.ndim))
    if not isinstance(ctx.out, TensorSpec):
        return tuple(labels for _ in ctx.out)
    return labels


SPATIAL = Rule("spatial", _spatial, doc="pooling / adaptive pooling / interpolate over dims 2+.")
