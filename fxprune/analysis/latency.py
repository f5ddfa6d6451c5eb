"""Latency tables: every node of an analysed graph timed on this machine, predicting a plan's latency.

A :class:`LatencyTable` is measured once per model, device and thread count
(:func:`fxprune.latency_table` builds the pruned models of a few selection
ratios and times them here) and cached as JSON.  For every call node it holds
the node's *work* at each measured ratio (its MACs, or for an op without MACs
the elements it reads and writes) and its measured time there; the time of the
node under any plan is interpolated over its work (piecewise linear, made
monotone: more work never takes less time; below the smallest work measured
the lowest segment is extended, never below proportional scaling).  The sum over nodes, mapped to whole-model seconds through the
measured models of the grid (isolated calls do not add up exactly to a
forward), is the plan's predicted latency (:meth:`LatencyTable.predict`).

What it cannot see: a kernel's speed depends on more than its work.  Widths
that are not multiples of the vector width (``round_to=8``) can run slower per
MAC than the grid's, and a plan whose layers shrink in other proportions than
the grid's (global ranking) moves along other shapes; ``docs/latency.md``
has measured errors.

Timing (:func:`time_nodes`, :func:`time_model`): each call node runs in
isolation on its actual input values (captured by running the model through an
:class:`torch.fx.Interpreter`), under ``torch.no_grad`` in eval mode (the
module's train/eval flags are restored afterwards); ``warmup`` calls, then
``repeat`` samples of as many calls as take ``min_time`` seconds
(``model_min_time`` for a whole forward, so that one noisy call weighs less), and the
median per call.  On CUDA each sample is synchronised (``torch.cuda.synchronize``)
before the clock is read.  Measurement runs on ``threads`` intra-op threads
(default 1; ``None``: torch's current setting); the count used is recorded.
An in-place op's written arguments are restored after it is timed.

The cache (:func:`cache_dir`: ``$FXPRUNE_CACHE`` or ``~/.cache/fxprune``)
holds one JSON file per key (:func:`table_key`): a fingerprint of the graph
(code, node shapes and dtypes, parameter shapes) and of its groups, the device,
the torch version, the thread count, the ratio grid and the timing settings.
Files are written atomically.

Example:
    >>> import torch, fxprune
    >>> from fxprune.analysis.latency import LatencyConfig, plan_work
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    >>> a = fxprune.analyze(model, (torch.randn(4, 8),))
    >>> plan_work(a, {})["_0"], plan_work(a, {0: list(range(16))})["_0"]      # MACs of the first linear
    (1024.0, 512.0)
    >>> LatencyConfig(ratios=(0.5,))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fxprune.errors.ConfigError: LatencyConfig.ratios must start with 0.0 (the original model) ...
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx

from .. import ir
from ..errors import ConfigError
from ..ops.effects import mutated_args
from .cost import node_macs, plan_specs
from .groups import plan_mask

__all__ = ["LatencyConfig", "LatencyRow", "LatencyTable", "NodeLatency", "cache_dir", "table_key",
           "plan_work", "time_model", "time_nodes"]

_CALLS = ("call_module", "call_function", "call_method")
#: bumped when the table's meaning or layout changes (old cache files are then ignored)
_FORMAT = 1


@dataclass(frozen=True)
class LatencyConfig:
    """How a latency table is measured (validated on construction).

    Attributes:
        ratios: the selection ratios whose pruned models are timed; starts with
            ``0.0`` (the original) and increases within [0, 1).
        warmup: calls before timing a node or the model.
        repeat: timed samples; the median is kept.
        min_time: seconds one sample of a node lasts at least (calls per sample
            are chosen to reach it).
        model_min_time: the same for a whole forward (:func:`time_model`).
        threads: intra-op threads while measuring (``None``: torch's current setting).
        cache: read and write the cache.
        cache_dir: the cache directory (``None``: :func:`cache_dir`).
    """

    ratios: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    warmup: int = 3
    repeat: int = 7
    min_time: float = 2e-4
    model_min_time: float = 0.02
    threads: int | None = 1
    cache: bool = True
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        r = tuple(float(x) for x in self.ratios) if isinstance(self.ratios, (tuple, list)) else ()
        if not r or r[0] != 0.0 or any(b <= a for a, b in zip(r, r[1:])) or r[-1] >= 1.0:
            raise ConfigError(f"LatencyConfig.ratios must start with 0.0 (the original model) and increase "
                              f"within [0, 1), got {self.ratios!r}")
        object.__setattr__(self, "ratios", r)
        for name, low in (("warmup", 0), ("repeat", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"LatencyConfig.{name} must be an integer >= {low}, got {v!r}")
        for name in ("min_time", "model_min_time"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ConfigError(f"LatencyConfig.{name} must be a number >= 0, got {v!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ConfigError(f"LatencyConfig.threads must be None or an integer >= 1, got {self.threads!r}")

    @property
    def thread_count(self) -> int:
        """The threads measurement runs on."""
        return torch.get_num_threads() if self.threads is None else int(self.threads)


@dataclass(frozen=True)
class NodeLatency:
    """One call node: its work and measured seconds at each ratio of the grid."""

    name: str
    op: str
    work: tuple[float, ...]
    seconds: tuple[float, ...]

    def predict(self, work: float) -> float:
        """Seconds at ``work``: monotone piecewise-linear interpolation over the measured points.

        Above the largest work measured (the original) the time is held; below the
        smallest, the lowest segment is extended, but never below proportional
        scaling of the smallest measured time.
        """
        xs, ys = _monotone(self.work, self.seconds)
        if work >= xs[0] or xs[0] <= 0:
            return float(np.interp(work, xs, ys))
        proportional = ys[0] * work / xs[0]
        if len(xs) == 1:
            return float(proportional)
        slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
        return float(max(ys[0] + slope * (work - xs[0]), proportional))


@dataclass(frozen=True)
class LatencyRow:
    """A node's measured time in the original model and its predicted time under a plan (seconds)."""

    name: str
    op: str
    before: float
    after: float


@dataclass(frozen=True)
class LatencyTable:
    """Per-node latencies of one graph on one device (see the module docstring).

    Attributes:
        key: the cache key (fingerprint of graph, device, torch, threads, grid, timing).
        device: where it was measured (``cpu``, ``cuda:0``).
        torch_version, threads: the torch version and intra-op thread count.
        ratios: the measured selection ratios.
        nodes: every call node's work and seconds per ratio.
        model_seconds: the whole model's measured seconds per ratio.
        config: the measurement settings.
    """

    key: str
    device: str
    torch_version: str
    threads: int
    ratios: tuple[float, ...]
    nodes: tuple[NodeLatency, ...]
    model_seconds: tuple[float, ...]
    config: LatencyConfig = field(default_factory=LatencyConfig)

    @property
    def original_seconds(self) -> float:
        """The measured latency of the original model."""
        return self.model_seconds[0]

    def node_sum(self, work: Mapping[str, float]) -> float:
        """The sum of every node's predicted seconds at ``work`` (``{node name: work}``)."""
        return sum(n.predict(work[n.name]) if n.name in work else n.seconds[0] for n in self.nodes)

    def predict_work(self, work: Mapping[str, float]) -> float:
        """Predicted whole-model seconds for the node works ``work``.

        The sum of the nodes' times is mapped to whole-model seconds through the
        measured models of the grid (monotone piecewise-linear over their node
        sums; proportionally below the smallest one).
        """
        sums = [sum(n.seconds[i] for n in self.nodes) for i in range(len(self.ratios))]
        xs, ys = _monotone(sums, self.model_seconds)
        s = self.node_sum(work)
        if s < xs[0]:
            return float(ys[0] * s / xs[0]) if xs[0] > 0 else float(ys[0])
        return float(np.interp(s, xs, ys))

    def predict(self, analysis: Any, plan: Mapping[int, Sequence[int]]) -> float:
        """Predicted seconds of ``analysis``'s model pruned by ``plan``."""
        return self.predict_work(plan_work(analysis, plan))

    def rows(self, analysis: Any = None, plan: Mapping[int, Sequence[int]] | None = None) -> tuple[LatencyRow, ...]:
        """Per node: measured seconds in the original and predicted seconds under ``plan``, slowest first.

        Without a plan (or analysis), ``after`` is the original time.  Times are
        the node's own (not scaled to the whole-model latency).
        """
        work = plan_work(analysis, plan) if analysis is not None and plan is not None else {}
        rows = [LatencyRow(n.name, n.op, n.seconds[0], n.predict(work[n.name]) if n.name in work else n.seconds[0])
                for n in self.nodes]
        return tuple(sorted(rows, key=lambda r: -r.before))

    # -- storage ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The table as plain JSON-ready data."""
        return {"format": _FORMAT, "key": self.key, "device": self.device, "torch_version": self.torch_version,
                "threads": self.threads, "ratios": list(self.ratios), "model_seconds": list(self.model_seconds),
                "config": asdict(self.config),
                "nodes": [{"name": n.name, "op": n.op, "work": list(n.work), "seconds": list(n.seconds)}
                          for n in self.nodes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LatencyTable":
        """The table of :meth:`to_dict` (``ConfigError`` for another format)."""
        if data.get("format") != _FORMAT:
            raise ConfigError(f"latency table format {data.get('format')!r}, expected {_FORMAT}")
        cfg = dict(data["config"])
        cfg["ratios"] = tuple(cfg["ratios"])
        return cls(key=str(data["key"]), device=str(data["device"]), torch_version=str(data["torch_version"]),
                   threads=int(data["threads"]), ratios=tuple(float(r) for r in data["ratios"]),
                   nodes=tuple(NodeLatency(str(n["name"]), str(n["op"]), tuple(map(float, n["work"])),
                                           tuple(map(float, n["seconds"]))) for n in data["nodes"]),
                   model_seconds=tuple(float(s) for s in data["model_seconds"]), config=LatencyConfig(**cfg))

    def save(self, path: str | os.PathLike) -> str:
        """Write the table as JSON, atomically (a temporary file moved into place); returns the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent))
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # as an ordinary file (mkstemp makes it private)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return str(target)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyTable":
        """A table written by :meth:`save`."""
        with open(path) as f:
            return cls.from_dict(json.load(f))


def _monotone(xs: Sequence[float], ys: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Points sorted by ``x`` (equal ``x`` averaged), ``y`` made non-decreasing (pool adjacent violators)."""
    by_x: dict[float, list[float]] = {}
    for x, y in zip(xs, ys):
        by_x.setdefault(float(x), []).append(float(y))
    x = sorted(by_x)
    blocks = [[sum(by_x[v]) / len(by_x[v]), 1] for v in x]  # [mean, weight] per x
    merged: list[list[float]] = []
    for b in blocks:
        merged.append(b)
        while len(merged) > 1 and merged[-2][0] > merged[-1][0]:
            (m1, w1), (m2, w2) = merged[-2], merged.pop()
            merged[-1] = [(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2]
    y = [m for m, w in merged for _ in range(int(w))]
    return np.asarray(x), np.asarray(y)


# -- work -------------------------------------------------------------------------
def _numel(spec: Any) -> int:
    if isinstance(spec, ir.TensorSpec):
        return math.prod(spec.shape)
    if isinstance(spec, (tuple, list)):
        return sum(_numel(s) for s in spec)
    return 0


def plan_work(analysis: Any, plan: Mapping[int, Sequence[int]]) -> dict[str, float]:
    """``{call node name: work}`` of ``analysis``'s graph pruned by ``plan``, predicted from shapes.

    A node's work is its MACs (:func:`~fxprune.analysis.cost.node_macs`); for an
    op without MACs, the elements of its tensor inputs and output.
    """
    gm = analysis.graph_module
    mask = plan_mask(analysis.groups, analysis.state.atoms.roots(), plan)
    spec_of, param_spec = plan_specs(mask, analysis.state.param_labels)
    work = {}
    for node in gm.graph.nodes:
        if node.op not in _CALLS:
            continue
        macs = node_macs(gm, node, analysis.registry, spec_of, param_spec)
        work[node.name] = float(macs) if macs else float(
            _numel(spec_of(node)) + sum(_numel(spec_of(a)) for a in node.all_input_nodes))
    return work


def node_op(gm: fx.GraphModule, node: fx.Node) -> str:
    """A short description of what a node calls (module class, function or method name)."""
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target))).__name__
    if node.op == "call_method":
        return f".{node.target}"
    return getattr(node.target, "__name__", str(node.target))


# -- fingerprint and cache --------------------------------------------------------------
def cache_dir() -> Path:
    """The cache directory: ``$FXPRUNE_CACHE``, else ``~/.cache/fxprune``."""
    return Path(os.environ.get("FXPRUNE_CACHE") or Path.home() / ".cache" / "fxprune")


def _spec_text(spec: Any) -> Any:
    if isinstance(spec, ir.TensorSpec):
        return [list(spec.shape), str(spec.dtype)]
    if isinstance(spec, (tuple, list)):
        return [_spec_text(s) for s in spec]
    return repr(spec) if isinstance(spec, (int, float, bool, str, type(None))) else type(spec).__name__


def _target_text(target: Any) -> str:
    """A node target as text that is the same in every process (no object addresses)."""
    if isinstance(target, str):
        return target
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if name is not None:
        return f"{getattr(target, '__module__', None) or ''}.{name}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(target))


def table_key(analysis: Any, device: torch.device | str, config: LatencyConfig) -> str:
    """The cache key of a latency table of ``analysis``'s model measured on ``device``.

    A fingerprint of the graph (code, every node's shapes and dtypes, parameter
    shapes), of the groups (which parameter dimensions they hold: the split
    policy decides which shapes the grid's models have), the device, the torch
    version, the thread count, the ratio grid and the timing settings.
    """
    gm = analysis.graph_module
    payload = {
        "format": _FORMAT,
        "code": gm.code,
        "nodes": [[n.name, n.op, _target_text(n.target), _spec_text(n.meta.get(ir.SPEC))] for n in gm.graph.nodes],
        "params": [[k, list(v.shape), str(v.dtype)] for k, v in gm.state_dict(keep_vars=True).items()],
        "groups": [[g.size, sorted(g.fixed), [[m.param, m.dim] for m in g.members]] for g in analysis.groups],
        "device": str(device), "torch": torch.__version__, "threads": config.thread_count,
        "ratios": list(config.ratios), "timing": [config.warmup, config.repeat, config.min_time,
                                                  config.model_min_time],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def cached_table(key: str, config: LatencyConfig) -> LatencyTable | None:
    """The cached table of ``key``, if the cache holds a readable one."""
    if not config.cache:
        return None
    path = _cache_path(key, config)
    try:
        table = LatencyTable.load(path)
    except (OSError, ValueError, KeyError, TypeError, ConfigError):
        return None
    return table if table.key == key else None


def store_table(table: LatencyTable) -> str | None:
    """Write ``table`` into its cache (if caching is on); returns the path."""
    return table.save(_cache_path(table.key, table.config)) if table.config.cache else None


def _cache_path(key: str, config: LatencyConfig) -> Path:
    return (Path(config.cache_dir) if config.cache_dir else cache_dir()) / "latency" / f"{key}.json"


# -- timing -------------------------------------------------------------------------
@contextlib.contextmanager
def measuring(module: torch.nn.Module, config: LatencyConfig) -> Iterator[None]:
    """Eval mode, no autograd and ``config``'s thread count; flags and threads restored afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    threads = torch.get_num_threads()
    try:
        module.eval()
        torch.set_num_threads(config.thread_count)
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(threads)
        for m, flag in flags:
            m.training = flag


def _synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _timeit(fn: Callable[[], Any], config: LatencyConfig, sync: Callable[[], None], min_time: float) -> float:
    """Median seconds per call of ``fn`` (see the module docstring)."""
    def sample(number: int) -> float:
        sync()
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        sync()
        return time.perf_counter() - t0

    for _ in range(config.warmup):
        fn()
    number, first = 1, sample(1)
    while first < min_time and number < 1 << 20:
        number = min(1 << 20, max(2 * number, math.ceil(number * min_time / max(first, 1e-9))))
        first = sample(number)
    samples = [first] + [sample(number) for _ in range(config.repeat - 1)]
    return statistics.median(samples) / number


def device_of(gm: torch.nn.Module, inputs: Sequence[Any]) -> torch.device:
    """The device a model runs on: its first parameter's or buffer's, else its first tensor input's."""
    for t in list(gm.parameters()) + list(gm.buffers()) + [x for x in inputs if isinstance(x, torch.Tensor)]:
        if t.device.type == "meta":
            raise ConfigError("latency is measured by running the model: it cannot live on the meta device")
        return t.device
    return torch.device("cpu")


def time_model(gm: torch.nn.Module, inputs: Sequence[Any], config: LatencyConfig = LatencyConfig()) -> float:
    """Median seconds of one forward of ``gm`` on ``inputs`` (eval mode, no autograd)."""
    device = device_of(gm, inputs)
    with measuring(gm, config):
        return _timeit(lambda: gm(*inputs), config, _synchronizer(device), config.model_min_time)


class _NodeTimer(fx.Interpreter):
    """Runs a graph, timing every call node on its actual inputs before computing it."""

    def __init__(self, gm: fx.GraphModule, config: LatencyConfig, sync: Callable[[], None],
                 tick: Callable[[], None] | None) -> None:
        super().__init__(gm)
        self.config, self.sync, self.tick = config, sync, tick
        self.seconds: dict[str, float] = {}

    def run_node(self, n: fx.Node) -> Any:
        if n.op not in _CALLS:
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        if n.op == "call_module":
            fn: Callable[..., Any] = self.fetch_attr(str(n.target))
        elif n.op == "call_method":
            fn = getattr(args[0], str(n.target))
            args = args[1:]
        else:
            fn = n.target  # type: ignore[assignment]
        written = [self.env[a] for a in mutated_args(n, self.module) if isinstance(self.env.get(a), torch.Tensor)]
        saved = [t.clone() for t in written]
        self.seconds[n.name] = _timeit(lambda: fn(*args, **kwargs), self.config, self.sync, self.config.min_time)
        for t, s in zip(written, saved):
            t.copy_(s)
        if self.tick is not None:
            self.tick()
        return fn(*args, **kwargs)


def time_nodes(gm: fx.GraphModule, inputs: Sequence[Any], config: LatencyConfig = LatencyConfig(), *,
               tick: Callable[[], None] | None = None) -> dict[str, float]:
    """``{call node name: median seconds}``, each node timed in isolation on its actual inputs.

    ``tick()`` is called after each node (a progress display).
    """
    device = device_of(gm, inputs)
    timer = _NodeTimer(gm, config, _synchronizer(device), tick)
    with measuring(gm, config):
        timer.run(*inputs)
    return timer.seconds
