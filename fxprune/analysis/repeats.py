"""Repeating blocks: groups that differ only by a block index in their members' names.

A model built from a repeated block (``layers.0``, ``layers.1``, ... of a
transformer, ``layer1.0``, ``layer1.1`` of a ResNet stage) has one group per
block for each of the block's internal widths.  Such groups are *repeats* of
one another: their members' qualified names are equal once the block index is
replaced by ``*`` (``model.layers.3.mlp.up_proj.weight`` ->
``model.layers.*.mlp.up_proj.weight``), and their members have the same
dimensions, roles and sizes.  The block index of a group is every dotted
component that is an integer, present in every member's name at the same
position, with the same value in all of them (a group living inside block 3).

Uniform selection (``prune(..., uniform=True)``) gives all groups of one
:class:`Repeat` the same kept count, so the pruned model is expressible as a
configuration of its own class (one ``intermediate_size`` for all layers).

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.up, self.down = nn.Linear(8, 16), nn.Linear(16, 8)
    ...     def forward(self, x):
    ...         return x + self.down(torch.relu(self.up(x)))
    >>> model = nn.Sequential(nn.Linear(4, 8), Block(), Block(), nn.Linear(8, 2))
    >>> analysis = fxprune.analyze(model, (torch.randn(1, 4),))
    >>> [(r.pattern, r.groups) for r in repeats(analysis.groups)]
    [('*.up.weight', (1, 2))]
    >>> name_pattern("model.layers.3.mlp.up_proj.weight")
    'model.layers.*.mlp.up_proj.weight'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from .groups import Group

__all__ = ["Repeat", "block_positions", "group_signature", "name_pattern", "repeats"]


@dataclass(frozen=True)
class Repeat:
    """Groups that repeat one block's width.

    Attributes:
        pattern: the first member's name with the block index as ``*`` (for messages).
        groups: the group ids, in graph order.
    """

    pattern: str
    groups: tuple[int, ...]


def name_pattern(name: str, positions: Iterable[int] | None = None) -> str:
    """``name`` with the integer components at ``positions`` (default: every one) replaced by ``*``."""
    parts = name.split(".")
    where = set(range(len(parts))) if positions is None else set(positions)
    return ".".join("*" if i in where and p.isdigit() else p for i, p in enumerate(parts))


def block_positions(names: Sequence[str]) -> tuple[int, ...]:
    """Dotted positions holding the same integer in every name (the block index of a group)."""
    split = [n.split(".") for n in names]
    if not split:
        return ()
    shortest = min(len(s) for s in split)
    return tuple(i for i in range(shortest)
                 if split[0][i].isdigit() and all(s[i] == split[0][i] for s in split))


def group_signature(group: Group) -> tuple | None:
    """What repeats of ``group`` share, or ``None`` for a group not inside a block."""
    positions = block_positions([m.param for m in group.members])
    if not positions:
        return None
    members = sorted((name_pattern(m.param, positions), m.dim, str(m.role), m.size) for m in group.members)
    return (group.size, tuple(members))


def repeats(groups: Sequence[Group]) -> list[Repeat]:
    """The families of repeating groups (two or more groups with one signature), in graph order."""
    families: dict[tuple, list[Group]] = {}
    for g in groups:
        sig = group_signature(g)
        if sig is not None:
            families.setdefault(sig, []).append(g)
    out = []
    for members in families.values():
        if len(members) > 1:
            first = members[0]
            pattern = name_pattern(first.members[0].param, block_positions([m.param for m in first.members]))
            out.append(Repeat(pattern, tuple(g.id for g in members)))
    return sorted(out, key=lambda r: r.groups)
