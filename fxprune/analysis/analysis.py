"""The analysis stage as one object: capture, shapes, channels, groups.

Example:
    >>> import torch, torch.nn as nn
    >>> import fxprune
    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
    ...         self.head = nn.Conv2d(4, 2, 1)
    ...     def forward(self, x):
    ...         y = self.a(x) + self.b(x)          # a residual-style add couples a and b
    ...         return self.head(torch.relu(y))
    >>> analysis = fxprune.analyze(Block(), (torch.randn(1, 4, 8, 8),))
    >>> print(analysis.groups[0].describe())
    group 0: 4 channels
      producer  a.weight[dim 0] (4)
      bias      a.bias[dim 0] (4)
      producer  b.weight[dim 0] (4)
      bias      b.bias[dim 0] (4)
      consumer  head.weight[dim 1] (4)
"""
from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import json
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping, Sequence

import networkx as nx
import torch
import torch.fx as fx

from .. import ir
from ..gcpause import gc_paused
from ..errors import ConfigError, ExampleInputError, FxPruneError, TraceError
from ..ops.builtin import default_registry
from ..ops.registry import Registry
from .capture import bind_example_inputs, export, trace
from .copying import lazy_graph_module
from .shapes import propagate_shapes
from .channels import POLICIES, Barrier, ChannelState, propagate_channels, resolve_ignore
from .groups import Coupling, Group, group_spaces
from .mode_calls import recognise_mode_calls

__all__ = ["AnalysisConfig", "Analysis", "analyze", "unknown_names", "SPLIT_POLICIES", "FRONTENDS", "Frontend"]


#: values of :attr:`AnalysisConfig.split_policy` (see :class:`fxprune.ops.layout.SplitPolicy`)
SPLIT_POLICIES = POLICIES
class Frontend(str, enum.Enum):
    """How a model is captured (:attr:`AnalysisConfig.frontend`)."""

    #: ``torch.fx.symbolic_trace`` (Python level; follows ``train()``/``eval()`` best)
    FX = "fx"
    #: ``torch.export`` (ATen level): for models symbolic tracing cannot handle
    EXPORT = "export"
    #: ``fx``, and ``export`` where fx cannot capture the model or leaves channel barriers
    #: the export graph does not have (the analysis notes say which and why)
    AUTO = "auto"


#: values of :attr:`AnalysisConfig.frontend`
FRONTENDS = tuple(f.value for f in Frontend)


def unknown_names(what: str, unknown: Iterable[str], valid: Sequence[str]) -> ConfigError:
    """A :class:`ConfigError` for unknown names, listing the valid ones (and close matches)."""
    unknown = sorted(unknown)
    close = list(dict.fromkeys(c for u in unknown for c in difflib.get_close_matches(u, list(valid), n=3)))
    hint = f"; did you mean {close}?" if close else ""
    return ConfigError(f"unknown {what}(s) {unknown}{hint} (valid: {list(valid)})")


def _names(field: str, value: Any, what: str) -> tuple[Any, ...]:
    """``value`` as a tuple of names or module types (a single string is one name, never its characters)."""
    if value is None:
        return ()
    items = (value,) if isinstance(value, (str, type)) else value
    try:
        items = tuple(items)
    except TypeError:
        items = (items,)
    for item in items:
        if not (isinstance(item, str) or isinstance(item, type) and issubclass(item, torch.nn.Module)):
            raise ConfigError(f"{field} takes {what}; got {item!r} ({type(item).__name__})")
    return items


def _overrides(value: Any) -> tuple[tuple[str, str | int], ...]:
    """``split_overrides`` as sorted ``(node name, policy)`` pairs, checked."""
    pairs = tuple(value.items()) if isinstance(value, Mapping) else tuple(value or ())
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ConfigError(f"split_overrides must map fx node names to policies, got {value!r}")
        name, policy = pair
        if policy not in SPLIT_POLICIES and not (isinstance(policy, int) and not isinstance(policy, bool)):
            raise ConfigError(f"split_overrides[{name!r}] must be one of {list(SPLIT_POLICIES)} or an int "
                              f"(which varying factor is pruned), got {policy!r}")
    return tuple(sorted(pairs, key=lambda kv: kv[0]))


