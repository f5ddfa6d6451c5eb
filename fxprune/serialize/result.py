"""``fxprune.save`` and ``fxprune.load``: a pruned result in one file that loads without executing code.

The file is a zip archive (written atomically: a temporary file, then
:func:`os.replace`) with two members:

``manifest.json``
    plain JSON: the format and versions, the analysis options
    (:func:`~fxprune.serialize.options.options_to_json`), the example inputs'
    structure, the fingerprint of the original model (its traced code,
    module tree, tensor shapes, dtypes and sha256 of every tensor's bytes), a
    signature of every coupled group, the plan, the report's notes, the
    fingerprint of the pruned model (structure, training modes, frozen
    parameters), the sha256 of ``tensors.pt`` and a checksum of the
    manifest itself;
``tensors.pt``
    ``torch.save`` of a ``dict[str, Tensor]``: the pruned model's tensors
    (``model/<name>``), the example inputs (``inputs/<i>``) and the scores
    (``scores/<group id>``), read back with ``torch.load(weights_only=True)``.

:func:`load` re-analyses a model of the same architecture with the saved
options, checks it against the saved fingerprint, re-applies the plan and
copies the saved tensors into the result, so the returned
:class:`~fxprune.api.PruneResult` equals the saved one bit for bit.

Example:
    >>> import os, tempfile, torch, torch.nn as nn, fxprune
    >>> def make():
    ...     torch.manual_seed(0)
    ...     return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> x = (torch.randn(2, 4),)
    >>> result = fxprune.prune(make(), x, ratio=0.5)
    >>> path = fxprune.save(result, os.path.join(tempfile.mkdtemp(), "pruned.fxp"))
    >>> loaded = fxprune.load(path, make())
    >>> loaded.plan == result.plan, torch.equal(loaded.graph_module(*x), result.graph_module(*x))
    (True, True)
    >>> fxprune.load(path, nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    Traceback (most recent call last):
    ...
    fxprune.errors.ConfigError: ...pruned.fxp was saved from another model: other weights: ['0.bias', '0.weight', '2.bias', '2.weight'] hold other values; pass check_weights=False to load into a model of the same architecture with other weights (the pruned weights come from the file)
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..analysis.analysis import analyze
from ..api import PruneResult
from ..errors import ConfigError, LoadError, PlanError
from ..ops.registry import Registry
from ..report import build_report
from ..rewrite.record import RewriteRecord
from ..version import __version__
from .files import atomic_write, canonical_json, dump_tensors, parse_json, parse_tensors, sha256_file
from .fingerprint import Fingerprint, check_groups, check_model, group_signatures, module_tensors, restore
from .options import inputs_from_json, inputs_to_json, model_device, options_from_json, options_to_json

__all__ = ["save", "load", "FORMAT", "VERSION"]

#: the ``format`` field of every manifest
FORMAT = "fxprune.save"
#: the manifest version this fxprune writes (and the newest it reads)
VERSION = 1
_MANIFEST, _TENSORS = "manifest.json", "tensors.pt"
_MAX_MANIFEST = 256 << 20


def save(result: PruneResult, path: str | os.PathLike) -> str:
    """Save a pruned result to ``path`` (one file; see the module docstring); returns the path.

    Reload it with :func:`load` and a model of the same architecture.  The
    file holds only JSON and tensors, so loading it executes no code.

    Raises:
        ConfigError: not a :class:`PruneResult`, a directory that does not
            exist, tensors on the ``meta`` device, or a ``graph_module`` whose
            structure its plan no longer emits (only its weights may change).
    """
    if not isinstance(result, PruneResult):
        raise ConfigError(f"fxprune.save takes the PruneResult of fxprune.prune, got {type(result).__name__}")
    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigError(f"cannot save to {str(path)!r}: the directory {str(path.parent)!r} does not exist")
    analysis, gm = result.analysis, result.graph_module
    record = RewriteRecord(result.plan)
    pruned = Fingerprint.of(gm, values=False)
    diffs = pruned.differences(Fingerprint.of(record.emit(analysis, verify=False), values=False), values=False)
    if diffs:
        raise ConfigError(f"result.graph_module no longer has the structure its plan emits ({'; '.join(diffs)}); "
                          "fxprune.save stores the plan and the weights, so only the weights may change "
                          "(torch.export.save saves any program)")
    tensors = {f"model/{k}": v for k, v in module_tensors(gm).items()}
    meta = [k for k, v in tensors.items() if v.device.type == "meta"]
    if meta:
        raise ConfigError(f"the pruned model has tensors on the meta device ({meta[:3]}): there are no weights to save")
    inputs, input_tensors = inputs_to_json(analysis.example_inputs)
    tensors.update(input_tensors)
    for gid, s in result.scores.items():
        tensors[f"scores/{gid}"] = torch.from_numpy(np.ascontiguousarray(np.asarray(s)))
    manifest: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "fxprune_version": __version__, "torch_version": torch.__version__,
        "analysis": options_to_json(analysis.config), "inputs": inputs,
        "model": Fingerprint.of(analysis.graph_module).to_json(), "groups": group_signatures(analysis),
        "plan": [[int(g), [int(c) for c in chans]] for g, chans in result.plan.items()],
        "scores": [int(g) for g in result.scores], "notes": list(result.report.notes),
        "pruned": pruned.to_json(),
    }

    def write(fh: Any) -> None:
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
            with zf.open(_TENSORS, "w", force_zip64=True) as member:
                manifest["tensors_sha256"] = dump_tensors(member, tensors)
            manifest["checksum"] = hashlib.sha256(canonical_json(manifest).encode()).hexdigest()
            zf.writestr(_MANIFEST, canonical_json(manifest))

    atomic_write(path, write)
    return str(path)


def _read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The manifest and tensors of a saved file, every check done, nothing executed."""
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise LoadError(f"{path}: not a file written by fxprune.save (not a zip archive: {exc})") from None
    try:
        with zf:
            names = set(zf.namelist())
            if _MANIFEST not in names:
                hint = (" (it looks like a torch.save file: fxprune.load reads files of fxprune.save)"
                        if any(n.endswith("data.pkl") for n in names) else "")
                raise LoadError(f"{path}: not a file written by fxprune.save (no {_MANIFEST}){hint}")
            if zf.getinfo(_MANIFEST).file_size > _MAX_MANIFEST:
                raise LoadError(f"{path}: {_MANIFEST} is implausibly large")
            where = f"{path} ({_MANIFEST})"
            manifest = parse_json(zf.read(_MANIFEST), where)
            if manifest.get("format") != FORMAT:
                raise LoadError(f"{where}: not an fxprune.save manifest (format {manifest.get('format')!r})")
            version = manifest.get("version")
            if not isinstance(version, int) or not 1 <= version <= VERSION:
                raise LoadError(f"{where}: format version {version!r}, this fxprune reads versions 1..{VERSION} "
                                f"(written by fxprune {manifest.get('fxprune_version')!r}; upgrade fxprune)")
            body = {k: v for k, v in manifest.items() if k != "checksum"}
            if manifest.get("checksum") != hashlib.sha256(canonical_json(body).encode()).hexdigest():
                raise LoadError(f"{where}: the manifest was altered after it was saved (checksum mismatch)")
            if _TENSORS not in names:
                raise LoadError(f"{path}: {_TENSORS} is missing")
            with zf.open(_TENSORS) as fh:
                if sha256_file(fh) != manifest.get("tensors_sha256"):
                    raise LoadError(f"{path} ({_TENSORS}): its checksum does not match the manifest "
                                    "(the tensors were altered or replaced)")
            with zf.open(_TENSORS) as fh:
                tensors = parse_tensors(fh, f"{path} ({_TENSORS})")
    except zipfile.BadZipFile as exc:
        raise LoadError(f"{path}: the zip archive is corrupt ({exc})") from None
    return manifest, tensors


