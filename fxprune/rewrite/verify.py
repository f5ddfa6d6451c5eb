"""The rewrite's check run on the module it owns: shapes from one run, without protective copies when none can matter.

The channel rewrite verifies the module it emits by running it once on the
example inputs and comparing every node's shape with the prediction
(:func:`fxprune.rewrite.channels.apply_plan`).  The general shape propagation
(:func:`fxprune.analysis.shapes.propagate_shapes`) runs any module: it copies
its state and inputs, snapshots and restores every module attribute, and walks
the tree for tensors it could write; on a small CNN that protection costs as
much as the run itself.  The emitted module is fresh (its tensors are the
rewrite's own copies); when every module it calls has a rule that declares it
writes nothing of its own as configured (:attr:`fxprune.ops.registry.Rule.writes_state`:
a convolution, an activation, a BatchNorm in eval mode), :func:`run_owned` runs
it directly: no state copied, no attribute snapshot, the example inputs read in
place.  The run watches the only writes left, the in-place ops
(:func:`~fxprune.ops.effects.mutated_args`): before one executes, it stops if
the tensor written shares storage with the module's state or the inputs.
Anything else (a module without such a rule or one that writes, a hook, a
Python function kept whole, state off the CPU or past :data:`MAX_STATE`
elements, a run past its time budget, an in-place write of what it reads, any
failure) returns ``False`` and the caller falls back to ``propagate_shapes``,
which also names a failing node.  Either way every node gets the same
:data:`fxprune.ir.SPEC`.

Example:
    >>> import torch, torch.fx as fx
    >>> from fxprune import ir
    >>> gm = fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(inplace=True)).eval())
    >>> run_owned(gm, (torch.randn(2, 4),))
    True
    >>> [n.meta[ir.SPEC].shape for n in gm.graph.nodes if n.op == "call_module"]
    [(2, 3), (2, 3)]
    >>> bn = fx.symbolic_trace(torch.nn.Sequential(torch.nn.BatchNorm1d(3)).train())
    >>> run_owned(bn, (torch.randn(2, 3),))     # train mode writes its statistics: left to propagate_shapes
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
from ..ops.builtin import default_registry
from ..ops.effects import mutated_args
from ..ops.registry import Registry, node_key

__all__ = ["MAX_STATE", "SECONDS_PER_NODE", "MIN_SECONDS", "run_owned"]

#: a direct run is tried only on CPU state of at most this many elements (as the analysis' real run)
MAX_STATE = 4_000_000
#: ... and given up past this many seconds of the thread's CPU time per graph node,
SECONDS_PER_NODE = 2e-4
#: ... or past this many seconds for a small graph (first calls of CPU kernels set up their primitives)
MIN_SECONDS = 5e-3

_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")


class _OverBudget(Exception):
    """The direct run took longer than meta tensors would."""


class _WouldWrite(Exception):
    """The next node would write a tensor that shares storage with the module's state or the inputs."""


def run_owned(gm: fx.GraphModule, example_inputs: Sequence[Any], registry: Registry | None = None) -> bool:
    """Annotate every node of ``gm`` with its spec from one direct run; ``False`` when it may not or did not finish.

    ``gm`` must be the caller's own module (nothing else holds its tensors): the
    run reads its state in place.  Every module it calls must have a rule in
    ``registry`` (default: the built-in one) that declares it writes nothing of
    its own in its current configuration (:attr:`~fxprune.ops.registry.Rule.writes_state`).
    Without autograd, warnings, or a change of the random number generator's state.
    """
    inputs = tuple(example_inputs)
    modules = dict(gm.named_modules())
    if not _may_run_directly(gm, modules, inputs, registry if registry is not None else default_registry()):
        return False
    deadline = time.thread_time() + max(SECONDS_PER_NODE * len(gm.graph.nodes), MIN_SECONDS)
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _run(gm, modules, inputs, deadline)
    except Exception:  # noqa: BLE001 - over budget, about to write, or failing: propagate_shapes decides
        return False
    return True


def _may_run_directly(gm: fx.GraphModule, modules: dict[str, nn.Module], inputs: tuple,
                      registry: Registry) -> bool:
    """Whether nothing but the in-place ops :func:`_run` watches can write during a run of ``gm``:
    no hooks, every called module declared write-free by its rule, no Python function kept whole,
    plain CPU state within :data:`MAX_STATE` elements and plain CPU inputs."""
    if any(getattr(torch.nn.modules.module, name, None) for name in _GLOBAL_HOOKS):
        return False
    state: dict[int, torch.Tensor] = {}
    for m in modules.values():
        attrs = vars(m)
        if any(attrs.get(h) for h in _HOOKS):
            return False
        state.update((id(t), t) for t in m._parameters.values() if t is not None)
        state.update((id(t), t) for t in m._buffers.values() if t is not None)
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = modules[str(node.target)]
            rule = registry.rule_for_key(node_key(node, gm, module))
            if rule is None or rule.writes_state is None or rule.writes_state(module):
                return False  # no rule, a rule that does not say, or a module that writes (train-mode statistics)
        elif node.op == "call_function" and not _is_torch_callable(node.target):
            return False  # a Python function kept whole (torch.fx.wrap) may write anything it reaches
    flat: list[Any] = []
    fx.node.map_aggregate(inputs, flat.append)
    tensors = [x for x in flat if isinstance(x, torch.Tensor)]
    return all(is_plain_cpu(t) for t in state.values()) and all(is_plain_cpu(t) for t in tensors) \
        and sum(t.numel() for t in state.values()) <= MAX_STATE


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


def _storages(value: Any) -> set[int]:
    """The storage addresses of the tensors in ``value`` (a tensor, or a tuple/list/dict of them)."""
    out: set[int] = set()
    fx.node.map_aggregate(value, lambda v: out.add(v.untyped_storage().data_ptr())
                          if isinstance(v, torch.Tensor) else None)
    return out


def _run(gm: fx.GraphModule, modules: dict[str, nn.Module], inputs: tuple, deadline: float) -> None:
    """Run ``gm``'s graph node by node (as ``fx.Interpreter`` would, without its per-run bookkeeping,
    modules looked up by name once), recording each node's spec; values are freed after their last use.

    Before a node that writes an argument in place (:func:`~fxprune.ops.effects.mutated_args`),
    the run stops (:class:`_WouldWrite`) if that argument shares storage with the module's state,
    a tensor an attribute read gave, or the inputs: a view or an identity's output is caught
    by its storage, whatever computed it.
    """
    interp = fx.Interpreter(gm, garbage_collect_values=True)
    graph = gm.graph
    interp.args_iter = iter(graph.process_inputs(*inputs))
    env = interp.env
    last_uses = interp.user_to_last_uses
    protected = _storages(inputs) | {t.untyped_storage().data_ptr() for t in gm.state_dict(keep_vars=True).values()}
    for node in graph.nodes:
        if time.thread_time() > deadline:
            raise _OverBudget(node.name)
        args = fx.node.map_arg(node.args, env.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
        module = modules[str(node.target)] if node.op == "call_module" else None
        written = mutated_args(node, gm, module) if node.op.startswith("call_") else ()
        if written and not protected.isdisjoint(_storages([env[w] for w in written])):
            raise _WouldWrite(node.name)
        if module is not None:
            value = module(*args, **kwargs)
        else:
            value = getattr(interp, node.op)(node.target, args, kwargs)
        if node.op == "get_attr":
            protected |= _storages(value)
        node.meta[ir.SPEC] = spec_of(value)
        env[node] = value
        for dead in last_uses.get(node, ()):
            del env[dead]
        if node.op == "output":
            return
