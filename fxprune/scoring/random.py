"""Random scorer: a control that ranks channels uniformly at random.

Group ``g`` gets ``numpy.random.default_rng((seed, g.id)).random(g.size)``:
deterministic given ``seed``, and a group's scores do not depend on the other
groups.  No data is needed.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> from fxprune.scoring import ScoreContext
    >>> from fxprune.scoring.random import RandomScorer
    >>> a = fxprune.analyze(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), (torch.randn(1, 3),))
    >>> s1, s2 = RandomScorer(seed=1)(a, ScoreContext()), RandomScorer(seed=1)(a, ScoreContext())
    >>> bool((s1[0] == s2[0]).all()), s1[0].shape
    (True, (4,))
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..analysis.analysis import Analysis
from ..errors import ConfigError
from .base import ScoreContext

__all__ = ["RandomScorer"]


@dataclass(frozen=True)
class RandomScorer:
    """Uniform random scores in ``[0, 1)``, deterministic given ``seed``."""

    seed: int = 0

    name = "random"

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative int, got {self.seed!r}")

    def __call__(self, analysis: Analysis, ctx: ScoreContext) -> dict[int, np.ndarray]:
        return {g.id: np.random.default_rng((self.seed, g.id)).random(g.size) for g in analysis.groups}
