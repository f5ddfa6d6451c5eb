"""Calibration: batches, graph-level activation recording, float64 statistics.

Data-driven scorers (``activation``, ``hessian``, ``taylor``) read the
calibration set given to :func:`fxprune.prune` as ``data=`` through the helpers
of this module.

**Batch convention.**  ``data`` is an iterable of batches (a ``DataLoader``, a
list, a generator); a single tensor is one batch.  Each batch is one of

* a :class:`Batch` (used as is);
* a tensor: the model's only input, no target;
* a 1-tuple/list ``(inputs,)``: inputs, no target (what a ``DataLoader`` over
  ``TensorDataset(x)`` yields);
* a 2-tuple/list ``(inputs, target)`` (what a ``DataLoader`` over
  ``TensorDataset(x, y)`` yields); ``target`` may be ``None`` for a loss that
  needs none (``loss_fn`` receives it as is);

where ``inputs`` is a tensor (the only positional input) or a tuple/list of the
positional inputs of ``model.forward``.  A model with two inputs and no target
is therefore fed ``((a, b),)`` or ``Batch((a, b))``.  Other lengths are
rejected rather than guessed.  Scorers that need a loss require the target.

**Model state.**  The model runs in the mode it is in (``train()`` or
``eval()``; call ``model.eval()`` before pruning for inference statistics).
Buffers that a forward writes (BatchNorm running statistics in train mode) are
written to private copies, so calibration never modifies the model; gradients
are taken with :func:`torch.autograd.grad` with respect to private leaves that
share the parameters' storage, so no ``.grad`` is ever written.

**Statistics** are accumulated in float64 in an :class:`Accumulator`; when
``torch.distributed`` is initialised, :meth:`Accumulator.reduce` all-reduces
(SUM) the sums and counts, so calibrating on shards of the data on several
ranks gives the same result as one process over all the data.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> from fxprune.scoring.calibration import Accumulator, iter_batches, record_activations
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> a = fxprune.analyze(model, (torch.randn(1, 3),))
    >>> data = [torch.randn(5, 3), (torch.randn(2, 3), torch.zeros(2))]
    >>> [len(b.inputs) for b in iter_batches(data)]
    [1, 1]
    >>> acc = Accumulator()
    >>> def collect(node, value):
    ...     acc.add(node, value.double().sum(0), count=value.shape[0])
    >>> record_activations(a.graph_module, {"_1"}, iter_batches(data), collect)
    >>> acc.reduce()
    >>> acc.count("_1"), acc.mean("_1").shape
    (7, (4,))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterable, Iterator, Mapping

import numpy as np
import torch
import torch.fx as fx

from ..errors import ConfigError
from ..progress import progress

__all__ = [
    "Accumulator",
    "Batch",
    "NO_TARGET",
    "batch_loss",
    "RecordingInterpreter",
    "distributed_rank",
    "is_distributed",
    "iter_batches",
    "model_device",
    "num_batches_of",
    "private_state",
    "progress",
    "record_activations",
    "require_data",
    "run_functional",
]


# ---------------------------------------------------------------------------
# batches


class _NoTarget:
    """The type of :data:`NO_TARGET`."""

    def __repr__(self) -> str:
        return "NO_TARGET"


NO_TARGET: Any = _NoTarget()
"""The target of a batch that has none (``None`` is a valid target: ``(x, None)``)."""


@dataclass(frozen=True)
class Batch:
    """One calibration batch.

    Attributes:
        inputs: the positional inputs of ``model.forward``.
        target: what ``loss_fn(output, target)`` receives; :data:`NO_TARGET`
            when the batch has none.
    """

    inputs: tuple[Any, ...]
    target: Any = NO_TARGET

    @property
    def has_target(self) -> bool:
        return self.target is not NO_TARGET

    def __post_init__(self) -> None:
        if isinstance(self.inputs, torch.Tensor):
            object.__setattr__(self, "inputs", (self.inputs,))
        elif isinstance(self.inputs, list):
            object.__setattr__(self, "inputs", tuple(self.inputs))

    def to(self, device: torch.device) -> "Batch":
        """The batch with every tensor moved to ``device``."""
        target = self.target if not self.has_target else _to_device(self.target, device)
        return Batch(tuple(_to_device(x, device) for x in self.inputs), target)


def _to_device(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, (tuple, list)):
        return type(x)(_to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    return x


def _as_inputs(x: Any) -> tuple[Any, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _to_batch(raw: Any, k: int) -> Batch:
    if isinstance(raw, Batch):
        return raw
    if isinstance(raw, torch.Tensor):
        return Batch((raw,))
    if isinstance(raw, (tuple, list)):
        if len(raw) == 1:
            return Batch(_as_inputs(raw[0]))
        if len(raw) == 2:
            return Batch(_as_inputs(raw[0]), raw[1])
        raise ConfigError(
            f"calibration batch {k} is a sequence of {len(raw)} items; a batch is a tensor, "
            f"(inputs,) or (inputs, target) with inputs a tensor or a tuple of tensors "
            f"(wrap several inputs: ((a, b), target)), or a fxprune.scoring.calibration.Batch")
    raise ConfigError(f"calibration batch {k} has type {type(raw).__name__}; a batch is a tensor, "
                      f"(inputs,) or (inputs, target), or a fxprune.scoring.calibration.Batch")


def iter_batches(data: Any, num_batches: int | None = None, *, need_target: bool = False) -> Iterator[Batch]:
    """The first ``num_batches`` batches of ``data`` (all if ``None``) as :class:`Batch` es.

    Args:
        data: an iterable of batches in the convention of the module docstring
            (a single tensor is one batch).
        num_batches: how many batches to use; ``None`` uses all of them.
        need_target: raise :class:`~fxprune.errors.ConfigError` for a batch without target.
    """
    if num_batches is not None and (isinstance(num_batches, bool) or not isinstance(num_batches, int)
                                    or num_batches < 1):
        raise ConfigError(f"num_batches must be a positive int or None, got {num_batches!r}")
    if data is None:
        raise ConfigError("no calibration data: pass data= (an iterable of batches) to fxprune.prune")
    if isinstance(data, (torch.Tensor, Batch)):
        data = [data]
    for k, raw in enumerate(data):
        if num_batches is not None and k >= num_batches:
            return
        batch = _to_batch(raw, k)
        if need_target and not batch.has_target:
            raise ConfigError(f"calibration batch {k} has no target; this scorer needs a loss: "
                              f"give (inputs, target) batches in data= and pass loss_fn= to fxprune.prune")
        yield batch


def num_batches_of(data: Any, num_batches: int | None = None) -> int | None:
    """How many batches :func:`iter_batches` will yield, if ``data`` has a length."""
    if isinstance(data, (torch.Tensor, Batch)):
        return 1
    try:
        n = len(data)
    except TypeError:
        return num_batches
    return n if num_batches is None else min(n, num_batches)


def require_data(scorer: str, data: Any, loss_fn: Any = None, *, need_loss: bool = False) -> None:
    """Raise a :class:`~fxprune.errors.ConfigError` naming the missing ``prune`` argument."""
    if data is None:
        raise ConfigError(f"scorer {scorer!r} needs calibration data: pass data= (an iterable of "
                          f"batches, see fxprune.scoring.calibration) to fxprune.prune")
    if need_loss and loss_fn is None:
        raise ConfigError(f"scorer {scorer!r} needs a loss: pass loss_fn= (loss_fn(output, target) "
                          f"-> scalar tensor) to fxprune.prune, and (inputs, target) batches in data=")


# ---------------------------------------------------------------------------
# running the graph without touching the model


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


# ---------------------------------------------------------------------------
# statistics


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and initialised."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def distributed_rank() -> int:
    """This process's rank (0 when not distributed)."""
    return torch.distributed.get_rank() if is_distributed() else 0


