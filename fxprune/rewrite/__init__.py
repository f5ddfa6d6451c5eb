"""Rewrite stage: emit new, smaller GraphModules (channel slicing)."""
from .channels import apply_plan, kept_indices

__all__ = ["apply_plan", "kept_indices"]
