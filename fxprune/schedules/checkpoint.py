"""Atomic, resumable on-disk checkpoints of schedule runs.

Layout of a checkpoint directory::

    state.json          the commit point: schedule name, its configuration,
                        the finished rounds, the schedule's state after the
                        last of them, the result round and the stop reason
    round_0000.pt       the GraphModule of round 0 (``torch.save(gm, path)``)
    round_0000.json     its metrics and its index map to the original model
    round_0001.pt ...

Every file is written to a temporary file in the same directory, flushed,
fsynced and moved into place with :func:`os.replace`, and ``state.json`` is
written last: a round counts as finished only once ``state.json`` lists it,
so an interrupt (or a crash) at any point leaves every earlier round intact
and a half-written round is simply redone on resume.

Models are reloaded with ``torch.load(path, weights_only=False)``, which
unpickles Python code: only load checkpoint directories you trust.

Example:
    >>> import tempfile, torch, torch.nn as nn
    >>> from fxprune.schedules import one_shot, History
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = one_shot(model, (torch.randn(1, 4),), ratio=0.5, progress=False, checkpoint_dir=d)
    ...     History.load(d).best.round
    1
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.fx as fx

__all__ = ["CheckpointStore", "FORMAT_VERSION", "SavedRound"]

FORMAT_VERSION = 1
#: one saved round: ``(number, graph_module, metrics)``
SavedRound = tuple[int, fx.GraphModule, dict[str, Any]]
_STATE = "state.json"


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write ``path`` through a temporary file in the same directory and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class CheckpointStore:
    """Reads and writes the rounds of one schedule run in ``directory``."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def _round_stem(self, number: int) -> Path:
        return self.directory / f"round_{number:04d}"

    def load(self) -> tuple[dict[str, Any], list[SavedRound], dict[int, dict[str, Any]]] | None:
        """``(header, rounds, extras)`` of the finished rounds, or ``None`` if nothing is saved.

        ``rounds`` holds ``(number, graph_module, metrics)`` per round; ``extras[r]``
        is the per-round data saved besides the metrics (the index map).
        """
        state_path = self.directory / _STATE
        if not state_path.exists():
            return None
        header = json.loads(state_path.read_text())
        if header.get("format") != FORMAT_VERSION:
            raise ValueError(f"{state_path}: unsupported checkpoint format {header.get('format')!r}")
        rounds: list[SavedRound] = []
        extras: dict[int, dict[str, Any]] = {}
        for number in header["rounds"]:
            stem = self._round_stem(number)
            gm = torch.load(stem.with_suffix(".pt"), weights_only=False)
            data = json.loads(stem.with_suffix(".json").read_text())
            rounds.append((number, gm, data["metrics"]))
            extras[number] = {k: v for k, v in data.items() if k not in ("round", "metrics")}
        return header, rounds, extras

    def save_round(self, number: int, gm: torch.nn.Module, metrics: Mapping[str, Any], extra: dict[str, Any],
                   header: dict[str, Any]) -> None:
        """Save one finished round, then commit it by rewriting ``state.json`` (``header``)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = self._round_stem(number)
        _atomic_write(stem.with_suffix(".pt"), lambda fh: torch.save(gm, fh))
        payload = {"round": number, "metrics": dict(metrics), **extra}
        _atomic_write(stem.with_suffix(".json"), lambda fh: fh.write(json.dumps(payload)), "w")
        self.save_header(header)

    def save_header(self, header: dict[str, Any]) -> None:
        """Rewrite ``state.json`` atomically."""
        self.directory.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"format": FORMAT_VERSION, **header}, indent=1)
        _atomic_write(self.directory / _STATE, lambda fh: fh.write(body), "w")
