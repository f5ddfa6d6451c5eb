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
Python function kept whole, state off the CPU or past the size cap of the
analysis' real run, a run past that run's time budget, an in-place write of what it reads, any
failure) returns ``False`` and the caller falls back to ``propagate_shapes``,
which also names a failing node.  The run itself is the analysis' real shape
run (:class:`~fxprune.analysis.shapes.RealShapeProp`), on the module's own state;
either way every node gets the same :data:`fxprune.ir.SPEC`.

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

import warnings
from typing import Any, Sequence

import torch
import torch.fx as fx
import torch.nn as nn

from ..analysis.shapes import RealShapeProp, real_run_applies, real_run_deadline
from ..modules import check_traced
from ..ops.builtin import default_registry
from ..ops.effects import mutated_args
from ..ops.registry import Registry, node_key

__all__ = ["run_owned"]

_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")


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
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _WatchingProp(gm, modules).run(*inputs)
    except Exception:  # noqa: BLE001 - over budget, about to write, or failing: propagate_shapes decides
        return False
    return True


def _may_run_directly(gm: fx.GraphModule, modules: dict[str, nn.Module], inputs: tuple,
                      registry: Registry) -> bool:
    """Whether nothing but the in-place ops :class:`_WatchingProp` watches can write during a run of
    ``gm``: no hooks, every called module declared write-free by its rule, no Python function kept
    whole, and a model the analysis' real run would take (:func:`~fxprune.analysis.shapes.real_run_applies`:
    plain CPU state and inputs, within its size cap)."""
    if any(getattr(torch.nn.modules.module, name, None) for name in _GLOBAL_HOOKS):
        return False
    if any(vars(m).get(h) for m in modules.values() for h in _HOOKS):
        return False
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = modules[str(node.target)]
            rule = registry.rule_for_key(node_key(node, gm, module))
            if rule is None or rule.writes_state is None or rule.writes_state(module):
                return False  # no rule, a rule that does not say, or a module that writes (train-mode statistics)
        elif node.op == "call_function" and not _is_torch_callable(node.target):
            return False  # a Python function kept whole (torch.fx.wrap) may write anything it reaches
    return real_run_applies(gm, inputs)


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


class _WatchingProp(RealShapeProp):
    """The analysis' real shape run (:class:`~fxprune.analysis.shapes.RealShapeProp`) on the module's
    own state, stopping before a node that writes an argument in place
    (:func:`~fxprune.ops.effects.mutated_args`) when that argument shares storage with the
    module's state, a tensor an attribute read gave, or the inputs: a view or an identity's
    output is caught by its storage, whatever computed it."""

    def __init__(self, gm: fx.GraphModule, modules: dict[str, nn.Module]) -> None:
        super().__init__(gm, real_run_deadline(gm))
        self._modules = modules
        self._protected = {t.untyped_storage().data_ptr() for t in gm.state_dict(keep_vars=True).values()}

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self._protected |= _storages(args)
        return super().run(*args, **kwargs)

    def run_node(self, n: fx.Node) -> Any:
        if n.op.startswith("call_"):
            module = self._modules[str(n.target)] if n.op == "call_module" else None
            written = mutated_args(n, self.module, module)
            if written and not self._protected.isdisjoint(_storages([self.env[w] for w in written])):
                raise _WouldWrite(n.name)
        result = super().run_node(n)
        if n.op == "get_attr":
            self._protected |= _storages(result)
        return result
