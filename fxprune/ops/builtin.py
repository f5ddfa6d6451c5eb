"""The built-in rule table, collected from the family modules.

Each family module declares its rules together with their keys (see
:class:`~fxprune.ops.registry.Keys`) and lists them in ``RULES``; this module
only gathers them into :data:`TABLE` (read-only) and refuses a key claimed by
two rules.  Extend a copy from :func:`fxprune.ops.default_registry`.

Example:
    >>> import torch
    >>> from fxprune.ops.builtin import TABLE
    >>> TABLE[torch.relu].family, TABLE[torch.ops.aten.relu].family
    ('unary', 'unary')
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any

from ..errors import RegistrationError
from . import (attention, concat, conv, elementwise, embedding, implant, indexing, layout, linear, matmul, norm,
               recurrent, reduce, spatial)
from .registry import Registry, Rule, describe_key, frozen_table

__all__ = ["FAMILY_MODULES", "RULES", "TABLE", "default_registry"]

#: the modules whose ``RULES`` make up the built-in table
FAMILY_MODULES = (elementwise, reduce, layout, indexing, concat, matmul, attention, spatial, conv, linear, norm,
                  embedding, implant, recurrent)

#: every built-in rule, in family order
RULES: tuple[Rule, ...] = tuple(rule for module in FAMILY_MODULES for rule in module.RULES)


def _table(rules: tuple[Rule, ...]) -> dict[Any, Rule]:
    table: dict[Any, Rule] = {}
    for rule in rules:
        for key in rule.keys:
            if key in table and table[key] is not rule:
                raise RegistrationError(f"{describe_key(key)} is claimed by two rules: "
                                        f"{table[key].doc!r} and {rule.doc!r}")
            table[key] = rule
    return table


TABLE: "MappingProxyType[Any, Rule]" = frozen_table(_table(RULES))


def default_registry() -> Registry:
    """A fresh registry holding every built-in rule; extend it freely (no global state)."""
    return Registry(TABLE)
