"""Channel slicing: emit a new, physically smaller GraphModule.

Given an :class:`~fxprune.analysis.analysis.Analysis` and a plan
``{group id: group channels to remove}``, :func:`apply_plan` builds a new
GraphModule:

* every parameter/buffer dimension that carries labels is sliced to its kept
  indices (generic: no rule slices tensors itself);
* each ``call_module`` node's rule resizes the copied module's attributes;
* each ``call_function``/``call_method`` node is copied or, when its rule has
  an ``emit``, re-created with updated constant arguments (view sizes, split
  sizes, slice bounds);
* the new graph is linted and shape-checked against the shapes the analysis
  predicted, so a wrong rewrite fails loudly instead of silently.

Only what the graph names is deep-copied (the modules it calls, the attributes
it reads), and the module's Python code is generated on first use: the check
and the report read the graph only.  The input model and the analysis are never
modified, and the result shares no tensor with either.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx

from .. import ir
from ..gcpause import gc_paused
from ..analysis.analysis import Analysis
from ..analysis.copying import deepcopy_module, lazy_graph_module
from ..analysis.groups import plan_mask as groups_plan_mask
from ..analysis.shapes import propagate_shapes
from ..ir import KeepMask, TensorSpec
from ..errors import RewriteError
from ..modules import get_attr, submodule
from ..ops.context import EmitContext
from ..ops.effects import removable
from .codegen import use_module_dict_codegen
from .verify import run_owned

__all__ = ["apply_plan", "kept_indices", "plan_mask", "sliced_tensors"]


def plan_mask(analysis: Analysis, plan: Mapping[int, Sequence[int]]) -> KeepMask:
    """The :class:`~fxprune.ir.KeepMask` of a plan (see :func:`fxprune.analysis.groups.plan_mask`)."""
    return groups_plan_mask(analysis.groups, analysis.state.atoms.roots(), plan)


def kept_indices(analysis: Analysis, plan: Mapping[int, Sequence[int]]) -> dict[str, tuple]:
    """For every labelled parameter, the kept indices per dimension (``None``: all kept).

    Index ``j`` of dimension ``d`` of the pruned parameter is index
    ``kept[param][d][j]`` of the original, which lets schedules map state (e.g.
    weights to rewind to) from the original model onto the pruned one.

    Example:
        >>> import torch, torch.nn as nn, fxprune
        >>> from fxprune.rewrite import kept_indices
        >>> a = fxprune.analyze(nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 1)), (torch.randn(1, 2),))
        >>> kept_indices(a, {0: [1, 2]})["0.weight"]
        (array([0, 3]), None)
    """
    mask = plan_mask(analysis, plan)
    out: dict[str, tuple] = {}
    for name, labels in analysis.state.param_labels.items():
        dims = []
        for lab in labels:
            keep = mask.kept(lab)
            dims.append(None if keep.all() else np.nonzero(keep)[0])
        out[name] = tuple(dims)
    return out


def _fresh_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A new tensor holding ``value``, a Parameter (same requires_grad) if ``like`` is one.

    ``value`` is copied only where it shares ``like``'s storage (a view, any meta tensor);
    a gathered slice is new already.
    """
    value = value.detach()
    if value.untyped_storage().data_ptr() == like.untyped_storage().data_ptr():
        value = value.clone()
    if isinstance(like, torch.nn.Parameter):
        return torch.nn.Parameter(value, requires_grad=like.requires_grad)
    return value


def sliced_tensors(tensors: Iterable[tuple[torch.Tensor, Any]], mask: KeepMask) -> dict[int, torch.Tensor]:
    """``{id(tensor): its sliced copy}`` for every ``(tensor, labels)`` that loses indices under ``mask``.

    A tensor met twice (tied weights) is sliced once, by its first labels: seeded
    into a deep copy's memo, the copies stay tied.
    """
    out: dict[int, torch.Tensor] = {}
    for t, labels in tensors:
        if id(t) in out:
            continue
        sliced = _sliced(t, labels, mask)
        if sliced is not t:
            out[id(t)] = _fresh_like(sliced, t)
    return out


