"""Single-op models: one registry key between channel producers, for testing a rule in isolation.

:func:`single_op_model` builds a tiny ``nn.Module`` whose forward runs one or
more channel *producers* (1x1 convolutions, or linear layers for token
layouts), applies the op under test to their outputs as an :class:`OpSample`
describes, and sums every result into a scalar (a sum keeps every channel
prunable, unlike a model output).  :func:`fxprune.testing.soundness.check_rules`
on it checks the op's rule against zero-masking; exporting it shows which ATen
ops the key lowers to.  This is how fxprune's own test suite covers every key
of the built-in registry, and how you test a rule you register.

Example:
    >>> import torch
    >>> from fxprune.testing.single_op import OpSample, single_op_model
    >>> from fxprune.testing.soundness import check_rules
    >>> model, inputs = single_op_model(torch.erf, OpSample())
    >>> report = check_rules(model, inputs)
    >>> torch.erf in report.checked_keys
    True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..ops.registry import Method

__all__ = ["LAYOUTS", "OpSample", "single_op_model"]

#: input shape (batch 2) and producer of each layout, for ``channels`` channels
LAYOUTS: Mapping[str, tuple[tuple[int, ...], Callable[[int], nn.Module] | None]] = {
    "image": ((2, 3, 5, 5), lambda c: nn.Conv2d(3, c, 1)),     # [B, C, H, W]
    "signal": ((2, 3, 8), lambda c: nn.Conv1d(3, c, 1)),       # [B, C, L]
    "volume": ((2, 3, 4, 4, 4), lambda c: nn.Conv3d(3, c, 1)),  # [B, C, D, H, W]
    "seq": ((2, 5, 3), lambda c: nn.Linear(3, c)),             # [B, T, C]
    "flat": ((2, 3), lambda c: nn.Linear(3, c)),               # [B, C]
    "tokens": ((2, 5), None),                                  # int ids: the op produces channels
}


def _apply(f: Any, ts: list, p: nn.Module) -> Any:
    return f(*ts)


@dataclass(frozen=True)
class OpSample:
    """How to call one op in a single-op model.

    Attributes:
        call: ``call(f, tensors, model) -> tensor or list of tensors``, where
            ``f`` is the op (the function, a bound-method adapter for a
            :class:`~fxprune.ops.Method` key, or the module instance),
            ``tensors`` the producers' outputs and ``model`` gives access to
            ``params``.  Default: ``f(*tensors)``.
        arity: how many producers (channel tensors) the op takes.
        layout: a key of :data:`LAYOUTS`.
        channels: channels per producer.
        params: extra parameters of the model, ``{name: shape}`` (positive random
            values), e.g. the weight of ``F.conv2d``.
        buffers: extra buffers of the model, likewise (e.g. running statistics).
        module: for module keys, a factory of the module under test (default:
            the key called without arguments).
        train: run the model in train mode (default eval).
    """

    call: Callable[[Any, list, nn.Module], Any] = _apply
    arity: int = 1
    layout: str = "image"
    channels: int = 6
    params: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    buffers: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    module: Callable[[], nn.Module] | None = None
    train: bool = False


def _method(name: str) -> Callable[..., Any]:
    def call(t: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(t, name)(*args, **kwargs)

    return call


def _total(out: Any) -> Any:
    if isinstance(out, (list, tuple)):
        total = out[0].sum()
        for t in out[1:]:
            total = total + t.sum()
        return total
    return out.sum()


class SingleOp(nn.Module):
    """Producers -> the op under test -> a sum (see :func:`single_op_model`)."""

    def __init__(self, key: Any, sample: OpSample) -> None:
        super().__init__()
        _, producer = LAYOUTS[sample.layout]
        self.producers = nn.ModuleList(producer(sample.channels) for _ in range(sample.arity if producer else 0))
        for m in self.producers:
            with torch.no_grad():  # positive activations: log, sqrt, pow stay finite
                m.weight.uniform_(0.1, 1.0)
                m.bias.uniform_(0.1, 1.0)
        for name, shape in sample.params.items():
            self.register_parameter(name, nn.Parameter(torch.rand(shape) + 0.5))
        for name, shape in sample.buffers.items():
            self.register_buffer(name, torch.rand(shape) + 0.5)
        self.op = None
        self._fn: Any = None
        if isinstance(key, type):
            self.op = sample.module() if sample.module is not None else key()
        elif isinstance(key, Method):
            self._fn = _method(key.name)
        else:
            self._fn = key
        self._call = sample.call

    def forward(self, x: torch.Tensor) -> Any:
        ts = [p(x) for p in self.producers] if len(self.producers) else [x]
        return _total(self._call(self.op if self.op is not None else self._fn, ts, self))


def single_op_model(key: Any, sample: OpSample, *, seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor]]:
    """``(model, example_inputs)`` running ``key`` as ``sample`` describes.

    ``key`` is a registry key: a function (``torch.erf``, ``operator.add``), a
    :class:`~fxprune.ops.Method`, or a module class.
    """
    torch.manual_seed(seed)
    model = SingleOp(key, sample)
    model.train(sample.train)
    shape, producer = LAYOUTS[sample.layout]
    x = torch.randint(0, 10, shape) if producer is None else torch.rand(shape) + 0.5
    return model, (x,)
