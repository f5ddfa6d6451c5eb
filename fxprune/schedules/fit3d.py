"""The accuracy model of 3D pruning, in numpy: fit, cross-validate, sample, maximise under a budget.

``F(d, w, r) = sum over i, j, k in 0..K of lambda_ijk * d**i * w**j * r**k``
(``methods.md`` section 5).  The coefficient tensor ``Lambda`` (``(K+1)**3``
numbers) is either

* **low rank** (``rank=R``): a free constant plus a rank-``R`` CP tensor,
  ``lambda_ijk = c * [i=j=k=0] + sum_q a_q[i] * b_q[j] * c_q[k]``, fitted by
  alternating ridge least squares (given two factors, ``F`` is linear in the
  third and in ``c``), from several seeded starts; or
* **full** (``rank=None``): ridge least squares on all ``(K+1)**3`` monomials.

:func:`select_fit` picks ``K`` and ``R`` (and the full tensor where the
samples suffice) by k-fold cross-validation, with the one-standard-error
rule: the simplest model whose cross-validated error is within one standard
error of the best.  :func:`design_points` is a deterministic space-filling
sample of the box (a maximin Latin hypercube plus its corners), and
:func:`maximise` the argmax of a fit over candidate configurations whose MACs
meet a budget.

Example:
    >>> import numpy as np
    >>> from fxprune.schedules.fit3d import design_points, fit_polynomial, maximise, select_fit
    >>> truth = lambda p: 90 - 30 * (1 - p[:, 1]) ** 2 - 10 * (1 - p[:, 0]) * (1 - p[:, 2])
    >>> pts = design_points(40, (0.0, 0.2, 0.5), (1.0, 1.0, 1.0), seed=1)
    >>> fit = fit_polynomial(pts, truth(pts), degree=2, rank=2)
    >>> bool(np.abs(fit.predict(pts) - truth(pts)).max() < 0.05)
    True
    >>> noisy = truth(pts) + np.random.default_rng(0).normal(0, 0.05, len(pts))
    >>> chosen = select_fit(pts, noisy, degrees=(1, 2, 3), ranks=(1, 2))
    >>> chosen.fit.degree
    2
    >>> grid = np.array([[1.0, 0.5, 1.0], [0.5, 0.7, 1.0], [1.0, 1.0, 1.0]])
    >>> maximise(fit, grid, macs=np.array([50, 50, 100]), budget=60)  # (1, 1, 1) is over budget
    1
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError

__all__ = ["FitScore", "FitSelection", "PolyFit", "design_points", "fit_polynomial", "maximise", "select_fit"]


def _powers(x: np.ndarray, degree: int) -> np.ndarray:
    """``[1, x, x**2, ..., x**degree]`` per sample: shape ``(n, degree + 1)``."""
    return np.asarray(x, dtype=np.float64)[:, None] ** np.arange(degree + 1)


def _num_parameters(degree: int, rank: int | None) -> int:
    k1 = degree + 1
    return k1 ** 3 if rank is None else 1 + rank * (3 * k1 - 2)


def _points(points: Any) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3 or not np.isfinite(p).all():
        raise ConfigError(f"points must be finite (d, w, r) rows: an array of shape (n, 3), got shape {p.shape}")
    return p


@dataclass(frozen=True, eq=False)
class PolyFit:
    """A fitted ``F(d, w, r)``.

    Attributes:
        degree: ``K``, the largest power of each variable.
        rank: the CP rank of the fitted tensor (besides the constant), or ``None`` for the full tensor.
        coefficients: ``Lambda``, shape ``(K+1, K+1, K+1)``: ``coefficients[i, j, k]`` multiplies
            ``d**i * w**j * r**k``.
    """

    degree: int
    rank: int | None
    coefficients: np.ndarray

    def __post_init__(self) -> None:
        c = np.array(self.coefficients, dtype=np.float64)
        if c.shape != (self.degree + 1,) * 3:
            raise ConfigError(f"coefficients must have shape {(self.degree + 1,) * 3}, got {c.shape}")
        c.setflags(write=False)
        object.__setattr__(self, "coefficients", c)

    @property
    def num_parameters(self) -> int:
        """Free parameters: ``(K+1)**3`` (full) or ``1 + R * (3 * (K + 1) - 2)`` (CP, up to scaling)."""
        return _num_parameters(self.degree, self.rank)

    def predict(self, points: Any) -> np.ndarray:
        """``F`` at each ``(d, w, r)`` row of ``points``."""
        p = _points(points)
        k = self.degree
        return np.einsum("ni,nj,nk,ijk->n", _powers(p[:, 0], k), _powers(p[:, 1], k), _powers(p[:, 2], k),
                         self.coefficients)

    def __call__(self, d: float, w: float, r: float) -> float:
        return float(self.predict([[d, w, r]])[0])

    def describe(self) -> str:
        form = "full tensor" if self.rank is None else f"rank {self.rank}"
        return f"degree {self.degree}, {form} ({self.num_parameters} parameters)"

    def to_json(self) -> dict[str, Any]:
        return {"degree": self.degree, "rank": self.rank, "coefficients": self.coefficients.ravel().tolist()}

    @classmethod
    def from_json(cls, data: Any) -> "PolyFit":
        k1 = int(data["degree"]) + 1
        return cls(int(data["degree"]), data["rank"], np.asarray(data["coefficients"]).reshape(k1, k1, k1))


def _ridge(z: np.ndarray, y: np.ndarray, lam: float, free: int = 0) -> np.ndarray:
    """Ridge least squares; the first ``free`` columns are not penalised."""
    a = z.T @ z
    a.flat[free * (z.shape[1] + 1)::z.shape[1] + 1] += lam     # the diagonal, past the free columns
    try:
        return np.linalg.solve(a, z.T @ y)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(a, z.T @ y, rcond=None)[0]


def _cp(v: list[np.ndarray], y: np.ndarray, rank: int, lam: float, rng: np.random.Generator, iterations: int,
        tol: float) -> tuple[list[np.ndarray], float, float]:
    """Alternating ridge least squares for ``y ~ c + sum_q prod_m (v[m] @ f[m][:, q])``; one start.

    Returns the factors, the constant ``c`` (refitted, unpenalised, with every factor) and the loss.
    """
    n, k1 = v[0].shape
    f = [rng.normal(0.0, 1.0, size=(k1, rank)) for _ in range(3)]
    z = np.ones((n, 1 + k1 * rank))              # column 0: the constant; the rest rewritten per factor
    previous = loss = np.inf
    const = 0.0
    for _ in range(iterations):
        for m in range(3):
            a, b = (v[o] @ f[o] for o in range(3) if o != m)
            z[:, 1:] = (v[m][:, :, None] * (a * b)[:, None, :]).reshape(n, k1 * rank)
            x = _ridge(z, y, lam, free=1)
            const, f[m] = float(x[0]), x[1:].reshape(k1, rank)
        norms = np.stack([np.linalg.norm(x, axis=0) for x in f])  # balance the factors' scales
        scale = np.where(norms.prod(0) > 0, np.cbrt(norms.prod(0)), 1.0)
        f = [x * np.where(nm > 0, scale / np.where(nm > 0, nm, 1.0), 1.0) for x, nm in zip(f, norms)]
        pred = const + np.prod([v[o] @ f[o] for o in range(3)], axis=0).sum(1)
        loss = float(np.mean((pred - y) ** 2) + lam / n * sum(float((x ** 2).sum()) for x in f))
        if np.isfinite(previous) and abs(previous - loss) <= tol * max(1.0, previous):
            break
        previous = loss
    return f, const, loss


def _expansion(centre: float, half: float, degree: int) -> np.ndarray:
    """``E[l, i]``: the coefficient of ``x**l`` in ``((x - centre) / half)**i``."""
    e = np.zeros((degree + 1, degree + 1))
    for i in range(degree + 1):
        for l in range(i + 1):
            e[l, i] = math.comb(i, l) * (-centre) ** (i - l) / half ** i
    return e


def fit_polynomial(points: Any, values: Any, degree: int, rank: int | None = None, *, ridge: float = 1e-4,
                   restarts: int = 3, iterations: int = 200, tol: float = 1e-8, seed: int = 0) -> PolyFit:
    """Fit ``F`` of degree ``degree`` to ``values`` at ``points`` (rows ``(d, w, r)``).

    Args:
        rank: CP rank of the tensor besides the constant (``None``: the full tensor).
        ridge: ridge weight per sample, on the standardised values, with each
            variable scaled to [-1, 1] over the samples (the returned
            coefficients are expanded back to ``d, w, r``).
        restarts, iterations, tol, seed: alternating least squares: seeded starts (the best
            training loss wins), sweeps per start and the relative-improvement stop.
    """
    p = _points(points)
    y = np.asarray(values, dtype=np.float64).ravel()
    if len(y) != len(p) or not np.isfinite(y).all():
        raise ConfigError(f"values must be {len(p)} finite numbers, got {len(y)}")
    if not (isinstance(degree, int) and degree >= 0) or rank is not None and not (isinstance(rank, int) and rank >= 1):
        raise ConfigError(f"degree must be an integer >= 0 and rank None or >= 1, got {degree!r}, {rank!r}")
    mean, std = float(y.mean()), float(y.std())
    std = std if std > 0 else 1.0
    ys = (y - mean) / std
    # fit in coordinates scaled to [-1, 1] over the samples (well conditioned), then expand to d, w, r
    lo, hi = p.min(0), p.max(0)
    half = np.where(hi > lo, (hi - lo) / 2.0, 1.0)
    centre = (hi + lo) / 2.0
    v = [_powers((p[:, m] - centre[m]) / half[m], degree) for m in range(3)]
    lam = ridge * len(y)
    k1 = degree + 1
    if rank is None:
        z = np.einsum("ni,nj,nk->nijk", *v).reshape(len(y), -1)
        tensor = _ridge(z, ys, lam).reshape(k1, k1, k1)
    else:
        rng = np.random.default_rng(seed)
        factors, const, _ = min((_cp(v, ys, rank, lam, rng, iterations, tol) for _ in range(max(1, restarts))),
                                key=lambda fcl: fcl[2])
        tensor = np.einsum("iq,jq,kq->ijk", *factors)
        tensor[0, 0, 0] += const
    tensor = tensor * std
    tensor[0, 0, 0] += mean
    m = [_expansion(centre[a], half[a], degree) for a in range(3)]
    tensor = np.einsum("li,mj,nk,ijk->lmn", m[0], m[1], m[2], tensor)
    return PolyFit(degree, rank, tensor)


@dataclass(frozen=True)
class FitScore:
    """One candidate's cross-validation: mean and standard error of the held-out squared error."""

    degree: int
    rank: int | None
    num_parameters: int
    cv_mse: float
    cv_se: float


