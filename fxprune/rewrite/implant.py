"""Neural Implant (HAP): replace some output channels' weights by a cheap component.

HAP splits channels in three bands by score: kept (original weights), *implanted*
(the channel is still produced, by a cheaper component) and pruned.  This module
computes the bands (:func:`split_bands`) and emits the implanted band: every
producer layer of an implanted channel is replaced by its rule's implant
(``Rule.implant`` in the registry: :class:`~fxprune.modules.ImplantedConv2d`
for a dense ``Conv2d``, :class:`~fxprune.modules.ImplantedLinear` for an
``nn.Linear``), which computes

* the kept rows with the original weights (only those rows are stored), and
* the implanted rows with one of the :class:`~fxprune.modules.ImplantKind`\\ s:

  - ``pointwise``: a 1x1 convolution from the layer's input channels reading
    the centre tap of every output position's window, initialised to zero
    (the authors' released code; convolutions only),
  - ``lowrank``: a rank-``r`` factorisation of the removed rows, initialised
    from their truncated SVD (exactly the original layer at full rank;
    convolutions and linear layers),
  - ``dwpw``: a depthwise k x k convolution followed by a 1x1 one, initialised
    per input channel from an SVD (convolutions only),

and writes both into the original channel positions, so nothing downstream
changes.  Implant modules have rules of their own (family ``implant``), so an
implanted model can be analysed and pruned again.

**Which layers.**  The authors' code ranks and implants ``Conv2d`` layers only
when implanting.  ``families`` names the rule families (``Rule.family``: ``conv``,
``linear``) whose groups enter the band; the default :data:`DEFAULT_FAMILIES`
is ``("conv",)``.  :func:`family_groups` gives those groups, for a selection
that ranks them alone, as the authors' code does.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> from fxprune.rewrite.implant import apply_with_implants
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()
    >>> x = torch.randn(1, 3, 6, 6)
    >>> a = fxprune.analyze(model, (x,))
    >>> gm = apply_with_implants(a, remove={0: [0, 1]}, implant={0: [2, 3, 4]}, kind="lowrank", rank=3)
    >>> type(gm.get_submodule("0")).__name__, gm.get_submodule("0").out_channels
    ('ImplantedConv2d', 6)
"""
from __future__ import annotations

from typing import Any, Collection, Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx

from ..analysis.analysis import Analysis
from ..analysis.groups import Group, Member
from ..errors import ConfigError, PlanError
from ..modules import IMPLANT_KINDS, ImplantedConv2d, ImplantedLinear, ImplantKind, set_attr
from ..ops.registry import Rule
from .channels import apply_plan, kept_indices

__all__ = ["DEFAULT_FAMILIES", "IMPLANT_KINDS", "ImplantKind", "ImplantedConv2d", "ImplantedLinear",
           "apply_with_implants", "family_groups", "implantable", "split_bands"]

#: rule families whose groups enter the band by default: the authors' code ranks and implants Conv2d only
DEFAULT_FAMILIES: tuple[str, ...] = ("conv",)


def _rules(analysis: Analysis, group: Group) -> list[tuple[Member, Rule | None, str | None]]:
    """``(member, rule of its node, module path if the node calls a module)`` for every producer."""
    gm = analysis.graph_module
    nodes = {n.name: n for n in gm.graph.nodes}
    out = []
    for m in group.producers():
        node = nodes.get(m.node)
        rule = None if node is None else analysis.registry.lookup(node, gm)
        out.append((m, rule, str(node.target) if node is not None and node.op == "call_module" else None))
    return out


def _kinds(rule: Rule) -> tuple[ImplantKind, ...]:
    """The implant kinds a rule's capability builds (its builder's ``kinds``; all if it does not say)."""
    return tuple(getattr(rule.implant.build, "kinds", IMPLANT_KINDS))


def _families(families: Collection[str] | str | None) -> frozenset[str] | None:
    if families is None:
        return None
    families = (families,) if isinstance(families, str) else tuple(families)
    if not all(isinstance(f, str) for f in families):
        raise ConfigError(f"families must be rule family names such as 'conv' or 'linear', got {families!r}")
    return frozenset(families)


def family_groups(analysis: Analysis, families: Collection[str] | str | None = DEFAULT_FAMILIES) -> list[int]:
    """Ids of the groups whose producers all come from rules of ``families`` (``None``: every group).

    With ``("conv",)`` these are the groups HAP's released code ranks when it
    implants (it leaves linear layers alone).

    Example:
        >>> import torch, torch.nn as nn, fxprune
        >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 5), nn.ReLU(),
        ...                   nn.Linear(5, 2))
        >>> a = fxprune.analyze(m, (torch.randn(1, 1, 4, 4),))
        >>> family_groups(a, ("conv",)), family_groups(a, ("conv", "linear"))
        ([0], [0, 1])
    """
    wanted = _families(families)
    out = []
    for g in analysis.groups:
        rules = _rules(analysis, g)
        if wanted is None or (rules and all(r is not None and r.family in wanted for _, r, _ in rules)):
            out.append(g.id)
    return out


def _can_implant(analysis: Analysis, member: Member, rule: Rule | None, target: str | None,
                 kind: ImplantKind | None) -> bool:
    """Whether ``rule`` can implant the module ``target`` applying ``member`` (with ``kind``, if given)."""
    if rule is None or rule.implant is None or target is None or member.dim != 0:
        return False
    if member.param != f"{target}.weight" or not rule.implant.accepts(analysis.graph_module.get_submodule(target)):
        return False
    return kind is None or kind in _kinds(rule)


