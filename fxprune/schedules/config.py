"""Schedule settings: the shared base :class:`ScheduleConfig` and its helpers.

Every schedule's settings are a frozen, keyword-only dataclass derived from
:class:`ScheduleConfig`, which holds what all schedules share (the scorer, its
parameters, the calibration batch count, the channel floor and the analysis
options as one :class:`~fxprune.analysis.analysis.AnalysisConfig`) and
validates it once.  A subclass adds its own fields and checks them in
:meth:`ScheduleConfig.validate`; a field named ``rounds`` is the round budget.

Example:
    >>> from fxprune.schedules import IterativeConfig
    >>> cfg = IterativeConfig(percentile=10.0, analysis={"ignore": "fc"})
    >>> cfg.analysis.ignore, cfg.settings()
    (('fc',), ('percentile', 'rounds', 'tolerance', 'percentile_rule', 'num_batches', 'min_channels', 'uniform'))
    >>> sorted(cfg.fingerprint())[:4]          # what a resumed run must share (not the budget)
    ['analysis', 'min_channels', 'num_batches', 'percentile']
    >>> IterativeConfig(rounds=-1)
    Traceback (most recent call last):
    ...
    fxprune.errors.ConfigError: rounds must be an integer >= 0, got -1
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields, is_dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

import numpy as np

from ..analysis.analysis import AnalysisConfig
from ..errors import ConfigError

__all__ = ["ScheduleConfig", "frozen_mapping", "jsonable", "require", "is_number"]


def frozen_mapping(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A read-only copy of ``mapping`` (``None``: empty), for frozen configuration fields."""
    return MappingProxyType(dict(mapping or {}))


def jsonable(obj: Any) -> Any:
    """A JSON-serialisable, process-independent rendering of ``obj`` (for fingerprints)."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else repr(obj)
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [jsonable(v) for v in obj]
        return sorted(items, key=repr) if isinstance(obj, (set, frozenset)) else items
    if isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__"):
        return f"{getattr(obj, '__module__', '')}.{obj.__qualname__}"
    if is_dataclass(obj):
        return {"type": type(obj).__qualname__,
                **{f.name: jsonable(getattr(obj, f.name)) for f in fields(obj)}}
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))


def is_number(x: Any) -> bool:
    """A real number (``bool`` is not one)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def is_int(x: Any, minimum: int) -> bool:
    """An integer ``>= minimum`` (``bool`` is not one)."""
    return isinstance(x, int) and not isinstance(x, bool) and x >= minimum


def require(ok: bool, name: str, must: str, value: Any) -> None:
    """Raise ``ConfigError("<name> must be <must>, got <value>")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{name} must be {must}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """Settings every schedule shares (validated on construction).

    Attributes:
        scorer: scorer name (see :data:`fxprune.scoring.SCORERS`) or scorer object.
        scorer_params: keyword parameters of the scorer.
        num_batches: calibration batches for data-driven scorers (``None``: all).
        min_channels: channels every group keeps at least (>= 1).
        uniform: groups that repeat one block's width keep identical widths
            (:func:`fxprune.scoring.select.uniform_plan` on every round's plan).
        analysis: the analysis options (an
            :class:`~fxprune.analysis.analysis.AnalysisConfig`; a mapping of its
            options is converted).
    """

    #: fields a resumed run may change (not part of the fingerprint)
    RESUMABLE: ClassVar[tuple[str, ...]] = ("rounds",)
    #: fields given by other recipe sections than ``[schedule]``
    SECTIONS: ClassVar[tuple[str, ...]] = ("scorer", "scorer_params", "analysis")

    scorer: Any = "l1"
    scorer_params: Mapping[str, Any] = field(default_factory=frozen_mapping)
    num_batches: int | None = None
    min_channels: int = 1
    uniform: bool = False
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scorer_params", frozen_mapping(self.scorer_params))
        object.__setattr__(self, "analysis", AnalysisConfig.coerce(self.analysis))
        require(self.num_batches is None or is_int(self.num_batches, 1), "num_batches",
                "None or an integer >= 1", self.num_batches)
        require(is_int(self.min_channels, 1), "min_channels", "an integer >= 1", self.min_channels)
        require(isinstance(self.uniform, bool), "uniform", "True or False", self.uniform)
        if "rounds" in self.field_names():
            require(is_int(self.rounds, 0), "rounds", "an integer >= 0", self.rounds)  # type: ignore[attr-defined]
        self.validate()

    def validate(self) -> None:
        """Check the subclass's own fields (raise :class:`ConfigError`)."""

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def settings(cls) -> tuple[str, ...]:
        """The fields a recipe's ``[schedule]`` section may set: the schedule's own, then the shared ones."""
        shared = ScheduleConfig.field_names()
        own = [n for n in cls.field_names() if n not in shared]
        return tuple(own + [n for n in shared if n not in cls.SECTIONS])

    @property
    def budget(self) -> int:
        """The number of pruning rounds allowed (``rounds``; 1 for a schedule without it)."""
        return int(getattr(self, "rounds", 1))

    def replace(self, **settings: Any) -> "ScheduleConfig":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **settings) if settings else self

    def fingerprint(self, **extra: Any) -> dict[str, Any]:
        """The settings a resumed run must share (all but :attr:`RESUMABLE`), as JSON."""
        out = {f.name: jsonable(getattr(self, f.name)) for f in fields(self) if f.name not in self.RESUMABLE}
        out.update(jsonable(extra))
        return out
