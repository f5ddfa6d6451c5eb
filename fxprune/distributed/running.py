"""Running the meta twin's graph on a sharded model, one FSDP2 unit unsharded at a time.

The activation statistics of :func:`fxprune.prune` are read from the traced
graph, node by node.  On a sharded model the same graph runs here, against
the *sharded model's* modules and tensors (the graph of the meta twin names
them by path, and ``fully_shard`` keeps paths): before the first node that
reads a module or tensor of an FSDP2 unit, that unit is unsharded
(``FSDPModule.unshard``: an all-gather of that unit alone), and after the last
such node it is resharded.  The root unit (embeddings, final norm, head in a
decoder) stays unsharded for the whole run.  So a rank holds its shards, one
unit's full parameters and the root's, never the whole model, and every value
the graph computes is the one a single process computes: the statistics equal
``fxprune.prune``'s.

Buffers a forward writes (BatchNorm running statistics in train mode) are
restored afterwards (:func:`kept_buffers`), so scoring leaves the model as it
was.

Example (one process, no FSDP2: nothing to unshard):
    >>> import torch, torch.nn as nn, fxprune
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> a = fxprune.analyze(model, (torch.randn(1, 3),))
    >>> seen = {}
    >>> run_recording(model, a.graph_module, [(torch.randn(5, 3),)], {"_1"}, lambda n, v: seen.update({n: v.shape}))
    >>> seen
    {'_1': torch.Size([5, 4])}
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Collection, Iterable, Iterator, Sequence

import torch
import torch.fx as fx

from ..errors import ConfigError

__all__ = ["ShardedInterpreter", "kept_buffers", "run_recording", "unit_paths"]


def unit_paths(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The FSDP2 units of ``model`` by module path (``""``: the root), from ``fully_shard``."""
    from torch.distributed.fsdp import FSDPModule

    return {path: m for path, m in model.named_modules() if isinstance(m, FSDPModule)}


def _owner(target: str, units: Collection[str], module: bool) -> str | None:
    """The innermost unit (not the root) holding a module path or an attribute path."""
    path = target if module else target.rpartition(".")[0]
    best = None
    for u in units:
        if u and (path == u or path.startswith(u + ".")) and (best is None or len(u) > len(best)):
            best = u
    return best


class ShardedInterpreter(fx.Interpreter):
    """Runs ``graph`` (traced from a meta twin) against the sharded ``model``, unsharding unit by unit.

    Args:
        model: the FSDP2-sharded model (never modified).
        graph: the graph of the meta twin's analysis; its module and attribute
            paths are the model's.
        fallback: the analysed GraphModule, for tensor constants the trace
            created (they are not attributes of the model).
        nodes, callback: ``callback(node name, value)`` for each of ``nodes``.
    """

    def __init__(self, model: torch.nn.Module, graph: fx.Graph, fallback: fx.GraphModule,
                 nodes: Collection[str] = (), callback: Callable[[str, Any], None] | None = None) -> None:
        super().__init__(model, graph=graph)
        self._fallback = fallback
        self._names = frozenset(nodes)
        self._callback = callback
        self._units = unit_paths(model)
        order = list(graph.nodes)
        self._first: dict[str, list[fx.Node]] = {}
        self._last: dict[str, list[fx.Node]] = {}
        seen: dict[str, fx.Node] = {}
        for n in order:
            if n.op in ("call_module", "get_attr"):
                u = _owner(str(n.target), self._units, n.op == "call_module")
                if u is not None:
                    if u not in seen:
                        self._first.setdefault(n.name, []).append(u)
                    seen[u] = n
        for u, n in seen.items():
            self._last.setdefault(n.name, []).append(u)

    def fetch_attr(self, target: str) -> Any:
        try:
            return super().fetch_attr(target)
        except AttributeError:
            pass
        t: Any = self._fallback
        for part in target.split("."):
            t = getattr(t, part, None)
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            raise ConfigError(f"the graph reads '{target}', which the sharded model does not have (a constant the "
                              "trace of the meta twin created on the meta device); register it as a buffer of the "
                              "model")
        return t

    def run(self, *args: Any, **kwargs: Any) -> Any:
        root = self._units.get("")
        if root is not None:
            root.unshard()
        try:
            return super().run(*args, **kwargs)
        finally:
            for u, m in self._units.items():
                m.reshard()

    def run_node(self, n: fx.Node) -> Any:
        for u in self._first.get(n.name, ()):
            self._units[u].unshard()
        value = super().run_node(n)
        if n.name in self._names and self._callback is not None:
            self._callback(n.name, value)
        for u in self._last.get(n.name, ()):
            self._units[u].reshard()
        return value


def run_recording(model: torch.nn.Module, gm: fx.GraphModule, batches: Iterable[Sequence[Any]],
                  nodes: Collection[str], callback: Callable[[str, Any], None]) -> None:
    """Run ``gm``'s graph on ``model`` for each batch of positional inputs (no_grad, buffers restored)."""
    unknown = frozenset(nodes) - {n.name for n in gm.graph.nodes}
    if unknown:
        raise ConfigError(f"nodes not in the graph: {sorted(unknown)}")
    with kept_buffers(model), torch.no_grad():
        for inputs in batches:
            ShardedInterpreter(model, gm.graph, gm, nodes, callback).run(*inputs)


@contextlib.contextmanager
def kept_buffers(model: torch.nn.Module) -> Iterator[None]:
    """Restore every buffer of ``model`` (its values) on exit: forwards in train mode leave no trace."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)
