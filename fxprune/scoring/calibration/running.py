"""Running a GraphModule on calibration batches without touching the model.

Buffers are private copies; parameters are detached aliases (or private leaves
for gradients), so no ``.grad`` and no running statistic of the model is written.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> from fxprune.scoring.calibration import iter_batches
    >>> a = fxprune.analyze(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), (torch.randn(1, 3),))
    >>> seen = []
    >>> record_activations(a.graph_module, {"_1"}, iter_batches([torch.randn(2, 3)]), lambda n, v: seen.append(n))
    >>> seen
    ['_1']
"""
from __future__ import annotations

from typing import Any, Callable, Collection, Iterable, Mapping

import torch
import torch.fx as fx

from ...errors import ConfigError
from .batches import Batch

__all__ = ["RecordingInterpreter", "batch_loss", "model_device", "private_state", "record_activations",
           "run_functional"]


def private_state(module: torch.nn.Module, grad: Collection[str] = ()) -> dict[str, torch.Tensor]:
    """A state dict for :func:`torch.func.functional_call` that leaves ``module`` intact.

    Buffers are cloned (a forward in train mode updates the clones).
    Parameters are detached aliases (same storage, no autograd history); those
    named in ``grad`` are leaves with ``requires_grad=True``, so gradients can
    be taken with respect to them without writing any ``.grad``.
    """
    missing = set(grad)
    state: dict[str, torch.Tensor] = {}
    for name, p in module.named_parameters():
        state[name] = p.detach().requires_grad_(name in missing)
        missing.discard(name)
    for name, b in module.named_buffers():
        leaf = b.detach().clone()
        if name in missing:
            leaf.requires_grad_(True)
            missing.discard(name)
        state[name] = leaf
    if missing:
        raise ConfigError(f"not parameters or buffers of the graph module: {sorted(missing)}")
    meta = [n for n, t in state.items() if t.device.type == "meta"]
    if meta:
        raise ConfigError(f"data-driven scorers need real parameters; {meta[0]!r} is on the meta device "
                          f"(load the weights, or use a weight-only scorer such as 'l1')")
    return state


def run_functional(gm: fx.GraphModule, state: Mapping[str, torch.Tensor], inputs: tuple[Any, ...]) -> Any:
    """``gm(*inputs)`` with ``state`` substituted for its parameters and buffers."""
    return torch.func.functional_call(gm, dict(state), tuple(inputs), strict=False)


def batch_loss(gm: fx.GraphModule, state: Mapping[str, torch.Tensor], batch: Batch,
               loss_fn: Callable[[Any, Any], torch.Tensor]) -> torch.Tensor:
    """``loss_fn(gm(*batch.inputs), batch.target)`` with ``state`` substituted; checks it is a scalar."""
    loss = loss_fn(run_functional(gm, state, batch.inputs), batch.target)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ConfigError(f"loss_fn must return a scalar tensor, got "
                          f"{type(loss).__name__ if not isinstance(loss, torch.Tensor) else tuple(loss.shape)}")
    return loss.reshape(())


def model_device(module: torch.nn.Module) -> torch.device | None:
    """The device of the first parameter (or buffer) of ``module``; ``None`` if it has none."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return None


class RecordingInterpreter(fx.Interpreter):
    """Runs a GraphModule node by node and hands chosen nodes' outputs to a callback.

    The GraphModule is not modified: the interpreter only reads its graph.

    Args:
        module: the GraphModule to run.
        nodes: names of the fx nodes to record.
        callback: ``callback(node_name, value)`` for every recorded node, in graph order.
    """

    def __init__(self, module: fx.GraphModule, nodes: Collection[str],
                 callback: Callable[[str, Any], None]) -> None:
        super().__init__(module)
        self._names = frozenset(nodes)
        self._callback = callback

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        if n.name in self._names:
            self._callback(n.name, value)
        return value


class _Interpret(torch.nn.Module):
    """A wrapper whose forward is a :class:`RecordingInterpreter` run (for functional_call)."""

    def __init__(self, gm: fx.GraphModule, nodes: Collection[str], callback: Callable[[str, Any], None]) -> None:
        super().__init__()
        self.gm = gm
        self._nodes, self._callback = frozenset(nodes), callback

    def forward(self, *inputs: Any) -> Any:
        return RecordingInterpreter(self.gm, self._nodes, self._callback).run(*inputs)


def record_activations(gm: fx.GraphModule, nodes: Collection[str], batches: Iterable[Batch],
                       callback: Callable[[str, Any], None]) -> None:
    """Run ``gm`` on every batch (no_grad) and call ``callback(node, value)`` for ``nodes``.

    The model runs in the mode it is in; buffers are private copies (see
    :func:`private_state`), so the GraphModule and the model it shares
    parameters with are never modified.
    """
    names = frozenset(nodes)
    unknown = names - {n.name for n in gm.graph.nodes}
    if unknown:
        raise ConfigError(f"nodes not in the graph: {sorted(unknown)}")
    wrapper = _Interpret(gm, names, callback)
    device = model_device(gm)
    with torch.no_grad():
        state = {f"gm.{k}": v for k, v in private_state(gm).items()}
        for batch in batches:
            if device is not None:
                batch = batch.to(device)
            torch.func.functional_call(wrapper, state, batch.inputs, strict=False)
