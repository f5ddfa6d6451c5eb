"""Canonical blocks wrapped with a stem and a head, for golden group listings."""
from __future__ import annotations

import torch
from torch import nn

from fxprune.testing import zoo


class Wrapped(nn.Module):
    """stem conv -> body -> 1x1 head conv, so block boundaries are prunable."""

    def __init__(self, stem_out: int, body: nn.Module, body_out: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, stem_out, 3, padding=1, bias=False)
        self.body = body
        self.head = nn.Conv2d(body_out, 2, 1)

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


def resnet_block() -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    body = nn.Sequential(zoo.BasicBlock(4, 4, 1), zoo.BasicBlock(4, 6, 2))
    return Wrapped(4, body, 6).eval(), (torch.randn(1, 3, 8, 8),)


def densenet_block() -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    return Wrapped(4, zoo.DenseBlock(2, 4, 2, 2), 8).eval(), (torch.randn(1, 3, 8, 8),)


def channel_shuffle() -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    body = nn.Sequential(zoo.ShuffleUnit(4, 4, 1), zoo.ShuffleUnit(4, 4, 1))
    return Wrapped(4, body, 4).eval(), (torch.randn(1, 3, 8, 8),)


def listing(analysis) -> str:
    """The golden format: every group with each member's role, slice and index map."""
    lines = []
    for g in analysis.groups:
        head = f"group {g.id}: {g.size} channels"
        if g.fixed:
            head += f", fixed {sorted(g.fixed)}"
        lines.append(head)
        for m in g.members:
            lines.append(f"  {m.role:<8} {m.param}[{m.dim}] {m.index_map.tolist()}")
    return "\n".join(lines)
