"""Module-level ``torch.fx.wrap``-ped helpers that branch on ``training``, as vision libraries write them.

Used by ``test_wrapped_mode_functions.py``: a torchvision-style ``stochastic_depth``, a timm-style
``drop_path`` (both pass-throughs in both modes), and look-alikes that are not pass-throughs.  As in
the libraries, the modules calling them live here: ``torch.fx.wrap`` patches the name in the globals
of the module that wraps it.
"""
from __future__ import annotations

import torch
import torch.fx
import torch.nn as nn


def stochastic_depth(input, p: float, mode: str, training: bool = True):
    """torchvision.ops.stochastic_depth."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"drop probability has to be between 0 and 1, but got {p}")
    if mode not in ["batch", "row"]:
        raise ValueError(f"mode has to be either 'batch' or 'row', but got {mode}")
    if not training or p == 0.0:
        return input
    survival_rate = 1.0 - p
    if mode == "row":
        size = [input.shape[0]] + [1] * (input.ndim - 1)
    else:
        size = [1] * input.ndim
    noise = torch.empty(size, dtype=input.dtype, device=input.device)
    noise = noise.bernoulli_(survival_rate)
    if survival_rate > 0.0:
        noise.div_(survival_rate)
    return input * noise


torch.fx.wrap("stochastic_depth")


def drop_path(x, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True):
    """timm.layers.drop_path."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0 and scale_by_keep:
        random_tensor.div_(keep_prob)
    return x * random_tensor


torch.fx.wrap("drop_path")


def mean_in_training(x, p: float, training: bool):
    """Not a pass-through: in training it adds a statistic over the channels."""
    if not training:
        return x
    return x + p * x.mean(1, keepdim=True)


torch.fx.wrap("mean_in_training")


def channel_scale_in_training(x, p: float, training: bool):
    """Not a pass-through: in training each channel is scaled by its own factor (its index)."""
    if not training:
        return x
    scale = torch.arange(x.shape[1], dtype=x.dtype, device=x.device).view(1, -1, *([1] * (x.ndim - 2)))
    return x * (1 + p * scale)


torch.fx.wrap("channel_scale_in_training")


def fixed_channel_noise(x, p: float, training: bool):
    """Not a pass-through: a per-channel random mask of a fixed width."""
    if not training:
        return x
    return x * torch.empty((1, 16) + (1,) * (x.ndim - 2), dtype=x.dtype).bernoulli_(1 - p)


torch.fx.wrap("fixed_channel_noise")


def shape_change_in_training(x, p: float, training: bool):
    """Not a pass-through: in training it drops the last channel."""
    if not training:
        return x
    return x[:, :-1] * (1 - p)


torch.fx.wrap("shape_change_in_training")


def offset_in_training(x, p: float, training: bool):
    """Not a pass-through for zeros: in training it adds a constant (removed zero channels would not stay zero)."""
    if not training:
        return x
    return x * (1 - p) + p


torch.fx.wrap("offset_in_training")


def drop_or_mix(x, how: str, training: bool):
    """A pass-through where ``how == "drop"``, not one where ``how == "mix"`` (adds a channel statistic)."""
    if not training:
        return x
    if how == "drop":
        return x * torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype).bernoulli_(0.5)
    return x + x.mean(1, keepdim=True)


torch.fx.wrap("drop_or_mix")


class DropOrMix(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def forward(self, x):
        return drop_or_mix(x, self.how, self.training)


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth."""

    def __init__(self, p: float, mode: str) -> None:
        super().__init__()
        self.p, self.mode = p, mode

    def forward(self, input):
        return stochastic_depth(input, self.p, self.mode, self.training)


class DropPath(nn.Module):
    """timm.layers.DropPath."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob, self.scale_by_keep = drop_prob, scale_by_keep

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)


class ModeHelper(nn.Module):
    """Calls one of the look-alikes above by name: ``helper(x, p, self.training)``."""

    def __init__(self, name: str, p: float = 0.5) -> None:
        super().__init__()
        self.name, self.p = name, p

    def forward(self, x):
        helpers = {"mean_in_training": mean_in_training, "channel_scale_in_training": channel_scale_in_training,
                   "fixed_channel_noise": fixed_channel_noise, "shape_change_in_training": shape_change_in_training,
                   "offset_in_training": offset_in_training}
        return helpers[self.name](x, self.p, self.training)
