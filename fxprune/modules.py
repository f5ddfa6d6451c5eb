"""nn modules that fxprune's rewrites emit, and the dotted-path attribute helpers (a floor below the stages).

Imports only torch and :mod:`fxprune.errors`.  :func:`get_attr` and
:func:`set_attr` are the one place that walks a qualified name
(``"layer1.0.conv1.weight"``) through a module tree.

HAP's Neural Implant: some output channels of a layer keep their original
weights, the others are produced by a cheap *implant*, and both are written
back into the original channel positions, so nothing downstream changes.

* :class:`ImplantedConv2d` replaces a dense ``Conv2d`` (any kernel, stride,
  padding, padding mode and dilation: the implant produces exactly the
  replaced layer's output positions).  Kinds (:class:`ImplantKind`):

  - ``pointwise``: a 1x1 convolution from the layer's input channels,
    initialised to zero (the authors' released code).  Output position ``o``
    of a k x k conv reads the input window starting at ``o * stride - padding``;
    the 1x1 implant reads the window's centre tap
    ``o * stride - padding + dilation * ((k - 1) // 2)`` (zero outside the
    input, like the conv's padding), so a 5x5 conv without padding and its
    implant both give ``H - 4`` rows;
  - ``lowrank``: ``U (V * x)``, a rank-``r`` factorisation of the removed
    filters initialised from their truncated SVD (exactly the original
    function at full rank, ``rank=None``);
  - ``dwpw``: a depthwise k x k convolution with ``r`` filters per input
    channel (the channel multiplier; ``rank=None`` means 1, the classic
    depthwise-separable block) followed by a 1x1 convolution.  Initialised from
    the rank-``r`` SVD of every input channel's slice ``W[implanted, c]``
    (``implanted x kh*kw``): the best approximation of the removed filters of
    this form in the Frobenius norm, exact when ``r >= min(implanted, kh*kw)``.

* :class:`ImplantedLinear` replaces an ``nn.Linear``: kind ``lowrank`` only,
  ``W[implanted] ~ U V`` from the truncated SVD (exact at full rank).  A
  ``pointwise`` implant has no meaning for a linear layer (it already is
  "1x1": a zero-initialised replacement would cost as much as the rows it
  replaces), nor has ``dwpw``; asking for them raises ``ConfigError``.

Each implant module lists the kinds it builds in ``kinds``; their channel
rules live in :mod:`fxprune.ops.implant`, so an implanted model can be
analysed and pruned again.

Example:
    >>> import torch
    >>> conv = torch.nn.Conv2d(3, 4, 5)                  # 5x5, no padding
    >>> x = torch.randn(1, 3, 14, 14)
    >>> m = ImplantedConv2d(conv, torch.tensor([0, 2]), torch.tensor([1, 3]), "pointwise")
    >>> m(x).shape == conv(x).shape
    True
    >>> m = ImplantedConv2d(conv, torch.tensor([0, 2]), torch.tensor([1, 3]), "lowrank")
    >>> torch.allclose(m(x), conv(x), atol=1e-5)         # full rank: exact
    True
    >>> lin = torch.nn.Linear(6, 4)
    >>> m = ImplantedLinear(lin, torch.tensor([0]), torch.tensor([1, 2, 3]), "lowrank", rank=2)
    >>> m.implant_u.shape, m.implant_v.shape             # W[1:4] ~ U V, rank 2
    (torch.Size([3, 2]), torch.Size([2, 6]))
    >>> net = torch.nn.Sequential(conv)
    >>> get_attr(net, "0.weight") is conv.weight
    True
"""
from __future__ import annotations

import enum
from typing import Any, ClassVar, Sequence

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, GuardError

__all__ = ["IMPLANT_KINDS", "ImplantKind", "ImplantedConv2d", "ImplantedLinear", "ResizeInputs", "check_traced",
           "get_attr", "set_attr", "submodule"]


class ImplantKind(str, enum.Enum):
    """What replaces an implanted channel's weights (see the module docstring)."""

    POINTWISE = "pointwise"
    LOWRANK = "lowrank"
    DWPW = "dwpw"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, kind: Any) -> "ImplantKind":
        """``kind`` (a name or a member) as a member; a ``ConfigError`` names the choices."""
        try:
            return cls(kind)
        except ValueError:
            raise ConfigError(f"implant kind must be one of {[k.value for k in cls]}, got {kind!r}") from None


