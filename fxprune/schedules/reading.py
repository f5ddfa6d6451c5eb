"""AIAP's two readings: the methods reference's loop (``spec``) and the released code's (``code``).

:func:`~fxprune.schedules.adaptive` follows ``methods.md`` section 3 by
default (``faithful_to="spec"``).  ``faithful_to="code"`` follows the authors'
released code where it differs:

========================  =====================================  ======================================
                          ``spec`` (default)                     ``code``
========================  =====================================  ======================================
round 1                   prunes at ``T = 0``                    prunes at ``T = lambda0``
first good checkpoint     round 1, if it meets the target        the unpruned model (round 0, ``T = 0``)
a 3-reset pop empties     stops (``no good checkpoint``)         goes on from the popped checkpoint;
the good stack                                                   stops at the next failure
groups ranked             every group                            convolutions only (``rank_families``)
========================  =====================================  ======================================

In both, ``T`` is split among the ranked groups by their share (``share``),
the shares summing to 1 over those groups.

Example:
    >>> AdaptiveReading("code").initial_state(0.5)
    {'T': 0.5, 'step': 0.5, 'resets': 0, 'good': [[0, 0.0, 0.5]]}
    >>> AdaptiveReading.SPEC.default_families, AdaptiveReading.CODE.default_families
    (None, ('conv',))
"""
from __future__ import annotations

import enum
from typing import Any, Mapping

from ..analysis.analysis import Analysis
from ..rewrite.implant import family_groups

__all__ = ["AdaptiveReading", "ranked_shares"]


class AdaptiveReading(str, enum.Enum):
    """Which AIAP loop :func:`~fxprune.schedules.adaptive` runs (see the module docstring)."""

    SPEC = "spec"
    CODE = "code"

    def __str__(self) -> str:
        return self.value

    @property
    def default_families(self) -> tuple[str, ...] | None:
        """The rule families ranked when ``rank_families`` is ``None`` (``None``: every group)."""
        return ("conv",) if self is AdaptiveReading.CODE else None

    @property
    def stops_when_popped_empty(self) -> bool:
        """Whether a third reset that pops the last good checkpoint stops the run."""
        return self is AdaptiveReading.SPEC

    def initial_state(self, lambda0: float | None) -> dict[str, Any]:
        """``T``, ``step``, ``resets`` and the good stack before round 1.

        ``code``: the released code starts from the unpruned model as a good
        checkpoint produced by ``T = 0`` and prunes round 1 at ``T = lambda0``.
        """
        if self is AdaptiveReading.CODE and lambda0 is not None:
            return {"T": float(lambda0), "step": float(lambda0), "resets": 0, "good": [[0, 0.0, float(lambda0)]]}
        return {"T": 0.0, "step": None if lambda0 is None else float(lambda0), "resets": 0, "good": []}


def ranked_shares(analysis: Analysis, shares: Mapping[int, float],
                  families: tuple[str, ...] | None) -> dict[int, float]:
    """``shares`` restricted to the groups of ``families`` (``None``: all) and renormalised to sum to 1."""
    if families is None:
        return dict(shares)
    keep = set(family_groups(analysis, families))
    total = sum(s for gid, s in shares.items() if gid in keep)
    if total <= 0:
        return {gid: 1.0 / len(keep) for gid in shares if gid in keep} if keep else {}
    return {gid: s / total for gid, s in shares.items() if gid in keep}
