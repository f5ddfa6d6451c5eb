"""Rewrite stage: emit new, smaller GraphModules (channel slicing)."""
from .channels import apply_plan

__all__ = ["apply_plan"]
