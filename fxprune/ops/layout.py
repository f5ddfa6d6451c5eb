"""Layout ops: reshape, view, flatten, unflatten, squeeze, expand, repeat, permute, transpose, roll.

Layout ops move labels between dimensions with exact index maps: a merge of
dimensions repeats the single labelled one's atoms; a split assigns the atoms
to the one output dimension they depend on, and if they depend on several (a
channel dimension split into ``heads x head_dim`` or ``groups x channels``),
atoms are unified across all but one output dimension chosen by the *split
policy* (:class:`SplitPolicy`: ``inner``: prune the innermost factor uniformly,
e.g. head_dim in every head or channels in every shuffle group; ``outer``: prune
the outermost factor; ``heads``: prune the factor next to the innermost, whole
heads of ``(heads, head_dim)``, ``(3, heads, head_dim)`` (a fused q/k/v layout:
the leading q/k/v factor is skipped) and GQA groups; ``auto``, the default:
``heads`` where the heads reach an attention op, ``inner`` elsewhere, decided
per node by the channel pass).  Size arguments
(``view(B, T, C)``) are re-emitted for the pruned graph.  ``roll`` passes the dims it does not roll; rolling
along a channel dim (or a flattened roll over one) is a barrier: the pruned
dim would wrap at another place.

Example:
    >>> from fxprune.ops.layout import split_labels
    >>> from fxprune.ir import Atoms
    >>> atoms = Atoms(); c = atoms.fresh(6)
    >>> h, d = split_labels(atoms, c, (2, 3), "inner")   # 6 channels -> 2 heads x 3
    >>> h is None, len(set(atoms.find(d).tolist()))
    (True, 3)
"""
from __future__ import annotations

import enum
from typing import Any, Sequence

import numpy as np
import torch.fx as fx

from ..ir import Zeros
from .context import EmitContext, OpContext, Split, Unsupported, Value, check_labels, first_tensor, normalize_dim
from .registry import Keys, Rule, writes_nothing

__all__ = [
    "EXPAND",
    "EXPAND_AS",
    "MATRIX_T",
    "PERMUTE",
    "REPEAT",
    "RESHAPE",
    "ROLL",
    "RULES",
    "SplitPolicy",
    "TRANSPOSE",
    "UNFLATTEN",
    "UNFLATTEN_MODULE",
    "VIEW",
    "new_sizes",
    "reshape_labels",
    "split_labels",
]


class SplitPolicy(str, enum.Enum):
    """Which factor of a channel dimension split into several is pruned (the others are kept whole).

    An int instead of a policy indexes the varying factors directly.

    ``AUTO`` (the default of :class:`~fxprune.analysis.analysis.AnalysisConfig`)
    is resolved per node by the channel pass, from what the rules declare
    (:meth:`~fxprune.ops.context.OpContext.per_head`: the batch dims of
    ``q @ k.transpose(-2, -1)``, of ``scaled_dot_product_attention`` and of
    other contractions of two activations, the heads of ``nn.MultiheadAttention``):
    a split whose ``heads`` factor reaches such a dim is pruned by whole heads;
    any other (a channel shuffle's ``view(B, groups, C // groups, H, W)``), or one
    whose heads are all fixed, by its ``inner`` factor.

    Example:
        >>> SplitPolicy("auto") is SplitPolicy.AUTO, SplitPolicy.HEADS == "heads"
        (True, True)
    """

    #: whole heads where the split reaches an attention op, the innermost factor elsewhere
    AUTO = "auto"
    #: the innermost factor, uniformly in every outer one (head_dim in every head)
    INNER = "inner"
    #: the outermost factor (of ``(3, heads, head_dim)``: q, k or v as a whole, which attention then fixes)
    OUTER = "outer"
    #: the factor next to the innermost: whole heads of ``(heads, head_dim)`` and ``(3, heads, head_dim)``
    HEADS = "heads"


