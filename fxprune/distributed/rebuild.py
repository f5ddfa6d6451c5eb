"""The pruned model, sharded again: built on the meta device, sharded with FSDP2, filled unit by unit.

:func:`rebuild` takes the pruned ``GraphModule`` emitted on the meta device
(``apply_plan`` on the meta twin's analysis: the pruned architecture without
a byte of weights), shards it with FSDP2 (:func:`shard_graph_module`, or your
own ``shard_fn``), and then, one FSDP unit at a time, allocates the unit's
local shards and fills them from the source shards
(:func:`fxprune.distributed.redistribute.fill`: slicing plus one
all-to-all, never a gather).  With ``release_source=True`` each source
parameter's storage is freed as soon as its pruned version is filled, so a
rank holds about its share of one model at any time.

**Which modules are FSDP units.**  In the pruned ``GraphModule`` the graph
calls the *leaf* modules (``Linear``, ``Conv2d``, ``Embedding``...) directly;
the blocks that held them (a decoder layer) are plain containers whose
``forward`` never runs, so an FSDP2 unit on a block would never all-gather.
:func:`shard_graph_module` therefore makes every module the graph calls
exactly once, and whose parameters are read only through that call, its own
unit; every other parameter (read with ``get_attr``, like a traced-through
RMSNorm's weight, or shared between modules) belongs to the root unit, which
FSDP2 all-gathers at the start of each forward.  (``fully_shard([a, b, ...])``
would group a block's leaves into one unit; on torch 2.13 that grouping gave
wrong outputs on a pruned Llama, so it is not used.)

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> with torch.device("meta"):
    ...     twin = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> a = fxprune.analyze(twin, (torch.randn(1, 4),))
    >>> fsdp_units(fxprune.apply(a, {0: [0, 1]}))        # the modules that become their own FSDP2 units
    ('0', '2')
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.fx as fx

from ..errors import ConfigError
from ..modules import get_attr, set_attr
from .memory import note_freed
from .redistribute import fill, take

__all__ = ["ShardFn", "fsdp_units", "rebuild", "shard_graph_module"]

#: ``shard_fn(graph_module, mesh)``: apply ``fully_shard`` to the pruned GraphModule (its root last)
ShardFn = Callable[[fx.GraphModule, Any], None]


def fsdp_units(gm: fx.GraphModule) -> tuple[str, ...]:
    """The modules :func:`shard_graph_module` makes FSDP2 units, in graph order (the root is one more)."""
    calls = Counter(str(n.target) for n in gm.graph.nodes if n.op == "call_module")
    read = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    names: dict[int, set[str]] = {}
    for name, p in gm.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), set()).add(name)
    units: list[str] = []
    for path in calls:
        own = [(f"{path}.{n}", p) for n, p in gm.get_submodule(path).named_parameters(remove_duplicate=False)]
        if calls[path] != 1 or not own:
            continue
        inside = all(q.startswith(path + ".") for _, p in own for q in names[id(p)])
        if inside and not any(q in read for q, _ in own):
            units.append(path)
    return tuple(units)


def shard_graph_module(gm: fx.GraphModule, mesh: Any, **fsdp_kwargs: Any) -> None:
    """Apply FSDP2 to a pruned GraphModule: each of :func:`fsdp_units` a unit, then the root (module docstring).

    ``fsdp_kwargs`` go to every ``fully_shard`` call (``reshard_after_forward``,
    ``mp_policy``...).
    """
    from torch.distributed.fsdp import fully_shard

    for path in fsdp_units(gm):
        fully_shard(gm.get_submodule(path), mesh=mesh, **fsdp_kwargs)
    fully_shard(gm, mesh=mesh, **fsdp_kwargs)


def _unit_of(path: str, units: Sequence[str]) -> str:
    """The innermost unit holding module ``path`` (``""``: the root)."""
    best = ""
    for u in units:
        if (path == u or path.startswith(u + ".")) and len(u) > len(best):
            best = u
    return best


def _units(gm: fx.GraphModule) -> list[str]:
    """Module paths that are FSDP2 units (``fully_shard`` was applied), innermost first, the root last."""
    from torch.distributed.fsdp import FSDPModule

    found = [path for path, m in gm.named_modules() if isinstance(m, FSDPModule)]
    if "" not in found:
        raise ConfigError("shard_fn must apply fully_shard to the pruned GraphModule itself (the root), after "
                          "its submodules")
    return sorted(found, key=lambda p: (p == "", -p.count("."), p))


def _materialize(gm: fx.GraphModule, unit: str, units: Sequence[str], device: torch.device) -> None:
    """Allocate the local shards (and buffers) of one unit's modules; FSDP2 re-registers its shards."""
    for path, m in gm.named_modules():
        if path != unit and _unit_of(path, units) == unit:
            m.to_empty(device=device, recurse=False)
    gm.get_submodule(unit).to_empty(device=device, recurse=False)  # FSDPModule._apply resets its unit's shards


