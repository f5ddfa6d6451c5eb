"""The pruned model as its own class: a sliced, resized deep copy, checked against the pruned graph.

:func:`eager_copy` deep-copies the analysed model once, with every labelled
parameter and buffer replaced by its kept indices (the copy's memo maps each
original tensor to its sliced version, so tied weights stay tied and nothing
is copied twice), then lets each module rule resize its module's attributes
(``in_features``, ``out_channels``, ``num_features``, ``normalized_shape``...)
from the pruned shapes of the module's call in the analysed graph: a
``call_module`` node (``torch.fx`` front end) or the ATen nodes recorded under
the module in ``nn_module_stack`` (``torch.export`` front end).

A module whose forward was traced through keeps its own attributes, so code
such as ``x.view(B, N, self.num_heads, self.head_dim)`` may still hold a size
the pruning changed.  Where whole heads went (``split_policy="auto"`` or
``"heads"``: a split whose pruned factor is not its innermost one), the
module that made the split gets its head-count attributes resized
(:data:`HEAD_COUNT_ATTRS`: ``num_heads``, ``num_key_value_heads``, ``n_head``...;
the first module on the call's module stack holding one equal to the split's
head count): :func:`resize_head_counts`.  Other attributes stay as written.
:func:`check_outputs` therefore runs the copy on the example inputs next to
the pruned graph; on an exception or a mismatch,
:func:`hard_coded_error` names the module and the integer attributes that
still hold a pruned size.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> from fxprune.rewrite.eager import check_outputs, eager_copy
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> result = fxprune.prune(model, (torch.randn(3, 4),), ratio=0.5)
    >>> copy, resized = eager_copy(result.analysis, result.plan)
    >>> type(copy).__name__, copy[0].out_features, copy[2].in_features, sorted(resized)
    ('Sequential', 4, 4, ['0', '2'])
    >>> check_outputs(copy, result.graph_module, result.analysis.example_inputs) is None
    True
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.fx as fx

from .. import ir
from ..analysis.analysis import Analysis
from ..errors import MaterializeError
from ..ir import KeepMask, TensorSpec
from ..modules import get_attr
from ..ops.context import EmitContext
from .channels import plan_mask, sliced_tensors

__all__ = ["HEAD_COUNT_ATTRS", "ModuleCall", "check_outputs", "compare", "eager_copy", "hard_coded_error",
           "head_counts", "module_calls", "new_shapes", "random_params", "resize_head_counts", "run_eval"]

#: integer module attributes that count attention heads: resized when whole heads are pruned
HEAD_COUNT_ATTRS = ("num_heads", "n_heads", "n_head", "heads", "num_attention_heads", "num_key_value_heads",
                    "num_kv_heads", "n_kv_heads", "n_kv_head", "nheads", "n_local_heads", "n_local_kv_heads")


@dataclass(frozen=True)
class ModuleCall:
    """One call of a module in the analysed graph, as a rule's ``resize`` sees it (``ctx.node``).

    ``args[0]`` is the call's input node; ``name`` and ``meta`` are its output node's.
    """

    target: str
    args: tuple
    name: str
    meta: Mapping[str, Any]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    op: str = "call_module"


def new_shapes(analysis: Analysis, mask: KeepMask) -> dict[str, Any]:
    """The pruned shape of every node of the analysed graph."""
    return {n.name: mask.shape(n.meta.get(ir.SPEC), n.meta.get(ir.CHANNELS))
            for n in analysis.graph_module.graph.nodes}


def module_calls(gm: fx.GraphModule) -> Iterator[tuple[str, Any]]:
    """``(module path, call)`` for every module call of the graph.

    ``call_module`` nodes are their own calls; ATen nodes of an exported graph
    are grouped by the innermost entry of their ``nn_module_stack`` (one entry
    per call of the module), the call's input being the first outside tensor
    its nodes read and its output the last of its nodes read outside it.
    """
    scopes: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            yield str(node.target), node
        stack = node.meta.get("nn_module_stack") if node.op == "call_function" else None
        if stack:
            key = list(stack)[-1]
            scopes.setdefault(key, []).append(node)
    for key, nodes in scopes.items():
        inner = set(nodes)
        path = nodes[0].meta["nn_module_stack"][key][0]
        inputs = [a for n in nodes for a in n.all_input_nodes
                  if a not in inner and a.op != "get_attr" and isinstance(a.meta.get(ir.SPEC), TensorSpec)]
        outputs = [n for n in nodes if any(u not in inner for u in n.users)] or nodes[-1:]
        if inputs and isinstance(outputs[-1].meta.get(ir.SPEC), TensorSpec):
            out = outputs[-1]
            yield path, ModuleCall(path, (inputs[0],), out.name, out.meta)


def _sliced_memo(model: torch.nn.Module, analysis: Analysis, mask: KeepMask) -> dict[int, Any]:
    """``{id(original tensor): sliced copy}`` for every labelled tensor that loses indices."""
    pairs, missing = [], []
    for name, labels in analysis.state.param_labels.items():
        try:
            t = get_attr(model, name)
        except AttributeError:
            t = None
        if isinstance(t, torch.Tensor):
            pairs.append((t, labels))
            continue
        constant = get_attr(analysis.graph_module, name)  # created inside forward: the model has no such tensor
        if mask.slice(constant, labels) is not constant:
            missing.append(name)
    if missing:
        raise MaterializeError(
            f"the pruned graph slices tensors that are not attributes of the model: {missing[:5]} (constants "
            "created inside forward, whose sizes the eager code hard-codes); use result.graph_module")
    return sliced_tensors(pairs, mask)


def eager_copy(analysis: Analysis, plan: Mapping[int, Sequence[int]]) -> tuple[torch.nn.Module, set[str]]:
    """A deep copy of the analysed model with the plan's indices removed, and the paths of the modules resized.

    Module rules resize their modules; traced-through modules that lost whole
    heads get their head counts resized (:func:`resize_head_counts`).

    Raises:
        MaterializeError: the analysis holds no model, a module rule cannot resize its module,
            or a head count fits no single value.
    """
    model = analysis.model
    if model is None:
        raise MaterializeError("this analysis holds no model (it was not made by fxprune.analyze)")
    mask = plan_mask(analysis, plan)
    memo = _sliced_memo(model, analysis, mask)
    new = copy.deepcopy(model, memo)
    shapes = new_shapes(analysis, mask)
    resized: set[str] = set()
    for path, call in module_calls(analysis.graph_module):
        try:
            module = new.get_submodule(path)
        except AttributeError:
            continue
        rule = analysis.registry.rule_for_key(type(module))
        if rule is None or rule.resize is None:
            continue
        ctx = EmitContext(node=call, args=tuple(call.args), kwargs={}, old_args=tuple(call.args), old_kwargs={},
                          new_shape=lambda n: shapes[n.name], labels_of=lambda n: n.meta.get(ir.CHANNELS),
                          kept=mask.kept, module=module)
        try:
            rule.resize(module, ctx)
        except Exception as exc:
            raise MaterializeError(f"the rule of '{path}' ({type(module).__name__}) could not resize it: "
                                   f"{type(exc).__name__}: {exc}; use result.graph_module") from exc
        resized.add(path)
    resize_head_counts(new, head_counts(analysis, shapes), resized)
    return new, resized


def head_counts(analysis: Analysis, shapes: Mapping[str, Any]) -> dict[tuple[str, ...], dict[int, set[int]]]:
    """``{module stack: {head count: pruned head counts}}`` of every split that lost whole heads.

    A split lost whole heads where its policy chose an outer factor (not head_dim)
    and that factor's size changed.  The module stack lists the paths of the
    modules the split ran in, innermost first (``nn_module_stack``).
    """
    nodes = {n.name: n for n in analysis.graph_module.graph.nodes}
    out: dict[tuple[str, ...], dict[int, set[int]]] = {}
    for choice in analysis.state.splits:
        split, node = choice.split, nodes.get(choice.node)
        if node is None or split.dim is None or not split.heads:
            continue
        old, new = int(split.factors[split.axis]), shapes.get(node.name)
        if not isinstance(new, tuple) or int(new[split.dim]) == old:
            continue
        stack = tuple(str(v[0]) for v in reversed(list((node.meta.get("nn_module_stack") or {}).values())))
        stack += ("",) if "" not in stack else ()  # the model itself (a split in its own forward)
        out.setdefault(stack, {}).setdefault(old, set()).add(int(new[split.dim]))
    return out


def resize_head_counts(model: torch.nn.Module, counts: Mapping[tuple[str, ...], Mapping[int, set[int]]],
                       skip: set[str] = frozenset()) -> dict[str, int]:
    """Set the head-count attributes (:data:`HEAD_COUNT_ATTRS`) of ``model``'s modules to the pruned counts.

    For each split that lost heads (:func:`head_counts`), the innermost module on
    its stack that holds such an attribute equal to the split's head count gets
    the pruned count; modules in ``skip`` (resized by their rule) are left
    alone.  Returns ``{"path.attr": new count}``.

    Example:
        >>> import torch.nn as nn
        >>> attn = nn.Module(); attn.num_heads, attn.head_dim = 4, 4
        >>> model = nn.Sequential(attn)
        >>> resize_head_counts(model, {("0", ""): {4: {2}}}), attn.num_heads, attn.head_dim
        ({'0.num_heads': 2}, 2, 4)

    Raises:
        MaterializeError: one attribute counts the heads of splits pruned to different counts.
    """
    wanted: dict[tuple[str, str], tuple[int, set[int]]] = {}
    for stack, changes in counts.items():
        for old, new in changes.items():
            for path in stack:
                try:
                    module = model.get_submodule(path)
                except AttributeError:
                    continue
                attrs = [a for a in HEAD_COUNT_ATTRS if _int_attr(module, a) == old]
                if path in skip or not attrs:
                    continue
                for attr in attrs:
                    wanted.setdefault((path, attr), (old, set()))[1].update(new)
                break
    done: dict[str, int] = {}
    for (path, attr), (old, new) in sorted(wanted.items()):
        module = model.get_submodule(path)
        where = f"{path}.{attr}" if path else attr
        if len(new) > 1:
            raise MaterializeError(
                f"'{path}' ({type(module).__name__}): {where} = {old} counts the heads of splits pruned to "
                f"different counts ({sorted(new)}), so no one value of it fits; prune them alike "
                "(uniform=True, or ignore=[...] one of them), or use result.graph_module")
        setattr(module, attr, next(iter(new)))
        done[where] = next(iter(new))
    return done


def _int_attr(module: torch.nn.Module, name: str) -> int | None:
    value = vars(module).get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def run_eval(module: torch.nn.Module, inputs: Sequence[Any], params: Mapping[str, torch.Tensor] | None = None) -> Any:
    """``module(*inputs)`` in eval mode without gradients (with ``params`` swapped in, if given).

    The training flags are restored afterwards.
    """
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            if params is None:
                return module(*inputs)
            return torch.func.functional_call(module, dict(params), tuple(inputs))
    finally:
        for m, flag in flags:
            m.training = flag


def random_params(module: torch.nn.Module, reference: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """Random unit-scale values for ``module``'s parameters, named as in both modules (tied ones stay tied).

    Weights as trained or initialised can hide a wrong reading of a size: with
    tiny weights attention is uniform, and two head splittings give the same
    output.  ``None`` when the two modules do not name their parameters alike.
    """
    own = list(module.named_parameters(remove_duplicate=False))
    theirs = {n for n, _ in reference.named_parameters(remove_duplicate=False)}
    if not own or not theirs <= {n for n, _ in own} or any(p.device.type == "meta" for _, p in own):
        return None
    gen = torch.Generator().manual_seed(0)
    fresh: dict[int, torch.Tensor] = {}
    for _, p in own:
        if id(p) not in fresh:
            fan_in = max(1, p[0].numel()) if p.ndim > 1 else 1
            value = torch.randn(p.shape, generator=gen, dtype=torch.float64) / fan_in ** 0.5
            fresh[id(p)] = value.to(dtype=p.dtype, device=p.device)
    return {n: fresh[id(p)] for n, p in own}


def _leaves(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, Mapping):  # dicts and Hugging Face ModelOutputs
        return [t for v in x.values() for t in _leaves(v)]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _leaves(v)]
    return []


def compare(got: Any, want: Any, rtol: float = 1e-4, atol: float = 1e-5) -> str | None:
    """``None`` when the tensors of two outputs agree (``atol`` scaled by the largest value), else why not."""
    a, b = _leaves(got), _leaves(want)
    if len(a) != len(b):
        return f"{len(a)} output tensors instead of {len(b)}"
    for i, (x, y) in enumerate(zip(a, b)):
        if x.shape != y.shape:
            return f"output {i} has shape {tuple(x.shape)} instead of {tuple(y.shape)}"
        if x.device.type == "meta" or y.device.type == "meta":
            continue
        x, y = x.detach().double(), y.detach().double()
        scale = max(1.0, float(y.abs().max())) if y.numel() else 1.0
        if not torch.allclose(x, y, rtol=rtol, atol=atol * scale, equal_nan=True):
            return f"output {i} differs by up to {float((x - y).abs().max()):.3g}"
    return None


def check_outputs(module: torch.nn.Module, graph_module: torch.nn.Module, inputs: Sequence[Any],
                  rtol: float = 1e-4, atol: float = 1e-5) -> str | None:
    """``None`` when ``module`` and ``graph_module`` agree on ``inputs``, else what went wrong.

    They are compared with their own weights, then both with the same random
    weights (:func:`random_params`).  An exception of ``module`` is re-raised as
    is (the caller names the module).
    """
    why = compare(run_eval(module, inputs), run_eval(graph_module, inputs), rtol, atol)
    params = random_params(module, graph_module) if why is None else None
    if params is not None:
        theirs = {n for n, _ in graph_module.named_parameters(remove_duplicate=False)}
        why = compare(run_eval(module, inputs, params),
                      run_eval(graph_module, inputs, {n: t for n, t in params.items() if n in theirs}), rtol, atol)
        why = None if why is None else f"with random weights, {why}"
    return why


def _failing_module(module: torch.nn.Module, inputs: Sequence[Any]) -> tuple[str | None, BaseException | None]:
    """Rerun ``module`` with hooks: the innermost submodule running when it raises, and the exception."""
    stack: list[str] = []
    handles = []

    def enter(name: str) -> Any:
        return lambda _m, _a: stack.append(name)

    def leave(_m: Any, _a: Any, _o: Any) -> None:
        stack.pop()

    for name, m in module.named_modules():
        handles.append(m.register_forward_pre_hook(enter(name)))
        handles.append(m.register_forward_hook(leave))
    try:
        run_eval(module, inputs)
        return None, None
    except Exception as exc:
        return (stack[-1] if stack else None), exc
    finally:
        for h in handles:
            h.remove()


def _changed_sizes(analysis: Analysis, shapes: Mapping[str, Any]) -> dict[int, set[int]]:
    """``{old size: new sizes}`` of every tensor dimension the pruning changed."""
    out: dict[int, set[int]] = {}
    for node in analysis.graph_module.graph.nodes:
        spec, new = node.meta.get(ir.SPEC), shapes.get(node.name)
        if isinstance(spec, TensorSpec) and isinstance(new, tuple):
            for old, now in zip(spec.shape, new):
                if old != now:
                    out.setdefault(int(old), set()).add(int(now))
    return out


def _holders(module: torch.nn.Module, original: torch.nn.Module) -> set[str]:
    """Paths of the modules holding (directly or below) a tensor whose shape the pruning changed."""
    def tensors(m: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
        return list(m.named_parameters()) + list(m.named_buffers())

    before = {k: tuple(v.shape) for k, v in tensors(original)}
    out: set[str] = set()
    for name, t in tensors(module):
        if before.get(name, tuple(t.shape)) != tuple(t.shape):
            parts = name.split(".")[:-1]
            out.update(".".join(parts[:i]) for i in range(len(parts) + 1))
    return out


def _suspects(module: torch.nn.Module, original: torch.nn.Module, resized: set[str],
              changed: Mapping[int, set[int]], first: str | None) -> list[str]:
    """Integer attributes of traced-through modules (holding a pruned tensor) equal to a pruned size."""
    holders = _holders(module, original)
    found = []
    for name, m in module.named_modules():
        if name in resized or name not in holders:
            continue
        for attr, value in sorted(vars(m).items()):
            if attr.startswith("_") or isinstance(value, bool) or not isinstance(value, int) or value not in changed:
                continue
            now = "/".join(str(v) for v in sorted(changed[value]))
            where = f"{name}.{attr}" if name else attr
            found.append((name != first, where, f"{where} = {value} (the pruned graph has {now} there)"))
    return [text for _, _, text in sorted(found)]


def hard_coded_error(analysis: Analysis, plan: Mapping[int, Sequence[int]], module: torch.nn.Module,
                     resized: set[str], why: str) -> MaterializeError:
    """The error for a copy that does not reproduce the pruned graph: the failing module and suspect attributes."""
    shapes = new_shapes(analysis, plan_mask(analysis, plan))
    failing, exc = _failing_module(module, analysis.example_inputs)
    containers = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)
    while failing and (failing in resized or isinstance(module.get_submodule(failing), containers)):
        failing = failing.rpartition(".")[0]  # a resized module got a wrong input: its caller's code is at fault
    suspects = _suspects(module, analysis.model, resized, _changed_sizes(analysis, shapes), failing)
    where = f" in '{failing}' ({type(module.get_submodule(failing)).__name__})" if failing else ""
    msg = f"the materialised {type(module).__name__} does not reproduce result.graph_module{where}: {why}"
    if exc is not None and why != f"{type(exc).__name__}: {exc}":
        msg += f" ({type(exc).__name__}: {exc})"
    if suspects:
        msg += ("\nIts eager code hard-codes sizes that the pruning changed: " + "; ".join(suspects[:8])
                + (f"; and {len(suspects) - 8} more" if len(suspects) > 8 else ""))
    else:
        msg += ("\nNo module attribute holds a pruned size: the forward code derives one from its structure "
                "(an equal-halves chunk, a reshape to the input's width...).")
    msg += ("\nfxprune resizes the modules its rules know (Linear, Conv, norms, Embedding...) and, where whole "
            "heads went, head counts (num_heads, num_key_value_heads, n_head...); a module whose forward was traced "
            "through keeps its other attributes.  Use result.graph_module (the pruned GraphModule), or prune so "
            "that these sizes stay (ignore=[...]; split_policy='heads', or the default 'auto' on attention, keeps "
            "head_dim).")
    return MaterializeError(msg)
