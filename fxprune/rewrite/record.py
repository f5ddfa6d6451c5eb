"""What a rewrite did, as data: enough to emit the same pruned module again.

A :class:`RewriteRecord` holds the plan (``{group id: channels removed}``) and,
for HAP's Neural Implant, the implant plan, kind and rank; for 3D pruning, the
residual blocks removed and the input size the model was re-analysed at (the
plan then names channels of the analysis at that size,
:func:`fxprune.rewrite.compose.analysis_at_size`).
:meth:`RewriteRecord.emit` applies it to an analysis of the same model and
returns the same module structure (the weights of trained models are saved
separately); :meth:`RewriteRecord.to_json` / :meth:`RewriteRecord.from_json`
write it as plain JSON.  Saved results and schedule checkpoints store
rounds this way instead of pickling modules.

Example:
    >>> import torch, torch.nn as nn, fxprune
    >>> from fxprune.rewrite.record import RewriteRecord
    >>> a = fxprune.analyze(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1)), (torch.randn(1, 2),))
    >>> record = RewriteRecord.from_json(RewriteRecord({0: [1, 3]}).to_json())
    >>> dict(record.plan), record.emit(a).get_submodule("0").out_features
    ({0: (1, 3)}, 2)
    >>> from fxprune.testing import zoo
    >>> model, inputs = zoo.resnet_basic()
    >>> record = RewriteRecord({0: [0, 1]}, blocks=(0, 1), input_size=(16, 16))   # depth, width, resolution
    >>> RewriteRecord.from_json(record.to_json()) == record
    True
    >>> record.emit(fxprune.analyze(model, inputs))(torch.randn(1, 3, 16, 16)).shape
    torch.Size([1, 10])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import torch.fx as fx

from ..analysis.analysis import Analysis
from ..analysis.blocks import ProjectionPolicy
from ..analysis.groups import check_plan
from ..errors import PlanError
from .channels import apply_plan

__all__ = ["RewriteRecord"]


def _plan(plan: Mapping[int, Sequence[int]] | None, what: str) -> Mapping[int, tuple[int, ...]]:
    return MappingProxyType({g: tuple(c) for g, c in sorted(check_plan(plan or {}, what).items())})


def _is_int(x: Any) -> bool:
    return hasattr(x, "__index__") and not isinstance(x, bool)


@dataclass(frozen=True)
class RewriteRecord:
    """A rewrite as data (see the module docstring).

    Attributes:
        plan: ``{group id: removed channels}`` (sorted tuples).
        implants: ``{group id: implanted channels}`` (empty: no implant).
        implant_kind: the implant kind (``None`` without implants).
        implant_rank: the implant's rank parameter (``None``: its default).
        blocks: ids of the residual blocks removed (3D pruning; empty: none).
        projection: the :class:`~fxprune.analysis.blocks.ProjectionPolicy` of the block removal.
        input_size: the spatial input size the model was re-analysed and pruned at
            (``None``: the analysis' own size); ``plan`` then refers to the
            analysis at that size.
    """

    plan: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    implants: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    implant_kind: str | None = None
    implant_rank: int | None = None
    blocks: tuple[int, ...] = ()
    projection: ProjectionPolicy = ProjectionPolicy.KEEP
    input_size: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "plan", _plan(self.plan, "plan"))
        object.__setattr__(self, "implants", _plan(self.implants, "implant plan"))
        kind = self.implant_kind
        object.__setattr__(self, "implant_kind", None if kind is None else str(getattr(kind, "value", kind)))
        if self.implants and self.implant_kind is None:
            raise PlanError("an implant plan needs its implant_kind")
        if self.implant_rank is not None and not _is_int(self.implant_rank):
            raise PlanError(f"implant_rank must be an integer or None, got {self.implant_rank!r}")
        if not all(_is_int(b) and b >= 0 for b in self.blocks):
            raise PlanError(f"blocks must be block ids (integers >= 0), got {self.blocks!r}")
        object.__setattr__(self, "blocks", tuple(sorted({int(b) for b in self.blocks})))
        try:
            object.__setattr__(self, "projection", ProjectionPolicy(self.projection))
        except ValueError:
            raise PlanError(f"unknown projection policy {self.projection!r}") from None
        if self.input_size is not None:
            size = tuple(self.input_size)
            if not size or not all(_is_int(n) and n >= 1 for n in size):
                raise PlanError(f"input_size must be positive integers, got {self.input_size!r}")
            object.__setattr__(self, "input_size", tuple(int(n) for n in size))
        if self.implants and self.is_3d:
            raise PlanError("a rewrite record cannot combine implants with block removal or a new input size")

    @property
    def is_3d(self) -> bool:
        """Whether the record removes blocks or changes the input size (3D pruning)."""
        return bool(self.blocks) or self.input_size is not None

    def emit(self, analysis: Analysis, *, verify: bool = True, resized: Analysis | None = None) -> fx.GraphModule:
        """The pruned (and implanted) GraphModule of this record applied to ``analysis``.

        A 3D record re-analyses ``analysis``' model at :attr:`input_size` and
        applies the blocks and channels there (:func:`~fxprune.rewrite.compose.apply_3d`,
        which always verifies shapes); ``resized`` is that analysis if the caller already has it.
        """
        if self.is_3d:
            from .compose import Plan3D, analysis_at_size, apply_3d

            target = analysis if self.input_size is None else resized or analysis_at_size(analysis, self.input_size)
            return apply_3d(target, Plan3D(self.plan, self.blocks, self.projection)).graph_module
        if not self.implants:
            return apply_plan(analysis, self.plan, verify=verify)
        from .implant import apply_with_implants

        gm = apply_with_implants(analysis, self.plan, self.implants, kind=self.implant_kind, rank=self.implant_rank)
        if verify:
            from ..analysis.shapes import propagate_shapes

            propagate_shapes(gm, analysis.example_inputs)
        return gm

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"plan": [[g, list(c)] for g, c in self.plan.items()]}
        if self.implants:
            out.update(implants=[[g, list(c)] for g, c in self.implants.items()], implant_kind=self.implant_kind,
                       implant_rank=self.implant_rank)
        if self.blocks:
            out.update(blocks=list(self.blocks), projection=self.projection.value)
        if self.input_size is not None:
            out["input_size"] = list(self.input_size)
        return out

    @classmethod
    def from_json(cls, data: Any) -> "RewriteRecord":
        """Parse :meth:`to_json`'s output.

        Raises:
            PlanError: malformed data.
        """
        def pairs(value: Any, what: str) -> dict[int, Any]:
            if not (isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value)):
                raise PlanError(f"malformed {what}: {value!r}")
            return {g: c for g, c in value}

        keys = {"plan", "implants", "implant_kind", "implant_rank", "blocks", "projection", "input_size"}
        if not isinstance(data, dict) or not set(data) <= keys:
            raise PlanError(f"malformed rewrite record: {data!r}")
        kind = data.get("implant_kind")
        if kind is not None and not isinstance(kind, str):
            raise PlanError(f"malformed implant kind {kind!r}")
        blocks, size = data.get("blocks", []), data.get("input_size")
        if not isinstance(blocks, list) or size is not None and not isinstance(size, list):
            raise PlanError(f"malformed blocks {blocks!r} or input size {size!r}")
        return cls(pairs(data.get("plan", []), "plan"), pairs(data.get("implants", []), "implant plan"),
                   kind, data.get("implant_rank"), tuple(blocks), data.get("projection", "keep"),
                   None if size is None else tuple(size))
