"""Fingerprints of modules: code, module tree, tensor names, shapes, dtypes and values.

A :class:`Fingerprint` describes a module as plain data: the sha256 of its
graph's code (for a ``GraphModule``), every submodule's type and
``extra_repr``, every tensor's shape, dtype and kind (parameter, buffer or
plain attribute) and, optionally, the sha256 of its bytes, plus which modules
are in training mode and which parameters are frozen.  Two uses:

* the fingerprint of the *original* model (of its traced graph) is saved with
  a pruned result or a schedule run, and :meth:`Fingerprint.differences`
  names what a model given at load time has different (architecture, forward
  code, shapes, weights);
* the fingerprint of a *pruned* model (without values: those are in the
  tensor file) is saved with it, and :func:`restore` checks that the rebuilt
  model has exactly that structure before copying the saved tensors into it.

Example:
    >>> import torch, torch.nn as nn
    >>> from fxprune.serialize.fingerprint import Fingerprint
    >>> a = Fingerprint.of(nn.Linear(2, 3))
    >>> b = Fingerprint.of(nn.Linear(2, 4))
    >>> a == Fingerprint.from_json(a.to_json(), "here")
    True
    >>> b.differences(a, values=False)
    ["module '': Linear(in_features=2, out_features=4, bias=True) in the saved model, Linear(in_features=2, out_features=3, bias=True) here", "tensor 'weight': shape (4, 2) in the saved model, (3, 2) here", "tensor 'bias': shape (4,) in the saved model, (3,) here"]
"""
from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import torch
import torch.fx as fx

from ..errors import ConfigError, LoadError
from ..modules import get_attr

__all__ = ["Fingerprint", "TensorEntry", "TensorKind", "module_tensors", "tensor_digest", "restore", "check_model",
           "group_signatures", "check_groups"]


def module_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of ``module`` by qualified name: parameters, buffers (non-persistent ones
    included; tied tensors under each of their names) and the plain tensor attributes a
    ``GraphModule``'s ``get_attr`` nodes read."""
    out: dict[str, torch.Tensor] = dict(module.named_parameters(remove_duplicate=False))
    for name, t in module.named_buffers(remove_duplicate=False):
        out.setdefault(name, t)
    if isinstance(module, fx.GraphModule):
        for node in module.graph.nodes:
            if node.op != "get_attr" or str(node.target) in out:
                continue
            try:
                value = get_attr(module, str(node.target))
            except AttributeError:
                continue
            if isinstance(value, torch.Tensor):
                out[str(node.target)] = value
    return out


def tensor_digest(t: torch.Tensor) -> str | None:
    """The sha256 of a tensor's dtype, shape and bytes (``None`` for tensors without data: meta, fake)."""
    if t.device.type == "meta" or type(t) not in (torch.Tensor, torch.nn.Parameter):
        return None
    try:
        data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    except (RuntimeError, TypeError):  # quantized or sparse layouts: not fingerprinted
        return None
    h = hashlib.sha256(f"{t.dtype}:{tuple(t.shape)}:".encode())
    h.update(memoryview(data))
    return h.hexdigest()


class TensorKind(str, enum.Enum):
    """What a module tensor is: a parameter, a buffer, or a plain tensor attribute."""

    PARAMETER = "parameter"
    BUFFER = "buffer"
    ATTRIBUTE = "attribute"

    def __str__(self) -> str:
        return self.value


