"""Recipes: a named, validated bundle of analysis options, a scorer and a schedule.

A recipe is a TOML file with four sections::

    [recipe]                      # name (default: the file's stem) and description
    name = "iap"
    description = "..."
    [analysis]                    # options of fxprune.AnalysisConfig (optional)
    split_policy = "inner"
    [scorer]                      # a scorer of fxprune.scoring.SCORERS and its parameters
    name = "activation"
    power = 1.0
    [schedule]                    # a schedule of fxprune.schedules.SCHEDULES and its parameters
    name = "iterative"
    percentile = 20.0

The shipped recipes (``l1``, ``iap``, ``aiap``, ``hap``) live in the
repository's top-level ``passes/`` directory, which is installed as the
package data directory ``fxprune/recipes_data``.  :func:`recipe` loads one
by name or any recipe file by path and validates it completely: unknown
sections, scorers, schedules and parameters raise
:class:`~fxprune.errors.RecipeError` naming the culprit and the valid
choices.  See ``docs/recipes.md``.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> r = fxprune.recipe("l1")
    >>> r.schedule, r.scorer, r.schedule_params["percentile"]
    ('iterative', 'l1', 20.0)
    >>> model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    >>> history = r.run(model, (torch.randn(2, 8),), evaluate=lambda gm: 90.0, rounds=2,
    ...                 progress=False)
    >>> [m["round"] for m in history.metrics], history.graph_module.get_submodule("0").out_features
    ([0, 1, 2], 21)
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "my_l1.toml")
    >>> fxprune.recipe(r.to_toml_path(path)) == r
    True
"""
from __future__ import annotations

import inspect
import json
import math
import os
import re
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

try:  # Python >= 3.11
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None  # type: ignore[assignment]

import torch

from .analysis.analysis import AnalysisConfig
from .errors import ConfigError, RecipeError
from .schedules import POLICIES, ScheduleConfig
from .schedules.engine import RUNTIME
from .scoring import SCORERS, get_scorer
from .serialize.files import atomic_write

__all__ = [
    "Recipe",
    "recipe",
    "available_recipes",
    "recipes_dir",
    "scorer_parameters",
    "schedule_parameters",
    "SECTIONS",
    "RUNTIME_PARAMETERS",
]

#: the sections a recipe file may have
SECTIONS = ("recipe", "analysis", "scorer", "schedule")
#: schedule arguments that are given to :meth:`Recipe.run`, never written in a recipe
#: (the fields of :class:`fxprune.schedules.Runtime`)
RUNTIME_PARAMETERS = RUNTIME
#: settings that other sections than ``[schedule]`` give (``analysis_options``: the older name of ``analysis``)
_FROM_SECTIONS = ScheduleConfig.SECTIONS + ("analysis_options",)
_RECIPE_KEYS = ("name", "description")


# ---------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------
def _freeze(value: Any) -> Any:
    """Lists become tuples and tables read-only mappings, recursively."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """Read-only mappings become dicts (tuples stay tuples), recursively."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_thaw(v) for v in value)
    return value


