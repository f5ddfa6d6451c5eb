"""Give the pruned model back as the original class: :func:`materialize`.

The pruned ``GraphModule`` is the compiler's answer, but it is not the user's
class: a torchvision-style ResNet loses its methods and ``Sequential``
indexing, a Hugging Face model its ``generate()``, ``config`` and
``save_pretrained``.  :func:`materialize` returns a deep copy of the original
model instead, parameters sliced with the analysis' index maps and module
attributes resized through the rules (:mod:`fxprune.rewrite.eager`), checked
against the pruned graph on the example inputs before it is returned.

A Hugging Face model (a ``transformers.PreTrainedModel``) is rebuilt from an
updated config instead (:mod:`fxprune.rewrite.hf`), so ``save_pretrained`` and
``from_pretrained`` round-trip; that needs uniform widths across layers
(``prune(..., uniform=True)``).

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    >>> result = fxprune.prune(model, (torch.randn(1, 3, 8, 8),), ratio=0.5)
    >>> small = result.materialize()
    >>> type(small) is nn.Sequential, small[1].num_features, small[3].in_channels
    (True, 4, 4)
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.fx as fx

from ..analysis.analysis import Analysis
from .channels import apply_plan
from .eager import check_outputs, eager_copy, hard_coded_error
from .hf import is_hf_model, rebuild_from_config

__all__ = ["materialize"]


def materialize(analysis: Analysis, plan: Mapping[int, Sequence[int]], *,
                graph_module: fx.GraphModule | None = None, hf_config: bool = True,
                rtol: float = 1e-4, atol: float = 1e-5) -> torch.nn.Module:
    """The pruned model as an instance of the original model's class.

    Args:
        analysis: the analysis of the model (it holds the model, never modified).
        plan: ``{group id: removed group channels}``.
        graph_module: the pruned GraphModule of the plan, the reference the copy
            is checked against (default: :func:`~fxprune.rewrite.channels.apply_plan`);
            its current weights (fine-tuned, or loaded with :func:`fxprune.load`) are
            the copy's, wherever their names and shapes match.
        hf_config: for a Hugging Face model, rebuild it from a config with the
            pruned widths (``False``: the resized copy, whose ``config`` still
            has the original sizes).
        rtol, atol: the tolerance of the output check (``atol`` scaled by the
            largest output value).

    Raises:
        MaterializeError: the eager code hard-codes a size the pruning changed
            (the message names the module and the attribute), or a Hugging Face
            config cannot express the pruned widths (it says why).  Use
            ``graph_module`` then.
    """
    reference = graph_module if graph_module is not None else apply_plan(analysis, plan)
    if isinstance(analysis.model, fx.GraphModule):  # a GraphModule's class is its graph: the pruned one
        return reference
    model, resized = eager_copy(analysis, plan)
    if graph_module is not None:
        _adopt_weights(model, graph_module)
    if hf_config and is_hf_model(analysis.model):
        return rebuild_from_config(analysis, plan, model, reference, rtol=rtol, atol=atol)
    try:
        why = check_outputs(model, reference, analysis.example_inputs, rtol, atol)
    except Exception as exc:  # the eager code does not run with the pruned sizes
        why = f"{type(exc).__name__}: {exc}"
    if why is not None:
        raise hard_coded_error(analysis, plan, model, resized, why)
    return model


def _adopt_weights(model: torch.nn.Module, graph_module: fx.GraphModule) -> None:
    """Copy ``graph_module``'s parameters and buffers into ``model`` where names and shapes match."""
    own = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    with torch.no_grad():
        for name, t in list(graph_module.named_parameters()) + list(graph_module.named_buffers()):
            target = own.get(name)
            if target is not None and target.shape == t.shape and target.dtype == t.dtype:
                target.copy_(t)
