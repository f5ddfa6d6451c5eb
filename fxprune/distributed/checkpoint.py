"""Saving a sharded pruned model from every rank, and loading it on any number of ranks.

:func:`save` (collective: every rank calls it) writes a directory:

``fxprune.json``
    plain JSON (rank 0): the analysis options, the example inputs'
    structure, the signature of every coupled group, the plan, the report's
    notes and the world size it was saved from;
``extra.pt``
    the example inputs and the scores (``torch.load(weights_only=True)``);
``*.distcp`` and ``.metadata.json``
    a ``torch.distributed.checkpoint`` of the pruned model's tensors, each
    rank writing its own shards; the metadata is JSON (:mod:`.dcpjson`), so
    loading executes no code.

:func:`load` analyses a model of the same architecture (usually its meta
twin) with the saved options, checks the groups, emits the pruned model from
the plan on the meta device and fills it from the checkpoint, with DCP
resharding to the loading world size: inside a process group the result is
sharded with FSDP2 (a :class:`~fxprune.distributed.ShardedPruneResult`),
without one it is a plain :class:`~fxprune.api.PruneResult` on the CPU.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..analysis.analysis import analyze
from ..api import PruneResult
from ..errors import ConfigError, LoadError, PlanError
from ..ops.registry import Registry
from ..report import build_report
from ..rewrite.record import RewriteRecord
from ..serialize.files import read_json, read_tensors, write_json, write_tensors
from ..serialize.fingerprint import check_groups, group_signatures
from ..serialize.options import inputs_from_json, inputs_to_json, options_from_json, options_to_json
from ..version import __version__
from .api import ShardedPruneResult
from .dcpjson import JsonReader, JsonWriter
from .rebuild import ShardFn, shard_graph_module
from .running import unit_paths
from .shards import named_tensors, world_and_rank

__all__ = ["FORMAT", "load", "save"]

#: the ``format`` field of ``fxprune.json``
FORMAT = "fxprune.distributed"
_MANIFEST, _EXTRA = "fxprune.json", "extra.pt"


def _dist() -> bool:
    d = torch.distributed
    return d.is_available() and d.is_initialized()


def _state(gm: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of ``gm`` (parameters, buffers, persistent or not), tied ones once."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in named_tensors(gm).items():
        if id(t) not in seen:
            seen.add(id(t))
            out[name] = t
    return out


def save(result: ShardedPruneResult | PruneResult, path: str | os.PathLike) -> str:
    """Write ``result`` to the directory ``path`` (module docstring); call it on every rank. Returns the path.

    Raises:
        ConfigError: not a prune result, or tensors this format does not hold.
    """
    if not isinstance(result, (ShardedPruneResult, PruneResult)):
        raise ConfigError(f"fxprune.distributed.save takes the result of prune_sharded, got {type(result).__name__}")
    path = Path(path)
    world, rank = world_and_rank()
    analysis = result.analysis
    inputs, input_tensors = inputs_to_json(analysis.example_inputs)
    if rank == 0:
        path.mkdir(parents=True, exist_ok=True)
        extra = dict(input_tensors)
        extra.update({f"scores/{g}": torch.from_numpy(np.ascontiguousarray(np.asarray(s)))
                      for g, s in result.scores.items()})
        manifest = {"format": FORMAT, "version": 1, "fxprune_version": __version__, "world": world,
                    "analysis": options_to_json(analysis.config), "inputs": inputs,
                    "groups": group_signatures(analysis),
                    "plan": [[int(g), [int(c) for c in chans]] for g, chans in result.plan.items()],
                    "scores": [int(g) for g in result.scores], "notes": list(result.report.notes)}
        manifest["extra_sha256"] = write_tensors(path / _EXTRA, extra)
        write_json(path / _MANIFEST, manifest)
    if _dist():
        torch.distributed.barrier()
    import torch.distributed.checkpoint as dcp

    dcp.save(_state(result.graph_module), storage_writer=JsonWriter(path), no_dist=not _dist())
    return str(path)


def load(path: str | os.PathLike, model: torch.nn.Module, *, registry: Registry | None = None,
         shard_fn: ShardFn | None = None) -> ShardedPruneResult | PruneResult:
    """Load a result written by :func:`save` onto ``model`` (the meta twin, or any model of the architecture).

    Inside a process group (every rank calls it) the pruned model is sharded
    with ``shard_fn`` (default :func:`~fxprune.distributed.shard_graph_module`)
    on a 1-D CPU/CUDA mesh of the whole group; without one it is a plain
    module on the CPU.  ``model`` is not modified.

    Raises:
        LoadError: a missing, altered or foreign directory.
        ConfigError: ``model``'s analysis finds other groups than the saved one.
    """
    import torch.distributed.checkpoint as dcp

    path = Path(path)
    where = str(path / _MANIFEST)
    manifest = read_json(path / _MANIFEST)
    if manifest.get("format") != FORMAT:
        raise LoadError(f"{where}: not an fxprune distributed checkpoint (format {manifest.get('format')!r})")
    extra = read_tensors(path / _EXTRA, sha256=manifest.get("extra_sha256"))
    config = options_from_json(manifest.get("analysis"), model, where)
    inputs = inputs_from_json(manifest.get("inputs"), extra, where)
    analysis = analyze(model, inputs, config, registry=registry)
    check_groups(manifest.get("groups"), analysis, str(path))
    try:
        plan = {int(g): [int(c) for c in chans] for g, chans in manifest["plan"]}
        gm = RewriteRecord(plan).emit(analysis, verify=False)
        scores = {int(g): extra[f"scores/{g}"].numpy() for g in manifest["scores"]}
        notes = tuple(str(n) for n in manifest["notes"])
    except (KeyError, PlanError, TypeError, ValueError) as exc:
        raise LoadError(f"{where}: malformed plan or scores ({type(exc).__name__}: {exc})") from None
    report = build_report(analysis, plan, gm, notes=notes)
    if not _dist():
        gm.to_empty(device="cpu")
        dcp.load(_state(gm), storage_reader=JsonReader(path), no_dist=True)
        return PruneResult(gm, report, analysis, plan, scores)
    from torch.distributed.device_mesh import init_device_mesh

    device = "cuda" if torch.cuda.is_available() and torch.distributed.get_backend() == "nccl" else "cpu"
    mesh = init_device_mesh(device, (world_and_rank()[0],))
    (shard_fn or shard_graph_module)(gm, mesh)
    gm.to_empty(device=device)
    dcp.load(_state(gm), storage_reader=JsonReader(path))
    units = tuple(sorted(unit_paths(gm), key=lambda p: (p == "", -p.count("."), p)))
    return ShardedPruneResult(gm, report, analysis, plan, scores, units)
