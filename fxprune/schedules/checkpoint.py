"""Atomic, resumable on-disk checkpoints of schedule runs, loaded without executing code.

Layout of a checkpoint directory::

    state.json          the commit point: schedule name, its settings, the
                        original model's fingerprint, the analysis options,
                        the example inputs' structure, the finished rounds,
                        the schedule's state, the result round, the stop
                        reason and the sha256 of every other file
    inputs.pt           the example inputs (tensors)
    round_0000.json     round 0's metrics, the round it was pruned from
                        (``source``), what the rewrite did (its
                        :class:`~fxprune.rewrite.record.RewriteRecord`: the
                        plan, implants), the coupled groups it was planned on
                        and the round model's structure
    round_0000.pt       the round model's tensors
    round_0001.json ...

No module is pickled: a round's model is rebuilt by analysing its source
round's model (the original model for round 0), emitting the saved rewrite
again and copying the round's tensors into it (checked against the saved
structure).  Tensor files are read with ``torch.load(weights_only=True)``,
JSON is plain data, and every file's sha256 is checked against
``state.json``, so a swapped, altered or missing file raises
:class:`~fxprune.errors.LoadError` naming it.  A model whose fingerprint
(architecture, code, shapes, weights) differs from the saved one raises
:class:`~fxprune.errors.ConfigError`.

Every file is written to a temporary file in the same directory, flushed,
fsynced and moved into place with :func:`os.replace`, and ``state.json`` is
written last: a round counts as finished only once ``state.json`` lists it,
so an interrupt (or a crash) at any point leaves every earlier round intact
and a half-written round is simply redone on resume.

Example:
    >>> import tempfile, torch, torch.nn as nn
    >>> from fxprune.schedules import one_shot, History
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = one_shot(model, (torch.randn(1, 4),), ratio=0.5, progress=False, checkpoint_dir=d)
    ...     History.load(d, model).best.graph_module.get_submodule("0").out_features
    4
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.fx as fx

from ..analysis.analysis import Analysis, AnalysisConfig, analyze
from ..errors import ConfigError, LoadError, PlanError
from ..ops.registry import Registry
from ..progress import Progress
from ..rewrite.record import RewriteRecord
from ..serialize.files import read_json, read_tensors, write_json, write_tensors
from ..serialize.fingerprint import Fingerprint, check_groups, check_model, group_signatures, module_tensors, restore
from ..serialize.options import (inputs_from_json, inputs_to_json, model_device, options_from_json,
                                 options_to_json)

__all__ = ["CheckpointStore", "FORMAT_VERSION", "SavedRound", "RoundSource"]

FORMAT_VERSION = 2
#: one saved round: ``(number, graph_module, metrics)``
SavedRound = tuple[int, fx.GraphModule, dict[str, Any]]
_STATE = "state.json"
_INPUTS = "inputs.pt"
#: keys of a round's JSON file besides the engine's per-round extras
_ROUND_KEYS = ("round", "metrics", "source", "rewrite", "groups", "model")


@dataclass(frozen=True)
class RoundSource:
    """How a round's model was made, as saved with it.

    Attributes:
        source: the round whose model was pruned (``None``: the original model, for round 0).
        record: what the rewrite did (plan, implants).
        groups: the :func:`~fxprune.serialize.fingerprint.group_signatures` of the source's analysis.
    """

    source: int | None
    record: RewriteRecord
    groups: list

    @classmethod
    def of(cls, source: int | None, record: RewriteRecord, analysis: Analysis) -> "RoundSource":
        return cls(source, record, group_signatures(analysis))


class CheckpointStore:
    """Reads and writes the rounds of one schedule run in ``directory``."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self._files: dict[str, str] = {}
        self._static: dict[str, Any] = {}

    def _path(self, name: str) -> Path:
        return self.directory / name

    @staticmethod
    def _round_name(number: int, suffix: str) -> str:
        return f"round_{number:04d}{suffix}"

    # -- reading ---------------------------------------------------------------
    def header(self) -> dict[str, Any] | None:
        """The parsed ``state.json``, or ``None`` if the directory holds no checkpoint.

        Raises:
            LoadError: ``state.json`` is corrupt, or written by a format this fxprune does not read.
        """
        path = self._path(_STATE)
        if not path.exists():
            return None
        header = read_json(path)
        version = header.get("format")
        if version == 1:
            raise LoadError(f"{path}: written by an older fxprune whose checkpoints hold pickled models; "
                            "loading them would execute code, so they are not read: use a new directory")
        if version != FORMAT_VERSION:
            raise LoadError(f"{path}: unsupported checkpoint format {version!r} (this fxprune reads {FORMAT_VERSION})")
        for key, kind in (("schedule", str), ("rounds", list), ("files", dict), ("model", dict),
                          ("analysis", dict), ("inputs", list), ("state", dict)):
            if not isinstance(header.get(key), kind):
                raise LoadError(f"{path}: malformed field {key!r}")
        if not all(isinstance(r, int) and not isinstance(r, bool) for r in header["rounds"]):
            raise LoadError(f"{path}: malformed field 'rounds'")
        return header

    def _sha(self, header: Mapping[str, Any], name: str) -> str:
        sha = header["files"].get(name)
        if not isinstance(sha, str):
            raise LoadError(f"{self._path(_STATE)}: lists no checksum for {name}")
        return sha

    def inputs(self, header: Mapping[str, Any], model: torch.nn.Module | None = None) -> tuple:
        """The example inputs saved with the run (on ``model``'s device if given)."""
        tensors = read_tensors(self._path(_INPUTS), sha256=self._sha(header, _INPUTS))
        return inputs_from_json(header["inputs"], tensors, str(self._path(_STATE)),
                                None if model is None else model_device(model))

    def load(self, model: torch.nn.Module, *, example_inputs: tuple | None = None, registry: Registry | None = None,
             check_weights: bool = True,
             progress: bool = False) -> tuple[dict[str, Any], list[SavedRound], dict[int, dict[str, Any]]] | None:
        """``(header, rounds, extras)`` of the finished rounds rebuilt on ``model``, or ``None`` if nothing is saved.

        ``model`` is the run's original model (checked against the saved
        fingerprint, weights included unless ``check_weights=False``);
        ``example_inputs`` default to the saved ones (given ones must have
        their shapes and dtypes).  ``rounds`` holds ``(number, graph_module,
        metrics)`` per round; ``extras[r]`` the engine's per-round data (the
        index map of rewinding).  ``progress`` shows the rounds being rebuilt.

        Raises:
            LoadError: a missing, corrupt, altered or swapped file (named).
            ConfigError: ``model`` or ``example_inputs`` differ from the saved ones.
        """
        header = self.header()
        if header is None:
            return None
        where = str(self._path(_STATE))
        config = options_from_json(header["analysis"], model, where)
        saved_inputs = self.inputs(header, model)
        if example_inputs is None:
            example_inputs = saved_inputs
        else:
            _check_inputs(saved_inputs, example_inputs, f"checkpoint directory {self.directory}")
        base = analyze(model, example_inputs, config, registry=registry)
        check_model(Fingerprint.from_json(header["model"], where), base.graph_module,
                    f"checkpoint directory {self.directory}", check_weights)
        self._remember(header, model_fp=header["model"], options=header["analysis"], inputs=header["inputs"])
        analyses: dict[int | None, Analysis] = {None: base}
        models: dict[int, fx.GraphModule] = {}
        rounds: list[SavedRound] = []
        extras: dict[int, dict[str, Any]] = {}
        with Progress("loading checkpoint", len(header["rounds"]), enabled=progress, unit="round") as bar:
            for number in header["rounds"]:
                data, gm = self._load_round(header, number, models, analyses, example_inputs, config, registry)
                models[number] = gm
                rounds.append((number, gm, data["metrics"]))
                extras[number] = {k: v for k, v in data.items() if k not in _ROUND_KEYS}
                bar.update(1)
        if not rounds:
            raise LoadError(f"{where}: lists no finished round")
        return header, rounds, extras

    def _load_round(self, header: Mapping[str, Any], number: int, models: Mapping[int, fx.GraphModule],
                    analyses: dict[int | None, Analysis], inputs: tuple, config: AnalysisConfig,
                    registry: Registry | None) -> tuple[dict[str, Any], fx.GraphModule]:
        json_name, pt_name = self._round_name(number, ".json"), self._round_name(number, ".pt")
        where = str(self._path(json_name))
        data = read_json(self._path(json_name), sha256=self._sha(header, json_name))
        source = data.get("source")
        if data.get("round") != number or not isinstance(data.get("metrics"), dict) or not (
                source is None and number == 0 or source in models):
            raise LoadError(f"{where}: malformed round (round {data.get('round')!r}, source {source!r})")
        try:
            record = RewriteRecord.from_json(data.get("rewrite"))
        except PlanError as exc:
            raise LoadError(f"{where}: {exc}") from None
        if source not in analyses:
            analyses[source] = analyze(models[source], inputs, config, registry=registry)
        check_groups(data.get("groups"), analyses[source], where)
        gm = record.emit(analyses[source])
        tensors = read_tensors(self._path(pt_name), sha256=self._sha(header, pt_name))
        restore(gm, tensors, Fingerprint.from_json(data.get("model"), where), where)
        return data, gm

    # -- writing ---------------------------------------------------------------
    def _remember(self, header: Mapping[str, Any] | None = None, **static: Any) -> None:
        if header is not None:
            self._files = dict(header["files"])
        self._static.update(static)

    def start(self, model: Analysis) -> None:
        """Record the original model (its analysis) and save the example inputs; before round 0."""
        self.directory.mkdir(parents=True, exist_ok=True)
        inputs, tensors = inputs_to_json(model.example_inputs)
        self._files = {_INPUTS: write_tensors(self._path(_INPUTS), tensors)}
        self._static = {"model_fp": Fingerprint.of(model.graph_module).to_json(),
                        "options": options_to_json(model.config), "inputs": inputs}

    def save_round(self, number: int, gm: torch.nn.Module, metrics: Mapping[str, Any], extra: dict[str, Any],
                   header: dict[str, Any], source: RoundSource) -> None:
        """Save one finished round, then commit it by rewriting ``state.json`` (``header``)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        pt_name, json_name = self._round_name(number, ".pt"), self._round_name(number, ".json")
        self._files[pt_name] = write_tensors(self._path(pt_name), module_tensors(gm))
        payload = {**extra, "round": number, "metrics": dict(metrics), "source": source.source,
                   "rewrite": source.record.to_json(), "groups": source.groups,
                   "model": Fingerprint.of(gm, values=False).to_json()}
        self._files[json_name] = write_json(self._path(json_name), payload)
        self.save_header(header)

    def save_header(self, header: dict[str, Any]) -> None:
        """Rewrite ``state.json`` atomically (with the files' checksums)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        names = {_INPUTS} | {self._round_name(r, s) for r in header.get("rounds", ()) for s in (".json", ".pt")}
        files = {k: v for k, v in self._files.items() if k in names}
        body = {"format": FORMAT_VERSION, **header, "model": self._static["model_fp"],
                "analysis": self._static["options"], "inputs": self._static["inputs"], "files": files}
        write_json(self._path(_STATE), body)


def _check_inputs(saved: tuple, given: tuple, where: str) -> None:
    """Refuse example inputs whose structure, shapes or dtypes differ from the saved ones."""
    a, ta = inputs_to_json(saved)
    b, tb = inputs_to_json(given)
    specs = [(k, tuple(v.shape), v.dtype) for k, v in ta.items()]
    if a != b or specs != [(k, tuple(v.shape), v.dtype) for k, v in tb.items()]:
        raise ConfigError(f"{where} was written for other example inputs "
                          f"({[s[1:] for s in specs]}); give inputs of the same shapes and dtypes")