def choose_axis(varying: Sequence[int], policy: Any) -> int:
    """The output axis a policy prunes, among the ``varying`` factors of a split (two or more).

    ``auto`` is no answer here: the channel pass resolves it to ``heads`` or
    ``inner`` per node before a rule runs.

    Example:
        >>> choose_axis([2, 3, 4], "heads"), choose_axis([2, 3], "heads"), choose_axis([2, 3, 4], "outer")
        (3, 2, 2)

    Raises:
        Unsupported: an int out of range, or ``auto`` (unresolved).
    """
    if isinstance(policy, int) and not isinstance(policy, (bool, SplitPolicy)):
        if not -len(varying) <= policy < len(varying):
            raise Unsupported(f"split policy {policy} but only {len(varying)} factors vary")
        return varying[policy]
    policy = SplitPolicy(policy)
    if policy is SplitPolicy.AUTO:
        raise Unsupported("split_policy 'auto' reached a rule unresolved (the channel pass resolves it per node)")
    if policy is SplitPolicy.INNER:
        return varying[-1]
    if policy is SplitPolicy.OUTER:
        return varying[0]
    return varying[-2]  # heads: next to head_dim, past a leading q/k/v factor


def split_labels(atoms: Any, labels: np.ndarray, shape: Sequence[int], policy: Any,
                 chosen: list | None = None) -> list:
    """Distribute a flat labels array over a split into ``shape`` (row-major).

    Returns one entry per output dimension.  Labels that depend on one output
    dimension only go to it; otherwise atoms are unified along every other
    dimension so they depend on the policy's choice only (:func:`choose_axis`:
    ``"inner"`` the last varying factor, ``"outer"`` the first, ``"heads"`` the
    one before the last, or an int indexing the varying factors).  Where a
    policy chose among several factors, ``(axis, varying axes)`` is appended
    to ``chosen`` if given.
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
        axis = choose_axis(varying, policy)
        if chosen is not None:
            chosen.append((axis, tuple(varying)))
        moved = np.moveaxis(arr, axis, 0).reshape(shape[axis], -1)
        if moved.shape[1] > 1:  # every row becomes one channel: all at once, not row by row
            atoms.unify(moved[:, 1:].ravel(), np.repeat(moved[:, 0], moved.shape[1] - 1))
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


def _merge_one(ctx: OpContext, labels: list, sizes: Sequence[int]) -> list:
    """Labels of dimensions merged into one, with at most one of them labelled.

    A merge of two labelled dimensions (``heads x head_dim`` where the heads also
    carry channels, e.g. of a per-head relative-position bias) keeps the one the
    split policy prunes (``inner``: the last, ``outer`` and ``heads``: the first, an
    int: that labelled dimension) and fixes the others' channels: a merged channel
    is then removed exactly when its kept-dimension index is, in every
    fixed-dimension index, as in the tensor before the merge.  The choice is
    recorded in ``ctx.splits`` (a :class:`~fxprune.ops.context.Split` without ``dim``).

    Raises:
        Unsupported: an int policy that names no labelled dimension.
    """
    labelled = [i for i, lab in enumerate(labels) if lab is not None]
    if len(labelled) < 2:
        return labels
    policy = ctx.split_policy
    if isinstance(policy, int) and not isinstance(policy, bool):
        if not -len(labelled) <= policy < len(labelled):
            raise Unsupported(f"split policy {policy} but only {len(labelled)} merged dimensions are labelled")
        keep = labelled[policy]
    else:
        keep = labelled[-1] if SplitPolicy(policy) is SplitPolicy.INNER else labelled[0]
    ctx.splits.append(Split(labels[keep], tuple(int(n) for n in sizes), keep, tuple(labelled)))
    out = list(labels)
    for i in labelled:
        if i != keep:
            ctx.fix(labels[i], f"merged with another channel dimension (split policy {policy!r} keeps that one)")
            out[i] = None
    return out


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
            group_labels = _merge_one(ctx, group_labels, [in_shape[k] for k in gi])
            merged = _merge(group_labels, [in_shape[k] for k in gi])
        except Unsupported:
            for lab in group_labels:
                ctx.fix(lab, "two channel dimensions merged into one")
            continue
        if merged is None:
            continue
        factors = [out_shape[k] for k in gj]
        chosen: list = []
        parts = split_labels(ctx.atoms, merged, factors, ctx.split_policy, chosen)
        for axis, varying in chosen:
            ctx.splits.append(Split(parts[axis], tuple(factors), axis, varying, dim=gj[axis]))
        for k, lab in zip(gj, parts):
            result[k] = lab
    return tuple(result)


def _reshape(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    return check_labels(ctx, reshape_labels(ctx, x, ctx.out.shape))


def _size_args(args: tuple, kwargs: dict, start: int) -> tuple[list, bool]:
    rest = list(args[start:])
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        return list(rest[0]), True
    if not rest and "shape" in kwargs:
        return list(kwargs["shape"]), True
    if not rest and "size" in kwargs:
        return list(kwargs["size"]), True
    return rest, False


def new_sizes(ctx: EmitContext, old: list, new: list, labels: tuple, new_shape: tuple,
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
        new = new_sizes(ctx, old, sizes, labels, ctx.out_shape(), ctx.old_shape())
        head = tuple(ctx.args[:start])
        kwargs = {k: v for k, v in ctx.kwargs.items() if k not in ("shape", "size")}
        if packed:
            return ctx.node.target, head + (tuple(new),), kwargs
        return ctx.node.target, head + tuple(new), kwargs

    return emit


RESHAPE = Rule("reshape", _reshape, doc="flatten/squeeze/unsqueeze: exact index maps, no size args.",
               keys=Keys(torch=("flatten", "squeeze", "unsqueeze"),
                         methods=("flatten", "squeeze", "unsqueeze", "view_as", "reshape_as"),
                         modules=("Flatten",),
                         aten=("flatten", "squeeze", "unsqueeze", "view_as", "reshape_as")), zeros=Zeros.KEEP,
               writes_state=writes_nothing)
VIEW = Rule("reshape", _reshape, emit=_emit_sizes(1),
            doc="view/reshape (x.view(*sizes), torch.reshape(x, sizes)): sizes follow pruning.",
            keys=Keys(methods=("view", "reshape"), torch=("reshape",),
                      aten=("view", "reshape")), zeros=Zeros.KEEP)


def _emit_unflatten(ctx: EmitContext) -> tuple:
    x = ctx.args[0]
    dim = ctx.arg(1, "dim")
    sizes = list(ctx.arg(2, "sizes"))
    old = list(ctx.old_arg(2, "sizes"))
    labels = ctx.out_labels()
    shape = ctx.out_shape()
    before = ctx.old_shape()
    d = normalize_dim(dim, len(ctx.new_shape(ctx.node.args[0])))
    k = slice(d, d + len(sizes))
    new = new_sizes(ctx, old, sizes, labels[k], shape[k], before[k])
    return ctx.node.target, (x, dim, tuple(new)), {}


UNFLATTEN = Rule("reshape", _reshape, emit=_emit_unflatten, doc="unflatten(dim, sizes).",
                 keys=Keys(torch=("unflatten",), methods=("unflatten",), aten=("unflatten",)), zeros=Zeros.KEEP)


def _resize_unflatten(m: Any, ctx: EmitContext) -> None:
    d = normalize_dim(m.dim, len(ctx.new_shape(ctx.node.args[0])))
    m.unflattened_size = tuple(int(s) for s in ctx.out_shape()[d:d + len(m.unflattened_size)])


UNFLATTEN_MODULE = Rule("reshape", _reshape, resize=_resize_unflatten, doc="nn.Unflatten(dim, sizes).",
                        keys=Keys(modules=("Unflatten",)), zeros=Zeros.KEEP,
                        writes_state=writes_nothing)


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


EXPAND = Rule("expand", _expand, emit=_emit_sizes(1), doc="expand: new dims are fixed.",
              keys=Keys(methods=("expand",), aten=("expand",)), zeros=Zeros.KEEP)
def _expand_as(ctx: OpContext) -> tuple:
    """``s.expand_as(x)``: a size-1 dim of ``s`` stretched over a channel dim of ``x`` takes ``x``'s labels
    (its values are equal along it, so any of its indices can go); ``x``'s values are never read."""
    s, template = ctx.arg(0), ctx.arg(1, "other")
    labels = list(_expand(ctx))
    if isinstance(template, Value) and template.is_tensor and template.ndim == len(labels):
        for d in range(s.ndim):
            k = len(labels) - s.ndim + d
            if s.shape[d] == 1 and labels[k] is None and template.shape[k] != 1:
                labels[k] = template.labels[k]
        for k in range(len(labels) - s.ndim):
            labels[k] = labels[k] if labels[k] is not None else template.labels[k]
    return check_labels(ctx, tuple(labels))


