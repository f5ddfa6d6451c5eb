"""Recurrent modules: ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` (hidden units).

A recurrent layer's weights are *gate-major*: ``weight_ih_l{k}`` is
``[gates * hidden_size, input]`` with gate ``g``'s rows at ``g * hidden_size +
j`` (LSTM: 4 gates i, f, g, o; GRU: 3 gates r, z, n; RNN: 1), ``weight_hh_l{k}``
is ``[gates * hidden_size, hidden_size]`` (it reads the previous step's hidden
state), and the biases follow the rows.  Hidden unit ``j`` is therefore the rows
``j, H + j, 2H + j, ...`` of every weight and bias of its layer and direction,
column ``j`` of ``weight_hh``, feature ``j`` of the layer's output (``H + j``
too for the reverse direction of a bidirectional layer) and column ``j`` of the
next layer's ``weight_ih``.

One module has one ``hidden_size`` for all its layers and directions, so the
rule maps one channel space for all of them, index by index: removing unit
``j`` removes it everywhere in the module (the same count everywhere, as
``nn.LSTM`` requires).  The module's input features are the first layer's
``weight_ih`` columns; its output's last dim is the hidden units (twice, for
the two directions); ``h_n``/``c_n`` carry them on their last dim.

Exactness: with no initial state given, a unit whose rows and biases are zero
stays zero at every step (LSTM: ``c = sigmoid(0) * c + sigmoid(0) * tanh(0) =
0``, ``h = sigmoid(0) * tanh(0) = 0``; GRU: ``n = tanh(0) = 0``, ``h = (1 -
z) * 0 + z * 0``; RNN: ``tanh(0)``), and the other units read it only through
the zeroed columns of ``weight_hh``: pruning it equals the masked original.
Not handled (the call is a barrier, saying why): an initial state passed to
the call, ``proj_size`` (LSTM projections), packed sequences.  Under the
``export`` front end the module becomes ``aten.lstm``/``aten.gru`` calls
with a flat weight list, which have no rule (barriers).

Example:
    >>> import torch, fxprune
    >>> class Tagger(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.rnn = torch.nn.LSTM(4, 6, batch_first=True)
    ...         self.head = torch.nn.Linear(6, 2)
    ...     def forward(self, x):
    ...         return self.head(self.rnn(x)[0])
    >>> print(fxprune.analyze(Tagger(), (torch.randn(2, 5, 4),)).group_of("rnn.weight_hh_l0", 1)[0].describe())
    group 0: 6 channels
      producer  rnn.weight_hh_l0[dim 0] (24)
      producer  rnn.weight_ih_l0[dim 0] (24)
      bias      rnn.bias_hh_l0[dim 0] (24)
      bias      rnn.bias_ih_l0[dim 0] (24)
      consumer  rnn.weight_hh_l0[dim 1] (6)
      consumer  head.weight[dim 1] (6)
"""
from __future__ import annotations

import numpy as np
import torch

from ..ir import Role, Zeros
from .context import EmitContext, OpContext, Unsupported, Value, first_tensor
from .registry import Keys, Rule

__all__ = ["RECURRENT_MODULE", "RULES", "gates"]

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def gates(module: torch.nn.Module) -> int:
    """The number of gate blocks in the rows of a recurrent module's weights (LSTM 4, GRU 3, RNN 1)."""
    return _GATES[module.mode]


def _directions(m: torch.nn.Module) -> tuple[str, ...]:
    return ("", "_reverse") if m.bidirectional else ("",)


def _recurrent(ctx: OpContext) -> tuple:
    m = ctx.module
    if getattr(m, "proj_size", 0):
        raise Unsupported("an LSTM with proj_size (projected hidden state)")
    if m.mode not in _GATES:
        raise Unsupported(f"recurrent mode {m.mode!r}")
    x = first_tensor(ctx)
    if not isinstance(x, Value) or not x.is_tensor:
        raise Unsupported("a packed sequence input")
    if ctx.arg(1, "hx") is not None:
        raise Unsupported("an initial state passed to the call (its removed units need not be zero)")
    hidden = ctx.fresh(int(m.hidden_size))
    rows = np.tile(hidden, gates(m))
    directions = _directions(m)
    layer_input = x.labels[-1]
    for layer in range(int(m.num_layers)):
        for suffix in directions:
            w_ih, w_hh = ctx.param(f"weight_ih_l{layer}{suffix}"), ctx.param(f"weight_hh_l{layer}{suffix}")
            for w in (w_ih, w_hh):
                ctx.role(w, 0, Role.PRODUCER)
                ctx.unify(w.labels[0], rows, " (gate rows of a hidden unit)")
            ctx.role(w_hh, 1, Role.CONSUMER)
            ctx.unify(w_hh.labels[1], hidden, " (the previous step's hidden state)")
            ctx.role(w_ih, 1, Role.CONSUMER)
            ctx.unify(w_ih.labels[1], layer_input, " (recurrent layer input features)")
            if layer == 0:
                ctx.contract((x, -1), (w_ih, 1), why="recurrent input projection")
            for name in (f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}"):
                b = ctx.param(name)
                if b is not None:
                    ctx.role(b, 0, Role.BIAS)
                    ctx.unify(b.labels[0], rows)
        layer_input = np.concatenate([hidden] * len(directions))
    if not isinstance(ctx.out, tuple) or len(ctx.out) != 2:
        raise Unsupported("a recurrent module that does not return (output, state)")
    output = tuple(None for _ in x.labels[:-1]) + (layer_input,)
    state_ndim = len(ctx.out[1][0].shape) if isinstance(ctx.out[1], tuple) else len(ctx.out[1].shape)
    state = tuple(None for _ in range(state_ndim - 1)) + (hidden,)
    return output, ((state, state) if m.mode == "LSTM" else state)


def _resize_recurrent(m: torch.nn.Module, ctx: EmitContext) -> None:
    x = ctx.old_arg(0, "input")
    m.input_size = int(ctx.new_shape(x)[-1])
    m.hidden_size = int(ctx.out_shape()[0][-1]) // len(_directions(m))


def _macs_recurrent(ctx: OpContext) -> int:
    m = ctx.module
    x = first_tensor(ctx)
    steps = int(np.prod(x.shape[:-1]))  # batch x time (or time for an unbatched input)
    hidden, total = int(m.hidden_size), 0
    width = int(x.shape[-1])
    for _ in range(int(m.num_layers)):
        total += len(_directions(m)) * gates(m) * hidden * (width + hidden)
        width = hidden * len(_directions(m))
    return steps * total


RECURRENT_MODULE = Rule(
    "recurrent", _recurrent, resize=_resize_recurrent, macs=_macs_recurrent, leaf=True, zeros=Zeros.LOSE,
    keys=Keys(modules=("LSTM", "GRU", "RNN")),
    doc="nn.LSTM / nn.GRU / nn.RNN: hidden units, gate-major rows, one channel space per module.")

RULES = (RECURRENT_MODULE,)
