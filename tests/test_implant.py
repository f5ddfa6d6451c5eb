"""HAP's Neural Implant: implanted convolutions, exactness at full rank, re-analysis, one-shot bands."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune.errors import ConfigError, PlanError
from fxprune.rewrite.implant import ImplantedConv2d, apply_with_implants, split_bands
from fxprune.schedules import one_shot
from fxprune.testing import check_pruning


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 6, 3, padding=1, stride=2), nn.ReLU(), nn.Conv2d(6, 2, 1)).eval()


X = (torch.randn(2, 3, 8, 8),)


def test_full_rank_lowrank_implant_is_the_original_function():
    model = _model()
    a = fxprune.analyze(model, X)
    gm = apply_with_implants(a, remove={}, implant={0: [1, 4, 6], 1: [0, 5]}, kind="lowrank")
    torch.testing.assert_close(gm(*X), model(*X), rtol=1e-5, atol=1e-5)
    assert isinstance(gm.get_submodule("0"), ImplantedConv2d)


def test_pointwise_implant_starts_at_zero_like_the_authors_code():
    model = _model()
    a = fxprune.analyze(model, X)
    gm = apply_with_implants(a, remove={0: [0]}, implant={0: [1, 4]}, kind="pointwise")
    ref = fxprune.testing.mask_original(a, {0: [0]})
    with torch.no_grad():  # implanted rows: zero filters, bias kept
        ref.get_submodule("0").weight[[1, 4]] = 0.0
    torch.testing.assert_close(gm(*X), ref(*X), rtol=1e-5, atol=1e-5)
    conv = gm.get_submodule("0")
    assert conv.out_channels == 7 and conv.weight.shape[0] == 5 and conv.implant_u.shape == (2, 3, 1, 1)


def test_implanted_models_reanalyse_and_prune_again():
    model = _model()
    a = fxprune.analyze(model, X)
    gm = apply_with_implants(a, remove={0: [0, 2]}, implant={0: [1, 4], 1: [3]}, kind="lowrank", rank=2)
    again = fxprune.analyze(gm, X)
    assert not again.barriers
    check_pruning(gm, X, plans=3)
    pruned = fxprune.prune(gm, X, ratio=0.5).graph_module
    assert pruned(*X).shape == model(*X).shape
    assert len(pruned.get_submodule("0").kept_pos) + len(pruned.get_submodule("0").implant_pos) \
        == pruned.get_submodule("0").out_channels


def test_bands_and_errors():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    a = fxprune.analyze(model, (torch.randn(1, 4),))
    scores = {0: torch.arange(8, dtype=torch.float64).numpy()}
    remove, implant = split_bands(a, scores, {0: [0, 1, 2, 3]}, 0.5)
    assert implant == {} and remove == {0: [0, 1, 2, 3]}  # Linear producers cannot be implanted
    with pytest.raises(PlanError, match="takes implant kinds \\['lowrank'\\], not 'pointwise'"):
        apply_with_implants(a, remove={}, implant={0: [1]})
    conv = _model()
    ca = fxprune.analyze(conv, X)
    cscores = {g.id: torch.arange(g.size, dtype=torch.float64).numpy() for g in ca.groups}
    remove, implant = split_bands(ca, cscores, {0: [0, 1, 2, 3]}, 0.5)
    assert implant == {0: [2, 3]} and remove == {0: [0, 1]}  # the higher scores are implanted
    with pytest.raises(PlanError, match="both"):
        apply_with_implants(ca, remove={0: [1]}, implant={0: [1]})


def test_one_shot_with_implants():
    model = _model()
    plain = one_shot(model, X, ratio=0.5, progress=False)
    hap = one_shot(model, X, ratio=0.5, implant_ratio=0.25, implant_kind="lowrank", implant_rank=1,
                   progress=False)
    m = hap.best.metrics
    assert m["channels_implanted"] > 0
    assert m["channels_removed"] + m["channels_implanted"] == plain.best.metrics["channels_removed"]
    assert hap.graph_module(*X).shape == model(*X).shape
    with pytest.raises(ConfigError, match="implant_kind"):
        one_shot(model, X, implant_ratio=0.1, implant_kind="magic", progress=False)