def _kind(module: torch.nn.Module, name: str, t: torch.Tensor) -> TensorKind:
    if isinstance(t, torch.nn.Parameter):
        return TensorKind.PARAMETER
    owner, _, attr = name.rpartition(".")
    try:
        sub = module.get_submodule(owner) if owner else module
    except AttributeError:
        return TensorKind.ATTRIBUTE
    return TensorKind.BUFFER if attr in sub._buffers else TensorKind.ATTRIBUTE


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a fingerprint: shape, dtype, kind and (optionally) the sha256 of its bytes."""

    shape: tuple[int, ...]
    dtype: str
    kind: TensorKind
    sha256: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", TensorKind(self.kind))

    def to_json(self) -> list:
        return [list(self.shape), self.dtype, self.kind.value, self.sha256]

    @classmethod
    def from_json(cls, data: Any, where: str) -> "TensorEntry":
        ok = (isinstance(data, list) and len(data) == 4 and isinstance(data[0], list)
              and all(isinstance(s, int) and not isinstance(s, bool) for s in data[0])
              and isinstance(data[1], str) and data[2] in {k.value for k in TensorKind}
              and isinstance(data[3], (str, type(None))))
        if not ok:
            raise LoadError(f"{where}: malformed tensor entry {data!r}")
        return cls(tuple(data[0]), data[1], data[2], data[3])


def _code_digest(module: torch.nn.Module) -> str:
    code = module.code if isinstance(module, fx.GraphModule) else ""
    return hashlib.sha256(code.encode()).hexdigest()


def _str_list(data: Any, where: str, what: str) -> tuple[str, ...]:
    if not isinstance(data, list) or not all(isinstance(s, str) for s in data):
        raise LoadError(f"{where}: malformed {what}")
    return tuple(data)


@dataclass(frozen=True)
class Fingerprint:
    """A module as plain data (see the module docstring).

    Attributes:
        code: the sha256 of the ``GraphModule``'s code (of ``""`` for other modules).
        modules: submodule name -> ``"Type(extra_repr)"`` (the root is ``""``).
        tensors: tensor name -> :class:`TensorEntry` (see :func:`module_tensors`).
        training: names of the modules in training mode.
        frozen: names of the parameters with ``requires_grad=False``.
    """

    code: str
    modules: Mapping[str, str]
    tensors: Mapping[str, TensorEntry]
    training: tuple[str, ...] = ()
    frozen: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "modules", MappingProxyType(dict(self.modules)))
        object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fingerprint) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash((self.code, tuple(self.modules.items()), tuple(self.tensors.items())))

    @classmethod
    def of(cls, module: torch.nn.Module, *, values: bool = True) -> "Fingerprint":
        """The fingerprint of ``module``; ``values=False`` leaves the tensors' sha256 out (faster)."""
        modules = {name: f"{type(m).__qualname__}({m.extra_repr()})"
                   for name, m in module.named_modules(remove_duplicate=False)}
        tensors = {name: TensorEntry(tuple(int(s) for s in t.shape), str(t.dtype), _kind(module, name, t),
                                     tensor_digest(t) if values else None)
                   for name, t in module_tensors(module).items()}
        training = tuple(name for name, m in module.named_modules(remove_duplicate=False) if m.training)
        frozen = tuple(name for name, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad)
        return cls(_code_digest(module), modules, tensors, training, frozen)

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "modules": dict(self.modules),
                "tensors": {k: v.to_json() for k, v in self.tensors.items()},
                "training": list(self.training), "frozen": list(self.frozen)}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "Fingerprint":
        """Parse :meth:`to_json`'s output (:class:`LoadError` naming ``where`` if malformed)."""
        if not (isinstance(data, dict) and isinstance(data.get("code"), str) and isinstance(data.get("modules"), dict)
                and isinstance(data.get("tensors"), dict)
                and all(isinstance(v, str) for v in data["modules"].values())):
            raise LoadError(f"{where}: malformed model fingerprint")
        tensors = {str(k): TensorEntry.from_json(v, where) for k, v in data["tensors"].items()}
        return cls(data["code"], data["modules"], tensors, _str_list(data.get("training", []), where, "training list"),
                   _str_list(data.get("frozen", []), where, "frozen list"))

    def differences(self, now: "Fingerprint", *, values: bool = True, limit: int = 6,
                    labels: tuple[str, str] = ("in the saved model", "here")) -> list[str]:
        """What ``now`` (a model at hand) has different from this saved fingerprint, in words.

        Compares the module tree, the tensors' names, shapes, dtypes and kinds,
        the graph code, and with ``values`` the tensors' bytes.  At most
        ``limit`` differences of each sort are listed; ``labels`` say where
        this fingerprint and ``now`` come from.
        """
        was, is_ = labels
        out: list[str] = []
        out += _name_sets("module", self.modules, now.modules, limit, labels)
        out += [f"module {k!r}: {self.modules[k]} {was}, {now.modules[k]} {is_}"
                for k in self.modules if k in now.modules and self.modules[k] != now.modules[k]][:limit]
        out += _name_sets("tensor", self.tensors, now.tensors, limit, labels)
        common = [k for k in self.tensors if k in now.tensors]
        for attr in ("shape", "dtype", "kind"):
            out += [f"tensor {k!r}: {attr} {_fmt(getattr(self.tensors[k], attr))} {was}, "
                    f"{_fmt(getattr(now.tensors[k], attr))} {is_}"
                    for k in common if getattr(self.tensors[k], attr) != getattr(now.tensors[k], attr)][:limit]
        if self.code != now.code and not out:
            out.append("the traced forward code differs (another forward or architecture)")
        if values and not out:
            changed = [k for k in common if self.tensors[k].sha256 != now.tensors[k].sha256]
            if changed:
                more = f" and {len(changed) - limit} more" if len(changed) > limit else ""
                out.append(f"other weights: {changed[:limit]}{more} hold other values")
        return out