def _sliced(t: Any, labels: Any, mask: KeepMask) -> Any:
    """``mask.slice(t, labels)``: the same tensor, with one numpy pass per labelled dim.

    The rewrite slices every labelled parameter, so the generic path's separate
    all/sum/nonzero passes over each keep-mask are a measurable share of it; the
    kept indices alone tell whether a dim loses any.
    """
    if not isinstance(t, torch.Tensor) or not isinstance(labels, tuple):
        return mask.slice(t, labels)  # nested values follow their nested labels
    for d, lab in enumerate(labels):
        if not isinstance(lab, np.ndarray):
            continue
        index = mask.kept(lab).nonzero()[0]
        if len(index) == len(lab):
            continue
        if t.device.type == "meta":
            t = t.narrow(d, 0, len(index))
        else:
            index = torch.from_numpy(index.astype(np.int64, copy=False))
            t = t.index_select(d, index if t.device.type == "cpu" else index.to(t.device))
    return t


def apply_plan(analysis: Analysis, plan: Mapping[int, Sequence[int]], *,
               verify: bool = True) -> fx.GraphModule:
    """Emit the pruned GraphModule for ``plan`` (``{group id: channels to remove}``).

    Raises:
        PlanError: the plan names unknown or fixed channels, or empties a group.
        RewriteError: the rewritten graph's shapes differ from the prediction.
    """
    with gc_paused():
        gm = analysis.graph_module
        mask = plan_mask(analysis, plan)
        new_shapes: dict[str, Any] = {}
        for node in gm.graph.nodes:
            new_shapes[node.name] = mask.shape(node.meta.get(ir.SPEC), node.meta.get(ir.CHANNELS))

        fresh = sliced_tensors(((get_attr(gm, q), labels) for q, labels in analysis.state.param_labels.items()),
                               mask)
        copies = _copy_root(gm, fresh)  # the sliced tensors replace the originals wherever the copies hold them

        graph = fx.Graph()
        graph._codegen = gm.graph._codegen  # e.g. torch.export's pytree in/out handling (immutable)
        env: dict[fx.Node, fx.Node] = {}

        def remap(a: Any) -> Any:
            return fx.map_arg(a, lambda n: env[n])

        def shape_of(x: Any) -> Any:
            if isinstance(x, fx.Node):
                return new_shapes[x.name]
            raise TypeError("new_shape takes an fx node of the original graph")

        def labels_of(x: Any) -> Any:
            return x.meta.get(ir.CHANNELS) if isinstance(x, fx.Node) else None

        changed = _changed_values(gm, new_shapes)

        def value_changed(n: Any) -> bool:
            return isinstance(n, fx.Node) and _any(changed.get(n.name, False))

        for node in gm.graph.nodes:
            rule = node.meta.get(ir.RULE)
            ectx = None
            if rule is not None and (rule.emit is not None or rule.resize is not None):
                ectx = EmitContext(node=node, args=remap(node.args), kwargs=remap(dict(node.kwargs)),
                                   old_args=node.args, old_kwargs=dict(node.kwargs), new_shape=shape_of,
                                   labels_of=labels_of, kept=mask.kept, value_changed=value_changed)
            if node.op == "call_module" and rule is not None and rule.resize is not None:
                mod = _copied(copies, str(node.target))
                ectx.module = mod
                if _io_changed(node, new_shapes, value_changed):
                    rule.resize(mod, ectx)
            if node.op in ("call_function", "call_method") and rule is not None and rule.emit is not None \
                    and _io_changed(node, new_shapes, value_changed):
                target, args, kwargs = rule.emit(ectx)
                op = "call_method" if isinstance(target, str) else "call_function"
                new = _add_node(graph, op, target, tuple(args), dict(kwargs), node.name)
            else:
                new = _add_node(graph, node.op, node.target, remap(node.args), remap(dict(node.kwargs)), node.name,
                                node.type)
                new.meta.update((k, v) for k, v in node.meta.items() if k not in ir.ALL_KEYS)  # not fxprune's
            if isinstance(new.type, str):
                # A string annotation (``from __future__ import annotations`` in the model's
                # source) becomes a global the GraphModule cannot pickle; drop it so the
                # pruned module can be saved with ``torch.save``.
                new.type = None
            env[node] = new
        _drop_unused_calls(graph)
        use_module_dict_codegen(graph)   # submodules through _modules: no __getattr__ per call
        # Reads of attributes (``get_attr``) stay until the module is built, so it holds
        # every attribute the graph referred to, in the graph's order (its state dict).
        new_gm = _graph_module(copies, graph, gm)
        dead_reads = [n for n in graph.nodes if n.op == "get_attr" and not n.users]
        for n in reversed(dead_reads):
            graph.erase_node(n)
        # fx's dead-code pass also cleans the graph modules read by get_attr (torch.export's
        # control-flow branches), which it reaches only through an owning module
        subgraphs = {n.target for n in graph.nodes if n.op == "get_attr"}
        for child_name, child in new_gm.named_children():
            if child_name in subgraphs and isinstance(child, fx.GraphModule):
                child.graph.eliminate_dead_code()
                child.recompile()
        new_gm.graph.lint()
        if dead_reads:
            new_gm.recompile()  # lazy (torch >= 2.3): only marks the code for generation on first use
        if verify:
            _verify(analysis, new_gm, new_shapes)
        return new_gm