class Accumulator:
    """Named float64 sums with counts, all-reducible across data-parallel ranks.

    ``add(key, value, count)`` adds ``value`` (a tensor or array, cast to
    float64) to the sum of ``key`` and ``count`` to its count.  After
    :meth:`reduce`, :meth:`mean` is ``sum / count`` over all ranks.
    """

    def __init__(self) -> None:
        self._sums: dict[Any, torch.Tensor] = {}
        self._counts: dict[Any, float] = {}
        self._batches = 0

    def add(self, key: Any, value: torch.Tensor | np.ndarray | float, count: float = 1) -> None:
        v = torch.as_tensor(value).detach().to(torch.float64)
        if key in self._sums:
            if self._sums[key].shape != v.shape:
                raise ConfigError(f"calibration statistic {key!r} changed shape from "
                                  f"{tuple(self._sums[key].shape)} to {tuple(v.shape)} between batches; "
                                  f"give batches whose shapes differ only in the batch size")
            self._sums[key] = self._sums[key] + v.to(self._sums[key].device)
            self._counts[key] += count
        else:
            self._sums[key] = v.clone()
            self._counts[key] = count

    def step(self) -> None:
        """Count one calibration batch (used to detect ranks without data)."""
        self._batches += 1

    def keys(self) -> list[Any]:
        return list(self._sums)

    def sum(self, key: Any) -> np.ndarray:
        return self._sums[key].cpu().numpy()

    def count(self, key: Any) -> float:
        return self._counts[key]

    def mean(self, key: Any) -> np.ndarray:
        return self.sum(key) / self._counts[key]

    def reduce(self) -> None:
        """All-reduce (SUM) sums and counts across ranks when distributed; else check data was seen.

        Every rank must have seen at least one batch, and the same statistics
        with the same shapes; otherwise every rank raises the same
        :class:`~fxprune.errors.ConfigError` (no rank hangs).
        """
        if not is_distributed():
            if self._batches == 0 and not self._sums:
                raise ConfigError("the calibration data yielded no batch")
            return
        dist = torch.distributed
        keys = sorted(self._sums, key=repr)
        flat = (torch.cat([self._sums[k].reshape(-1).cpu() for k in keys]) if keys
                else torch.zeros(0, dtype=torch.float64))
        flat = torch.cat([flat, torch.tensor([self._counts[k] for k in keys], dtype=torch.float64)])
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
            else torch.device("cpu")
        n_seen = max(self._batches, 1 if keys else 0)
        check = torch.tensor([-float(n_seen), float(flat.numel()), -float(flat.numel())],
                             dtype=torch.float64, device=device)
        dist.all_reduce(check, op=dist.ReduceOp.MAX)
        if check[0].item() >= 0:
            raise ConfigError(f"a data-parallel rank got no calibration batch "
                              f"(world size {dist.get_world_size()}); give every rank at least one batch")
        if check[1].item() != -check[2].item():
            raise ConfigError("the ranks collected calibration statistics of different shapes; "
                              "give every rank batches of the same non-batch shape")
        flat = flat.to(device)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat = flat.cpu()
        offset = 0
        for k in keys:
            n = self._sums[k].numel()
            self._sums[k] = flat[offset:offset + n].reshape(self._sums[k].shape)
            offset += n
        for k, c in zip(keys, flat[offset:].tolist()):
            self._counts[k] = c
