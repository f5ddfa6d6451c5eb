"""nn modules that fxprune's rewrites emit, and the dotted-path attribute helpers (a floor below the stages).

Imports only torch and :mod:`fxprune.errors`.  :func:`get_attr` and
:func:`set_attr` are the one place that walks a qualified name
(``"layer1.0.conv1.weight"``) through a module tree.

:class:`ImplantedConv2d` is HAP's Neural Implant for a ``Conv2d``: some output
channels keep their original k x k filters, the others are produced by a cheap
component, and both are written back into the original channel positions, so
nothing downstream changes.  Its channel rule lives in
:mod:`fxprune.ops.implant`, so an implanted model can be analysed and pruned
again.

Example:
    >>> import torch
    >>> conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    >>> m = ImplantedConv2d(conv, torch.tensor([0, 2]), torch.tensor([1, 3]), "lowrank")
    >>> x = torch.randn(1, 3, 5, 5)
    >>> torch.allclose(m(x), conv(x), atol=1e-5)   # full rank: exact
    True
    >>> net = torch.nn.Sequential(conv)
    >>> get_attr(net, "0.weight") is conv.weight
    True
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

__all__ = ["IMPLANT_KINDS", "ImplantedConv2d", "get_attr", "set_attr"]

IMPLANT_KINDS = ("pointwise", "lowrank")


class ImplantedConv2d(nn.Module):
    """A Conv2d whose channels ``implant_pos`` come from a cheap implant.

    Attributes:
        weight: ``[len(kept_pos), in/groups, kh, kw]``, the original filters kept.
        bias: ``[out_channels]`` or ``None`` (all positions).
        implant_v: ``lowrank``: ``[rank, in, kh, kw]``; ``pointwise``: ``None``.
        implant_u: ``[len(implant_pos), rank or in, 1, 1]``.
        kept_pos, implant_pos: output positions of the two parts (buffers);
        order: the permutation putting ``[kept..., implanted...]`` back in place.
    """

    def __init__(self, conv: nn.Conv2d, kept_pos: torch.Tensor, implant_pos: torch.Tensor,
                 kind: str, rank: int | None = None) -> None:
        super().__init__()
        if kind not in IMPLANT_KINDS:
            raise ConfigError(f"implant kind must be one of {IMPLANT_KINDS}, got {kind!r}")
        if conv.groups != 1 or tuple(conv.dilation) != (1, 1):
            raise ConfigError("implants need a dense (groups=1, dilation=1) Conv2d")
        self.kind = kind
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.stride, self.padding = conv.stride, conv.padding
        self.kernel_size = conv.kernel_size
        w = conv.weight.detach()
        self.register_buffer("kept_pos", kept_pos.clone().long())
        self.register_buffer("implant_pos", implant_pos.clone().long())
        self.register_buffer("order", torch.argsort(torch.cat([self.kept_pos, self.implant_pos])))
        self.weight = nn.Parameter(w[kept_pos].clone())
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())
        removed = w[implant_pos]  # [I, in, kh, kw]
        if kind == "pointwise":
            self.implant_v = None
            self.implant_u = nn.Parameter(torch.zeros(len(implant_pos), conv.in_channels, 1, 1,
                                                      dtype=w.dtype, device=w.device))
        else:
            flat = removed.reshape(len(implant_pos), -1).double()
            full = min(flat.shape)
            r = full if rank is None else max(1, min(int(rank), full))
            u, s, vh = torch.linalg.svd(flat, full_matrices=False)
            self.implant_v = nn.Parameter((vh[:r] * s[:r, None]).reshape(r, *removed.shape[1:]).to(w.dtype))
            self.implant_u = nn.Parameter(u[:, :r].reshape(len(implant_pos), r, 1, 1).to(w.dtype))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={tuple(self.kernel_size)}, "
                f"stride={tuple(self.stride)}, kind={self.kind}, kept={len(self.kept_pos)}, "
                f"implanted={len(self.implant_pos)}"
                + (f", rank={self.implant_v.shape[0]}" if self.implant_v is not None else ""))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = F.conv2d(x, self.weight, None, self.stride, self.padding)
        if self.implant_v is None:
            imp = F.conv2d(x, self.implant_u, None, self.stride, 0)
        else:
            imp = F.conv2d(F.conv2d(x, self.implant_v, None, self.stride, self.padding), self.implant_u)
        # channels [kept..., implanted...] back into their original positions
        out = torch.cat([main, imp], 1).index_select(1, self.order)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out


def _owner(root: nn.Module, qualname: str) -> tuple[nn.Module, str]:
    path, _, name = qualname.rpartition(".")
    return (root.get_submodule(path) if path else root), name


def get_attr(root: nn.Module, qualname: str) -> Any:
    """The attribute at a dotted path: a parameter, buffer, plain tensor attribute or submodule."""
    owner, name = _owner(root, qualname)
    return getattr(owner, name)


def set_attr(root: nn.Module, qualname: str, value: Any) -> None:
    """Set the attribute at a dotted path, keeping its kind (parameter, buffer, submodule or plain)."""
    owner, name = _owner(root, qualname)
    if name in owner._parameters:
        owner._parameters[name] = value
    elif name in owner._buffers:
        owner._buffers[name] = value
    else:
        setattr(owner, name, value)
