"""3D pruning's graph side: depth x width x resolution from three multipliers, in one plan.

``d`` is the fraction of removable residual blocks kept, ``w`` the channel
multiplier and ``r`` the input-resolution multiplier (MACs scale roughly like
``d * w**2 * r**2``).  :func:`prune_3d` turns them into one
:class:`~fxprune.rewrite.compose.Plan3D` and one call of
:func:`~fxprune.rewrite.compose.apply_3d`:

1. resolution: the model is analysed at ``r`` times its input size
   (:func:`~fxprune.analysis.resolution.at_resolution`: positional embeddings
   interpolated, baked sizes reported), calibration batches resized alike;
2. depth: the ``round((1 - d) * n)`` removable blocks with the lowest scores are
   removed (default score: the branch output norm relative to the skip,
   :func:`~fxprune.scoring.blocks.branch_norm_scores`; or
   :func:`accuracy_drop_scores`, or your own ``{block id: score}``);
3. width: every group loses ``floor((1 - w) * prunable)`` channels by the chosen
   scorer (``SelectionConfig(ratio=1 - w, round_to=...)``), chosen on the same
   analysis as the blocks.

The search over ``(d, w, r)`` (fitting accuracy, maximising it under a MAC
budget) is the ``three_d`` schedule (:mod:`fxprune.schedules.three_d`); this
module is what it calls: :class:`Space3D` maps multipliers to realisable
configurations (:class:`Point3D`), their plans (as a
:class:`~fxprune.rewrite.record.RewriteRecord`) and their exact MACs.

Example:
    >>> import torch, fxprune
    >>> from fxprune.testing import zoo
    >>> model, inputs = zoo.resnet_basic()
    >>> result = fxprune.prune_3d(model, inputs, depth=0.5, width=0.75, resolution=0.5)
    >>> result.input_shapes, len(result.removed_blocks)     # 3 of the 5 identity blocks
    (((1, 3, 16, 16),), 3)
    >>> result.graph_module(torch.randn(1, 3, 16, 16)).shape
    torch.Size([1, 10])
    >>> result.wrapped()(torch.randn(1, 3, 32, 32)).shape          # fed the original size
    torch.Size([1, 10])
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.fx as fx

from .analysis.analysis import Analysis, analyze
from .analysis.blocks import Block, ProjectionPolicy, blocks_of
from .analysis.cost import count_macs, plan_node_macs
from .analysis.resolution import Resolution, at_resolution, scale_inputs
from .errors import ConfigError
from .rewrite.blocks import remove_blocks
from .modules import ResizeInputs
from .rewrite.channels import plan_mask
from .rewrite.compose import Plan3D, Result3D, analysis_at_size, apply_3d
from .rewrite.record import RewriteRecord
from .scoring import ScoreContext, SelectionConfig, get_scorer, select_plan
from .scoring.blocks import branch_norm_scores
from .scoring.calibration import Batch, iter_batches

__all__ = ["Point3D", "Pruned3D", "Space3D", "accuracy_drop_scores", "choose_blocks", "plan_3d", "prune_3d",
           "resized_batches", "spatial_size", "width_plan"]


def _fraction(name: str, value: float, *, low_open: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        ((0.0 < value) if low_open else (0.0 <= value)) and value <= 1.0
    if not ok:
        raise ConfigError(f"{name} must be a number in {'(0, 1]' if low_open else '[0, 1]'}, got {value!r}")
    return float(value)


def choose_blocks(blocks: Sequence[Block], scores: Mapping[int, float], depth: float,
                  projection: ProjectionPolicy = ProjectionPolicy.KEEP) -> tuple[int, ...]:
    """The ids of the ``round((1 - depth) * n)`` lowest-scoring of the ``n`` removable blocks.

    Example:
        >>> from fxprune.analysis.blocks import Block
        >>> bs = [Block(i, f"add_{i}", "x", "y", "x", (), (), 0, 0) for i in range(4)]
        >>> choose_blocks(bs, {0: 3.0, 1: 0.5, 2: 2.0, 3: 0.1}, depth=0.5)
        (1, 3)
    """
    depth = _fraction("depth", depth, low_open=False)
    removable = [b.id for b in blocks if b.removable(projection)]
    missing = [i for i in removable if i not in scores]
    if missing:
        raise ConfigError(f"no score for blocks {missing[:5]}")
    n = int(math.floor((1.0 - depth) * len(removable) + 0.5))
    return tuple(sorted(sorted(removable, key=lambda i: (scores[i], i))[:n]))


def width_plan(analysis: Analysis, width: float, *, scorer: Any = "l1", scorer_params: Mapping[str, Any] | None = None,
               round_to: int = 1, context: ScoreContext | None = None,
               scores: Mapping[int, Any] | None = None) -> dict[int, list[int]]:
    """A uniform channel plan: each group keeps about ``width`` of its prunable channels.

    ``SelectionConfig(ratio=1 - width, round_to=round_to)`` through the scorer's
    scores (or the given ``scores`` of ``analysis``).
    """
    width = _fraction("width", width, low_open=True)
    if width == 1.0:
        return {}
    if scores is None:
        scores = get_scorer(scorer, **dict(scorer_params or {}))(analysis, context or ScoreContext())
    return select_plan(analysis, scores, SelectionConfig(ratio=1.0 - width, round_to=round_to))


def accuracy_drop_scores(analysis: Analysis, evaluate: Callable[[torch.nn.Module], float], *,
                         projection: ProjectionPolicy = ProjectionPolicy.KEEP) -> dict[int, float]:
    """``{block id: evaluate(original) - evaluate(original without the block)}`` for removable blocks.

    ``evaluate(module) -> float`` is the caller's metric (higher is better), e.g. accuracy on
    a held-out batch; a larger drop means a more important block.
    """
    base = float(evaluate(analysis.graph_module))
    return {b.id: base - float(evaluate(remove_blocks(analysis, [b.id], projection=projection)))
            for b in blocks_of(analysis) if b.removable(projection)}


def plan_3d(analysis: Analysis, *, depth: float = 1.0, width: float = 1.0,
            block_scores: Mapping[int, float] | None = None, projection: ProjectionPolicy = ProjectionPolicy.KEEP,
            scorer: Any = "l1", scorer_params: Mapping[str, Any] | None = None, round_to: int = 1,
            context: ScoreContext | None = None) -> Plan3D:
    """The :class:`~fxprune.rewrite.compose.Plan3D` for ``depth`` and ``width`` on ``analysis``.

    ``block_scores`` defaults to the branch output norms on the analysis' example inputs.
    """
    blocks = blocks_of(analysis)
    if block_scores is None and depth < 1.0:
        block_scores = branch_norm_scores(analysis, [analysis.example_inputs])
    ids = choose_blocks(blocks, block_scores or {}, depth, projection) if depth < 1.0 else ()
    channels = width_plan(analysis, width, scorer=scorer, scorer_params=scorer_params, round_to=round_to,
                          context=context)
    return Plan3D(channels=channels, blocks=ids, projection=ProjectionPolicy(projection))


@dataclass(frozen=True, eq=False)
class Pruned3D:
    """What :func:`prune_3d` returns.

    Attributes:
        result: the rewrite's result (graph module, input shapes, sizes at the new resolution).
        resolution: the analysis at the new size (``None`` when ``resolution == 1``).
        block_scores: the scores the blocks were chosen by.
        depth, width, scale: the multipliers.
        macs_original: MACs of the original model at its original input size.
    """

    result: Result3D
    resolution: Resolution | None
    block_scores: Mapping[int, float]
    depth: float
    width: float
    scale: float
    macs_original: int

    @property
    def graph_module(self) -> fx.GraphModule:
        return self.result.graph_module

    @property
    def input_shapes(self) -> tuple:
        """The input shapes the pruned module expects (the new resolution)."""
        return self.result.input_shapes

    @property
    def removed_blocks(self) -> tuple[str, ...]:
        return self.result.removed_blocks

    def wrapped(self, mode: str = "bilinear") -> ResizeInputs:
        """The pruned module behind a resize of its inputs to :attr:`input_shapes`."""
        return self.result.wrapped(mode)

    def summary(self) -> str:
        r = self.result
        return (f"3D pruning d={self.depth:g} w={self.width:g} r={self.scale:g}: inputs {r.input_shapes}; "
                f"{len(r.removed_blocks)} blocks removed, {sum(len(c) for c in r.plan.channels.values())} "
                f"channels removed; params {r.params_before} -> {r.params}; "
                f"MACs {self.macs_original} -> {r.macs} ({r.macs / max(self.macs_original, 1):.3f}x)")


def spatial_size(inputs: Sequence[Any]) -> tuple[int, ...]:
    """The spatial size of the first floating input with 3+ dims (``()`` if there is none)."""
    return next((tuple(x.shape[2:]) for x in inputs
                 if isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim >= 3), ())


def resized_batches(data: Any, example_inputs: tuple) -> Iterator[Batch]:
    """Calibration batches of ``data`` with their inputs resized to the spatial size of ``example_inputs``."""
    size = spatial_size(example_inputs) or None
    for batch in iter_batches(data):
        yield Batch(scale_inputs(batch.inputs, size=size), batch.target)


def prune_3d(model: torch.nn.Module, example_inputs: Sequence[Any], *, depth: float = 1.0, width: float = 1.0,
             resolution: float = 1.0, projection: ProjectionPolicy = ProjectionPolicy.KEEP,
             block_scores: Mapping[int, float] | Callable[[Analysis], Mapping[int, float]] | None = None,
             scorer: Any = "l1", scorer_params: Mapping[str, Any] | None = None, round_to: int = 1,
             data: Any = None, loss_fn: Any = None, num_batches: int | None = None,
             **analyze_kwargs: Any) -> Pruned3D:
    """Prune ``model`` to depth ``d``, width ``w`` and resolution ``r`` (see the module docstring).

    Args:
        model: the model; never modified.
        example_inputs: positional inputs at the original size.
        depth: fraction of the removable residual blocks kept, in [0, 1].
        width: channel multiplier, in (0, 1].
        resolution: input-size multiplier (> 0; 1 keeps the size).
        projection: whether blocks with projection shortcuts may be removed.
        block_scores: ``{block id: score}``, or ``f(analysis) -> scores`` (e.g. a partial of
            :func:`accuracy_drop_scores`); default: branch output norms on ``data`` (or the
            example inputs).
        scorer, scorer_params, round_to: the channel scorer and rounding of kept counts.
        data, loss_fn, num_batches: calibration data at the original size (resized here).
        analyze_kwargs: passed to :func:`fxprune.analyze`.
    """
    inputs = tuple(example_inputs) if not isinstance(example_inputs, torch.Tensor) else (example_inputs,)
    res: Resolution | None = None
    if resolution != 1.0:
        res = at_resolution(model, inputs, resolution, **analyze_kwargs)
        analysis = res.analysis
        macs_original = res.macs_before
    else:
        analysis = analyze(model, inputs, **analyze_kwargs)
        macs_original = -1
    batches = None if data is None else (list(resized_batches(data, analysis.example_inputs)) if res else data)
    if callable(block_scores):
        block_scores = block_scores(analysis)
    elif block_scores is None and depth < 1.0:
        block_scores = branch_norm_scores(analysis, batches if batches is not None else [analysis.example_inputs],
                                          num_batches=num_batches)
    ctx = ScoreContext(data=batches, loss_fn=loss_fn, num_batches=num_batches)
    plan = plan_3d(analysis, depth=depth, width=width, block_scores=block_scores, projection=projection,
                   scorer=scorer, scorer_params=scorer_params, round_to=round_to, context=ctx)
    result = apply_3d(analysis, plan)
    return Pruned3D(result, res, dict(block_scores or {}), depth, width, float(resolution),
                    result.macs_before if macs_original < 0 else macs_original)


@dataclass(frozen=True)
class Point3D:
    """A realisable 3D configuration.

    Attributes:
        depth: fraction of the removable blocks kept (``kept / n``; 1 without blocks).
        width: the channel multiplier (as asked: each group keeps about this fraction).
        resolution: the input-size multiplier realised (new / original size of the first spatial dim).
        blocks: ids of the removed blocks.
        size: the spatial input size (``()`` for inputs without spatial dims).
    """

    depth: float
    width: float
    resolution: float
    blocks: tuple[int, ...]
    size: tuple[int, ...]

    @property
    def dwr(self) -> tuple[float, float, float]:
        return (self.depth, self.width, self.resolution)


class Space3D:
    """The 3D configurations of one analysed model: realisable points, their rewrites and exact MACs.

    Blocks are ranked once by ``block_scores`` (default: branch output norms on
    ``data`` or the example inputs), so depth ``d`` always removes the same
    nested sets of blocks, at every resolution.  Channels are chosen per input
    size by ``scorer`` on the analysis at that size (calibration ``data`` resized).
    :meth:`macs` is exact: the per-node MACs of the width plan at that size
    (:func:`~fxprune.analysis.cost.plan_node_macs`) less the removed branches,
    the same number the rewrite's report gives, without rewriting.

    Example:
        >>> import fxprune
        >>> from fxprune.testing import zoo
        >>> model, inputs = zoo.resnet_basic()
        >>> space = Space3D(fxprune.analyze(model, inputs))
        >>> p = space.point(0.6, 0.5, 0.5)
        >>> p.depth, p.resolution, p.size, len(p.blocks)        # 3 of the 5 identity blocks kept
        (0.6, 0.5, (16, 16), 2)
        >>> gm = space.record(p).emit(space.analysis)
        >>> small = fxprune.analyze(gm, space.analysis_at(p.size).example_inputs)
        >>> space.macs(p) == count_macs(small.graph_module, small.registry) < space.macs_original
        True
    """

    def __init__(self, analysis: Analysis, *, block_scores: Mapping[int, float] | None = None,
                 projection: ProjectionPolicy = ProjectionPolicy.KEEP, scorer: Any = "l1",
                 scorer_params: Mapping[str, Any] | None = None, round_to: int = 1, data: Any = None,
                 loss_fn: Any = None, num_batches: int | None = None) -> None:
        self.analysis, self.projection = analysis, ProjectionPolicy(projection)
        self.scorer, self.scorer_params, self.round_to = scorer, dict(scorer_params or {}), round_to
        self.data, self.loss_fn, self.num_batches = data, loss_fn, num_batches
        removable = [b for b in blocks_of(analysis) if b.removable(self.projection)]
        if block_scores is None and removable:
            block_scores = branch_norm_scores(analysis, data if data is not None else [analysis.example_inputs],
                                              num_batches=num_batches)
        self.block_scores = {int(k): float(v) for k, v in (block_scores or {}).items()}
        self.n_blocks = len(removable)
        self.blocks = blocks_of(analysis)
        self._removable = tuple(b.id for b in removable)
        self.spatial = spatial_size(analysis.example_inputs)
        self.macs_original = count_macs(analysis.graph_module, analysis.registry)
        self._analyses: dict[tuple[int, ...], Analysis] = {self.spatial: analysis}
        self._scores: dict[tuple[int, ...], Mapping[int, Any]] = {}
        self._node_macs: dict[tuple[tuple[int, ...], float], dict[str, int]] = {}

    # -- the axes -------------------------------------------------------------
    def depths(self, minimum: float = 0.0) -> tuple[float, ...]:
        """The realisable depths ``k / n`` in ``[minimum, 1]`` (``(1.0,)`` without removable blocks)."""
        n = self.n_blocks
        return tuple(k / n for k in range(n + 1) if k / n >= minimum - 1e-9) if n else (1.0,)

    def resolutions(self, minimum: float = 1.0, count: int | None = None) -> tuple[float, ...]:
        """Realisable resolutions ``h / H`` in ``[minimum, 1]`` (at most ``count`` of them, evenly spread)."""
        if not self.spatial or minimum >= 1.0:
            return (1.0,)
        top = self.spatial[0]
        sizes = list(range(max(1, math.ceil(minimum * top - 1e-9)), top + 1))
        if count is not None and len(sizes) > count:
            picks = {round(i * (len(sizes) - 1) / (count - 1)) for i in range(count)} if count > 1 else {len(sizes) - 1}
            sizes = [sizes[i] for i in sorted(picks)]
        return tuple(h / top for h in sizes)

    def point(self, depth: float, width: float, resolution: float) -> Point3D:
        """The realisable configuration nearest to ``(depth, width, resolution)``."""
        blocks = choose_blocks(self.blocks, self.block_scores, depth, self.projection) if self.n_blocks else ()
        d = (self.n_blocks - len(blocks)) / self.n_blocks if self.n_blocks else 1.0
        _fraction("width", width, low_open=True)
        if not self.spatial:
            return Point3D(d, float(width), 1.0, blocks, ())
        if isinstance(resolution, bool) or not resolution > 0:
            raise ConfigError(f"resolution must be a positive number, got {resolution!r}")
        size = tuple(max(1, int(math.floor(resolution * n + 0.5))) for n in self.spatial)
        return Point3D(d, float(width), size[0] / self.spatial[0], blocks, size)

    # -- plans and costs ------------------------------------------------------
    def analysis_at(self, size: tuple[int, ...]) -> Analysis:
        """The analysis at spatial input size ``size`` (cached)."""
        size = tuple(size)
        if size not in self._analyses:
            self._analyses[size] = analysis_at_size(self.analysis, size)
        return self._analyses[size]

    def _scores_at(self, size: tuple[int, ...]) -> Mapping[int, Any]:
        if size not in self._scores:
            a = self.analysis_at(size)
            batches = None if self.data is None else list(resized_batches(self.data, a.example_inputs))
            ctx = ScoreContext(data=batches, loss_fn=self.loss_fn, num_batches=self.num_batches)
            self._scores[size] = get_scorer(self.scorer, **self.scorer_params)(a, ctx)
        return self._scores[size]

    def channels(self, point: Point3D) -> dict[int, list[int]]:
        """The width plan of ``point`` against :meth:`analysis_at` its size."""
        return width_plan(self.analysis_at(point.size), point.width, round_to=self.round_to,
                          scores=self._scores_at(point.size) if point.width < 1.0 else {})

    def record(self, point: Point3D) -> RewriteRecord:
        """The :class:`~fxprune.rewrite.record.RewriteRecord` of ``point`` against :attr:`analysis`."""
        same = point.size == self.spatial
        return RewriteRecord(self.channels(point), blocks=point.blocks, projection=self.projection,
                             input_size=None if same else point.size)

    def macs(self, point: Point3D) -> int:
        """The exact MACs of the model :meth:`record` emits (at the example inputs' batch size)."""
        key = (point.size, point.width)
        if key not in self._node_macs:
            a = self.analysis_at(point.size)
            mask = plan_mask(a, self.channels(point))
            self._node_macs[key] = plan_node_macs(a.graph_module, a.registry, mask, a.state.param_labels)
        per_node = self._node_macs[key]
        gone: set[str] = set()
        blocks = blocks_of(self.analysis_at(point.size))
        for i in point.blocks:
            gone.update(blocks[i].nodes)
            gone.add(blocks[i].add)
        return int(sum(m for n, m in per_node.items() if n not in gone))