def _get(manifest: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = manifest.get(key)
    if not isinstance(value, kind):
        raise LoadError(f"{where}: malformed field {key!r}")
    return value


def load(path: str | os.PathLike, model: torch.nn.Module, *, registry: Registry | None = None,
         check_weights: bool = True) -> PruneResult:
    """Load a result saved with :func:`save` onto ``model``, a model of the same architecture.

    ``model`` is analysed with the saved options (and ``registry``, which
    cannot be saved: give the one the result was pruned with), checked
    against the saved fingerprint, and the saved plan is applied to it; the
    pruned tensors, scores and report notes come from the file.  The
    returned result equals the saved one bit for bit; ``model`` is not
    modified.

    Args:
        check_weights: refuse a model whose weights differ from the saved
            original's (default).  ``False`` accepts any model of the same
            architecture (e.g. freshly initialised): the pruned weights come
            from the file either way; ``result.analysis`` (and so
            ``result.materialize()``, which slices the analysed model's
            weights) then describes ``model``.

    Raises:
        LoadError: a missing, corrupt, altered or foreign file (named in the message).
        ConfigError: ``model`` differs from the saved model (the message says
            how), or its analysis finds other groups (another registry).
    """
    path = Path(path)
    manifest, tensors = _read(path)
    where = f"{path} ({_MANIFEST})"
    config = options_from_json(manifest.get("analysis"), model, where)
    inputs = inputs_from_json(manifest.get("inputs"), tensors, where, model_device(model))
    saved_model = Fingerprint.from_json(manifest.get("model"), where)
    pruned = Fingerprint.from_json(manifest.get("pruned"), where)
    analysis = analyze(model, inputs, config, registry=registry)
    check_model(saved_model, analysis.graph_module, str(path), check_weights)
    check_groups(_get(manifest, "groups", list, where), analysis, str(path))
    raw_plan = _get(manifest, "plan", list, where)
    try:
        record = RewriteRecord({g: c for g, c in raw_plan})
    except (PlanError, TypeError, ValueError) as exc:
        raise LoadError(f"{where}: malformed plan ({exc})") from None
    gm = record.emit(analysis)
    restore(gm, {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}, pruned, str(path))
    plan = {int(g): [int(c) for c in chans] for g, chans in raw_plan}
    scores = {}
    for gid in _get(manifest, "scores", list, where):
        if f"scores/{gid}" not in tensors:
            raise LoadError(f"{path} ({_TENSORS}): the scores of group {gid!r} are missing")
        scores[gid] = tensors[f"scores/{gid}"].numpy()
    notes = _get(manifest, "notes", list, where)
    report = build_report(analysis, plan, gm, notes=tuple(str(n) for n in notes))
    return PruneResult(gm, report, analysis, plan, scores)
