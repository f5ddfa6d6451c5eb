"""Lottery-ticket weight rewinding: index maps back to the original model, and the rewind itself.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> from fxprune.schedules.rewind import compose_index_map, rewind_weights
    >>> model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    >>> a = fxprune.analyze(model, (torch.randn(1, 2),))
    >>> index_map = compose_index_map({}, a, {0: [1, 3]})
    >>> index_map["0.weight"], index_map["2.weight"]
    ([[0, 2], None], [None, [0, 2]])
    >>> gm = fxprune.apply(a, {0: [1, 3]})
    >>> rewind_weights(gm, {k: torch.zeros_like(v) for k, v in model.state_dict().items()}, index_map)
    4
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from ..analysis.analysis import Analysis
from ..errors import ConfigError
from ..rewrite.channels import kept_indices

__all__ = ["compose_index_map", "rewind_weights"]


def compose_index_map(index_map: Mapping[str, list], analysis: Analysis,
                      plan: Mapping[int, Sequence[int]]) -> dict[str, list]:
    """Extend ``index_map`` by one more plan.

    ``index_map[param][d]`` lists, for every index of dimension ``d`` of the
    current (pruned) parameter, its index in the original model (``None``: the
    dimension was never pruned).
    """
    out = {k: list(v) for k, v in index_map.items()}
    for name, dims in kept_indices(analysis, plan).items():
        if all(k is None for k in dims):
            continue
        prev = out.get(name) or [None] * len(dims)
        new = []
        for d, k in enumerate(dims):
            if k is None:
                new.append(prev[d])
            elif prev[d] is None:
                new.append([int(i) for i in k])
            else:
                new.append([int(prev[d][int(i)]) for i in k])
        out[name] = new
    return out


def rewind_weights(gm: torch.nn.Module, rewind_state: Mapping[str, Any],
                   index_map: Mapping[str, list]) -> int:
    """Reset every parameter/buffer of ``gm`` named in ``rewind_state`` to its rewind value.

    ``rewind_state`` is a state_dict of the *original* model; each entry is
    sliced with ``index_map`` (see :func:`compose_index_map`) to the surviving
    indices.  Returns how many tensors were rewound.

    Raises:
        ConfigError: a sliced entry does not have the model's shape, or no entry
            names a tensor of the model.
    """
    own = dict(gm.named_parameters())
    own.update(dict(gm.named_buffers()))
    count = 0
    with torch.no_grad():
        for name, t in own.items():
            if name not in rewind_state:
                continue
            src = torch.as_tensor(rewind_state[name])
            try:
                for d, idx in enumerate(index_map.get(name) or ()):
                    if idx is not None:
                        src = src.index_select(d, torch.as_tensor(idx, dtype=torch.long, device=src.device))
            except (IndexError, RuntimeError):
                src = None
            if src is None or tuple(src.shape) != tuple(t.shape):
                raise ConfigError(f"rewind_state[{name!r}] has shape {tuple(rewind_state[name].shape)}, "
                                  f"which does not map onto the model's {tuple(t.shape)}; "
                                  "rewind_state must be a state_dict of the original, unpruned model")
            t.copy_(src.to(device=t.device, dtype=t.dtype))
            count += 1
    if count == 0:
        raise ConfigError("rewind_state names none of the model's parameters; it must be a "
                          f"state_dict of the original model (model has e.g. {sorted(own)[:3]})")
    return count