EXPAND_AS = Rule("expand", _expand_as,
                 doc="expand_as: follows the template; a stretched size-1 dim takes the template's channels "
                     "(F.normalize's norm, exported). Zeros probed: the template's values are not read.",
                 keys=Keys(methods=("expand_as",), aten=("expand_as",)), zeros=Zeros.PROBE)


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
    return check_labels(ctx, tuple(labels))


def _size_args_values(ctx: OpContext, start: int) -> tuple[list, bool]:
    rest = list(ctx.args[start:])
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        rest = list(rest[0])
    vals = [r.spec if isinstance(r, Value) else r for r in rest]
    return vals, True


REPEAT = Rule("repeat", _repeat, doc="repeat: labels tile.", keys=Keys(methods=("repeat",), aten=("repeat",)), zeros=Zeros.KEEP)


def _perm_args(ctx: OpContext, start: int) -> list[int]:
    vals, _ = _size_args_values(ctx, start)
    if not vals and "dims" in ctx.kwargs:
        vals = list(ctx.kwargs["dims"])
    return [int(v) for v in vals]


def _permute(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    perm = [normalize_dim(p, x.ndim) for p in _perm_args(ctx, 1)]
    return check_labels(ctx, tuple(x.labels[p] for p in perm))


PERMUTE = Rule("permute", _permute, doc="permute: labels follow their dims.",
               keys=Keys(torch=("permute",), methods=("permute",), aten=("permute",)), zeros=Zeros.KEEP)


def _transpose(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    a = normalize_dim(ctx.arg(1, "dim0"), x.ndim)
    b = normalize_dim(ctx.arg(2, "dim1"), x.ndim)
    labels = list(x.labels)
    labels[a], labels[b] = labels[b], labels[a]
    return check_labels(ctx, tuple(labels))


TRANSPOSE = Rule("permute", _transpose, doc="transpose/swapaxes.",
                 keys=Keys(torch=("transpose", "swapaxes"), methods=("transpose", "swapaxes"),
                           aten=("transpose", "swapaxes")), zeros=Zeros.KEEP)


def _matrix_t(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    labels = list(x.labels)
    if len(labels) >= 2:
        labels[-1], labels[-2] = labels[-2], labels[-1]
    return check_labels(ctx, tuple(labels))


MATRIX_T = Rule("permute", _matrix_t, doc="t() / .T / .mT: swap the last two dims.",
                keys=Keys(torch=("t",), methods=("t",), aten=("t", "numpy_T")), zeros=Zeros.KEEP)

def _roll(ctx: OpContext) -> tuple:
    x = first_tensor(ctx)
    dims = ctx.arg(2, "dims", None)
    dims = tuple(range(x.ndim)) if dims is None or dims == () else (dims,) if isinstance(dims, int) else tuple(dims)
    for d in dims:
        if x.labels[normalize_dim(d, x.ndim)] is not None:
            raise Unsupported("roll along a channel dimension")
    return x.labels


ROLL = Rule("roll", _roll, doc="roll(shifts, dims): dims not rolled pass through; rolling a channel dim is a barrier.",
            keys=Keys(torch=("roll",), methods=("roll",), aten=("roll",)), zeros=Zeros.KEEP)

RULES = (ROLL, RESHAPE, VIEW, UNFLATTEN, UNFLATTEN_MODULE, EXPAND, EXPAND_AS, REPEAT, PERMUTE, TRANSPOSE, MATRIX_T)


# ---------------------------------------------------------------------------
