"""Rewrite stage: emit new, smaller GraphModules (channel slicing), or the pruned model as its own class."""
from .channels import apply_plan, kept_indices
from .materialize import materialize

__all__ = ["apply_plan", "kept_indices", "materialize"]