IMPLANT_KINDS = tuple(k.value for k in ImplantKind)  #: the kind names


def _svd_factors(mat: torch.Tensor, rank: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, V)`` with ``U @ V`` the best rank-``rank`` approximation of ``mat`` (``None``: full rank)."""
    full = min(mat.shape)
    r = full if rank is None else max(1, min(int(rank), full))
    u, s, vh = torch.linalg.svd(mat.double(), full_matrices=False)
    return u[:, :r].to(mat.dtype), (vh[:r] * s[:r, None]).to(mat.dtype)


class _Implanted(nn.Module):
    """What every implant shares: the two output position tables, the bias, the reassembly."""

    kinds: ClassVar[tuple[ImplantKind, ...]] = ()
    channel_dim: ClassVar[int] = 1

    def _setup(self, layer: nn.Module, kept_pos: torch.Tensor, implant_pos: torch.Tensor, kind: Any,
               rank: int | None) -> torch.Tensor:
        kind = ImplantKind.of(kind)
        if len(kept_pos) == 0:
            raise ConfigError(f"an implanted {type(layer).__name__} keeps at least one original output channel; "
                              "prune or keep one of the implanted channels instead")
        if kind not in self.kinds:
            raise ConfigError(f"{type(self).__name__} takes implant kinds {[k.value for k in self.kinds]}, "
                              f"not {kind.value!r}")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ConfigError(f"implant rank must be a positive int or None, got {rank!r}")
        self.kind = kind
        self.register_buffer("kept_pos", kept_pos.clone().long())
        self.register_buffer("implant_pos", implant_pos.clone().long())
        self.register_buffer("order", torch.argsort(torch.cat([self.kept_pos, self.implant_pos])))
        w = layer.weight.detach()
        self.weight = nn.Parameter(w[self.kept_pos].clone())
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())
        return w[self.implant_pos]

    def _assemble(self, main: torch.Tensor, imp: torch.Tensor) -> torch.Tensor:
        """Channels ``[kept..., implanted...]`` back into their original positions, plus the bias."""
        d = self.channel_dim
        out = torch.cat([main, imp], d).index_select(d, self.order)
        if self.bias is not None:
            out = out + self.bias.view([-1] + [1] * (out.ndim - 1 - d % out.ndim))
        return out

    @property
    def rank(self) -> int | None:
        """The implant's rank (``dwpw``: the depthwise channel multiplier; ``pointwise``: ``None``)."""
        if self.implant_v is None:
            return None
        if self.kind is ImplantKind.DWPW:
            return self.implant_v.shape[0] // self.weight.shape[1]  # [in * rank, 1, kh, kw]
        return self.implant_v.shape[0]

    def _repr_counts(self) -> str:
        rank = "" if self.rank is None else f", rank={self.rank}"
        return f"kind={self.kind.value}, kept={len(self.kept_pos)}, implanted={len(self.implant_pos)}{rank}"