@dataclass(frozen=True, eq=False)
class FitSelection:
    """What :func:`select_fit` returns: the chosen fit (refitted on all samples) and every candidate's score."""

    fit: PolyFit
    scores: tuple[FitScore, ...]
    folds: int
    chosen: FitScore | None = None
    samples: int = 0

    def table(self) -> str:
        """Every candidate's held-out mean squared error and its standard error (the one-SE rule compares
        these), and the root of the mean; ``*`` marks the chosen one."""
        rows = [f"{'degree':>6} {'rank':>5} {'params':>6} {'cv mse':>10} {'se':>10} {'cv rmse':>8}"]
        for s in self.scores:
            mark = " *" if s is self.chosen else ""
            rows.append(f"{s.degree:>6} {'full' if s.rank is None else s.rank:>5} {s.num_parameters:>6} "
                        f"{s.cv_mse:>10.4g} {s.cv_se:>10.4g} {np.sqrt(s.cv_mse):>8.4g}{mark}")
        return "\n".join(rows)

    def to_json(self) -> dict[str, Any]:
        return {"fit": self.fit.to_json(), "folds": self.folds, "samples": self.samples,
                "cv": [[s.degree, s.rank, s.num_parameters, s.cv_mse, s.cv_se] for s in self.scores]}


def _candidates(degrees: Sequence[int], ranks: Sequence[int], full: bool, train_size: int) -> list[tuple[int, int | None]]:
    out: list[tuple[int, int | None]] = [(k, r) for k in degrees for r in ranks]
    if full:
        out += [(k, None) for k in degrees if (k + 1) ** 3 <= train_size]
    return out


