"""Machinery shared by the schedules: sessions, plans, rewinding, progress.

A :class:`Session` owns one schedule run: it measures the baseline (round 0),
re-analyses models, commits finished rounds to the :class:`~.history.History`
and to the checkpoint directory, resumes from it, and reports progress.  The
schedules themselves only decide what to prune and when to stop.

Example (the plan helper on its own):
    >>> import torch, torch.nn as nn, fxprune
    >>> from fxprune.schedules.common import threshold_plan
    >>> model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
    >>> a = fxprune.analyze(model, (torch.randn(1, 2),))
    >>> threshold_plan(a, {0: [3.0, 1.0, 2.0, 0.5]}, {0: 1.0})
    {0: [1, 3]}
"""
from __future__ import annotations

import inspect
import re
import sys
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx

from ..analysis.analysis import Analysis, analyze
from ..errors import ConfigError
from ..analysis.cost import count_macs, count_params, node_macs
from ..rewrite.channels import apply_plan, kept_indices
from ..scoring.select import GroupInfo, _take
from .checkpoint import CheckpointStore
from .history import History, RoundRecord, ScheduleInterrupted

__all__ = [
    "STOP_BUDGET",
    "Session",
    "Progress",
    "threshold_plan",
    "compose_index_map",
    "rewind_weights",
    "group_shares",
    "jsonable",
    "check_analysis_options",
    "call_finetune",
    "frozen_mapping",
]

#: stop reason when the round budget is spent (a resumed run with a larger budget goes on)
STOP_BUDGET = "budget"

_ANALYZE_OPTIONS = tuple(p for p in inspect.signature(analyze).parameters
                         if p not in ("model", "example_inputs"))


