"""Hugging Face models: the pruned widths as a config, and the model rebuilt from it.

A ``transformers.PreTrainedModel`` is described by its ``config``:
``save_pretrained`` writes it and ``from_pretrained`` builds ``type(model)(config)``
before loading the weights.  A pruned model round-trips only if a config of
its class has exactly the pruned parameter shapes *and* computes the pruned
function (rotary tables and attention scaling are recomputed from the
config).  :func:`rebuild_from_config`:

1. requires uniform widths: every family of repeating groups
   (:mod:`fxprune.analysis.repeats`) keeps one count (``prune(..., uniform=True)``);
2. searches the config fields of :data:`CONFIG_FIELDS` (``hidden_size``,
   ``intermediate_size``, ``num_attention_heads``, ``num_key_value_heads``,
   ``head_dim``...; GPT-2's names through the config's ``attribute_map``) for
   the config closest to the original (fewest fields changed, ``head_dim``
   last) whose one-layer model, built on the ``meta`` device, has the pruned
   shapes; candidate values are the original ones scaled by the ratios the
   pruning applied;
3. builds ``type(model)(config)``, loads the pruned state dict (strict) and
   checks its outputs against the pruned graph on the example inputs.

Anything that fails says why (which group differs across blocks, which
parameter no config reproduces, which recomputed buffer the pruning changed).
``transformers`` is never imported here: a model is a Hugging Face model only
if ``transformers`` is already loaded and the model is a ``PreTrainedModel``.

Example:
    >>> import torch
    >>> is_hf_model(torch.nn.Linear(2, 2))
    False
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import itertools
import sys
from fractions import Fraction
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.fx as fx

from ..analysis.analysis import Analysis
from ..analysis.repeats import repeats
from ..errors import MaterializeError
from .eager import check_outputs

__all__ = ["CONFIG_FIELDS", "config_candidates", "is_hf_model", "rebuild_from_config", "uniform_error"]

#: the config fields searched for the pruned widths (names as in LlamaConfig; aliases through ``attribute_map``)
CONFIG_FIELDS = ("hidden_size", "intermediate_size", "n_inner", "num_attention_heads", "num_key_value_heads",
                 "head_dim")
#: how much a changed field costs in the search (head_dim also changes rotary tables and scaling)
_COST = {"head_dim": 2}
#: most one-layer models built while searching
MAX_PROBES = 400
#: configs with the pruned shapes tried against the pruned outputs
MAX_TRIES = 4

Shapes = Mapping[str, tuple]


def is_hf_model(model: Any) -> bool:
    """Whether ``model`` is a ``transformers.PreTrainedModel`` (without importing transformers)."""
    tf = sys.modules.get("transformers")
    base = getattr(tf, "PreTrainedModel", None) if tf is not None else None
    return base is not None and isinstance(model, base)


def uniform_error(analysis: Analysis, plan: Mapping[int, Sequence[int]]) -> str | None:
    """Why the plan's widths differ across repeating blocks (``None``: they do not)."""
    for r in repeats(analysis.groups):
        sizes = {g.id: g.size for g in analysis.groups}
        kept = [sizes[gid] - len(plan.get(gid, ())) for gid in r.groups]
        if len(set(kept)) > 1:
            listing = ", ".join(f"group {gid}: {k}" for gid, k in zip(r.groups, kept))
            return (f"the groups of {r.pattern} keep different widths across blocks ({listing}), and a config "
                    "has one width for all layers; prune with uniform=True")
    return None