def select_fit(points: Any, values: Any, degrees: Sequence[int] = (1, 2, 3), ranks: Sequence[int] = (1, 2, 3), *,
               full: bool = True, folds: int = 5, ridge: float = 1e-4, seed: int = 0,
               one_standard_error: bool = True) -> FitSelection:
    """Choose degree and rank by k-fold cross-validation, then refit on all samples.

    Candidates: every ``(K, R)`` of ``degrees x ranks`` and, with ``full``, the
    full tensor of each degree whose ``(K+1)**3`` coefficients the smallest
    training fold can determine.  Folds are a seeded permutation.  With
    ``one_standard_error`` the simplest candidate (fewest parameters) whose
    mean held-out squared error is within one standard error of the best is
    chosen, else the best.  Fewer than 4 samples: the simplest candidate.
    """
    p = _points(points)
    y = np.asarray(values, dtype=np.float64).ravel()
    n = len(y)
    if not degrees or not ranks and not full:
        raise ConfigError("select_fit needs at least one degree and one rank (or full=True)")
    k = min(int(folds), n)
    order = np.random.default_rng(seed).permutation(n)
    parts = [order[i::k] for i in range(k)] if k >= 2 else []
    train_size = n - max((len(q) for q in parts), default=0) if parts else n
    cands = _candidates(degrees, ranks, full, train_size)
    simplest = lambda c: (_num_parameters(*c), c[0], c[1] or 0)  # noqa: E731
    if n < 4 or not parts:
        best = min(cands, key=simplest)
        return FitSelection(fit_polynomial(p, y, best[0], best[1], ridge=ridge, seed=seed), (), 0, None, n)
    scores = []
    for deg, rank in cands:
        errs = []
        for q in parts:
            train = np.setdiff1d(order, q)
            fit = fit_polynomial(p[train], y[train], deg, rank, ridge=ridge, seed=seed)
            errs.extend((fit.predict(p[q]) - y[q]) ** 2)
        errs_a = np.asarray(errs)
        scores.append(FitScore(deg, rank, _num_parameters(deg, rank), float(errs_a.mean()),
                               float(errs_a.std(ddof=1) / np.sqrt(len(errs_a))) if len(errs_a) > 1 else 0.0))
    best = min(scores, key=lambda s: s.cv_mse)
    limit = best.cv_mse + (best.cv_se if one_standard_error else 0.0)
    chosen = min((s for s in scores if s.cv_mse <= limit), key=lambda s: simplest((s.degree, s.rank)))
    fit = fit_polynomial(p, y, chosen.degree, chosen.rank, ridge=ridge, seed=seed)
    return FitSelection(fit, tuple(scores), k, chosen, n)


