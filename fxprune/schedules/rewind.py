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

__all__ = ["check_rewind_state", "compose_index_map", "rewind_weights"]


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


def check_rewind_state(model: torch.nn.Module, rewind_state: Mapping[str, Any]) -> None:
    """Refuse a ``rewind_state`` that is not (part of) a state_dict of ``model``, the original model.

    Raises:
        ConfigError: an entry that is not a tensor, names no parameter or buffer
            of the model, or has another shape than the model's tensor (e.g. a
            wider model's state_dict).
    """
    if not isinstance(rewind_state, Mapping):
        raise ConfigError(f"rewind_state must be a state_dict (a mapping of names to tensors), "
                          f"got {type(rewind_state).__name__}")
    own = dict(model.named_parameters(remove_duplicate=False))
    own.update(model.named_buffers(remove_duplicate=False))
    unknown = sorted(k for k in rewind_state if k not in own)
    if unknown:
        raise ConfigError(f"rewind_state names {unknown[:5]}, which are not parameters or buffers of the model; "
                          f"it must be a state_dict of the original model (which has e.g. {sorted(own)[:3]})")
    for name, value in rewind_state.items():
        if not isinstance(value, torch.Tensor):
            raise ConfigError(f"rewind_state[{name!r}] is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(own[name].shape):
            raise ConfigError(f"rewind_state[{name!r}] has shape {tuple(value.shape)}, but the model's tensor has "
                              f"{tuple(own[name].shape)}; rewind_state must be a state_dict of the original, "
                              "unpruned model")


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
