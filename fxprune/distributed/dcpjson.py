"""``torch.distributed.checkpoint`` storage whose metadata is JSON, so loading executes no code.

A distributed checkpoint (DCP) is a directory of data files (``*.distcp``,
tensors read back with ``torch.load(weights_only=True)``) and one metadata
file, which PyTorch's ``FileSystemWriter`` pickles.  :class:`JsonWriter` and
:class:`JsonReader` are those storage classes with the metadata written as
JSON instead (``.metadata.json``): tensor shapes, dtypes, the chunks each
rank wrote, and where each chunk lies in the data files.  Everything else,
including resharding to another world size on load, is DCP's.

Only flat ``{name: tensor}`` state dicts of dense tensors and ``DTensor`` s
are stored (fxprune's pruned models); anything else raises
:class:`~fxprune.errors.ConfigError`.

Example (one process, no process group):
    >>> import tempfile, torch, torch.distributed.checkpoint as dcp
    >>> d = tempfile.mkdtemp()
    >>> _ = dcp.save({"w": torch.arange(6.).reshape(2, 3)}, storage_writer=JsonWriter(d), no_dist=True)
    >>> out = {"w": torch.zeros(2, 3)}
    >>> dcp.load(out, storage_reader=JsonReader(d), no_dist=True)
    >>> out["w"][1].tolist()
    [3.0, 4.0, 5.0]
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import (ChunkStorageMetadata, Metadata, MetadataIndex, StorageMeta,
                                                   TensorProperties, TensorStorageMetadata)

from ..errors import ConfigError, LoadError
from ..serialize.files import atomic_write, parse_json

__all__ = ["JsonReader", "JsonWriter", "METADATA"]

#: the metadata file's name inside the checkpoint directory
METADATA = ".metadata.json"

_DTYPES = {str(d): d for d in (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64,
                               torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64,
                               torch.complex128)}


def _to_json(md: Metadata) -> dict[str, Any]:
    tensors = {}
    for fqn, item in md.state_dict_metadata.items():
        if not isinstance(item, TensorStorageMetadata):
            raise ConfigError(f"'{fqn}' is not a tensor: fxprune's distributed checkpoints hold tensors only")
        p = item.properties
        if p.layout != torch.strided or str(p.dtype) not in _DTYPES:
            raise ConfigError(f"'{fqn}' has layout {p.layout} and dtype {p.dtype}, which the checkpoint's JSON "
                              "metadata does not describe (dense tensors of the usual dtypes only)")
        tensors[fqn] = {"dtype": str(p.dtype), "requires_grad": bool(p.requires_grad), "size": list(item.size),
                        "chunks": [[list(c.offsets), list(c.sizes)] for c in item.chunks]}
    storage = [[i.fqn, None if i.offset is None else list(i.offset), i.index,
                s.relative_path, int(s.offset), int(s.length), list(s.transform_descriptors or [])]
               for i, s in md.storage_data.items()]
    planner = {k: list(v) for k, v in (md.planner_data or {}).items()}
    return {"version": md.version, "tensors": tensors, "storage": storage, "planner": planner}


def _from_json(data: Any, where: str) -> Metadata:
    try:
        tensors = {}
        for fqn, t in data["tensors"].items():
            dtype = _DTYPES[t["dtype"]]
            chunks = [ChunkStorageMetadata(offsets=torch.Size(o), sizes=torch.Size(s)) for o, s in t["chunks"]]
            tensors[fqn] = TensorStorageMetadata(TensorProperties(dtype=dtype, requires_grad=bool(t["requires_grad"])),
                                                 torch.Size(t["size"]), chunks)
        storage = {MetadataIndex(fqn, None if off is None else torch.Size(off), idx):
                   _StorageInfo(str(path), int(start), int(length), list(tr) or None)
                   for fqn, off, idx, path, start, length, tr in data["storage"]}
        planner = {k: tuple(v) for k, v in data["planner"].items()}
        return Metadata(state_dict_metadata=tensors, planner_data=planner, storage_data=storage,
                        storage_meta=StorageMeta(), version=data["version"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LoadError(f"{where}: malformed checkpoint metadata ({type(exc).__name__}: {exc})") from None


class JsonWriter(FileSystemWriter):
    """``FileSystemWriter`` writing the metadata as JSON (:data:`METADATA`)."""

    def __init__(self, path: str | os.PathLike, **kwargs: Any) -> None:
        super().__init__(path, single_file_per_rank=True, sync_files=False, **kwargs)

    def finish(self, metadata: Metadata, results: list[list[Any]]) -> None:
        metadata.storage_data = {wr.index: wr.storage_data for wrs in results for wr in wrs}
        body = json.dumps(_to_json(metadata), separators=(",", ":")).encode()
        atomic_write(Path(self.path) / METADATA, lambda fh: fh.write(body))


class JsonReader(FileSystemReader):
    """``FileSystemReader`` reading the JSON metadata of :class:`JsonWriter`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = Path(self.path) / METADATA
        if not path.is_file():
            raise LoadError(f"{path}: the checkpoint's metadata is missing")
        return _from_json(parse_json(path.read_bytes(), str(path)), str(path))
