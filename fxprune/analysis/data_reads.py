"""Reads of tensor *data* refused while values are computed with real CPU kernels.

A trace from example values (:mod:`fxprune.analysis.values`) must never freeze a
branch on tensor values: on meta or fake tensors the data is not there, so
``bool(t)``, ``t.item()``, ``t.tolist()``, ``nonzero`` or ``x[x > 0]`` fail and the
trace fails (``frontend="auto"`` then uses ``torch.export``).  On real CPU tensors
they would silently succeed.  :func:`data_reads_refused` makes them fail there as
they do on meta tensors, at two levels:

* the dispatcher (:class:`_RefuseDataDependentOps`): every ATen op tagged
  ``data_dependent_output`` (``_local_scalar_dense``, behind ``bool``, ``int``,
  ``float``, ``item``, ``__index__``; ``equal``, ``allclose``) or
  ``dynamic_output_shape`` (``nonzero``, ``masked_select``, ``unique``,
  ``repeat_interleave.Tensor``, ``bincount``...), except ``index.Tensor`` with
  integer indices, whose output shape does not depend on the data (as
  ``FakeTensorMode`` decides it);
* the methods that read data without an ATen op
  (:class:`_RefuseDataEscapes`: ``tolist``, ``numpy``, ``__array__``,
  ``data_ptr``, ``__dlpack__``, storages, ``repr`` / ``str`` / ``format``).

Each refusal raises :class:`DataRead` and is reported to a callback first, so a
refusal the model's own code catches (``try: ... except Exception:``) still
fails the real computation.  The context can be entered again and again (a
trace enters it once per value: each ATen op inside costs a few microseconds).

Example:
    >>> import torch
    >>> reasons = []
    >>> refusing = data_reads_refused(reasons.append)
    >>> with refusing:
    ...     (torch.ones(2) * 2).shape
    torch.Size([2])
    >>> with refusing:
    ...     torch.ones(2).sum().item()
    Traceback (most recent call last):
    ...
    fxprune.analysis.data_reads.DataRead: aten._local_scalar_dense.default reads tensor data
    >>> reasons
    ['aten._local_scalar_dense.default reads tensor data']
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["DataRead", "data_reads_refused"]

#: ATen tags of ops whose output (a Python value, or a shape) depends on tensor data
_DATA_TAGS = (torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape)
#: index dtypes that make ``aten.index.Tensor`` a mask (its output shape is the mask's count)
_MASK_DTYPES = (torch.bool, torch.uint8)
#: ``torch.Tensor`` methods that read data without an ATen op (by name: some are slot wrappers)
_ESCAPES = frozenset({"tolist", "numpy", "__array__", "__array_wrap__", "data_ptr", "__dlpack__",
                      "untyped_storage", "storage", "_typed_storage", "__repr__", "__str__", "__format__"})


class DataRead(RuntimeError):
    """Tensor data was read while values were computed with real kernels (on meta tensors this fails too)."""


def _tagged(func: Any) -> bool:
    """Whether the ATen op ``func`` may give a value or a shape that depends on tensor data."""
    return any(tag in _DATA_TAGS for tag in func.tags)


def _reads_data(func: Any, args: tuple) -> bool:
    """Whether the tagged ATen op ``func`` on ``args`` gives a value or a shape that depends on tensor data."""
    if func is torch.ops.aten.index.Tensor:  # integer indices: the shape is the indices' (FakeTensor decides so)
        indices = args[1] if len(args) > 1 else ()
        return any(i is not None and i.dtype in _MASK_DTYPES for i in indices)
    return True


class _RefuseDataDependentOps(TorchDispatchMode):
    """Raises :class:`DataRead` on an ATen op whose result depends on tensor data (:func:`_reads_data`)."""

    def __init__(self, refused: Callable[[str], None]) -> None:
        super().__init__()
        self._refused = refused
        self._tagged: dict[Any, bool] = {}  # per op: its tags, looked up once (every op of every value passes here)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        tagged = self._tagged.get(func)
        if tagged is None:
            tagged = self._tagged[func] = _tagged(func)
        if tagged and _reads_data(func, args):
            _refuse(self._refused, f"{func} reads tensor data")
        return func(*args, **kwargs) if kwargs else func(*args)


class _RefuseDataEscapes(TorchFunctionMode):
    """Raises :class:`DataRead` on a tensor method that reads data outside the dispatcher (:data:`_ESCAPES`)."""

    def __init__(self, refused: Callable[[str], None]) -> None:
        super().__init__()
        self._refused = refused

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if getattr(func, "__name__", None) in _ESCAPES:
            _refuse(self._refused, f"Tensor.{func.__name__} reads tensor data")
        return func(*args, **kwargs) if kwargs else func(*args)


def _refuse(refused: Callable[[str], None], why: str) -> None:
    refused(why)
    raise DataRead(why)


class _Refusing:
    """The context of :func:`data_reads_refused` (both modes, entered in order; reusable)."""

    def __init__(self, refused: Callable[[str], None]) -> None:
        self._modes = (_RefuseDataEscapes(refused), _RefuseDataDependentOps(refused))

    def __enter__(self) -> None:
        escapes, ops = self._modes
        escapes.__enter__()
        try:
            ops.__enter__()
        except BaseException:
            escapes.__exit__(None, None, None)
            raise

    def __exit__(self, *exc: Any) -> None:
        escapes, ops = self._modes
        try:
            ops.__exit__(*exc)
        finally:
            escapes.__exit__(*exc)


def data_reads_refused(refused: Callable[[str], None]) -> Any:
    """A context (reusable) inside which any read of tensor data calls ``refused(why)`` and raises :class:`DataRead`."""
    return _Refusing(refused)