def _fmt(value: Any) -> str:
    return str(tuple(value)) if isinstance(value, tuple) else str(value)


def _name_sets(what: str, saved: Mapping[str, Any], now: Mapping[str, Any], limit: int,
               labels: tuple[str, str]) -> list[str]:
    out = []
    missing = [k for k in saved if k not in now]
    extra = [k for k in now if k not in saved]
    if missing:
        out.append(f"{what}s {missing[:limit]} {labels[0]} are missing {labels[1]}")
    if extra:
        out.append(f"{what}s {extra[:limit]} {labels[1]} are not {labels[0]}")
    return out


def check_model(saved: Fingerprint, traced: torch.nn.Module, where: str, check_weights: bool = True) -> None:
    """Refuse a model (its traced ``GraphModule``) whose fingerprint differs from the ``saved`` one.

    Raises:
        ConfigError: naming what differs (architecture, code, shapes, or with
            ``check_weights`` the weights' values).
    """
    diffs = saved.differences(Fingerprint.of(traced, values=check_weights), values=check_weights)
    if diffs:
        hint = ("; pass check_weights=False to load into a model of the same architecture with other weights "
                "(the pruned weights come from the file)" if diffs[0].startswith("other weights") else "")
        raise ConfigError(f"{where} was saved from another model: {'; '.join(diffs)}{hint}")


def group_signatures(analysis: Any) -> list[list[Any]]:
    """``[[group id, sha256]]`` of an analysis: each group's size, fixed channels and members with index maps."""
    out = []
    for g in analysis.groups:
        body = json.dumps([g.size, sorted(int(c) for c in g.fixed),
                           [[m.param, m.dim, str(getattr(m.role, "value", m.role)), m.index_map.tolist()]
                            for m in g.members]], separators=(",", ":"))
        out.append([g.id, hashlib.sha256(body.encode()).hexdigest()])
    return out


def check_groups(saved: Any, analysis: Any, where: str) -> None:
    """Refuse an analysis whose groups differ from the saved :func:`group_signatures` (another registry).

    Raises:
        ConfigError: naming the groups that differ.
    """
    now = group_signatures(analysis)
    if saved != now:
        saved = saved if isinstance(saved, list) else []
        ids = sorted({repr(a[0]) for a, b in zip(saved, now) if a != b}
                     | {repr(g[0]) for g in (saved[len(now):] + now[len(saved):]) if isinstance(g, list) and g})
        raise ConfigError(f"{where}: this model's analysis finds other coupled groups than when it was saved "
                          f"(groups {ids[:8]} differ); load with the registry= (custom rules) it was pruned with, "
                          "or with the fxprune version that saved it")


def restore(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], saved: Fingerprint, where: str) -> None:
    """Copy saved ``tensors`` into a rebuilt ``module`` after checking it has the saved structure.

    Values are copied in place (tied tensors stay tied, parameters stay
    parameters, each tensor keeps its device); training modes and frozen
    parameters are set as saved.

    Raises:
        LoadError: the module's structure differs from ``saved``, or ``tensors``
            do not match it (names, shapes, dtypes).
    """
    now = Fingerprint.of(module, values=False)
    diffs = saved.differences(now, values=False)
    if diffs:
        raise LoadError(f"{where}: the saved plan does not rebuild the saved model ({'; '.join(diffs)}); "
                        "the file was altered, or the model was pruned with another registry or fxprune version")
    if set(tensors) != set(saved.tensors):
        missing = sorted(set(saved.tensors) - set(tensors))[:5]
        extra = sorted(set(tensors) - set(saved.tensors))[:5]
        raise LoadError(f"{where}: the tensor file does not match the model (missing {missing}, unexpected {extra})")
    with torch.no_grad():
        for name, value in tensors.items():
            entry = saved.tensors[name]
            if tuple(value.shape) != entry.shape or str(value.dtype) != entry.dtype:
                raise LoadError(f"{where}: tensor {name!r} has shape {tuple(value.shape)} and dtype {value.dtype}; "
                                f"the model needs {entry.shape} and {entry.dtype}")
            get_attr(module, name).copy_(value)
    training = set(saved.training)
    for name, m in module.named_modules(remove_duplicate=False):
        m.training = name in training
    frozen = set(saved.frozen)
    for name, p in module.named_parameters(remove_duplicate=False):
        p.requires_grad_(name not in frozen)
