"""Op knowledge: the rule registry and the built-in rules (see :mod:`fxprune.ops.registry`)."""
from . import generic, layers
from .registry import (
    EmitContext,
    Method,
    OpContext,
    Registry,
    Rule,
    Unsupported,
    Value,
    default_registry,
)

__all__ = [
    "EmitContext",
    "Method",
    "OpContext",
    "Registry",
    "Rule",
    "Unsupported",
    "Value",
    "default_registry",
    "generic",
    "layers",
]