def _add_node(graph: fx.Graph, op: str, target: Any, args: tuple, kwargs: dict, name: str,
              type_expr: Any = None) -> fx.Node:
    """``graph.create_node(op, target, args, kwargs, name, type_expr)``, its arguments assigned after.

    ``create_node`` walks every argument of a call through pytree to warn about raw
    symbolic ints (torch >= 2.10), a sixth of the rewrite of a transformer; the
    rewrite's arguments are the analysed graph's (concrete shapes) or the rules'
    ints.  Assigning ``node.args``/``node.kwargs`` is fx's public way to set them,
    and records the users as creation does.
    """
    node = graph.create_node(op, target, None, None, name, type_expr)
    if args:
        node.args = args
    if kwargs:
        node.kwargs = kwargs
    return node


def _drop_unused_calls(graph: fx.Graph) -> None:
    """Erase the pure calls whose results are unused (size reads the rewrite made constant).

    ``fx.Graph.eliminate_dead_code`` with ``removable`` as its purity test, without
    its lint (the built module's graph is linted once, with its owner): in-place
    ops, random ops, module calls and attribute reads always stay.
    """
    for node in reversed(graph.nodes):
        if not node.users and node.op != "get_attr" and removable(node):
            graph.erase_node(node)


def _any(flag: Any) -> bool:
    return any(_any(f) for f in flag) if isinstance(flag, tuple) else bool(flag)


