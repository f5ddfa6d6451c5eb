"""The rewrite's check run on the module it owns: shapes from one run, without protective copies when none can matter.

The channel rewrite verifies the module it emits by running it once on the
example inputs and comparing every node's shape with the prediction
(:func:`fxprune.rewrite.channels.apply_plan`).  The general shape propagation
(:func:`fxprune.analysis.shapes.propagate_shapes`) runs any module: it copies
its state and inputs, snapshots and restores every module attribute, and walks
the tree for tensors it could write; on a small CNN that protection costs as
much as the run itself.  The emitted module is fresh (its tensors are the
rewrite's own copies) and, most often, made only of ``torch.nn`` layers that
write nothing when they run in eval mode; then :func:`run_owned` runs it
directly: no state copied, no attribute snapshot, the example inputs read in
place.  It does so only when it can tell that the run writes no tensor the graph
reads from its state or inputs (the in-place ops :func:`~fxprune.ops.effects.mutated_args`
knows of) and no module attribute; anything else (a custom or train-mode module,
a hook, an in-place op on a parameter, state off the CPU or past
:data:`MAX_STATE` elements, a run past its time budget, any failure) returns
``False`` and the caller falls back to ``propagate_shapes``, which also names a
failing node.  Either way every node gets the same :data:`fxprune.ir.SPEC`.

Example:
    >>> import torch, torch.fx as fx
    >>> from fxprune import ir
    >>> gm = fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(inplace=True)).eval())
    >>> run_owned(gm, (torch.randn(2, 4),))
    True
    >>> [n.meta[ir.SPEC].shape for n in gm.graph.nodes if n.op == "call_module"]
    [(2, 3), (2, 3)]
    >>> run_owned(gm.train(), (torch.randn(2, 4),))   # train mode: left to propagate_shapes
    False
"""
from __future__ import annotations

import time
import warnings
from typing import Any, Sequence

import torch
import torch.fx as fx
import torch.nn as nn

from .. import ir
from ..analysis.copying import is_plain_cpu
from ..analysis.shapes import spec_of
from ..modules import check_traced
from ..ops.effects import mutated_args

__all__ = ["MAX_STATE", "SECONDS_PER_NODE", "MIN_SECONDS", "WRITE_FREE_MODULES", "run_owned"]

#: a direct run is tried only on CPU state of at most this many elements (as the analysis' real run)
MAX_STATE = 4_000_000
#: ... and given up past this many seconds of the thread's CPU time per graph node,
SECONDS_PER_NODE = 2e-4
#: ... or past this many seconds for a small graph (first calls of CPU kernels set up their primitives)
MIN_SECONDS = 5e-3

#: ``torch.nn`` layers (exact classes: a subclass may override ``forward``) whose call in eval mode
#: writes neither their state nor their attributes (an embedding only without ``max_norm``); an
#: in-place one writes its input only (:func:`~fxprune.ops.effects.mutated_args` says so)
WRITE_FREE_MODULES = frozenset({
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU,
    nn.ELU, nn.Mish, nn.Softmax, nn.Identity, nn.Dropout, nn.Flatten,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool2d, nn.Embedding,
})

#: layers of :data:`WRITE_FREE_MODULES` that return their input or a view of it
_PASS_THROUGH = frozenset({nn.Identity, nn.Dropout, nn.Flatten})

_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")


class _OverBudget(Exception):
    """The direct run took longer than meta tensors would."""