def _as_toml_data(value: Any) -> Any:
    """Tuples become lists (arrays), as ``tomllib`` reads them, recursively."""
    if isinstance(value, dict):
        return {k: _as_toml_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_toml_data(v) for v in value]
    return value


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_string(s: str) -> str:
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, where) for v in value) + "]"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_key(str(k))} = {_toml_value(v, where)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise RecipeError(f"{where}: {value!r} ({type(value).__name__}) cannot be written to TOML; "
                      "use strings, numbers, booleans, arrays or tables")


# ---------------------------------------------------------------------------
# parameter introspection
# ---------------------------------------------------------------------------
def schedule_parameters(schedule: str) -> tuple[str, ...]:
    """The parameters a recipe's ``[schedule]`` section may set for ``schedule``.

    The fields of the schedule's settings dataclass (its own first), less
    those the ``[scorer]`` and ``[analysis]`` sections give.
    """
    return POLICIES[schedule].config_class.settings()


def scorer_parameters(name: str) -> tuple[str, ...] | None:
    """The keyword parameters the scorer factory ``name`` accepts (``None``: cannot tell).

    Read from the factory's signature; for a ``**kwargs`` factory (a lambda
    fixing some fields of a dataclass scorer), from the fields of the scorer
    it builds, minus those the factory already fixes.
    """
    factory = SCORERS[name]
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    named = [p.name for p in params
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        return tuple(named)
    try:
        obj = factory()
    except Exception:
        return None
    if is_dataclass(obj):
        candidates = {f.name: getattr(obj, f.name) for f in fields(obj) if f.init}
    else:
        try:
            sig = inspect.signature(type(obj))
        except (TypeError, ValueError):
            return None
        candidates = {p.name: p.default for p in sig.parameters.values()
                      if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                      and p.default is not inspect.Parameter.empty}
    valid = list(named)
    for key, default in candidates.items():
        try:
            factory(**{key: default})
        except TypeError:  # fixed by the factory (e.g. ``p`` of ``l1``)
            continue
        except Exception:
            pass
        valid.append(key)
    return tuple(valid)


# ---------------------------------------------------------------------------
# the recipe
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """A validated recipe (see the module docstring for the file format).

    Attributes:
        name: the recipe's name.
        schedule: a schedule name (``iterative``, ``adaptive``, ``one_shot``).
        scorer: a scorer name of :data:`fxprune.scoring.SCORERS`.
        description: free text.
        schedule_params: settings of the schedule (fields of its config
            dataclass, e.g. :class:`~fxprune.schedules.IterativeConfig`).
        scorer_params: parameters of the scorer factory.
        analysis: options of :class:`~fxprune.analysis.analysis.AnalysisConfig`.
        source: the file it was read from (not compared).

    Construction validates everything and raises
    :class:`~fxprune.errors.RecipeError`; mappings are stored read-only and
    arrays as tuples.
    """

    name: str
    schedule: str
    scorer: str
    description: str = ""
    schedule_params: Mapping[str, Any] = field(default_factory=_empty)
    scorer_params: Mapping[str, Any] = field(default_factory=_empty)
    analysis: Mapping[str, Any] = field(default_factory=_empty)
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for key in ("schedule_params", "scorer_params", "analysis"):
            value = getattr(self, key)
            if not isinstance(value, Mapping):
                raise RecipeError(f"recipe {self.name!r}: {key} must be a table, got {value!r}")
            object.__setattr__(self, key, _freeze(value))
        self._validate()

    def __hash__(self) -> int:
        return hash(self.to_toml())

    @property
    def _where(self) -> str:
        return f"recipe {self.name!r}" + (f" ({self.source})" if self.source else "")

    def _validate(self) -> None:
        where = self._where
        if not isinstance(self.name, str) or not self.name:
            raise RecipeError(f"{where}: [recipe] name must be a non-empty string")
        if not isinstance(self.description, str):
            raise RecipeError(f"{where}: [recipe] description must be a string")
        if not isinstance(self.schedule, str) or self.schedule not in POLICIES:
            raise RecipeError(f"{where}: unknown schedule {self.schedule!r} in [schedule]; "
                              f"available: {sorted(POLICIES)}")
        if not isinstance(self.scorer, str) or self.scorer not in SCORERS:
            raise RecipeError(f"{where}: unknown scorer {self.scorer!r} in [scorer]; "
                              f"available: {sorted(SCORERS)}")
        # [analysis]
        valid = AnalysisConfig.option_names()
        unknown = sorted(set(self.analysis) - set(valid))
        if unknown:
            raise RecipeError(f"{where}: unknown parameter(s) {unknown} in [analysis]; valid: {list(valid)}")
        try:
            AnalysisConfig.from_options(_thaw(self.analysis))
        except ConfigError as exc:
            raise RecipeError(f"{where}: invalid [analysis] parameters: {exc}") from exc
        # [scorer]
        valid = scorer_parameters(self.scorer)
        if valid is not None:
            unknown = sorted(set(self.scorer_params) - set(valid))
            if unknown:
                raise RecipeError(f"{where}: unknown parameter(s) {unknown} for scorer "
                                  f"{self.scorer!r} in [scorer]; valid: {list(valid)}")
        try:
            get_scorer(self.scorer, **_thaw(self.scorer_params))
        except (ConfigError, TypeError, ValueError) as exc:
            raise RecipeError(f"{where}: invalid [scorer] parameters for {self.scorer!r}: {exc}") from exc
        # [schedule]
        valid = schedule_parameters(self.schedule)
        unknown = sorted(set(self.schedule_params) - set(valid))
        if unknown:
            runtime = sorted(set(unknown) & set(RUNTIME_PARAMETERS + _FROM_SECTIONS))
            hint = (f" ({runtime} are given to Recipe.run or set by the [scorer]/[analysis] "
                    "sections)" if runtime else "")
            raise RecipeError(f"{where}: unknown parameter(s) {unknown} for schedule "
                              f"{self.schedule!r} in [schedule]{hint}; valid: {list(valid)}")
        try:
            self.config()
        except (ConfigError, TypeError) as exc:
            raise RecipeError(f"{where}: invalid [schedule] parameters for {self.schedule!r}: {exc}") from exc

    # -- conversions ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The recipe as the nested dict of its TOML file."""
        out: dict[str, Any] = {"recipe": {"name": self.name}}
        if self.description:
            out["recipe"]["description"] = self.description
        if self.analysis:
            out["analysis"] = _thaw(self.analysis)
        out["scorer"] = {"name": self.scorer, **_thaw(self.scorer_params)}
        out["schedule"] = {"name": self.schedule, **_thaw(self.schedule_params)}
        return _as_toml_data(out)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None,
                  default_name: str | None = None) -> "Recipe":
        """Build and validate a recipe from the nested dict of a TOML file."""
        head = data.get("recipe", {})
        name = head.get("name", default_name) if isinstance(head, Mapping) else default_name
        where = f"recipe {name!r}" + (f" ({source})" if source else "")
        unknown = [k for k in data if k not in SECTIONS]
        if unknown:
            raise RecipeError(f"{where}: unknown section(s) {['[%s]' % k for k in unknown]}; "
                              f"valid: {['[%s]' % s for s in SECTIONS]}")
        for section in SECTIONS:
            if section in data and not isinstance(data[section], Mapping):
                raise RecipeError(f"{where}: [{section}] must be a table, got {data[section]!r}")
        unknown = sorted(set(head) - set(_RECIPE_KEYS))
        if unknown:
            raise RecipeError(f"{where}: unknown key(s) {unknown} in [recipe]; valid: {list(_RECIPE_KEYS)}")
        if name is None:
            raise RecipeError(f"{where}: [recipe] needs a name")
        for section, example in (("scorer", "l1"), ("schedule", "iterative")):
            if "name" not in data.get(section, {}):
                raise RecipeError(f'{where}: [{section}] needs a name (e.g. name = "{example}")')
        scorer = dict(data["scorer"])
        schedule = dict(data["schedule"])
        return cls(name=name, schedule=schedule.pop("name"), scorer=scorer.pop("name"),
                   description=head.get("description", ""), schedule_params=schedule,
                   scorer_params=scorer, analysis=dict(data.get("analysis", {})), source=source)

    def to_toml(self) -> str:
        """The recipe as TOML text; ``recipe(file written with it) == self``."""
        lines: list[str] = []
        for section, table in self.to_dict().items():
            if lines:
                lines.append("")
            lines.append(f"[{section}]")
            for key, value in table.items():
                lines.append(f"{_toml_key(key)} = {_toml_value(value, f'{self._where} [{section}] {key}')}")
        return "\n".join(lines) + "\n"

    def to_toml_path(self, path: str | os.PathLike) -> str:
        """Write :meth:`to_toml` to ``path`` (atomically); returns the path as a string."""
        body = self.to_toml().encode("utf-8")
        atomic_write(path, lambda fh: fh.write(body))
        return str(path)

    def replace(self, **schedule_params: Any) -> "Recipe":
        """A copy with some ``[schedule]`` parameters changed (validated)."""
        merged = {**_thaw(self.schedule_params), **schedule_params}
        return Recipe(self.name, self.schedule, self.scorer, self.description, merged,
                      self.scorer_params, self.analysis, self.source)

    # -- running --------------------------------------------------------------
    def config(self) -> ScheduleConfig:
        """The schedule's settings: an instance of its config dataclass (``IterativeConfig`` ...)."""
        return POLICIES[self.schedule].config_class(
            scorer=self.scorer, scorer_params=_thaw(self.scorer_params),
            analysis=AnalysisConfig.from_options(_thaw(self.analysis)), **_thaw(self.schedule_params))

    def run(self, model: torch.nn.Module, example_inputs: Sequence[Any], *,
            evaluate: Callable[[Any], float] | None = None, finetune: Callable[[Any], Any] | None = None,
            data: Any = None, loss_fn: Callable[..., Any] | None = None, **overrides: Any) -> Any:
        """Run the recipe's schedule on ``model``; returns its :class:`~fxprune.schedules.History`.

        ``overrides`` replace settings for this run (``rounds=3``,
        ``scorer_params``, ``analysis`` or ``analysis_options``) or give runtime
        arguments (``checkpoint_dir``, ``progress``, ``rewind_state``, ``registry``).
        """
        policy = POLICIES[self.schedule]
        accepted = list(policy.config_class.field_names() + RUNTIME_PARAMETERS) + ["analysis_options"]
        unknown = sorted(set(overrides) - set(accepted))
        if unknown:
            raise RecipeError(f"{self._where}: unknown override(s) {unknown} for schedule "
                              f"{self.schedule!r}; valid: {accepted}")
        return policy.run(model, example_inputs, self.config(), evaluate=evaluate, finetune=finetune,
                          data=data, loss_fn=loss_fn, **overrides)


# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------
def recipes_dir() -> Path:
    """The directory of the shipped recipes.

    Installed: ``fxprune/recipes_data`` (the repository's ``passes/``, mapped
    as package data); from a source checkout: ``<repo>/passes``.
    """
    here = Path(__file__).resolve().parent
    candidates = (here / "recipes_data", here.parent / "passes")
    for cand in candidates:
        if cand.is_dir() and any(cand.glob("*.toml")):
            return cand
    raise RecipeError(f"the shipped recipes were not found (looked in {[str(c) for c in candidates]}); "
                      "reinstall fxprune")


def available_recipes() -> tuple[str, ...]:
    """Names of the shipped recipes."""
    return tuple(sorted(p.stem for p in recipes_dir().glob("*.toml")))


def _looks_like_path(s: str) -> bool:
    return s.endswith(".toml") or "/" in s or os.sep in s


def recipe(name_or_path: str | os.PathLike | Recipe) -> Recipe:
    """Load a recipe by name (``"iap"``: a shipped recipe) or from a ``.toml`` file.

    Raises:
        RecipeError: unknown name (the available ones are listed), missing or
            malformed file, or an invalid recipe.
    """
    if isinstance(name_or_path, Recipe):
        return name_or_path
    if _toml is None:  # pragma: no cover - Python 3.10 without tomli
        raise RecipeError("reading recipes needs tomllib (Python >= 3.11) or `pip install tomli`")
    if isinstance(name_or_path, os.PathLike) or (isinstance(name_or_path, str) and _looks_like_path(name_or_path)):
        path = Path(name_or_path)
        if not path.is_file():
            raise RecipeError(f"recipe file {str(path)!r} not found")
    elif isinstance(name_or_path, str):
        path = recipes_dir() / f"{name_or_path}.toml"
        if not path.is_file():
            raise RecipeError(f"unknown recipe {name_or_path!r}; available: {list(available_recipes())} "
                              "(or give the path of a .toml file)")
    else:
        raise RecipeError(f"recipe() takes a name, a path or a Recipe, got {type(name_or_path).__name__}")
    try:
        data = _toml.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise RecipeError(f"recipe file {str(path)!r} is not UTF-8 text (TOML files are UTF-8): {exc}") from None
    except _toml.TOMLDecodeError as exc:
        raise RecipeError(f"recipe file {str(path)!r} is not valid TOML: {exc}") from exc
    return Recipe.from_dict(data, source=str(path), default_name=path.stem)