def design_points(count: int, lower: Sequence[float], upper: Sequence[float], *, corners: bool = True,
                  seed: int = 0, tries: int = 32) -> np.ndarray:
    """A deterministic space-filling sample of the box ``[lower, upper]`` (rows ``(d, w, r)``).

    ``count`` points of a Latin hypercube (one point in each of ``count`` strata
    per axis, at the stratum centres), the most spread of ``tries`` seeded
    permutations (largest minimum distance in unit coordinates, corners
    included); then, with ``corners``, the box's corners except ``upper`` (the
    unpruned model is measured anyway).  Duplicate rows (a degenerate axis) are dropped.
    """
    lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    if lo.shape != (3,) or hi.shape != (3,) or (lo > hi).any():
        raise ConfigError(f"the box must be 3 lower bounds <= 3 upper bounds, got {lower!r}, {upper!r}")
    cube = np.array([c for c in itertools.product((0.0, 1.0), repeat=3) if c != (1.0, 1.0, 1.0)]) if corners \
        else np.zeros((0, 3))
    rng = np.random.default_rng(seed)
    best, best_score = np.zeros((0, 3)), -np.inf
    for _ in range(max(1, tries) if count > 0 else 0):
        u = np.stack([(rng.permutation(count) + 0.5) / count for _ in range(3)], axis=1)
        every = np.vstack([u, cube, np.ones((1, 3))])
        dist = np.sqrt(((every[:, None, :] - every[None, :, :]) ** 2).sum(-1))
        score = dist[np.triu_indices(len(every), 1)].min() if len(every) > 1 else 0.0
        if score > best_score:
            best, best_score = u, score
    pts = lo + np.vstack([cube, best]) * (hi - lo)
    _, first = np.unique(np.round(pts, 12), axis=0, return_index=True)
    keep = [i for i in sorted(first) if not np.allclose(pts[i], hi)]
    return pts[keep]


def maximise(fit: PolyFit, points: Any, macs: Any, budget: float) -> int:
    """The index of the row of ``points`` with the largest ``fit`` among those with ``macs <= budget``.

    Ties go to the first such row.

    Raises:
        ConfigError: no row meets the budget.
    """
    p = _points(points)
    m = np.asarray(macs, dtype=np.float64)
    feasible = np.nonzero(m <= budget)[0]
    if not len(feasible):
        raise ConfigError(f"no configuration meets the MACs budget {budget:,.0f} (the smallest has "
                          f"{m.min():,.0f}); lower the box's minima or raise the budget")
    values = fit.predict(p[feasible])
    return int(feasible[int(np.argmax(values))])