def run_owned(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> bool:
    """Annotate every node of ``gm`` with its spec from one direct run; ``False`` when it may not or did not finish.

    ``gm`` must be the caller's own module (nothing else holds its tensors): the
    run reads its state in place.  Without autograd, warnings, or a change of the
    random number generator's state.
    """
    inputs = tuple(example_inputs)
    modules = dict(gm.named_modules())
    if not _writes_nothing_it_reads(gm, modules, inputs):
        return False
    deadline = time.thread_time() + max(SECONDS_PER_NODE * len(gm.graph.nodes), MIN_SECONDS)
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _run(gm, modules, inputs, deadline)
    except Exception:  # noqa: BLE001 - over budget or failing: propagate_shapes decides, and names the node
        return False
    return True


def _writes_nothing_it_reads(gm: fx.GraphModule, modules: dict[str, nn.Module], inputs: tuple) -> bool:
    """Whether a run of ``gm`` provably writes no tensor of its state or inputs and no module attribute."""
    if any(getattr(torch.nn.modules.module, name, None) for name in _GLOBAL_HOOKS):
        return False
    state: list[torch.Tensor] = []
    for m in modules.values():
        attrs = vars(m)
        if any(attrs.get(h) for h in _HOOKS):
            return False
        state += [t for t in m._parameters.values() if t is not None]
        state += [t for t in m._buffers.values() if t is not None]
        if m is gm:
            continue
        cls = type(m)
        if cls is nn.Module:  # a plain parent (no forward): its tensors only as parameters and buffers
            if any(isinstance(v, torch.Tensor) for v in attrs.values()):
                return False
        elif cls not in WRITE_FREE_MODULES or m.training or (cls is nn.Embedding and m.max_norm is not None):
            return False  # (an embedding with max_norm renormalises its weight in place)
    flat: list[Any] = []
    fx.node.map_aggregate(inputs, flat.append)
    tensors = [x for x in flat if isinstance(x, torch.Tensor)]
    if not all(is_plain_cpu(t) for t in state) or not all(is_plain_cpu(t) for t in tensors) \
            or sum(t.numel() for t in {id(t): t for t in state}.values()) > MAX_STATE:
        return False
    return not _writes_state_or_inputs(gm, modules)


def _writes_state_or_inputs(gm: fx.GraphModule, modules: dict[str, nn.Module]) -> bool:
    """Whether an in-place op may write a tensor that aliases the state or the inputs.

    Placeholders and attribute reads alias them; so may anything computed from an
    aliasing value (a view, an in-place op returning its argument), except the
    output of a layer in :data:`WRITE_FREE_MODULES` that computes a new tensor
    (not in place, not an identity, dropout or flatten).
    """
    aliasing: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr"):
            aliasing.add(node)
            continue
        reads_aliasing = any(a in aliasing for a in node.all_input_nodes)
        if node.op == "call_module":
            module = modules[str(node.target)]
            if vars(module).get("inplace") is not True and type(module) not in _PASS_THROUGH:
                continue  # a layer's output is a new tensor
            written: tuple = tuple(node.args[:1]) if vars(module).get("inplace") is True else ()
        else:
            written = mutated_args(node)
            if node.op == "call_function" and reads_aliasing and not _is_torch_callable(node.target):
                return True  # a Python function kept whole (torch.fx.wrap) may write what it is given
        if any(w in aliasing for w in written):
            return True
        if reads_aliasing:
            aliasing.add(node)
    return False


#: modules whose functions write an argument only as :func:`~fxprune.ops.effects.mutated_args` says
_TRUSTED_MODULES = ("torch", "operator", "_operator", "builtins", "math")


#: fxprune's own functions a captured graph calls, which read their arguments only (guards)
_TRUSTED_FUNCTIONS = frozenset({check_traced})


def _is_torch_callable(target: Any) -> bool:
    """Whether ``target`` is PyTorch's or Python's own (a function of ``torch``, ``operator``, ...) or
    fxprune's guard, not user code."""
    if target in _TRUSTED_FUNCTIONS:
        return True
    module = getattr(target, "__module__", None) or ""
    return module.split(".")[0] in _TRUSTED_MODULES


def _run(gm: fx.GraphModule, modules: dict[str, nn.Module], inputs: tuple, deadline: float) -> None:
    """Run ``gm``'s graph node by node (as ``fx.Interpreter`` would, without its per-run bookkeeping,
    modules looked up by name once), recording each node's spec; values are freed after their last use."""
    interp = fx.Interpreter(gm, garbage_collect_values=True)
    graph = gm.graph
    interp.args_iter = iter(graph.process_inputs(*inputs))
    env = interp.env
    last_uses = interp.user_to_last_uses
    for node in graph.nodes:
        if time.thread_time() > deadline:
            raise _OverBudget(node.name)
        args = fx.node.map_arg(node.args, env.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
        if node.op == "call_module":
            value = modules[str(node.target)](*args, **kwargs)
        else:
            value = getattr(interp, node.op)(node.target, args, kwargs)
        node.meta[ir.SPEC] = spec_of(value)
        env[node] = value
        for dead in last_uses.get(node, ()):
            del env[dead]
        if node.op == "output":
            return
