"""Analysis stage: capture, shape propagation, channel propagation, coupling groups."""
from .analysis import Analysis, AnalysisConfig, analyze
from ..ir import TensorSpec
from .capture import trace
from .shapes import propagate_shapes
from .channels import Barrier, ChannelState, propagate_channels
from .groups import Group, Member, TensorMember, build_groups

__all__ = [
    "Analysis",
    "AnalysisConfig",
    "Barrier",
    "ChannelState",
    "Group",
    "Member",
    "TensorMember",
    "TensorSpec",
    "analyze",
    "build_groups",
    "propagate_channels",
    "propagate_shapes",
    "trace",
]
