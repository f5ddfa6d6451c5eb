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
from .analysis.blocks import Block, ProjectionPolicy, find_blocks
from .analysis.resolution import Resolution, at_resolution
from .analysis.groups import Group, Member, TensorMember
from .api import PruneResult, apply, prune
from .errors import (
    ResolutionError,
    ConfigError,
    ExampleInputError,
    FxPruneError,
    GuardError,
    LoadError,
    MaterializeError,
    PlanError,
    RecipeError,
    RewriteError,
    ScoreError,
    TraceError,
    TrainEvalWarning,
    UnsupportedOpError,
)
from .latency import LatencyConfig, LatencyTable, latency_table
from .ops import Rule, default_registry
from .plot import plot_groups
from .plan3d import Pruned3D, prune_3d
from .recipes import recipe
from .report import Report
from .rewrite.blocks import remove_blocks
from .rewrite.compose import Plan3D, Result3D, apply_3d
from .serialize import load, save
from .version import __version__

__all__ = [
    "__version__",
    "Analysis",
    "AnalysisConfig",
    "Block",
    "ConfigError",
    "ExampleInputError",
    "FxPruneError",
    "LoadError",
    "Group",
    "LatencyConfig",
    "LatencyTable",
    "MaterializeError",
    "Member",
    "Plan3D",
    "GuardError",
    "PlanError",
    "ProjectionPolicy",
    "Pruned3D",
    "PruneResult",
    "RecipeError",
    "Report",
    "Resolution",
    "ResolutionError",
    "Result3D",
    "RewriteError",
    "Rule",
    "ScoreError",
    "TensorMember",
    "TraceError",
    "TrainEvalWarning",
    "UnsupportedOpError",
    "analyze",
    "apply",
    "apply_3d",
    "at_resolution",
    "default_registry",
    "find_blocks",
    "latency_table",
    "load",
    "prune",
    "plot_groups",
    "prune_3d",
    "recipe",
    "remove_blocks",
    "save",
]
