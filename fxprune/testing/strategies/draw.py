"""The public strategies: :func:`input_specs`, :func:`arch_specs` and :func:`architectures`.

A spec is an input followed by a chain of blocks drawn with
:func:`~.core.draw_chain` from the enabled records of the family table.
"""

from __future__ import annotations

from hypothesis import strategies as st

from .arch import Arch, ArchSpec, InputSpec
from .core import (INPUT_KINDS, MAX_DRAWN_CHANNELS, MAX_INPUT_SPATIAL, MAX_TOKENS, Ctx, Draw,
                   Family, Shape, draw_chain)
from .table import FAMILIES, FAMILY_BY_NAME, FAMILY_TABLE

__all__ = ["input_specs", "arch_specs", "architectures"]


def _probe(kind: str) -> Shape:
    """A small shape of layout ``kind`` to compare the families' minimum costs on."""
    return Shape(kind, 2, (2, 2) if kind == "image" else (2,))


def _check_families(families: frozenset[str] | None, max_nodes: int) -> frozenset[str]:
    if families is None:
        families = frozenset(FAMILIES)
    families = frozenset(families)
    unknown = families - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)}; known: {FAMILIES}")
    if not families:
        raise ValueError("families must not be empty")
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be >= 1, got {max_nodes}")
    cheapest = min(FAMILY_BY_NAME[f].cost(_probe(k))
                   for f in families for k in FAMILY_BY_NAME[f].inputs)
    if cheapest > max_nodes:
        raise ValueError(f"max_nodes={max_nodes} is too small for families "
                         f"{sorted(families)} (the cheapest block needs {cheapest} ops)")
    return families


def _startable_kinds(enabled: tuple[Family, ...], max_nodes: int) -> list[str]:
    return [kind for kind in INPUT_KINDS
            if any(kind in f.inputs and f.cost(_probe(kind)) <= max_nodes for f in enabled)]


@st.composite
def input_specs(draw: Draw, families: frozenset[str] | None = None,
                max_nodes: int = 40) -> InputSpec:
    """Draw an :class:`InputSpec` from which some block of ``families`` can start."""
    ctx = Ctx(FAMILY_TABLE, _check_families(families, max_nodes))
    enabled = ctx.enabled()
    kind = draw(st.sampled_from(_startable_kinds(enabled, max_nodes)))

    def startable(c: int) -> bool:
        probe = Shape(kind, c, (MAX_INPUT_SPATIAL,) * (2 if kind == "image" else 1))
        return any(f.applicable(probe, ctx) and f.cost(probe) <= max_nodes for f in enabled)

    channels = draw(st.integers(1 if startable(1) else 2, MAX_DRAWN_CHANNELS))
    if kind == "image":
        size: tuple[int, ...] = (draw(st.integers(1, MAX_INPUT_SPATIAL)),
                                 draw(st.integers(1, MAX_INPUT_SPATIAL)))
    else:
        size = (draw(st.integers(1, MAX_TOKENS if kind == "sequence" else MAX_INPUT_SPATIAL)),)
    return InputSpec(kind, channels, size)


@st.composite
def _arch_specs(draw: Draw, max_nodes: int, families: frozenset[str],
                seed_weights: bool) -> ArchSpec:
    inp = draw(input_specs(families, max_nodes))
    ctx = Ctx(FAMILY_TABLE, families)
    blocks, _, _ = draw_chain(draw, inp.shape, ctx, ctx.enabled(), max_nodes,
                              min_len=1, max_len=max_nodes)
    seed = draw(st.integers(0, 2**31 - 1)) if seed_weights else 0
    return ArchSpec(inp, blocks, seed)


def arch_specs(max_nodes: int = 40, families: frozenset[str] | None = None,
               seed_weights: bool = True) -> st.SearchStrategy[ArchSpec]:
    """Strategy for :class:`ArchSpec` values (cheap: nothing is built).

    Arguments and errors as for :func:`architectures`; build a drawn spec
    with :meth:`ArchSpec.build`, :meth:`ArchSpec.materialize` or
    :meth:`Arch.from_spec`.
    """
    return _arch_specs(max_nodes, _check_families(families, max_nodes), seed_weights)


def architectures(max_nodes: int = 40, families: frozenset[str] | None = None,
                  seed_weights: bool = True) -> st.SearchStrategy[Arch]:
    """Strategy for random, valid, runnable, fx-traceable models.

    Args:
        max_nodes: upper bound on the number of ops, i.e. on the
            ``call_module``/``call_function``/``call_method`` nodes of the
            traced graph (``arch.spec.num_ops <= max_nodes``).
        families: subset of :data:`FAMILIES` the top-level blocks are drawn
            from (``None``: all).  Composite families bring their own inner
            ops: residual bodies and concat/split branches always may use
            conv (or linear), norm and activation layers, and residual bodies
            may also nest the other enabled composite families.
        seed_weights: draw the weight/input seed with hypothesis (shrinks
            towards 0); if ``False`` the seed is always 0, so examples differ
            only in architecture.

    Returns:
        A strategy for :class:`Arch` (``spec``, ``model`` in eval mode,
        ``example_inputs`` with batch size 2, ``source``); ``repr`` of a
        drawn value is its standalone source code.

    Raises:
        ValueError: for unknown family names, an empty family set, or a
            ``max_nodes`` too small for every requested family.
    """
    return arch_specs(max_nodes=max_nodes, families=families,
                      seed_weights=seed_weights).map(Arch.from_spec)