def _changed_values(gm: fx.GraphModule, new_shapes: dict[str, Any]) -> dict[str, Any]:
    """Which non-tensor nodes may compute a different value in the pruned graph.

    Size reads (``x.size(i)``, ``x.shape``) change exactly where the dims they
    read change; tuples are tracked per element so ``B, T, C = x.shape`` keeps
    ``B`` and ``T`` dynamic while ``C`` is known to change; anything computed from
    a changing value may change.
    """
    changed: dict[str, Any] = {}
    for node in gm.graph.nodes:
        spec = node.meta.get(ir.SPEC)
        if node.op in ("placeholder", "get_attr", "output") or _is_tensor_spec(spec):
            continue
        inputs: list[fx.Node] = []
        fx.map_arg((node.args, node.kwargs), inputs.append)
        tensors = [n for n in inputs if isinstance(n.meta.get(ir.SPEC), TensorSpec)]
        if tensors:
            x = tensors[0]
            diff = tuple(a != b for a, b in zip(x.meta[ir.SPEC].shape, new_shapes[x.name]))
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            if isinstance(spec, int) and isinstance(dim, int) and diff:
                changed[node.name] = diff[dim]
            elif isinstance(spec, tuple) and len(spec) == len(diff):
                changed[node.name] = diff
            else:
                changed[node.name] = any(diff) or any(_any(changed.get(n.name, False)) for n in inputs)
            continue
        src = node.args[0] if node.args else None
        idx = node.args[1] if len(node.args) > 1 else None
        src_flag = changed.get(src.name) if isinstance(src, fx.Node) else None
        if isinstance(src_flag, tuple) and isinstance(idx, int) and -len(src_flag) <= idx < len(src_flag):
            changed[node.name] = src_flag[idx]
        else:
            changed[node.name] = any(_any(changed.get(n.name, False)) for n in inputs)
    return changed


def _io_changed(node: fx.Node, new_shapes: dict[str, Any], value_changed: Any = None) -> bool:
    def changed(n: fx.Node) -> bool:
        spec = n.meta.get(ir.SPEC)
        if value_changed is not None and not _is_tensor_spec(spec) and value_changed(n):
            return True
        return _shape_tuple(spec) != new_shapes.get(n.name)

    if changed(node):
        return True
    found = []
    fx.map_arg((node.args, node.kwargs), lambda n: found.append(n))
    return any(changed(n) for n in found) or node.op == "call_module"


def _shape_tuple(spec: Any) -> Any:
    if isinstance(spec, TensorSpec):
        return tuple(spec.shape)
    if isinstance(spec, (tuple, list)):
        return tuple(_shape_tuple(s) for s in spec)
    return spec


def _copy_root(gm: fx.GraphModule, replacements: Mapping[int, torch.Tensor] = {}) -> dict[str, Any]:
    """``{target: deep copy}`` of the modules ``gm``'s graph calls and the attributes it reads (``get_attr``).

    ``fx.GraphModule(root, graph)`` takes from ``root`` only these, under fresh
    plain parent modules; so only these are copied: the containers above them (a
    ``Sequential``, a residual block) would be copied for nothing.  A target inside
    another one copied already (a weight of a called module) is not copied again:
    the copy holds it.  One memo for all: a tensor shared by two modules (tied
    weights) is one tensor in the copies too.  ``replacements`` (``{id(tensor): new
    tensor}``) seeds the memo: the pruned tensors take the place of the originals
    wherever the copies refer to them, and the originals are never copied whole.
    Nothing in the result aliases ``gm``'s state.
    """
    memo: dict[int, Any] = dict(replacements)
    copies: dict[str, Any] = {}
    for node in gm.graph.nodes:
        if node.op not in ("call_module", "get_attr"):
            continue
        target = str(node.target)
        if _copied_prefix(copies, target) is not None:
            continue  # this target, or a module holding it, is copied already
        if node.op == "call_module":
            copies[target] = _copy_module(target, submodule(gm, target), memo)
        else:
            copies[target] = copy.deepcopy(get_attr(gm, target), memo)
    return copies


def _copied_prefix(copies: Mapping[str, Any], target: str) -> str | None:
    """The shortest prefix of ``target`` (itself included) that ``copies`` holds, or ``None``."""
    if not copies:
        return None
    path = target.split(".")
    for i in range(1, len(path) + 1):
        prefix = ".".join(path[:i])
        if prefix in copies:
            return prefix
    return None


def _copied(copies: Mapping[str, Any], target: str) -> Any:
    """The copy of the module or attribute ``target`` (maybe inside a copied module)."""
    prefix = _copied_prefix(copies, target)
    if prefix is None:
        raise KeyError(target)
    rest = target[len(prefix) + 1:]
    return get_attr(copies[prefix], rest) if rest else copies[prefix]


