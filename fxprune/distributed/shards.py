"""Where each rank's piece of a sharded tensor lies, and the process-group plumbing the package shares.

FSDP2 (:func:`torch.distributed.fsdp.fully_shard`) replaces every parameter by
a ``DTensor`` sharded on one dimension (``Shard(0)`` by default) over a 1-D
device mesh: rank ``r`` holds rows ``[r * c, min((r + 1) * c, n))`` with
``c = ceil(n / world)`` (``torch.chunk``'s split; trailing ranks may hold
none).  :class:`Layout` describes that split from the global shape alone, so
every rank knows what every other rank holds without a collective;
:func:`local_part` reads a tensor's local piece and checks it against the
layout.  A plain tensor (a buffer, a parameter FSDP ignores) is *replicated*:
every rank holds all of it.

Only 1-D meshes spanning the whole process group are handled (FSDP2's
default); a 2-D (HSDP) mesh, a ``Partial`` placement or a strided shard raises
:class:`~fxprune.errors.ConfigError`.

Example:
    >>> Layout(shape=(5, 3), dim=0, world=2).range(0), Layout(shape=(5, 3), dim=0, world=2).range(1)
    ((0, 3), (3, 5))
    >>> Layout(shape=(1, 4), dim=0, world=2).range(1)    # a trailing rank may hold nothing
    (1, 1)
    >>> Layout(shape=(4,), dim=None, world=2).local_shape(1)
    (4,)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch

from ..errors import ConfigError

__all__ = ["Layout", "local_part", "named_tensors", "require_process_group", "synced", "world_and_rank"]


@dataclass(frozen=True)
class Layout:
    """How a tensor of global ``shape`` is split over ``world`` ranks along ``dim`` (``None``: replicated)."""

    shape: tuple[int, ...]
    dim: int | None
    world: int

    def range(self, rank: int) -> tuple[int, int]:
        """``[start, stop)`` of ``rank``'s indices along :attr:`dim` (the whole dim when replicated)."""
        if self.dim is None:
            return 0, self.shape[0] if self.shape else 1
        n = self.shape[self.dim]
        chunk = -(-n // self.world) if n else 0
        return min(rank * chunk, n), min((rank + 1) * chunk, n)

    def local_shape(self, rank: int) -> tuple[int, ...]:
        """The shape of ``rank``'s piece."""
        if self.dim is None:
            return self.shape
        start, stop = self.range(rank)
        return self.shape[:self.dim] + (stop - start,) + self.shape[self.dim + 1:]

    def contributes(self, rank: int) -> bool:
        """Whether ``rank`` adds its piece to a sum over ranks (a replicated tensor counts once: rank 0)."""
        return self.dim is not None or rank == 0


def world_and_rank() -> tuple[int, int]:
    """``(world size, rank)`` of the default process group; ``(1, 0)`` when none is initialised."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def require_process_group(what: str) -> tuple[int, int]:
    """``(world size, rank)``; raises :class:`ConfigError` when no process group is initialised."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        raise ConfigError(f"{what} runs on every rank of an initialised process group: call "
                          "torch.distributed.init_process_group first (torchrun sets up the environment), "
                          "or use fxprune.prune on one process")
    return dist.get_world_size(), dist.get_rank()


def local_part(t: torch.Tensor) -> tuple[torch.Tensor, Layout]:
    """This rank's piece of ``t`` (a ``DTensor`` or a plain, replicated tensor) and its :class:`Layout`.

    Raises:
        ConfigError: a placement this package does not handle (2-D mesh,
            ``Partial``, a mesh smaller than the process group) or a local
            piece whose shape is not the one the layout predicts.
    """
    from torch.distributed.tensor import DTensor, Replicate, Shard

    shape = tuple(int(s) for s in t.shape)
    if not isinstance(t, DTensor):
        return t, Layout(shape, None, world_and_rank()[0])
    mesh = t.device_mesh
    if mesh.ndim != 1:
        raise ConfigError(f"a DTensor on a {mesh.ndim}-D device mesh ({tuple(mesh.shape)}): fxprune.distributed "
                          "handles FSDP2 on a 1-D mesh (fully_shard(..., mesh=init_device_mesh(device, (world,))))")
    world, _ = world_and_rank()
    if mesh.size() != world:
        raise ConfigError(f"a DTensor on a mesh of {mesh.size()} ranks in a process group of {world}: "
                          "fxprune.distributed needs the mesh to span every rank")
    placement = t.placements[0]
    if type(placement) is Shard:
        layout = Layout(shape, placement.dim % max(len(shape), 1), world)
    elif isinstance(placement, Replicate):
        layout = Layout(shape, None, world)
    else:
        raise ConfigError(f"a DTensor placed as {placement}: fxprune.distributed handles Shard(dim) and "
                          "Replicate() placements")
    local = t.to_local()
    want = layout.local_shape(mesh.get_local_rank())
    if tuple(local.shape) != want:
        raise ConfigError(f"a DTensor of shape {shape} placed as {placement} holds a local piece of shape "
                          f"{tuple(local.shape)} on this rank, not the torch.chunk split {want}")
    return local, layout


def named_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``module`` by qualified name, tied ones under each of their names."""
    return {**dict(module.named_parameters(remove_duplicate=False)),
            **dict(module.named_buffers(remove_duplicate=False))}


def synced(items: Iterable[Any], what: str) -> Iterator[Any]:
    """Yield ``items`` while every rank still has one; every rank stops together.

    Collective forwards (FSDP2 all-gathers parameters in every forward) hang
    when one rank runs a batch the others do not, so before each item the
    ranks agree that all of them have one.  When some do and some do not,
    every rank raises the same :class:`ConfigError` (no rank hangs).
    """
    dist = torch.distributed
    if world_and_rank()[0] == 1:
        yield from items
        return
    it = iter(items)
    count = 0
    while True:
        try:
            item, has = next(it), 1.0
        except StopIteration:
            item, has = None, 0.0
        flags = torch.tensor([has, -has], dtype=torch.float64)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        most, least = flags[0].item(), -flags[1].item()
        if most == 0:
            return
        if least == 0:
            raise ConfigError(f"{what}: the ranks have different numbers of calibration batches (some ran out "
                              f"after {count}); every forward under FSDP2 is collective, so give every rank "
                              "the same number of batches (num_batches= caps them)")
        count += 1
        yield item
