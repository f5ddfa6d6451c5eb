"""Code-free files: atomic writes, checksummed JSON and tensor files.

Everything fxprune writes goes through :func:`atomic_write` (a temporary file in
the same directory, flushed, fsynced and moved into place with
:func:`os.replace`), so an interrupt never leaves a half-written file under the
final name.  Tensors are written with ``torch.save`` of a ``dict[str, Tensor]``
and read back with ``torch.load(weights_only=True)``, whose restricted
unpickler refuses anything but tensors and plain containers; the result's type
is checked as well.  JSON is plain data.  Nothing read from a file is ever
executed.  Every failure to read raises :class:`~fxprune.errors.LoadError`
naming the file.

Example:
    >>> import os, tempfile, torch
    >>> from fxprune.serialize.files import write_tensors, read_tensors, sha256_file
    >>> path = os.path.join(tempfile.mkdtemp(), "t.pt")
    >>> digest = write_tensors(path, {"w": torch.arange(3.0)})
    >>> digest == sha256_file(path)
    True
    >>> read_tensors(path, sha256=digest)
    {'w': tensor([0., 1., 2.])}
    >>> read_tensors(path, sha256="0" * 64)
    Traceback (most recent call last):
    ...
    fxprune.errors.LoadError: ...t.pt: its checksum does not match the one recorded when it was saved (the file was altered or replaced)
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Mapping

import torch

from ..errors import LoadError

__all__ = ["atomic_write", "sha256_file", "write_tensors", "read_tensors", "write_json", "read_json",
           "dump_tensors", "parse_tensors", "parse_json", "HashingWriter", "canonical_json"]

_CHUNK = 1 << 20


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], None], mode: str = "wb") -> None:
    """Write ``path`` through ``write(fh)`` on a temporary file in the same directory, then ``os.replace``.

    An exception (``KeyboardInterrupt`` included) removes the temporary file and
    leaves any previous ``path`` untouched.
    """
    path = Path(path)
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


class HashingWriter:
    """A write-only file wrapper that computes the sha256 of what goes through it."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh, self.hash = fh, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()

    def hexdigest(self) -> str:
        return self.hash.hexdigest()


def sha256_file(path: str | os.PathLike | IO[bytes]) -> str:
    """The sha256 of a file (a path, or a binary file object read to its end)."""
    h = hashlib.sha256()
    if isinstance(path, (str, os.PathLike)):
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
    else:
        for chunk in iter(lambda: path.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(data: Any) -> str:
    """``data`` as JSON with sorted keys and no insignificant whitespace (what checksums are taken of)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _check_tensors(name: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in tensors.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise TypeError(f"{name}: only str -> Tensor entries can be saved, got {key!r}: {type(value).__name__}")
        out[key] = value.detach()
    return out


def dump_tensors(fh: IO[bytes], tensors: Mapping[str, torch.Tensor]) -> str:
    """``torch.save`` a ``dict[str, Tensor]`` into ``fh``; returns the sha256 of the bytes written."""
    writer = HashingWriter(fh)
    torch.save(_check_tensors("tensors", tensors), writer)
    return writer.hexdigest()


def parse_tensors(fh: IO[bytes], where: str) -> dict[str, torch.Tensor]:
    """Read a tensor file written by :func:`dump_tensors` without executing code (CPU tensors).

    Raises:
        LoadError: the file is not a tensor file, holds anything but
            ``str -> Tensor`` entries, or would need code to load.
    """
    try:
        obj = torch.load(fh, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - every unpickling failure is a bad file
        raise LoadError(f"{where}: not a tensor file that loads without executing code "
                        f"(torch.load(weights_only=True) refused it: {type(exc).__name__}: {str(exc)[:300]})") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and type(v) is torch.Tensor for k, v in obj.items()):
        raise LoadError(f"{where}: holds a {type(obj).__name__}, not the dict of named tensors fxprune writes")
    return obj


def write_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor]) -> str:
    """Atomically write ``tensors`` to ``path``; returns the file's sha256."""
    digest: list[str] = []
    atomic_write(path, lambda fh: digest.append(dump_tensors(fh, tensors)))
    return digest[0]


def _verified(path: Path, sha256: str | None) -> None:
    if not path.is_file():
        raise LoadError(f"{path}: the file is missing")
    if sha256 is not None and sha256_file(path) != sha256:
        raise LoadError(f"{path}: its checksum does not match the one recorded when it was saved "
                        "(the file was altered or replaced)")


def read_tensors(path: str | os.PathLike, *, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a file written by :func:`write_tensors` (checked against ``sha256`` if given).

    Raises:
        LoadError: missing file, checksum mismatch, or not a code-free tensor file.
    """
    path = Path(path)
    _verified(path, sha256)
    with open(path, "rb") as fh:
        return parse_tensors(fh, str(path))


def write_json(path: str | os.PathLike, data: Any) -> str:
    """Atomically write ``data`` as JSON to ``path``; returns the file's sha256."""
    body = json.dumps(data, indent=1, allow_nan=False).encode("utf-8")
    atomic_write(path, lambda fh: fh.write(body))
    return hashlib.sha256(body).hexdigest()


def read_json(path: str | os.PathLike, *, sha256: str | None = None) -> dict[str, Any]:
    """The JSON object in ``path`` (checked against ``sha256`` if given).

    Raises:
        LoadError: missing file, checksum mismatch, not UTF-8 JSON, or not a JSON object.
    """
    path = Path(path)
    _verified(path, sha256)
    return parse_json(path.read_bytes(), str(path))


def parse_json(body: bytes, where: str) -> dict[str, Any]:
    """The JSON object in ``body`` (:class:`LoadError` naming ``where`` otherwise)."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise LoadError(f"{where}: not valid UTF-8 JSON ({exc})") from None
    if not isinstance(data, dict):
        raise LoadError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return data
