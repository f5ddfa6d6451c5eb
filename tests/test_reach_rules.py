"""Issue 9 ("Reach"), op rules: ops real architectures use, each checked differentially.

Every test prunes through :func:`fxprune.testing.check_pruning` (the pruned model against the
zero-masked original) and asserts that the layers around the op actually shrink, or that a
pattern that cannot be mapped exactly stays a barrier.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxprune
from fxprune.testing import check_pruning


def _groups(analysis, param, dim=None):
    return analysis.group_of(param, dim)


# ---------------------------------------------------------------------------
# mask/index ops without channels: counted, not listed


class MaskBuilder(nn.Module):
    """A causal mask built from arange/cumsum/comparisons, next to a prunable MLP."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 4)

    def forward(self, x):
        n = x.shape[1]
        pos = torch.ones(n, dtype=torch.long).cumsum(0) - 1
        mask = (pos[:, None] >= torch.arange(n)[None, :]) & (pos[None, :] >= 0)
        h = self.fc2(torch.relu(self.fc1(x)))
        return h.masked_fill(~mask[..., :1], 0.0)


class ChannelCumsum(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc2(self.fc1(x).cumsum(-1))   # cumsum over channels: a real barrier


@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_mask_and_index_ops_without_channels_are_counted_not_listed(frontend):
    x = torch.randn(2, 5, 4)
    analysis = fxprune.analyze(MaskBuilder(), (x,), frontend=frontend)
    assert analysis.barriers == []
    assert any("cumsum" in b.op for b in analysis.state.inert)
    assert "mask/index ops without channels" in analysis.summary()
    assert _groups(analysis, "fc1.weight", 0)
    result = fxprune.prune(MaskBuilder(), (x,), ratio=0.5, frontend=frontend)
    text = str(result.report)
    assert "barriers (channels not pruned)" not in text and f"{len(analysis.state.inert)} mask/index ops without channels" in text
    assert result.report.to_dict()["inert_ops"] == len(analysis.state.inert)
    check_pruning(MaskBuilder(), (x,), frontend=frontend)


def test_an_op_without_a_rule_on_channels_is_still_a_listed_barrier():
    analysis = fxprune.analyze(ChannelCumsum(), (torch.randn(2, 4),))
    assert len(analysis.barriers) == 1 and "cumsum" in analysis.barriers[0].op
    assert not analysis.state.inert
    assert not _groups(analysis, "fc1.weight", 0)


def test_strict_mode_ignores_ops_without_channels():
    fxprune.analyze(MaskBuilder(), (torch.randn(2, 5, 4),), strict=True)       # no channel touched: no error
    with pytest.raises(fxprune.errors.UnsupportedOpError, match="cumsum"):
        fxprune.analyze(ChannelCumsum(), (torch.randn(2, 4),), strict=True)