def _shapes(model: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def config_candidates(config: Any, target: Shapes, original: Shapes) -> dict[str, list]:
    """The values tried per config field: the original first, then it scaled by each pruning ratio.

    A field that is unset (``None``: GPT-2's ``n_inner``, Qwen2's ``head_dim``) may take any pruned
    size, and an unset ``head_dim`` its conventional value ``hidden_size // num_attention_heads``.

    Example:
        >>> from types import SimpleNamespace
        >>> cfg = SimpleNamespace(attribute_map={}, hidden_size=32, intermediate_size=64)
        >>> config_candidates(cfg, {"w": (48, 24)}, {"w": (64, 32)})
        {'hidden_size': [32, 24], 'intermediate_size': [64, 48], 'head_dim': [None, 24, 48]}
        >>> cfg.num_attention_heads = 4
        >>> config_candidates(cfg, {"w": (48, 24)}, {"w": (64, 32)})["head_dim"]
        [None, 8, 6, 24, 48]
    """
    ratios = sorted({Fraction(n, o) for k, shape in target.items() if k in original
                     for o, n in zip(original[k], shape) if o != n and o > 0})
    sizes = sorted({s for shape in target.values() for s in shape})
    aliases = getattr(config, "attribute_map", {}) or {}
    out: dict[str, list] = {}
    for name in CONFIG_FIELDS:
        real = aliases.get(name, name)
        if real in out or not (hasattr(config, real) or name == "head_dim"):
            continue
        value = getattr(config, real, None)
        if isinstance(value, bool) or not (value is None or isinstance(value, int)):
            continue
        base = value if value is not None else _implied(config, name)
        scaled = [] if base is None else [base] + [int(base * r) for r in ratios
                                                   if (base * r).denominator == 1 and base * r > 0]
        out[real] = list(dict.fromkeys([value] + scaled + (sizes if value is None else [])))
    return out


def _implied(config: Any, name: str) -> int | None:
    """The value an unset field takes by the Hugging Face convention (``head_dim = hidden_size // heads``)."""
    if name != "head_dim":
        return None
    aliases = getattr(config, "attribute_map", {}) or {}
    hidden = getattr(config, aliases.get("hidden_size", "hidden_size"), None)
    heads = getattr(config, aliases.get("num_attention_heads", "num_attention_heads"), None)
    return hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads else None


class _Search:
    """Configs of ``cls`` whose one-layer model has the target shapes, closest to the original first."""

    def __init__(self, model: torch.nn.Module, target: Shapes) -> None:
        self.cls, self.config, self.target = type(model), model.config, target
        self.candidates = config_candidates(self.config, target, _shapes(model))
        self.probes = 0
        self.closest: tuple[int, dict[str, Any], list[str]] | None = None

    def make(self, overrides: Mapping[str, Any], one_layer: bool = False) -> Any:
        config = copy.deepcopy(self.config)
        for key, value in overrides.items():
            setattr(config, key, value)
        if one_layer and hasattr(config, "num_hidden_layers"):
            config.num_hidden_layers = 1
        return config

    def _mismatches(self, overrides: Mapping[str, Any]) -> list[str] | None:
        self.probes += 1
        try:
            with torch.device("meta"):
                probe = self.cls(self.make(overrides, one_layer=True))
        except Exception:  # an inconsistent config (hidden_size not a multiple of the heads...)
            return None
        return [f"{k} is {self.target.get(k)} in the pruned model but {shape} under that config"
                for k, shape in _shapes(probe).items() if self.target.get(k) != shape]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        names = list(self.candidates)
        combos = itertools.product(*(range(len(self.candidates[n])) for n in names))
        ranked = sorted(combos, key=lambda idx: (sum(_COST.get(n, 1) for n, i in zip(names, idx) if i), idx))
        for idx in ranked:
            if self.probes >= MAX_PROBES:
                return
            overrides = {n: self.candidates[n][i] for n, i in zip(names, idx) if i}
            bad = self._mismatches(overrides)
            if bad is None:
                continue
            if self.closest is None or len(bad) < self.closest[0]:
                self.closest = (len(bad), overrides, bad)
            if not bad:
                yield overrides


def _no_init_weights() -> Any:
    """transformers' ``no_init_weights`` context (the weights are loaded right after), if it has one."""
    for name in ("transformers.initialization", "transformers.modeling_utils"):
        try:
            return importlib.import_module(name).no_init_weights()
        except (ImportError, AttributeError):
            continue
    return contextlib.nullcontext()


def _ties(model: torch.nn.Module) -> list[list[str]]:
    """The names of every parameter shared under several names."""
    names: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(n)
    return sorted(v for v in names.values() if len(v) > 1)


def _build(model: torch.nn.Module, config: Any, dtype: torch.dtype) -> torch.nn.Module:
    """``type(model)(config)``, skipping the random initialisation where transformers allows it.

    The weights are loaded right after; buffers are computed in ``__init__``
    either way.  Ties are restored (``tie_weights``) and must match the
    original model's, else the model is built the plain way.
    """
    with _no_init_weights():
        new = type(model)(config)
    if hasattr(new, "tie_weights"):
        new.tie_weights()
    if _ties(new) != _ties(model):
        new = type(model)(config)
    return new.to(dtype)


def _recomputed_buffers(model: torch.nn.Module, pruned: torch.nn.Module) -> list[str]:
    """Non-persistent buffers (rebuilt from the config, not loaded) whose shape the pruning changed."""
    persistent = set(pruned.state_dict())
    before = dict(model.named_buffers())
    return [f"{k} ({tuple(before[k].shape)} -> {tuple(v.shape)})" for k, v in pruned.named_buffers()
            if k not in persistent and k in before and before[k].shape != v.shape]


def _describe(overrides: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "the original config"


def rebuild_from_config(analysis: Analysis, plan: Mapping[int, Sequence[int]], pruned: torch.nn.Module,
                        reference: fx.GraphModule, *, rtol: float = 1e-4, atol: float = 1e-5) -> torch.nn.Module:
    """``type(model)(config)`` with the pruned widths in ``config`` and the pruned weights loaded.

    ``pruned`` is the sliced copy (:func:`~fxprune.rewrite.eager.eager_copy`),
    ``reference`` the pruned graph the rebuilt model must reproduce.

    Raises:
        MaterializeError: widths differ across blocks, no config has the pruned
            shapes, or none computes the pruned function; the message says which.
    """
    model = analysis.model
    name = type(model.config).__name__
    why = uniform_error(analysis, plan)
    if why is not None:
        raise MaterializeError(f"the pruned {type(model).__name__} cannot be a {name}: {why} "
                               "(or call materialize(hf_config=False) for the resized copy, whose config "
                               "still has the original sizes)")
    target = _shapes(pruned)
    search = _Search(model, target)
    state = pruned.state_dict()
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    failures = []
    for overrides in search:
        new = _build(model, search.make(overrides), dtype)
        try:
            new.load_state_dict(state, strict=True)
        except RuntimeError as exc:  # a later layer differs from the first one
            failures.append(f"{_describe(overrides)}: {str(exc).splitlines()[-1].strip()}")
            continue
        new.train(model.training)
        if getattr(model, "generation_config", None) is not None:
            new.generation_config = copy.deepcopy(model.generation_config)
        try:
            mismatch = check_outputs(new, reference, analysis.example_inputs, rtol, atol)
        except Exception as exc:
            mismatch = f"{type(exc).__name__}: {exc}"
        if mismatch is None:
            return new
        failures.append(f"{_describe(overrides)}: {mismatch}")
        if len(failures) >= MAX_TRIES:
            break
    fields = ", ".join(search.candidates)
    if failures:
        msg = (f"the pruned {type(model).__name__} cannot be a {name}: the configs with its parameter shapes do "
               f"not reproduce result.graph_module ({'; '.join(failures)})")
        buffers = _recomputed_buffers(model, pruned)
        if buffers:
            msg += (f". A rebuilt model recomputes {', '.join(buffers)} from the config, and the pruning changed "
                    "them: prune whole attention heads (split_policy='heads', or the default 'auto') instead of "
                    "channels inside a head")
    else:
        closest = search.closest
        detail = (f"; closest ({_describe(closest[1])}): {'; '.join(closest[2][:3])}" if closest else "")
        msg = (f"the pruned {type(model).__name__} cannot be a {name}: no values of {fields} give its "
               f"parameter shapes{detail}. Configs that derive the attention width from hidden_size "
               "(GPT-2, BERT: head size = hidden_size / num_attention_heads) cannot express a hidden size pruned "
               "apart from the attention width: keep one of them (ignore=[...])")
    raise MaterializeError(msg + ". result.graph_module remains the pruned model; materialize(hf_config=False) "
                                 "gives the resized copy with the original config")