@dataclass(frozen=True)
class AnalysisConfig:
    """The options of the analysis stage, validated on construction.

    This is the one form of analysis options: :func:`analyze` and
    :func:`fxprune.prune` build it from their keywords, the schedules take it
    as their ``analysis`` setting, and a recipe's ``[analysis]`` table is read
    through :meth:`from_options`.

    Attributes:
        leaf_modules: module types or qualified names not traced through.
        strict: raise on ops without a rule instead of making them barriers.
        split_policy: which factor of a channel dim split into several is pruned
            (:class:`~fxprune.ops.layout.SplitPolicy`): ``auto`` (the default):
            ``heads`` for a split whose heads reach an attention op, ``inner``
            elsewhere (a channel shuffle), decided per node; ``inner``: head_dim /
            channels-per-group, uniformly; ``outer``: the outermost factor (of a
            fused ``(3, heads, head_dim)`` split: q, k or v whole, which attention
            fixes; the report says so); ``heads``: the factor next to head_dim,
            past a leading q/k/v factor: whole heads of fused and separate q/k/v
            layouts and whole GQA groups.
        split_overrides: per-node policy overrides, by fx node name: a policy
            (``inner``, ``heads``...) or an int picking which varying factor is pruned (``1``
            prunes whole heads of a fused ``qkv.reshape(B, N, 3, heads, head_dim)``);
            given as a mapping, stored as sorted ``(name, policy)`` pairs.
        ignore: module or parameter names whose produced channels are kept
            (a single string is one name), or module types (every module of
            the type is kept).
        frontend: ``fx`` (symbolic_trace, the default), ``export`` (torch.export)
            or ``auto`` (:class:`Frontend`).

    Example:
        >>> from fxprune import AnalysisConfig
        >>> AnalysisConfig(ignore="fc").ignore
        ('fc',)
        >>> AnalysisConfig.from_options({"split_policy": "outer", "split_overrides": {"view": 1}})
        AnalysisConfig(leaf_modules=(), strict=False, split_policy='outer', split_overrides=(('view', 1),), ignore=(), frontend='fx')
        >>> AnalysisConfig().split_policy
        'auto'
        >>> AnalysisConfig.from_options({"split_polcy": "outer"})
        Traceback (most recent call last):
        ...
        fxprune.errors.ConfigError: unknown analysis option(s) ['split_polcy']; did you mean ['split_policy']? (valid: ['leaf_modules', 'strict', 'split_policy', 'split_overrides', 'ignore', 'frontend'])
    """

    leaf_modules: tuple[Any, ...] = ()
    strict: bool = False
    split_policy: str = "auto"
    split_overrides: tuple[tuple[str, str | int], ...] = ()
    ignore: tuple[str, ...] = ()
    frontend: str = "fx"

    def __post_init__(self) -> None:
        object.__setattr__(self, "leaf_modules", _names("leaf_modules", self.leaf_modules,
                                                           "module types or qualified module names (strings)"))
        object.__setattr__(self, "ignore", _names("ignore", self.ignore,
                                                     "module or parameter names (strings) or module types"))
        object.__setattr__(self, "split_overrides", _overrides(self.split_overrides))
        if not isinstance(self.strict, bool):
            raise ConfigError(f"strict must be True or False, got {self.strict!r}")
        if self.split_policy not in SPLIT_POLICIES:
            raise ConfigError(f"split_policy must be 'auto', 'inner', 'outer' or 'heads', got {self.split_policy!r}")
        if self.frontend not in FRONTENDS:
            raise ConfigError(f"unknown frontend {self.frontend!r}; available: 'fx' (symbolic_trace), "
                              "'export' (torch.export, ATen level), 'auto' (fx, or export where it does better)")

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The option names, in order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None = None) -> "AnalysisConfig":
        """The config of a mapping of options; unknown names raise :class:`ConfigError` (with close matches)."""
        return cls().replace(**dict(options or {}))

    @classmethod
    def coerce(cls, value: "AnalysisConfig | Mapping[str, Any] | None") -> "AnalysisConfig":
        """``value`` as a config: ``None`` is the default, a mapping goes through :meth:`from_options`."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls.from_options(value)
        raise ConfigError(f"analysis options must be an AnalysisConfig or a mapping, got {type(value).__name__}")

    def replace(self, **options: Any) -> "AnalysisConfig":
        """A copy with some options changed (validated)."""
        unknown = set(options) - set(self.option_names())
        if unknown:
            raise unknown_names("analysis option", unknown, self.option_names())
        return dataclasses.replace(self, **options) if options else self


@dataclass(eq=False)
class Analysis:
    """The result of :func:`analyze`: a traced graph annotated with channel groups.

    Attributes:
        graph_module: the traced GraphModule (shares parameters with the model;
            never written to).
        groups: the coupled channel groups (prunable ones only).
        barriers: nodes whose channels could not be mapped, with the reason.
        state: the raw channel state (atoms, parameter labels, roles).
        example_inputs: the inputs used for shape propagation.
        config: the options used.
        model: the analysed model (read by :func:`fxprune.rewrite.materialize`;
            never written to).
        notes: what the report says about the analysis itself (the front end
            used and why, a split policy that kept a whole split).
        frontend: the front end that captured :attr:`graph_module` (``fx`` or
            ``export``; with ``frontend="auto"``, the one chosen).
    """

    graph_module: fx.GraphModule
    groups: list[Group]
    barriers: list[Barrier]
    state: ChannelState
    example_inputs: tuple
    config: AnalysisConfig
    registry: Registry
    #: what the coupling graph is built from, when an export asks for it (:attr:`_graph`)
    _coupling: Coupling = field(repr=False)
    model: torch.nn.Module | None = field(default=None, repr=False)
    notes: tuple[str, ...] = ()
    frontend: str = "fx"

    def with_notes(self, *notes: str) -> "Analysis":
        """This analysis with ``notes`` first (the same graph, groups and state)."""
        return dataclasses.replace(self, notes=tuple(notes) + self.notes)

    @functools.cached_property
    def _graph(self) -> nx.Graph:
        """The coupling graph, built once, on the first export that reads it."""
        return self._coupling.graph()

    @functools.cached_property
    def blocks(self) -> tuple:
        """The removable residual blocks (:func:`fxprune.analysis.blocks.find_blocks`), found once."""
        from .blocks import find_blocks

        return find_blocks(self)

    def to_networkx(self) -> nx.Graph:
        """The coupling graph: spaces as nodes (``kind``, ``name``, ``dim``, ``size``,
        ``role``, ``group``), an edge where spaces share channels (``shared``)."""
        return self._graph.copy()

    def to_dot(self) -> str:
        """The coupling graph in Graphviz DOT, one cluster per group."""
        lines = ["graph coupling {", "  node [shape=box, fontsize=10];"]
        by_group: dict[Any, list[str]] = {}
        for n, data in self._graph.nodes(data=True):
            by_group.setdefault(data.get("group"), []).append(n)
        for gid, nodes in sorted(by_group.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
            lines.append(f"  subgraph cluster_{gid if gid is not None else 'none'} {{")
            lines.append(f'    label="group {gid}";')
            for n in nodes:
                d = self._graph.nodes[n]
                shape = "box" if d["kind"] == "param" else "ellipse"
                label = f'{d["name"]}[{d["dim"]}]' + (f'\\n{d["role"]}' if "role" in d else "")
                lines.append(f'    "{n}" [label="{label}", shape={shape}];')
            lines.append("  }")
        for a, b, d in self._graph.edges(data=True):
            lines.append(f'  "{a}" -- "{b}" [label="{d.get("shared", "")}"];')
        lines.append("}")
        return "\n".join(lines)

    def to_json(self) -> str:
        """The group listing as JSON (members with index maps, fixed channels, barriers)."""
        return json.dumps({
            "groups": [{
                "id": g.id, "size": g.size, "fixed": sorted(g.fixed), "mixing": g.mixing,
                "fixed_reasons": list(g.fixed_reasons),
                "members": [{"node": m.node, "param": m.param, "dim": m.dim, "role": m.role,
                             "index_map": m.index_map.tolist()} for m in g.members],
            } for g in self.groups],
            "barriers": [{"node": b.node, "op": b.op, "reason": b.reason} for b in self.barriers],
            "notes": list(self.notes),
        })

    def group_of(self, param: str, dim: int | None = None) -> list[Group]:
        """Groups in which ``param`` (optionally at ``dim``) is a member."""
        return [g for g in self.groups
                if any(m.param == param and (dim is None or m.dim == dim) for m in g.members)]

    def summary(self) -> str:
        """A short human-readable listing of groups and barriers."""
        lines = [f"{len(self.groups)} groups, {len(self.barriers)} barriers"
                 + (f", {len(self.state.inert)} mask/index ops without channels" if self.state.inert else "")]
        for g in self.groups:
            lines.append(g.describe())
        for b in self.barriers:
            lines.append(f"barrier {b.node} ({b.op}): {b.reason}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def analyze(
    model: torch.nn.Module,
    example_inputs: Sequence[Any] | None = (),
    config: AnalysisConfig | Mapping[str, Any] | None = None,
    *,
    example_kwargs: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
    **options: Any,
) -> Analysis:
    """Trace ``model`` and find its coupled channel groups.

    Shapes come from one run of the graph: with CPU kernels on copies of the state
    of a small CPU model, else on meta tensors (fake tensors where a graph needs
    them), so models on the ``meta`` device can be analysed
    (:func:`~fxprune.analysis.shapes.propagate_shapes`); a model traced from its
    example values has them from the trace, which computed every node's value
    (:mod:`fxprune.analysis.values`).  The model is never modified.

    Args:
        model: the model (an ``nn.Module``; a ``GraphModule`` is used as is).
        example_inputs: a tuple of the positional inputs of ``model.forward``.
        config: an :class:`AnalysisConfig` (or a mapping of its options);
            ``None``: the defaults.
        example_kwargs: keyword inputs of ``model.forward`` (``input_ids``,
            ``attention_mask``, ``pixel_values`` of a Hugging Face model), placed at
            their parameters' positions (:func:`~fxprune.analysis.capture.bind_example_inputs`):
            :attr:`Analysis.example_inputs` holds them positionally.
        registry: the rule registry (default: :func:`fxprune.ops.default_registry`).
        **options: options of :class:`AnalysisConfig`, applied over ``config``:
            ``leaf_modules`` (module types or qualified names not to trace
            through), ``strict`` (raise :class:`~fxprune.errors.UnsupportedOpError`
            for ops without a rule), ``split_policy`` (``auto``: whole heads where a
            split reaches attention, ``inner`` elsewhere; ``heads``, ``inner`` or
            ``outer``), ``split_overrides`` (``{fx node name: policy}`` for individual
            reshapes), ``ignore`` (module/parameter names whose output channels
            must be kept), ``frontend`` (``fx``: ``torch.fx.symbolic_trace``;
            ``export``: ``torch.export``, ATen-level, for models symbolic
            tracing cannot handle; same rules; ``auto``: ``fx``, and ``export``
            where fx cannot trace the model or leaves channel barriers the export
            graph does not have: :attr:`Analysis.frontend` and the notes say which and why).

    Raises:
        TraceError, ExampleInputError, UnsupportedOpError, ConfigError.
    """
    with gc_paused():
        config = AnalysisConfig.coerce(config).replace(**options)
        # refuses a dict, None or a string clearly; keyword inputs go to their positions
        example_inputs = bind_example_inputs(model, example_inputs, example_kwargs)
        registry = registry if registry is not None else default_registry()
        if config.frontend != Frontend.AUTO:
            return _analyze_with(Frontend(config.frontend), model, example_inputs, config, registry)
        try:
            fx_analysis = _analyze_with(Frontend.FX, model, example_inputs, config, registry)
        except (TraceError, ExampleInputError) as exc:
            why = "; ".join(line.strip() for line in str(exc).splitlines()
                            if line.strip() and not line.startswith("Fixes"))  # both fx attempts
            try:
                exported = _analyze_with(Frontend.EXPORT, model, example_inputs, config, registry)
            except FxPruneError:
                raise exc from None
            return exported.with_notes(f"frontend='auto' used export: torch.fx could not capture the model ({why})")
        if not fx_analysis.barriers:
            return fx_analysis.with_notes("frontend='auto' used fx: it left no channel barrier")
        try:
            exported = _analyze_with(Frontend.EXPORT, model, example_inputs, config, registry)
        except FxPruneError as exc:
            return fx_analysis.with_notes(f"frontend='auto' used fx with {len(fx_analysis.barriers)} channel barrier(s); "
                                          f"export could not capture the model ({str(exc).splitlines()[0]})")
        if len(exported.barriers) < len(fx_analysis.barriers):
            names = ", ".join(b.node for b in fx_analysis.barriers[:5])
            return exported.with_notes(
                f"frontend='auto' used export: fx left {len(fx_analysis.barriers)} channel barrier(s) ({names}"
                f"{', ...' if len(fx_analysis.barriers) > 5 else ''}), export {len(exported.barriers)}")
        return fx_analysis.with_notes(f"frontend='auto' used fx: export leaves as many channel barriers "
                                      f"({len(exported.barriers)}) as fx ({len(fx_analysis.barriers)})")


def _analyze_with(frontend: "Frontend", model: torch.nn.Module, example_inputs: tuple, config: AnalysisConfig,
                  registry: Registry) -> Analysis:
    """The analysis of ``model`` captured by one front end (``fx`` or ``export``)."""
    notes: list[str] = []
    if frontend is Frontend.EXPORT:
        gm = export(model, example_inputs)
        notes.extend(gm.meta.get(ir.CAPTURE_NOTES, ()))
    else:
        gm = trace(model, leaf_modules=tuple(config.leaf_modules) + registry.leaf_types(),
                   kept_functions=_ruled_functions(registry), example_inputs=example_inputs)
        notes.extend(gm.meta.get(ir.CAPTURE_NOTES, ()))
    if gm is model:  # a GraphModule given by the user: annotate a shallow copy of its graph
        gm = lazy_graph_module(model, _copy_graph(model.graph), type(model).__name__)
        propagate_shapes(gm, example_inputs)
    elif not all(ir.SPEC in n.meta for n in gm.graph.nodes):
        propagate_shapes(gm, example_inputs)
    # else: traced from these example values just now, which annotated every node (ValueTracing.write_specs)
    # kept calls that follow the mode and pass channels through (stochastic depth): registered, in a copy
    registry, recognised = recognise_mode_calls(gm, registry)
    notes.extend(recognised)
    state = propagate_channels(gm, registry, strict=config.strict, split_policy=config.split_policy,
                               split_overrides=dict(config.split_overrides))
    if config.ignore:
        resolve_ignore(state, [n for n, _ in model.named_modules()], _ignored_names(model, config.ignore))
    groups, coupling = group_spaces(gm, state)
    return Analysis(gm, groups, state.barriers, state, example_inputs, config, registry, coupling, model,
                    notes=tuple(notes) + tuple(state.notes), frontend=frontend.value)


def _ruled_functions(registry: Registry) -> tuple[Any, ...]:
    """The plain Python functions the registry has a rule for (capture keeps them as calls)."""
    return registry.function_keys()


def _ignored_names(model: torch.nn.Module, ignore: Sequence[Any]) -> list[str]:
    """``ignore`` with every module type replaced by the names of the model's modules of that type."""
    names: list[str] = []
    for entry in ignore:
        if isinstance(entry, str):
            names.append(entry)
            continue
        hits = [n for n, m in model.named_modules() if n and isinstance(m, entry)]
        if not hits:
            raise ConfigError(f"ignore entry {entry.__name__} matches no module of the model")
        names.extend(hits)
    return names


def _copy_graph(graph: fx.Graph) -> fx.Graph:
    new = fx.Graph()
    out = new.graph_copy(graph, {})
    new.output(out)
    return new
