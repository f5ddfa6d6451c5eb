"""3D pruning (ICML 2021): depth x width x resolution chosen by a fitted accuracy model under a MACs budget.

The schedule (``methods.md`` section 5, ``docs/methods/three_d.md``):

1. **sample**: for each point ``(d, w, r)`` of a deterministic space-filling
   design over ``[depth_min, 1] x [width_min, 1] x [resolution_min, 1]``
   (a maximin Latin hypercube of ``samples`` points plus the box's corners),
   prune the *original* model to it (:class:`~fxprune.plan3d.Space3D`: the
   lowest-scoring residual blocks removed, a uniform channel ratio, the input
   size scaled), fine-tune briefly (``sample_finetunes`` calls of your
   ``finetune``) and evaluate; each sample is one round, checkpointed and
   resumable.  The unpruned model (round 0) is the sample ``(1, 1, 1)``;
2. **fit** ``F(d, w, r) = sum lambda_ijk d^i w^j r^k`` to the samples
   (:mod:`fxprune.schedules.fit3d`: a low-rank or full coefficient tensor,
   degree and rank chosen by cross-validation);
3. **maximise** ``F`` over a dense grid of realisable configurations whose
   exact MACs (from the op rules, :meth:`~fxprune.plan3d.Space3D.macs`) are at
   most ``macs_target`` times the original's, refined by bisection on ``w``
   at the budget boundary of every ``(d, r)``;
4. **prune** the original model to the maximiser and fine-tune longer
   (``final_finetunes`` calls): the last round, the result.

``evaluate`` and ``finetune`` receive a round's model behind
:class:`~fxprune.modules.ResizeInputs` when its input size changed, so they
feed the original images; ``history.graph_module`` is the pruned module itself
(it expects ``history.best.metrics["input_size"]``); :func:`wrapped` puts the
resize in front of it.

Example (a fake ``evaluate``: accuracy grows with width and depth):
    >>> import torch
    >>> from fxprune.schedules import three_d
    >>> from fxprune.testing import zoo
    >>> model, inputs = zoo.resnet_basic()
    >>> def evaluate(m):
    ...     gm = getattr(m, "module", m)
    ...     return 50.0 + sum(p.numel() for p in gm.parameters()) / 1e4
    >>> history = three_d(model, inputs, evaluate=evaluate, samples=4, corners=False, degrees=(1,), ranks=(1,),
    ...                   widths=6, resolutions=3, progress=False)
    >>> [r.metrics["phase"] for r in history.rounds[1:]], history.stop_reason
    (['sample', 'sample', 'sample', 'sample', 'final'], 'done')
    >>> best = history.best.metrics
    >>> best["macs"] <= best["macs_budget"] == 0.5 * history.rounds[0].metrics["macs"]
    True
    >>> wrapped(history)(torch.randn(1, 3, 32, 32)).shape      # fed the original size
    torch.Size([1, 10])
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.fx as fx

from ..analysis.analysis import Analysis
from ..analysis.blocks import ProjectionPolicy
from ..analysis.resolution import input_shapes
from ..errors import ConfigError
from ..modules import ResizeInputs
from ..plan3d import Point3D, Space3D, accuracy_drop_scores
from ..progress import Progress
from ..rewrite.record import RewriteRecord
from ..scoring.blocks import branch_norm_scores
from .config import ScheduleConfig, is_int, is_number, require
from .engine import Decision, Plan, Policy, _call_finetune
from .fit3d import FitSelection, design_points, maximise, select_fit
from .history import History
from .one_shot import STOP_DONE

__all__ = ["BlockScoring", "Phase", "ThreeD", "ThreeDConfig", "candidates", "three_d", "wrapped"]


class BlockScoring(str, enum.Enum):
    """How residual blocks are ranked for removal (once, on the original model)."""

    #: branch output norm relative to the skip on the calibration data (:func:`~fxprune.scoring.blocks.branch_norm_scores`)
    BRANCH_NORM = "branch_norm"
    #: your metric's drop when each block alone is removed (:func:`~fxprune.plan3d.accuracy_drop_scores`)
    ACCURACY_DROP = "accuracy_drop"


class Phase(str, enum.Enum):
    """What a 3D round is: a sample of the accuracy model, or the final prune."""

    SAMPLE = "sample"
    FINAL = "final"


def _fraction(value: Any, low_open: bool) -> bool:
    return is_number(value) and (value > 0 if low_open else value >= 0) and value <= 1


@dataclass(frozen=True, kw_only=True)
class ThreeDConfig(ScheduleConfig):
    """Settings of :func:`three_d` (validated on construction; shared fields: :class:`ScheduleConfig`).

    Attributes:
        macs_target: ``T``: the result's MACs are at most ``T`` times the original's, in (0, 1].
        samples: points of the Latin-hypercube design (>= 0).
        corners: also sample the box's 7 corners other than ``(1, 1, 1)``.
        depth_min, width_min, resolution_min: the box's lower corner (fractions of
            removable blocks kept, channel multiplier, input-size multiplier); keep it where
            accuracy varies smoothly: a polynomial cannot model a collapse (``docs/methods/three_d.md``).
        degrees, ranks: the fit's candidate degrees ``K`` and CP ranks ``R``.
        full_tensor: also try the full ``(K+1)**3`` tensor where the samples suffice.
        folds: cross-validation folds; ridge: the fit's ridge weight.
        widths: width grid points in ``[width_min, 1]`` for the maximisation (>= 2).
        resolutions: at most this many input sizes in ``[resolution_min, 1]`` (>= 1).
        sample_finetunes: calls of ``finetune`` after each sample prune (>= 0).
        final_finetunes: calls of ``finetune`` after the final prune (>= 0).
        block_scoring: :class:`BlockScoring` of the blocks.
        projection: whether projection blocks may be removed (:class:`~fxprune.analysis.blocks.ProjectionPolicy`).
        round_to: kept channel counts are rounded up to a multiple of this.
        seed: seed of the design and of the fit's cross-validation folds and starts.
    """

    macs_target: float = 0.5
    samples: int = 16
    corners: bool = True
    depth_min: float = 0.5
    width_min: float = 0.5
    resolution_min: float = 0.5
    degrees: tuple[int, ...] = (1, 2, 3)
    ranks: tuple[int, ...] = (1, 2, 3)
    full_tensor: bool = True
    folds: int = 5
    ridge: float = 1e-4
    widths: int = 76
    resolutions: int = 16
    sample_finetunes: int = 1
    final_finetunes: int = 4
    block_scoring: BlockScoring = BlockScoring.BRANCH_NORM
    projection: ProjectionPolicy = ProjectionPolicy.KEEP
    round_to: int = 1
    seed: int = 0

    def validate(self) -> None:
        require(_fraction(self.macs_target, True), "macs_target", "a number in (0, 1]", self.macs_target)
        for name in ("depth_min", "resolution_min"):
            require(_fraction(getattr(self, name), name == "resolution_min"), name, "a number in [0, 1]"
                    if name == "depth_min" else "a number in (0, 1]", getattr(self, name))
        require(_fraction(self.width_min, True), "width_min", "a number in (0, 1]", self.width_min)
        for name, low in (("samples", 0), ("folds", 2), ("widths", 2), ("resolutions", 1),
                          ("sample_finetunes", 0), ("final_finetunes", 0), ("round_to", 1), ("seed", 0)):
            require(is_int(getattr(self, name), low), name, f"an integer >= {low}", getattr(self, name))
        for name in ("degrees", "ranks"):
            value = tuple(getattr(self, name)) if isinstance(getattr(self, name), (list, tuple)) else None
            require(bool(value) and all(is_int(v, 1) for v in value), name, "a non-empty list of integers >= 1",
                    getattr(self, name))
            object.__setattr__(self, name, value)
        require(isinstance(self.corners, bool) and isinstance(self.full_tensor, bool), "corners and full_tensor",
                "True or False", (self.corners, self.full_tensor))
        require(is_number(self.ridge) and self.ridge >= 0, "ridge", "a number >= 0", self.ridge)
        require(not self.uniform, "uniform", "False for three_d (one width multiplier for every group)", self.uniform)
        for name, kind in (("block_scoring", BlockScoring), ("projection", ProjectionPolicy)):
            try:
                object.__setattr__(self, name, kind(getattr(self, name)))
            except ValueError:
                raise ConfigError(f"{name} must be one of {[k.value for k in kind]}, "
                                  f"got {getattr(self, name)!r}") from None

    def design(self) -> np.ndarray:
        """The sample design: rows ``(d, w, r)`` (before snapping to realisable configurations)."""
        return design_points(self.samples, (self.depth_min, self.width_min, self.resolution_min), (1.0, 1.0, 1.0),
                             corners=self.corners, seed=self.seed)

    @property
    def budget(self) -> int:
        """Rounds at most: one per design point, plus the final prune."""
        return len(self.design()) + 1


def candidates(space: Space3D, config: ThreeDConfig, budget: float, *,
               progress: bool = False) -> tuple[list[Point3D], np.ndarray]:
    """The configurations the maximisation chooses from, with their exact MACs.

    Every realisable depth and input size of the box times ``config.widths``
    widths in ``[width_min, 1]``; for every ``(d, r)`` whose boundary
    ``MACs = budget`` falls between two grid widths, the largest width within
    the budget is added, found by bisection (to 1e-3 of the grid step).
    """
    depths = space.depths(config.depth_min)
    sizes = space.resolutions(config.resolution_min, config.resolutions)
    widths = np.linspace(config.width_min, 1.0, config.widths)
    points: list[Point3D] = []
    macs: list[int] = []
    with Progress("three_d: MACs of the grid", len(sizes), enabled=progress, unit="size") as bar:
        for r in sizes:
            for d in depths:
                row = [space.point(d, float(w), r) for w in widths]
                costs = [space.macs(p) for p in row]
                points += row
                macs += costs
                ok = [i for i, c in enumerate(costs) if c <= budget]
                if ok and ok[-1] + 1 < len(widths):
                    lo, hi = float(widths[ok[-1]]), float(widths[ok[-1] + 1])
                    while hi - lo > 1e-3 * (widths[1] - widths[0]):
                        mid = (lo + hi) / 2
                        lo, hi = (mid, hi) if space.macs(space.point(d, mid, r)) <= budget else (lo, mid)
                    if lo > widths[ok[-1]]:
                        points.append(space.point(d, lo, r))
                        macs.append(space.macs(points[-1]))
            bar.update(1)
    return points, np.asarray(macs, dtype=np.float64)


class ThreeD(Policy):
    """Sample (d, w, r) configurations, fit the accuracy model, prune to its maximiser under the MACs budget."""

    name = "three_d"
    config_class = ThreeDConfig
    budget_stop = STOP_DONE
    uses_scores = False
    config: ThreeDConfig

    def __init__(self, config: ScheduleConfig, runtime: Any) -> None:
        self._space: Space3D | None = None
        self._pending: dict[str, Any] = {}
        super().__init__(config, runtime)

    def check(self) -> None:
        if self.runtime.evaluate is None:
            raise ConfigError("three_d needs evaluate(model) -> accuracy: the samples are its measurements")
        if self.runtime.rewind_state is not None:
            raise ConfigError("three_d does not support rewind_state (its rounds change depth and input size)")

    def initial_state(self) -> dict[str, Any]:
        return {"next": 0, "samples": [], "block_scores": None}

    # -- the space --------------------------------------------------------------
    def space(self, analysis: Analysis, state: Mapping[str, Any]) -> Space3D:
        """The :class:`~fxprune.plan3d.Space3D` of the original model (built once per run or resume)."""
        if self._space is None:
            cfg, rt = self.config, self.runtime
            scores = state.get("block_scores")
            if scores is not None:
                scores = {int(k): float(v) for k, v in scores.items()}
            elif cfg.block_scoring is BlockScoring.ACCURACY_DROP:
                scores = accuracy_drop_scores(analysis, rt.evaluate, projection=cfg.projection)
            else:
                scores = branch_norm_scores(analysis, rt.data if rt.data is not None else [analysis.example_inputs],
                                            num_batches=cfg.num_batches)
            self._space = Space3D(analysis, block_scores=scores, projection=cfg.projection, scorer=cfg.scorer,
                                  scorer_params=cfg.scorer_params, round_to=cfg.round_to, data=rt.data,
                                  loss_fn=rt.loss_fn, num_batches=cfg.num_batches)
        return self._space

    # -- a round ------------------------------------------------------------------
    def plan(self, analysis: Analysis, scores: Mapping[int, Any], state: Mapping[str, Any]) -> Plan:
        space = self.space(analysis, state)
        design = self.config.design()
        done = {tuple(s[:3]) for s in state["samples"]}
        index = int(state["next"])
        while index < len(design):
            point = space.point(*design[index])
            if point.dwr not in done:
                self._pending = {"phase": Phase.SAMPLE, "index": index, "point": point}
                return {}
            index += 1
        self._pending = {"phase": Phase.FINAL, "index": index, **self._choose(space, state)}
        return {}

    def _choose(self, space: Space3D, state: Mapping[str, Any]) -> dict[str, Any]:
        cfg = self.config
        samples = np.asarray(state["samples"], dtype=np.float64)
        selection: FitSelection = select_fit(samples[:, :3], samples[:, 3], cfg.degrees, cfg.ranks,
                                             full=cfg.full_tensor, folds=cfg.folds, ridge=cfg.ridge, seed=cfg.seed)
        budget = cfg.macs_target * space.macs_original
        points, macs = candidates(space, cfg, budget, progress=self.runtime.progress)
        best = maximise(selection.fit, np.array([p.dwr for p in points]), macs, budget)
        return {"point": points[best], "selection": selection, "macs_predicted": int(macs[best]),
                "macs_budget": budget, "candidates": len(points)}

    def rewrite(self, analysis: Analysis, scores: Mapping[int, Any],
                plan: Plan) -> tuple[fx.GraphModule, RewriteRecord | Plan, dict[str, Any]]:
        pending = self._pending
        point: Point3D = pending["point"]
        space = self.space(analysis, {})
        record = space.record(point)
        metrics: dict[str, Any] = {"phase": pending["phase"].value, "depth": point.depth, "width": point.width,
                                   "resolution": point.resolution, "input_size": list(point.size),
                                   "blocks_removed": list(point.blocks)}
        if pending["phase"] is Phase.FINAL:
            selection: FitSelection = pending["selection"]
            metrics.update(macs_budget=pending["macs_budget"], macs_predicted=pending["macs_predicted"],
                           predicted_accuracy=selection.fit(*point.dwr), candidates=pending["candidates"],
                           fit=selection.to_json(), fit_degree=selection.fit.degree, fit_rank=selection.fit.rank)
        return record.emit(analysis, resized=space.analysis_at(point.size)), record, metrics

    def view(self, gm: fx.GraphModule) -> torch.nn.Module:
        """The round's model behind a resize to its input size (the model itself at the original size)."""
        space, point = self._space, self._pending.get("point")
        if space is None or point is None or point.size == space.spatial:
            return gm
        return ResizeInputs(gm, input_shapes(space.analysis_at(point.size).example_inputs))

    def finetune(self, gm: fx.GraphModule, number: int, state: Mapping[str, Any]) -> fx.GraphModule:
        final = self._pending["phase"] is Phase.FINAL
        for _ in range(self.config.final_finetunes if final else self.config.sample_finetunes):
            view = self.view(gm)
            out = _call_finetune(self.runtime.finetune, view)
            gm = out.module if isinstance(out, ResizeInputs) else out
        return gm

    def decide(self, number: int, metrics: Mapping[str, Any], state: Mapping[str, Any],
               history: History) -> Decision:
        space = self._space
        assert space is not None
        scores = {str(k): v for k, v in space.block_scores.items()}
        samples = list(state["samples"]) or [[1.0, 1.0, 1.0, history.baseline]]
        if self._pending["phase"] is Phase.FINAL:
            return Decision(current=0, best_round=number, stop=STOP_DONE,
                            state={"next": self._pending["index"], "samples": samples, "block_scores": scores})
        samples.append([metrics["depth"], metrics["width"], metrics["resolution"], metrics["accuracy"]])
        return Decision(current=0, best_round=0, state={"next": self._pending["index"] + 1, "samples": samples,
                                                        "block_scores": scores})