def _pads(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """The conv's padding as ``F.pad`` amounts ``(left, right, top, bottom)``."""
    out: list[int] = []
    for d in (1, 0):  # F.pad lists the last dimension first
        k, dil = conv.kernel_size[d], conv.dilation[d]
        if conv.padding == "valid":
            lo = hi = 0
        elif conv.padding == "same":
            total = dil * (k - 1)
            lo, hi = total // 2, total - total // 2
        else:
            lo = hi = int(conv.padding[d])
        out += [lo, hi]
    return tuple(out)  # type: ignore[return-value]


class ImplantedConv2d(_Implanted):
    """A Conv2d whose channels ``implant_pos`` come from a cheap implant.

    Attributes:
        weight: ``[len(kept_pos), in, kh, kw]``, the original filters kept.
        bias: ``[out_channels]`` or ``None`` (all positions).
        implant_v: ``lowrank``: ``[rank, in, kh, kw]``; ``dwpw``: the depthwise
            filters ``[in * rank, 1, kh, kw]``; ``pointwise``: ``None``.
        implant_u: ``[len(implant_pos), rank or in or in * rank, 1, 1]``.
        kept_pos, implant_pos: output positions of the two parts (buffers);
        order: the permutation putting ``[kept..., implanted...]`` back in place.
        pads: the replaced conv's padding as ``F.pad`` amounts, applied with
            its ``padding_mode`` before every branch.
    """

    kinds = (ImplantKind.POINTWISE, ImplantKind.LOWRANK, ImplantKind.DWPW)

    def __init__(self, conv: nn.Conv2d, kept_pos: torch.Tensor, implant_pos: torch.Tensor,
                 kind: Any, rank: int | None = None) -> None:
        super().__init__()
        if conv.groups != 1 or conv.weight.ndim != 4:
            raise ConfigError("implants need a dense (groups=1) Conv2d")
        removed = self._setup(conv, kept_pos, implant_pos, kind, rank)  # [I, in, kh, kw]
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = tuple(conv.kernel_size), tuple(conv.stride)
        self.dilation, self.padding_mode = tuple(conv.dilation), conv.padding_mode
        self.pads = _pads(conv)
        n_imp, n_in, kh, kw = removed.shape
        if self.kind is ImplantKind.POINTWISE:
            self.implant_v = None
            self.implant_u = nn.Parameter(removed.new_zeros(n_imp, n_in, 1, 1))
        elif self.kind is ImplantKind.LOWRANK:
            u, v = _svd_factors(removed.reshape(n_imp, -1), rank)
            self.implant_v = nn.Parameter(v.reshape(-1, n_in, kh, kw).contiguous())
            self.implant_u = nn.Parameter(u.reshape(n_imp, -1, 1, 1).contiguous())
        else:  # dwpw: per input channel c, W[:, c] ([I, kh*kw]) ~ U_c D_c with D_c the depthwise filters
            mult = 1 if rank is None else max(1, min(int(rank), n_imp, kh * kw))
            us, ds = zip(*(_svd_factors(removed[:, c].reshape(n_imp, -1), mult) for c in range(n_in)))
            self.implant_v = nn.Parameter(torch.cat(ds).reshape(n_in * mult, 1, kh, kw).contiguous())
            self.implant_u = nn.Parameter(torch.cat(us, 1).reshape(n_imp, n_in * mult, 1, 1).contiguous())

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, pads={self.pads}, dilation={self.dilation}, " + self._repr_counts())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, self.pads, mode=mode)
        main = F.conv2d(x, self.weight, None, self.stride, 0, self.dilation)
        if self.kind is ImplantKind.POINTWISE:
            # output o reads the window starting at o * stride; the implant reads its centre tap
            (sh, sw), (dh, dw), (kh, kw) = self.stride, self.dilation, self.kernel_size
            top, left = dh * ((kh - 1) // 2), dw * ((kw - 1) // 2)
            bottom, right = dh * (kh - 1) - top, dw * (kw - 1) - left
            centre = x[:, :, top:(-bottom or None):sh, left:(-right or None):sw]
            imp = F.conv2d(centre, self.implant_u)
        elif self.kind is ImplantKind.LOWRANK:
            imp = F.conv2d(F.conv2d(x, self.implant_v, None, self.stride, 0, self.dilation), self.implant_u)
        else:
            imp = F.conv2d(F.conv2d(x, self.implant_v, None, self.stride, 0, self.dilation, self.in_channels),
                           self.implant_u)
        return self._assemble(main, imp)


class ImplantedLinear(_Implanted):
    """An ``nn.Linear`` whose output features ``implant_pos`` come from a low-rank ``U V``.

    Attributes:
        weight: ``[len(kept_pos), in_features]``, the original rows kept.
        bias: ``[out_features]`` or ``None`` (all positions).
        implant_v: ``[rank, in_features]``; implant_u: ``[len(implant_pos), rank]``.
        kept_pos, implant_pos, order: as for :class:`ImplantedConv2d`.
    """

    kinds = (ImplantKind.LOWRANK,)
    channel_dim = -1

    def __init__(self, linear: nn.Linear, kept_pos: torch.Tensor, implant_pos: torch.Tensor,
                 kind: Any = ImplantKind.LOWRANK, rank: int | None = None) -> None:
        super().__init__()
        removed = self._setup(linear, kept_pos, implant_pos, kind, rank)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        u, v = _svd_factors(removed, rank)
        self.implant_u, self.implant_v = nn.Parameter(u.contiguous()), nn.Parameter(v.contiguous())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " + self._repr_counts()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._assemble(F.linear(x, self.weight), F.linear(F.linear(x, self.implant_v), self.implant_u))


class ResizeInputs(nn.Module):
    """Resizes the spatial dims of the inputs to the recorded sizes, then runs ``module``.

    Every floating tensor input of 3+ dims whose spatial dims (2 onwards) differ
    from its recorded shape is resampled with ``F.interpolate`` (``mode`` for
    images; ``linear``/``trilinear`` for 1-d/3-d), so a model pruned at a lower
    resolution can be fed the original images.

    Example:
        >>> import torch
        >>> wrapper = ResizeInputs(torch.nn.AdaptiveAvgPool2d(1), ((1, 3, 8, 8),))
        >>> wrapper(torch.ones(1, 3, 32, 32)).shape
        torch.Size([1, 3, 1, 1])
    """

    def __init__(self, module: nn.Module, shapes: Sequence[Sequence[int] | None], mode: str = "bilinear") -> None:
        super().__init__()
        self.module = module
        self.sizes = tuple(None if s is None or len(s) < 3 else tuple(int(d) for d in s[2:]) for s in shapes)
        self.mode = mode

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, mode={self.mode!r}"

    def forward(self, *inputs: Any) -> Any:
        resized = []
        for k, x in enumerate(inputs):
            size = self.sizes[k] if k < len(self.sizes) else None
            if size is not None and isinstance(x, torch.Tensor) and x.is_floating_point() \
                    and tuple(x.shape[2:]) != size and x.ndim == len(size) + 2:
                mode = self.mode if len(size) == 2 else {1: "linear", 3: "trilinear"}[len(size)]
                shrink = mode in ("bilinear", "bicubic") and any(n < o for n, o in zip(size, x.shape[2:]))
                x = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=shrink)
            resized.append(x)
        return self.module(*resized)


_MODULE_GETATTR = nn.Module.__getattr__


def submodule(root: nn.Module, target: str) -> nn.Module:
    """``root.get_submodule(target)``, read from the modules' child dicts where ``getattr`` would read it there.

    ``get_submodule`` walks the path with ``hasattr`` and ``getattr``, each falling
    through ``nn.Module.__getattr__``; the passes look modules up by name per node,
    many times.  Anything unusual on the way (an attribute of the same name on the
    class or the instance, a parameter or buffer of that name, a class with its own
    ``__getattr__``, a missing child) takes ``get_submodule`` itself, errors included.

    Example:
        >>> model = nn.Sequential(nn.Sequential(nn.Linear(2, 2)))
        >>> submodule(model, "0.0") is model.get_submodule("0.0")
        True
    """
    if not target:
        return root
    mod = root
    for item in target.split("."):
        child = mod._modules.get(item)
        if child is None or type(mod).__getattr__ is not _MODULE_GETATTR or item in mod.__dict__ \
                or hasattr(type(mod), item) or item in mod._parameters or item in mod._buffers:
            return root.get_submodule(target)
        mod = child
    return mod


def _owner(root: nn.Module, qualname: str) -> tuple[nn.Module, str]:
    path, _, name = qualname.rpartition(".")
    return (submodule(root, path) if path else root), name


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


def check_traced(value: Any, expected: Any, what: str) -> None:
    """The guard a graph captured from example values calls: ``value`` must be what it was at capture.

    ``frontend="fx"`` resolves a Python branch on a size (``if x.size(1) != n:``), a size used as a
    Python int, or an input's rank, dtype or ``None``-ness from the example inputs; each such freeze
    is a call of this function in the graph, so a call at inputs where it would go another way fails
    loudly instead of running the other inputs down the traced branch.  A ``bool`` ``expected`` checks
    the truth of ``value``.

    Example:
        >>> check_traced(8, 8, "x.size(1)")
        >>> check_traced(5, 8, "x.size(1) at model.py:3")
        Traceback (most recent call last):
        ...
        fxprune.errors.GuardError: x.size(1) at model.py:3 was 8 at capture and is 5 here: ...
    """
    if isinstance(value, torch.fx.Proxy):  # the emitted module traced again: the guard stays a call
        value.tracer.create_proxy("call_function", check_traced, (value, expected, what), {})
        return
    if value is expected:
        return
    if isinstance(expected, bool):
        if bool(value) == expected:
            return
    elif expected is not None and value is not None and type(value) is not torch.Tensor and value == expected:
        return
    raise GuardError(f"{what} was {expected!r} at capture and is {value!r} here: the module was captured "
                     "(frontend='fx') with this value frozen; analyse it with inputs of this kind, or use "
                     "frontend='export'")


try:  # dead-code elimination must keep the guards (they have no users)
    from torch.fx.node import has_side_effect as _has_side_effect
    _has_side_effect(check_traced)
except ImportError:  # pragma: no cover - other torch versions
    pass
