"""Analysis options and example inputs as plain data (JSON plus named tensors).

:func:`options_to_json` writes an :class:`~fxprune.analysis.analysis.AnalysisConfig`
as JSON; module types (in ``leaf_modules`` or ``ignore``) are written as their
``module:qualname``.  :func:`options_from_json` reads it back and resolves each
type name among the types of the model at hand (and their bases), or among
modules already imported, without importing anything: a name that resolves
nowhere raises :class:`~fxprune.errors.ConfigError`.

:func:`inputs_to_json` splits example inputs into JSON (their nesting, plain
values) and named tensors; :func:`inputs_from_json` puts them back together.

Example:
    >>> import torch, torch.nn as nn
    >>> from fxprune import AnalysisConfig
    >>> from fxprune.serialize.options import options_to_json, options_from_json
    >>> cfg = AnalysisConfig(leaf_modules=(nn.ReLU,), ignore="0")
    >>> options_to_json(cfg)["leaf_modules"]
    [{'type': 'torch.nn.modules.activation:ReLU'}]
    >>> options_from_json(options_to_json(cfg), nn.Sequential(nn.Linear(2, 2), nn.ReLU()), "here") == cfg
    True
"""
from __future__ import annotations

import math
import sys
from typing import Any, Mapping, Sequence

import torch

from ..analysis.analysis import AnalysisConfig
from ..errors import ConfigError, LoadError

__all__ = ["options_to_json", "options_from_json", "inputs_to_json", "inputs_from_json", "model_device",
           "type_name"]

_TYPED = ("leaf_modules", "ignore")


def type_name(cls: type) -> str:
    """``module:qualname`` of a class."""
    return f"{cls.__module__}:{cls.__qualname__}"


def options_to_json(config: AnalysisConfig) -> dict[str, Any]:
    """The options of ``config`` as JSON data (module types by ``module:qualname``)."""
    out: dict[str, Any] = {}
    for name in AnalysisConfig.option_names():
        value = getattr(config, name)
        if name in _TYPED:
            value = [v if isinstance(v, str) else {"type": type_name(v)} for v in value]
        elif name == "split_overrides":
            value = [[k, v] for k, v in value]
        out[name] = value
    return out


def _resolve(name: str, model: torch.nn.Module, option: str) -> type:
    """The module type called ``name``: one the model uses (or a base of one), or an imported one."""
    for m in model.modules():
        for cls in type(m).__mro__:
            if type_name(cls) == name:
                return cls
    module_name, _, qualname = name.partition(":")
    obj: Any = sys.modules.get(module_name)
    for part in qualname.split(".") if obj is not None and qualname else ():
        obj = getattr(obj, part, None)
    if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
        return obj
    raise ConfigError(f"the saved analysis option {option} names the module type {name}, which the model "
                      f"does not use and which is not imported; import {module_name} before loading")


def options_from_json(data: Any, model: torch.nn.Module, where: str) -> AnalysisConfig:
    """The :class:`AnalysisConfig` of :func:`options_to_json`'s output, module types resolved for ``model``.

    Raises:
        LoadError: malformed or invalid options (naming ``where``).
        ConfigError: a module type that resolves nowhere (see the module docstring).
    """
    if not isinstance(data, dict) or not set(data) <= set(AnalysisConfig.option_names()):
        raise LoadError(f"{where}: malformed analysis options {data!r}")
    options = dict(data)
    for name in _TYPED:
        entries = options.get(name, [])
        if not isinstance(entries, list):
            raise LoadError(f"{where}: malformed analysis option {name}: {entries!r}")
        resolved = []
        for e in entries:
            if isinstance(e, dict) and set(e) == {"type"} and isinstance(e["type"], str):
                resolved.append(_resolve(e["type"], model, name))
            else:
                resolved.append(e)
        options[name] = tuple(resolved)
    overrides = options.get("split_overrides", [])
    if not (isinstance(overrides, list) and all(isinstance(p, list) and len(p) == 2 for p in overrides)):
        raise LoadError(f"{where}: malformed analysis option split_overrides: {overrides!r}")
    options["split_overrides"] = tuple(tuple(p) for p in overrides)
    try:
        return AnalysisConfig.from_options(options)
    except ConfigError as exc:
        raise LoadError(f"{where}: invalid analysis options: {exc}") from None


def inputs_to_json(inputs: Sequence[Any], prefix: str = "inputs/") -> tuple[list[Any], dict[str, torch.Tensor]]:
    """``(json, tensors)`` of example inputs: tensors by name, plain values and nesting in the JSON.

    Raises:
        ConfigError: an input that is neither a tensor, ``None``, a bool, an
            int, a finite float, a string, nor a list, tuple or str-keyed dict of those.
    """
    tensors: dict[str, torch.Tensor] = {}

    def enc(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            if value.device.type == "meta":
                raise ConfigError(f"example input {path} is on the meta device: it cannot be saved; "
                                  "use real (e.g. zero) example inputs")
            tensors[prefix + path] = value.detach()
            return {"tensor": prefix + path}
        if value is None or isinstance(value, (bool, int, str)) or isinstance(value, float) and math.isfinite(value):
            return {"value": value}
        if isinstance(value, (list, tuple)):
            return {type(value).__name__ if type(value) in (list, tuple) else "tuple":
                    [enc(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            return {"dict": [[k, enc(v, f"{path}.{k}")] for k, v in value.items()]}
        raise ConfigError(f"example input {path} is a {type(value).__name__}, which cannot be saved; "
                          "save inputs that are tensors, numbers, strings, None or lists/tuples/dicts of them")

    return [enc(v, str(i)) for i, v in enumerate(inputs)], tensors


def model_device(model: torch.nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer (``None``: none, or the ``meta`` device)."""
    first = next(iter(model.parameters()), None)
    if first is None:
        first = next(iter(model.buffers()), None)
    return None if first is None or first.device.type == "meta" else first.device


def inputs_from_json(data: Any, tensors: Mapping[str, torch.Tensor], where: str,
                     device: torch.device | None = None) -> tuple:
    """The example inputs of :func:`inputs_to_json`'s output (:class:`LoadError` if malformed).

    Tensors are moved to ``device`` if given (the device of the model they are for).
    """

    def dec(item: Any) -> Any:
        if not (isinstance(item, dict) and len(item) == 1):
            raise LoadError(f"{where}: malformed example input {item!r}")
        (kind, value), = item.items()
        if kind == "tensor":
            if not isinstance(value, str) or value not in tensors:
                raise LoadError(f"{where}: example input tensor {value!r} is missing from the tensor file")
            return tensors[value] if device is None else tensors[value].to(device)
        if kind == "value" and (value is None or isinstance(value, (bool, int, float, str))):
            return value
        if kind in ("list", "tuple") and isinstance(value, list):
            return (list if kind == "list" else tuple)(dec(v) for v in value)
        if kind == "dict" and isinstance(value, list) and all(
                isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) for p in value):
            return {k: dec(v) for k, v in value}
        raise LoadError(f"{where}: malformed example input {item!r}")

    if not isinstance(data, list):
        raise LoadError(f"{where}: malformed example inputs {data!r}")
    return tuple(dec(v) for v in data)