def _copy_module(name: str, module: torch.nn.Module, memo: dict[int, Any]) -> torch.nn.Module:
    """``deepcopy_module(module, memo)``, a failure named as the rewrite's."""
    try:
        return deepcopy_module(module, memo)
    except RuntimeError as exc:  # e.g. old-style weight_norm's non-leaf weight
        raise RewriteError(f"module '{name}' cannot be copied into the pruned model: {exc}. With "
                           "torch.nn.utils.weight_norm/spectral_norm, use torch.nn.utils.parametrizations "
                           "instead") from exc


def _graph_module(copies: Mapping[str, Any], graph: fx.Graph, like: fx.GraphModule) -> fx.GraphModule:
    """``fx.GraphModule(root, graph, class name of like)`` where ``root`` would hold ``copies`` at their paths.

    The module tree is what ``fx.GraphModule`` builds from a module root: for every
    ``call_module``/``get_attr`` target in graph order, its copy under plain parent
    modules (so the state dict's order is the graph's), a tensor that is no
    parameter as a buffer; a target inside a module installed already is that
    module's.  No root holding the copies is built only to be taken apart.  The
    module's code is generated on first use (a call, ``code``, printing, saving).
    """
    new_gm = lazy_graph_module(torch.nn.Module(), fx.Graph(), like.__class__.__name__)
    for node in graph.nodes:
        if node.op in ("call_module", "get_attr"):
            _install(new_gm, copies, str(node.target))
    new_gm.graph = graph
    new_gm.training = like.training  # the emitted module starts in the mode of the analysed one
    return new_gm


def _install(gm: torch.nn.Module, copies: Mapping[str, Any], target: str) -> None:
    """Set ``gm``'s attribute ``target`` to its copy as ``fx.GraphModule`` would copy it from a root."""
    *prefix, field = target.split(".")
    owner, path = gm, ""
    for item in prefix:
        path = f"{path}.{item}" if path else item
        child = owner._modules.get(item)
        if path in copies and child is copies[path]:
            return  # installed with a module holding it
        if child is None:
            child = torch.nn.Module()
            owner.add_module(item, child)
        owner = child
    value = _copied(copies, target)
    if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
        owner.register_buffer(field, value)
    else:
        setattr(owner, field, value)


def _verify(analysis: Analysis, new_gm: fx.GraphModule, predicted: dict[str, Any]) -> None:
    """Run ``new_gm`` on the example inputs and compare every tensor's shape with ``predicted``.

    The module is the rewrite's own: when nothing in it can write what it reads it
    runs directly (:func:`~fxprune.rewrite.verify.run_owned`), else through
    ``propagate_shapes`` on copies; either leaves every node's spec for the report.
    """
    inputs = analysis.example_inputs
    try:
        if not run_owned(new_gm, inputs, analysis.registry):
            propagate_shapes(new_gm, inputs)
    except Exception as exc:
        raise RewriteError(f"the pruned graph does not run on the example inputs: {exc}\n"
                           "This is an fxprune bug; please report it with the model.") from exc
    tensor_nodes = {n.name for n in analysis.graph_module.graph.nodes
                    if _is_tensor_spec(n.meta.get(ir.SPEC))}
    for node in new_gm.graph.nodes:
        if node.name not in predicted or node.name not in tensor_nodes:
            continue
        got = _shape_tuple(node.meta.get(ir.SPEC))
        want = predicted[node.name]
        if got != want:
            raise RewriteError(f"node '{node.name}': pruned shape {got} differs from the "
                               f"predicted {want}. This is an fxprune bug; please report it.")


def _is_tensor_spec(spec: Any) -> bool:
    if isinstance(spec, TensorSpec):
        return True
    return isinstance(spec, tuple) and bool(spec) and all(isinstance(s, TensorSpec) for s in spec)
