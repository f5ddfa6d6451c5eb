"""Linear layers: ``nn.Linear`` and ``F.linear`` (``y[..., o] = sum_i x[..., i] W[o, i] + b[o]``).

``nn.Linear`` can take HAP's Neural Implant (``Rule.implant``): a low-rank
:class:`~fxprune.modules.ImplantedLinear`.

Example:
    >>> import torch, fxprune
    >>> m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> print(fxprune.analyze(m, (torch.randn(1, 3),)).groups[0].describe())
    group 0: 4 channels
      producer  0.weight[dim 0] (4)
      bias      0.bias[dim 0] (4)
      consumer  2.weight[dim 1] (4)
"""
from __future__ import annotations

import numpy as np
import torch

from ..ir import Role, Zeros
from ..modules import ImplantedLinear
from .context import EmitContext, OpContext, Unsupported, Value, first_tensor
from .registry import Implant, Keys, Rule, writes_nothing

__all__ = ["LINEAR_FUNCTION", "LINEAR_MODULE", "RULES", "linear_channels"]


def linear_channels(ctx: OpContext, x: Value, w: Value, b: Value | None) -> tuple:
    """``y[..., o] = sum_i x[..., i] W[o, i] + b[o]``."""
    ctx.role(w, 1, Role.CONSUMER)
    ctx.role(w, 0, Role.PRODUCER)
    ctx.unify(x.labels[-1], w.labels[1], " (linear input features)")
    ctx.contract((x, -1), (w, 1), why="linear contraction")  # exact: a parameter weight's dead columns are zero
    out = w.labels[0]
    if b is not None:
        ctx.role(b, 0, Role.BIAS)
        ctx.unify(out, b.labels[0])
    return tuple(x.labels[:-1]) + (out,)


def _linear_module(ctx: OpContext) -> tuple:
    return linear_channels(ctx, first_tensor(ctx), ctx.param("weight"), ctx.param("bias"))


def _linear_function(ctx: OpContext) -> tuple:
    x, w, b = ctx.arg(0, "input"), ctx.arg(1, "weight"), ctx.arg(2, "bias")
    if not isinstance(w, Value):
        raise Unsupported("linear with a non-tensor weight")
    return linear_channels(ctx, x, w, b if isinstance(b, Value) else None)


def _resize_linear(m: torch.nn.Module, ctx: EmitContext) -> None:
    m.in_features = ctx.new_shape(ctx.node.args[0])[-1]
    m.out_features = ctx.out_shape()[-1]


def _linear_macs(ctx: OpContext, w: Value) -> int:
    return int(np.prod(ctx.out.shape)) * int(w.shape[1])


LINEAR_MODULE = Rule("linear", _linear_module, resize=_resize_linear,
                     implant=Implant(accepts=lambda m: m.weight.ndim == 2, build=ImplantedLinear),
                     macs=lambda ctx: _linear_macs(ctx, ctx.param("weight")), doc="nn.Linear.",
                     keys=Keys(modules=("Linear",)), zeros=Zeros.KEEP, writes_state=writes_nothing)
LINEAR_FUNCTION = Rule("linear", _linear_function,
                       macs=lambda ctx: _linear_macs(ctx, ctx.arg(1, "weight")), doc="F.linear.",
                       keys=Keys(functional=("linear",), aten=("linear",)), zeros=Zeros.KEEP)

RULES = (LINEAR_MODULE, LINEAR_FUNCTION)
