"""Block scores: how much each removable residual block contributes, for choosing which to remove.

:func:`branch_norm_scores` runs the analysed graph on calibration batches and
accumulates, in float64, the squared norms of every block's branch output and
of its skip (the value the add keeps when the block is removed).  A block's
score is ``||branch|| / ||skip||`` over all the data (``relative=True``, the
default: comparable across stages of different scales), or the RMS per-sample
norm of the branch output (``relative=False``).  Higher means more important;
the blocks with the lowest scores are the cheapest to remove.  (The accuracy
effect of each removal, measured by the caller's own evaluation, is
:func:`fxprune.plan3d.accuracy_drop_scores`.)

Example:
    >>> import torch, fxprune
    >>> from fxprune.testing import zoo
    >>> from fxprune.scoring.blocks import branch_norm_scores
    >>> model, inputs = zoo.resnet_basic()
    >>> scores = branch_norm_scores(fxprune.analyze(model, inputs), [torch.randn(4, 3, 32, 32)])
    >>> sorted(scores) == list(range(8)) and all(s > 0 for s in scores.values())
    True
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..analysis.analysis import Analysis
from ..analysis.blocks import blocks_of
from .calibration import Accumulator, iter_batches, num_batches_of, progress, record_activations

__all__ = ["branch_norm_scores"]


def branch_norm_scores(analysis: Analysis, data: Any, *, relative: bool = True, num_batches: int | None = None,
                       show_progress: bool = False) -> dict[int, float]:
    """``{block id: branch output norm}`` on calibration ``data`` (see the module docstring).

    Args:
        analysis: the analysis whose blocks are scored.
        data: calibration batches (see :mod:`fxprune.scoring.calibration`); only inputs are used.
        relative: divide by the skip's norm (scale-free) instead of averaging over samples.
        num_batches: how many batches of ``data`` to use (``None``: all).
        show_progress: show a progress bar.
    """
    blocks = blocks_of(analysis)
    acc = Accumulator()
    wanted = {b.output for b in blocks} | {b.skip for b in blocks}

    def collect(node: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            v = value.detach().to(torch.float64)
            acc.add(node, v.pow(2).sum(), count=v.shape[0] if v.ndim else 1)

    batches = iter_batches(data, num_batches)
    total = num_batches_of(data, num_batches)
    for batch in progress(batches, total=total, desc="block scores", enabled=show_progress):
        record_activations(analysis.graph_module, wanted, [batch], collect)
        acc.step()
    acc.reduce()
    scores: dict[int, float] = {}
    for b in blocks:
        branch = float(acc.sum(b.output))
        if relative:
            skip = float(acc.sum(b.skip))
            scores[b.id] = math.sqrt(branch / skip) if skip > 0 else math.inf
        else:
            scores[b.id] = math.sqrt(branch / acc.count(b.output))
    return scores
