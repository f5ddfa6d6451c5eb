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

from ...progress import progress
from .batches import NO_TARGET, Batch, iter_batches, num_batches_of, require_data
from .running import RecordingInterpreter, batch_loss, model_device, private_state, record_activations, run_functional
from .stats import Accumulator, distributed_rank, is_distributed

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
