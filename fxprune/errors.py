"""Exceptions raised by fxprune.  Every message names what failed and what to do."""
from __future__ import annotations

__all__ = [
    "FxPruneError",
    "TraceError",
    "ExampleInputError",
    "UnsupportedOpError",
    "ConfigError",
    "PlanError",
    "RewriteError",
    "MaterializeError",
    "RecipeError",
    "RegistrationError",
    "LoadError",
    "ResolutionError",
    "ScoreError",
    "GuardError",
    "TrainEvalWarning",
]


class FxPruneError(Exception):
    """Base class of every error fxprune raises on purpose."""


class TraceError(FxPruneError):
    """The model could not be captured by the chosen front end."""


class ExampleInputError(FxPruneError):
    """The example inputs do not run the model."""


class UnsupportedOpError(FxPruneError):
    """``strict=True`` and an op has no channel rule."""


class ConfigError(FxPruneError, ValueError):
    """A parameter is out of range or names something that does not exist."""


class PlanError(FxPruneError, ValueError):
    """A pruning plan names channels that cannot be removed."""


class RewriteError(FxPruneError):
    """The rewritten graph does not have the shapes the analysis predicted (an fxprune bug)."""


class MaterializeError(FxPruneError):
    """The pruned model cannot be given back as the original class (a hard-coded size, a config
    that cannot express the widths); ``graph_module`` remains the answer."""


class RecipeError(FxPruneError, ValueError):
    """A recipe file is unknown or invalid."""


class RegistrationError(FxPruneError, LookupError):
    """A rule's keys name an op that does not exist (raised when the rule is built)."""


class LoadError(FxPruneError, ValueError):
    """A saved file is missing, corrupt, altered or not an fxprune file (the message names it).

    Raised by :func:`fxprune.load` and by schedule checkpoints; nothing in the
    file is executed while finding out.
    """


class ResolutionError(ConfigError):
    """The model cannot run at the requested input size: an op's size is baked in."""


class ScoreError(FxPruneError, ValueError):
    """A scorer returned scores that cannot be ranked (NaN, infinite, or the wrong length)."""


class GuardError(FxPruneError, AssertionError):
    """A module captured with ``frontend="fx"`` from example values is called where a Python branch or
    size it froze at capture would go another way (another input rank, dtype or size): rerun the
    analysis with inputs of that kind, or use ``frontend="export"``."""


class TrainEvalWarning(UserWarning):
    """Capture froze a branch on a module's ``training`` flag: the emitted module runs it in both modes."""