def implantable(analysis: Analysis, group: Group, kind: Any = None,
                families: Collection[str] | str | None = None) -> bool:
    """Whether every producer of ``group`` is the weight of a layer whose rule can implant it.

    ``kind``: also require that implant kind (``None``: any); ``families``:
    also require the producers' rule families (``None``: any).
    """
    kind = None if kind is None else ImplantKind.of(kind)
    wanted = _families(families)
    rules = _rules(analysis, group)
    return bool(rules) and all(_can_implant(analysis, m, r, t, kind) and (wanted is None or r.family in wanted)
                               for m, r, t in rules)


def split_bands(analysis: Analysis, scores: Mapping[int, np.ndarray], below: Mapping[int, Sequence[int]],
                implant_ratio: float, *, kind: Any = None,
                families: Collection[str] | str | None = DEFAULT_FAMILIES,
                ) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """HAP's bands: of the channels ``below`` the prune threshold in groups of ``families``
    (see :func:`family_groups`), the highest-scoring ``implant_ratio`` of them are implanted
    (globally, among the groups that can take an implant of ``kind``), the rest pruned.

    Channels ``below`` in other groups are pruned and do not count in the band.
    Returns ``(remove, implant)`` plans.

    Example:
        >>> import numpy as np, torch, torch.nn as nn, fxprune
        >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 5), nn.ReLU(),
        ...                   nn.Linear(5, 2))
        >>> a = fxprune.analyze(m, (torch.randn(1, 1, 4, 4),))
        >>> scores = {0: np.arange(4.0), 1: np.arange(5.0)}
        >>> split_bands(a, scores, {0: [0, 1], 1: [0, 1]}, 0.5)                   # conv groups only
        ({0: [0], 1: [0, 1]}, {0: [1]})
        >>> split_bands(a, scores, {0: [0, 1], 1: [0, 1]}, 0.5, kind="lowrank", families=("conv", "linear"))
        ({0: [0], 1: [0]}, {0: [1], 1: [1]})
    """
    if isinstance(implant_ratio, bool) or not (isinstance(implant_ratio, (int, float))
                                               and 0.0 <= implant_ratio <= 1.0):
        raise ConfigError(f"implant_ratio must be in [0, 1], got {implant_ratio!r}")
    by_id = {g.id: g for g in analysis.groups}
    unknown = [gid for gid in below if gid not in by_id]
    if unknown:
        raise PlanError(f"the plan names unknown groups {unknown[:5]}")
    banded = set(family_groups(analysis, families))
    entries = sorted((float(scores[gid][c]), gid, c) for gid, chans in below.items() if gid in banded
                     for c in chans)
    n_implant = int(round(implant_ratio * len(entries)))
    ok = {gid: implantable(analysis, by_id[gid], kind) for gid in banded & set(below)}
    implant: dict[int, list[int]] = {}
    for _, gid, c in reversed(entries):
        if n_implant <= 0:
            break
        if ok[gid]:
            implant.setdefault(gid, []).append(c)
            n_implant -= 1
    remove = {gid: sorted(set(chans) - set(implant.get(gid, ()))) for gid, chans in below.items()}
    remove = {gid: chans for gid, chans in remove.items() if chans}
    return remove, {gid: sorted(implant[gid]) for gid in sorted(implant)}


def apply_with_implants(analysis: Analysis, remove: Mapping[int, Sequence[int]],
                        implant: Mapping[int, Sequence[int]], *, kind: Any = ImplantKind.POINTWISE,
                        rank: int | None = None) -> fx.GraphModule:
    """Prune ``remove`` and implant ``implant`` (both ``{group id: group channels}``).

    Every producer of an implanted group channel is replaced by its rule's
    implant of ``kind`` (``Rule.implant``); channels whose producers cannot
    take one, or a layer left without any original channel, raise
    :class:`~fxprune.errors.PlanError`.  ``rank``: ``lowrank``'s rank
    (``None``: full, exact), ``dwpw``'s depthwise multiplier (``None``: 1).
    """
    kind = ImplantKind.of(kind)
    by_id = {g.id: g for g in analysis.groups}
    for gid, chans in implant.items():
        if gid not in by_id:
            raise PlanError(f"implant plan names unknown group {gid}")
        overlap = set(chans) & set(remove.get(gid, ()))
        if overlap:
            raise PlanError(f"group {gid}: channels {sorted(overlap)[:5]} are both removed and implanted")
        for m, rule, target in _rules(analysis, by_id[gid]):
            if not _can_implant(analysis, m, rule, target, kind):
                offers = (f"takes implant kinds {[k.value for k in _kinds(rule)]}"
                          if _can_implant(analysis, m, rule, target, None) else "cannot take an implant")
                raise PlanError(f"group {gid}: producer {m.param} ({rule.family if rule else 'no rule'}) "
                                f"{offers}, not {kind.value!r}")
        if not by_id[gid].producers():
            raise PlanError(f"group {gid} has no producer layer to implant")
    gm = apply_plan(analysis, remove)
    kept = kept_indices(analysis, remove)
    per_module: dict[str, tuple[Rule, set[int]]] = {}
    for gid, chans in implant.items():
        for m, rule, target in _rules(analysis, by_id[gid]):
            original = m.indices(chans)
            survivors = kept[m.param][0]
            pos = original if survivors is None else np.searchsorted(survivors, original)
            per_module.setdefault(target, (rule, set()))[1].update(int(p) for p in pos)
    for target, (rule, positions) in per_module.items():
        layer = gm.get_submodule(target)
        n_out = layer.weight.shape[0]
        if len(positions) >= n_out:
            raise PlanError(f"{target}: every output channel would be implanted; keep or prune at least one")
        imp = torch.as_tensor(sorted(positions), dtype=torch.long)
        keep = torch.as_tensor([p for p in range(n_out) if p not in positions], dtype=torch.long)
        set_attr(gm, target, rule.implant.build(layer, keep, imp, kind, rank))
    gm.recompile()
    return gm