def frozen_mapping(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """A read-only copy of ``mapping`` (``None``: empty), for frozen configuration fields."""
    return MappingProxyType(dict(mapping or {}))


def check_analysis_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` as a dict, after checking every key is a keyword of :func:`fxprune.analyze`."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(_ANALYZE_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown analysis option(s) {unknown}; valid: {list(_ANALYZE_OPTIONS)}")
    return options


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


# ---------------------------------------------------------------------------
# plans
# ---------------------------------------------------------------------------
def threshold_plan(analysis: Analysis, scores: Mapping[int, Sequence[float]],
                   thresholds: Mapping[int, float], min_channels: int = 1) -> dict[int, list[int]]:
    """Remove, in every group, the prunable channels whose score is ``<=`` the group's threshold.

    Channels go lowest score first; a channel is skipped when removing it would
    empty a member of the group (a concat input keeps one channel), and every
    group keeps at least ``min_channels`` channels.  NaN scores are never
    removed.  Groups missing from ``thresholds`` are left alone.
    """
    plan: dict[int, list[int]] = {}
    for g in analysis.groups:
        if g.id not in thresholds:
            continue
        if g.id not in scores:
            raise ConfigError(f"the scorer returned no scores for group {g.id}")
        s = np.asarray(scores[g.id], dtype=np.float64)
        thr = float(thresholds[g.id])
        cands = sorted((c for c in g.prunable if s[c] <= thr), key=lambda c: (s[c], c))
        n = min(len(cands), g.size - min_channels)
        if n <= 0:
            continue
        chosen = _take(cands, n, GroupInfo(g.size, g.fixed, g.member_counts()))
        if chosen:
            plan[g.id] = sorted(int(c) for c in chosen)
    return plan


def _producer_params(analysis: Analysis, group: Any) -> int:
    gm = analysis.graph_module
    seen: set[str] = set()
    total = 0
    for m in group.producers() or group.members:
        if m.param in seen:
            continue
        seen.add(m.param)
        obj: Any = gm
        for part in m.param.split("."):
            obj = getattr(obj, part)
        total += int(obj.numel())
    return total


def group_shares(analysis: Analysis, by: str = "params") -> dict[int, float]:
    """Each group's share of the alive prunable layers (shares sum to 1).

    ``by="params"``: the parameter count of the group's producers over the sum
    of all groups'; ``by="macs"``: the MACs of the nodes that apply the
    producers (falls back to parameters if no group has MACs).
    """
    if by not in ("params", "macs"):
        raise ConfigError(f"share must be 'params' or 'macs', got {by!r}")
    weights: dict[int, float] = {}
    if by == "macs":
        gm = analysis.graph_module
        nodes = {n.name: n for n in gm.graph.nodes}
        cache: dict[str, int] = {}
        for g in analysis.groups:
            names: set[str] = set()
            for m in g.producers() or g.members:
                n = nodes.get(m.node)
                if n is None:
                    continue
                if n.op == "get_attr":
                    names.update(u.name for u in n.users if u.op != "output")
                else:
                    names.add(n.name)
            for name in names:
                if name not in cache:
                    cache[name] = node_macs(gm, nodes[name], analysis.registry)
            weights[g.id] = float(sum(cache[n] for n in names))
    if by == "params" or not sum(weights.values()):
        weights = {g.id: float(_producer_params(analysis, g)) for g in analysis.groups}
    total = sum(weights.values())
    if total <= 0:
        return {g.id: 1.0 / len(analysis.groups) for g in analysis.groups}
    return {gid: w / total for gid, w in weights.items()}


# ---------------------------------------------------------------------------
# weight rewinding
# ---------------------------------------------------------------------------
def compose_index_map(index_map: Mapping[str, list], analysis: Analysis,
                      plan: Mapping[int, Sequence[int]]) -> dict[str, list]:
    """Extend ``index_map`` by one more plan.

    ``index_map[param][d]`` lists, for every index of dimension ``d`` of the
    current (pruned) parameter, its index in the original model (``None``: the
    dimension was never pruned).
    """
    out = {k: list(v) for k, v in index_map.items()}
    for name, dims in kept_indices(analysis, plan).items():
        if all(k is None for k in dims):
            continue
        prev = out.get(name) or [None] * len(dims)
        new = []
        for d, k in enumerate(dims):
            if k is None:
                new.append(prev[d])
            elif prev[d] is None:
                new.append([int(i) for i in k])
            else:
                new.append([int(prev[d][int(i)]) for i in k])
        out[name] = new
    return out


def rewind_weights(gm: torch.nn.Module, rewind_state: Mapping[str, Any],
                   index_map: Mapping[str, list]) -> int:
    """Reset every parameter/buffer of ``gm`` named in ``rewind_state`` to its rewind value.

    ``rewind_state`` is a state_dict of the *original* model; each entry is
    sliced with ``index_map`` (see :func:`compose_index_map`) to the surviving
    indices.  Returns how many tensors were rewound.

    Raises:
        ConfigError: a sliced entry does not have the model's shape, or no entry
            names a tensor of the model.
    """
    own = dict(gm.named_parameters())
    own.update(dict(gm.named_buffers()))
    count = 0
    with torch.no_grad():
        for name, t in own.items():
            if name not in rewind_state:
                continue
            src = torch.as_tensor(rewind_state[name])
            try:
                for d, idx in enumerate(index_map.get(name) or ()):
                    if idx is not None:
                        src = src.index_select(d, torch.as_tensor(idx, dtype=torch.long, device=src.device))
            except (IndexError, RuntimeError):
                src = None
            if src is None or tuple(src.shape) != tuple(t.shape):
                raise ConfigError(f"rewind_state[{name!r}] has shape {tuple(rewind_state[name].shape)}, "
                                  f"which does not map onto the model's {tuple(t.shape)}; "
                                  "rewind_state must be a state_dict of the original, unpruned model")
            t.copy_(src.to(device=t.device, dtype=t.dtype))
            count += 1
    if count == 0:
        raise ConfigError("rewind_state names none of the model's parameters; it must be a "
                          f"state_dict of the original model (model has e.g. {sorted(own)[:3]})")
    return count


def call_finetune(finetune: Callable[[fx.GraphModule], Any] | None, gm: fx.GraphModule) -> fx.GraphModule:
    """Run the user's ``finetune(gm)``; a ``None`` return means it trained ``gm`` in place."""
    if finetune is None:
        return gm
    out = finetune(gm)
    if out is None:
        return gm
    if not isinstance(out, torch.nn.Module):
        raise ConfigError(f"finetune must return the model (or None), got {type(out).__name__}")
    return out


# ---------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------
class Progress:
    """A tqdm bar over rounds if tqdm is importable, else one stderr line per round."""

    def __init__(self, desc: str, total: int, enabled: bool, initial: int = 0) -> None:
        self.desc, self.total, self.enabled = desc, total, enabled
        self._bar = None
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        self._bar = tqdm(total=total, initial=min(initial, total), desc=desc, unit="round",
                         file=sys.stderr, leave=True, dynamic_ncols=True)

    def update(self, record: RoundRecord) -> None:
        if not self.enabled:
            return
        m = record.metrics
        acc = "-" if m.get("accuracy") is None else f"{m['accuracy']:.2f}"
        info = {"acc": acc, "params": f"{m.get('params_ratio', 1.0):.1%}",
                "macs": f"{m.get('macs_ratio', 1.0):.1%}"}
        if "threshold" in m:
            info["T"] = f"{m['threshold']:.4g}"
        if not m.get("accepted", True):
            info["rejected"] = "yes"
        if self._bar is not None:
            if record.round > 0:
                self._bar.update(1)
            self._bar.set_postfix(info, refresh=True)
        else:
            text = " ".join(f"{k}={v}" for k, v in info.items())
            print(f"[fxprune {self.desc}] round {record.round}/{self.total} {text}", file=sys.stderr)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(f"[fxprune {self.desc}] {text}", file=sys.stderr)
        else:
            print(f"[fxprune {self.desc}] {text}", file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# ---------------------------------------------------------------------------
# sessions
# ---------------------------------------------------------------------------
@dataclass
class Session:
    """One schedule run: baseline, rounds, checkpoints, resume, progress.

    Attributes:
        schedule: the schedule's name.
        config: its JSON configuration (fingerprint checked on resume; the
            round budget is not part of it, so a resumed run may extend it).
        model, example_inputs, analysis_options: what to analyse.
        evaluate: ``evaluate(gm) -> accuracy`` (may be ``None``).
        checkpoint_dir: where to save rounds (``None``: nowhere).
        progress: show progress.
        budget: the number of pruning rounds allowed (for the progress bar).
    """

    schedule: str
    config: dict[str, Any]
    model: torch.nn.Module
    example_inputs: tuple
    analysis_options: dict[str, Any]
    evaluate: Callable[[fx.GraphModule], float] | None
    checkpoint_dir: str | Path | None
    progress: bool
    budget: int

    def __post_init__(self) -> None:
        self.history = History(self.schedule, checkpoint_dir=None if self.checkpoint_dir is None
                               else str(self.checkpoint_dir))
        self.store = None if self.checkpoint_dir is None else CheckpointStore(self.checkpoint_dir)
        self.extras: dict[int, dict[str, Any]] = {}
        self.state: dict[str, Any] = {}
        self._progress: Progress | None = None
        self.resumed = False

    # -- helpers for schedules ------------------------------------------------
    def analyze(self, model: torch.nn.Module) -> Analysis:
        return analyze(model, self.example_inputs, **self.analysis_options)

    def measure(self, gm: torch.nn.Module) -> float | None:
        if self.evaluate is None:
            return None
        return float(self.evaluate(gm))

    @property
    def baseline(self) -> dict[str, Any]:
        return dict(self.history.rounds[0].metrics)

    def model_of(self, number: int) -> fx.GraphModule:
        return self.history.round(number).graph_module

    # -- lifecycle -----------------------------------------------------------
    def start(self, initial_state: dict[str, Any]) -> dict[str, Any]:
        """Resume from the checkpoint directory, or measure the baseline; returns the state."""
        saved = self.store.load() if self.store is not None else None
        if saved is not None:
            header, records, extras = saved
            self._check_header(header)
            self.history.rounds = records
            self.history.best_round = header.get("best_round")
            self.history.stop_reason = header.get("stop_reason")
            self.extras = extras
            self.state = header["state"]
            self.resumed = True
            self._progress = Progress(self.schedule, self.budget, self.progress,
                                      initial=len(records) - 1)
            self._progress.message(f"resumed from {self.checkpoint_dir} after round "
                                   f"{records[-1].round}")
            return self.state
        self._progress = Progress(self.schedule, self.budget, self.progress)
        analysis = self.analyze(self.model)
        gm0 = apply_plan(analysis, {})  # an independent GraphModule copy of the model
        accuracy = self.measure(gm0)
        metrics = {"params": count_params(gm0), "macs": count_macs(analysis.graph_module, analysis.registry),
                   "accuracy": accuracy, "drop": 0.0 if accuracy is not None else None,
                   "channels_removed": 0, "ratio": 0.0, "accepted": True}
        self.commit(0, gm0, metrics, dict(initial_state), best_round=0, extra={"index_map": {}})
        return self.state

    def _check_header(self, header: dict[str, Any]) -> None:
        where = f"checkpoint directory {self.checkpoint_dir}"
        if header.get("schedule") != self.schedule:
            raise ConfigError(f"{where} holds a {header.get('schedule')!r} run, not {self.schedule!r}; "
                              "use another directory")
        old = header.get("config", {})
        new = jsonable(self.config)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            details = "; ".join(f"{k}: saved {old.get(k)!r}, now {new.get(k)!r}" for k in diff)
            raise ConfigError(f"{where} was written with other settings ({details}); "
                              "use the same settings to resume, or another directory")
        params = count_params(self.model)
        if header.get("model_params") not in (None, params):
            raise ConfigError(f"{where} was written for a model with {header['model_params']:,} "
                              f"parameters; this one has {params:,}")

    def commit(self, number: int, gm: torch.nn.Module, metrics: dict[str, Any], state: dict[str, Any],
               *, best_round: int | None, extra: dict[str, Any] | None = None) -> RoundRecord:
        """Record a finished round: complete its metrics, save it, then append it."""
        metrics = dict(metrics)
        metrics["round"] = number
        base = metrics if number == 0 else self.baseline
        params = int(metrics["params"])
        macs = int(metrics["macs"])
        metrics["params_ratio"] = params / base["params"] if base["params"] else 1.0
        metrics["macs_ratio"] = macs / base["macs"] if base["macs"] else 1.0
        metrics["compression"] = base["params"] / params if params else float("inf")
        if number > 0 and metrics.get("accuracy") is not None and base.get("accuracy") is not None:
            metrics["drop"] = float(base["accuracy"]) - float(metrics["accuracy"])
        metrics = jsonable(metrics)
        record = RoundRecord(number, gm, metrics)
        extra = dict(extra or {})
        if self.store is not None:
            header = self._header(state, best_round, stop_reason=None,
                                  rounds=[r.round for r in self.history.rounds] + [number])
            self.store.save_round(record, extra, header)
        self.history.rounds.append(record)
        self.history.best_round = best_round
        self.extras[number] = extra
        self.state = state
        if self._progress is not None:
            self._progress.update(record)
        return record

    def _header(self, state: dict[str, Any], best_round: int | None, stop_reason: str | None,
                rounds: list[int] | None = None) -> dict[str, Any]:
        return {"schedule": self.schedule, "config": jsonable(self.config),
                "model_params": count_params(self.model),
                "rounds": rounds if rounds is not None else [r.round for r in self.history.rounds],
                "state": jsonable(state), "best_round": best_round, "stop_reason": stop_reason}

    def stop(self, reason: str, best_round: int | None = None) -> None:
        """Mark the run finished (saved, so a later call returns at once)."""
        if best_round is not None:
            self.history.best_round = best_round
        self.history.stop_reason = reason
        if self.store is not None:
            self.store.save_header(self._header(self.state, self.history.best_round, reason))
        if self._progress is not None:
            self._progress.message(f"stopped ({reason}); result: round {self.history.best_round}")

    def reopen_if_budget_grew(self, rounds_done: int) -> None:
        """A run stopped by its round budget goes on when called with a larger one."""
        if self.history.stop_reason == STOP_BUDGET and rounds_done < self.budget:
            self.history.stop_reason = None

    def interrupted(self) -> ScheduleInterrupted:
        self.history.interrupted = True
        self.history.stop_reason = "interrupted"
        return ScheduleInterrupted(self.history)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.close()
