"""fxprune: a structured-pruning compiler for PyTorch built on torch.fx.

A model is traced, its coupled channels are found (residual adds, concats,
splits, depthwise convs, norms, attention heads), the coupled groups are
scored, and a new, physically smaller ``GraphModule`` is emitted.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    >>> result = fxprune.prune(model, (torch.randn(2, 8),), ratio=0.25)
    >>> result.graph_module.get_submodule("0").out_features
    24
"""
from .analysis.analysis import Analysis, AnalysisConfig, analyze
from .analysis.groups import Group, Member, TensorMember
from .api import PruneResult, apply, prune
from .errors import (
    ConfigError,
    ExampleInputError,
    FxPruneError,
    MaterializeError,
    PlanError,
    RecipeError,
    RewriteError,
    TraceError,
    UnsupportedOpError,
)
from .ops import Rule, default_registry
from .plot import plot_groups
from .recipes import recipe
from .report import Report

__version__ = "0.1.0"

__all__ = [
    "Analysis",
    "AnalysisConfig",
    "ConfigError",
    "ExampleInputError",
    "FxPruneError",
    "Group",
    "MaterializeError",
    "Member",
    "PlanError",
    "PruneResult",
    "RecipeError",
    "Report",
    "RewriteError",
    "Rule",
    "TensorMember",
    "TraceError",
    "UnsupportedOpError",
    "analyze",
    "apply",
    "default_registry",
    "prune",
    "plot_groups",
    "recipe",
]