def _release(t: torch.Tensor) -> None:
    """Free the local storage of a source parameter (its model is consumed)."""
    storage = getattr(t, "_local_tensor", t).untyped_storage()
    n, ptr = storage.nbytes(), storage.data_ptr()
    if n:
        storage.resize_(0)
        note_freed(n, ptr)


def _tensors(gm: fx.GraphModule, params: bool = True) -> dict[str, torch.Tensor]:
    """The pruned model's parameters (if ``params``), buffers and tensor attributes read by ``get_attr``."""
    out = dict(gm.named_parameters(remove_duplicate=False)) if params else {}
    out.update(gm.named_buffers(remove_duplicate=False))
    for n in gm.graph.nodes:
        if n.op == "get_attr" and str(n.target) not in out:
            t = get_attr(gm, str(n.target))
            if isinstance(t, torch.Tensor) and not isinstance(t, torch.nn.Parameter):
                out[str(n.target)] = t
    return out


def rebuild(gm: fx.GraphModule, sources: Mapping[str, torch.Tensor], kept: Mapping[str, tuple],
            mesh: Any, *, shard_fn: ShardFn | None = None, release_source: bool = False) -> tuple[str, ...]:
    """Shard the meta ``gm`` (in place) and fill it from ``sources``; returns the FSDP2 units (root last, ``""``).

    Args:
        gm: the pruned GraphModule on the meta device.
        sources: the sharded source model's parameters and buffers by name.
        kept: :func:`fxprune.rewrite.kept_indices` of the plan.
        mesh: the 1-D device mesh of the source's shards.
        shard_fn: ``shard_fn(gm, mesh)`` applies ``fully_shard`` (default
            :func:`shard_graph_module`).
        release_source: free each source parameter's storage once its
            pruned version is filled (the source model is unusable afterwards).

    Raises:
        ConfigError: a pruned tensor with no source of the same name (and no
            value of its own), or a ``shard_fn`` that leaves the root unsharded.
    """
    constants = {name: t for name, t in _tensors(gm).items() if t.device.type != "meta"}  # from the trace, pruned
    missing = sorted(n for n in _tensors(gm) if n not in sources and n not in constants)
    if missing:
        raise ConfigError(f"the sharded model has no tensors named {missing[:5]}, which the pruned model (from the "
                          "meta twin) needs: give the sharded model and its meta twin the same structure")
    (shard_fn or shard_graph_module)(gm, mesh)
    units = _units(gm)
    device = torch.device(mesh.device_type, torch.cuda.current_device()) if mesh.device_type == "cuda" \
        else torch.device(mesh.device_type)
    pending = Counter(id(sources[n]) for n, _ in gm.named_parameters(remove_duplicate=False) if n not in constants)
    done: set[int] = set()
    with torch.no_grad():
        for unit in units:
            _materialize(gm, unit, units, device)
            for name, param in gm.named_parameters(remove_duplicate=False):
                if _unit_of(name.rpartition(".")[0], units) != unit:
                    continue
                if name in constants:
                    fill(param, constants[name], ())
                    continue
                src = sources[name]
                if id(param) not in done:
                    fill(param, src, kept.get(name, ()))
                    done.add(id(param))
                pending[id(src)] -= 1
                if release_source and pending[id(src)] == 0:
                    _release(src)
        for name, t in _tensors(gm, params=False).items():
            value = constants[name] if name in constants else take(sources[name], kept.get(name, ()))
            if t.device.type == "meta" or t.shape != value.shape:
                set_attr(gm, name, value.to(device))
            else:
                t.copy_(value)
    return tuple(units)
