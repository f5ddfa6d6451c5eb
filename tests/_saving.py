"""Helpers of the saving tests: a small conv net, a deterministic 'training' step, a malicious pickle."""
from __future__ import annotations

import torch
import torch.nn as nn

#: example inputs of :func:`conv_net`
XC = (torch.randn(2, 3, 6, 6),)


def conv_net(seed: int = 0, width: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, 8, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 2 * 2, 3)).eval()


def shrink(gm):
    """A deterministic 'training' step that changes the scores of the next round."""
    with torch.no_grad():
        for i, p in enumerate(gm.parameters()):
            p.mul_(0.9).add_(0.01 * (i + 1))
    return gm


class CreatesAFile:
    """A pickle payload: unpickling it would create the file ``target`` (code execution)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))