def three_d(model: torch.nn.Module, example_inputs: Sequence[Any], config: ThreeDConfig | None = None,
            **kwargs: Any) -> History:
    """3D pruning: sample, fit ``F(d, w, r)``, maximise it under the MACs budget, prune and fine-tune.

    ``kwargs`` are the runtime arguments (:class:`~fxprune.schedules.engine.Runtime`:
    ``evaluate`` (required), ``finetune``, ``data`` (calibration batches at the
    original size, for block and channel scores), ``loss_fn``,
    ``checkpoint_dir``, ``progress``, ``registry``; not ``rewind_state``) and
    settings, the fields of :class:`ThreeDConfig` (``macs_target``,
    ``samples``, ``width_min`` ...) applied over ``config``.

    Returns:
        The :class:`~fxprune.schedules.History`: round 0 the original, one round
        per sample (``phase == "sample"``), then the final prune (``phase ==
        "final"``), the result; every round's metrics hold its ``depth``,
        ``width``, ``resolution``, ``input_size`` and ``blocks_removed``, the
        final one also the fit (``fit``, ``fit_degree``, ``fit_rank``), the
        ``predicted_accuracy``, ``macs_budget`` and ``macs_predicted``.
    """
    return ThreeD.run(model, example_inputs, config, **kwargs)


three_d.__signature__ = ThreeD.signature()  # type: ignore[attr-defined]


def wrapped(history: History, mode: str = "bilinear") -> torch.nn.Module:
    """A 3D run's result behind a resize of its inputs to the size it was pruned for.

    The :class:`~fxprune.modules.ResizeInputs` takes inputs of the original size
    (every floating input of 3+ dims); without a size change, the model itself.
    """
    best = history.best
    if best is None:
        raise ConfigError("the history has no result yet")
    size = tuple(best.metrics.get("input_size") or ())
    gm = best.graph_module
    if not size:
        return gm
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    return ResizeInputs(gm, [(1, 1, *size)] * len(inputs), mode=mode)
