"""HAP's Neural Implant: every conv geometry and kind, linear implants, exactness at full rank, re-analysis,
bands by rule family; LeNet-5 (pointwise, low-rank, dwpw; stride variants) and a Linear-heavy MLP."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune.errors import ConfigError, PlanError
from fxprune.modules import ImplantedLinear
from fxprune.rewrite.implant import ImplantedConv2d, apply_with_implants, family_groups, split_bands
from fxprune.schedules import one_shot
from fxprune.testing import check_pruning, zoo
from fxprune.testing.soundness import check_rules


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


# --------------------------------------------------------------------------- any conv geometry

GEOMETRIES = [  # kernel, stride, padding, dilation, padding_mode
    (5, 1, 0, 1, "zeros"),       # LeNet-5's conv2: 14 -> 10
    (5, 2, 0, 1, "zeros"),
    (3, 2, 1, 1, "zeros"),
    (3, 1, "same", 2, "zeros"),
    (4, 2, 1, 1, "zeros"),       # even kernel: the centre tap is (k - 1) // 2
    (3, 3, "valid", 1, "zeros"),
    (3, 1, 1, 1, "reflect"),
    ((5, 3), (2, 1), (0, 1), (1, 2), "zeros"),
]


def _centre_tap_reference(conv, kept, imp, u, x):
    """The k x k conv with the implanted rows' filters zero but for ``u`` at the centre tap."""
    w = torch.zeros_like(conv.weight)
    w[kept] = conv.weight[kept]
    kh, kw = conv.kernel_size
    w[imp, :, (kh - 1) // 2, (kw - 1) // 2] = u
    return conv._conv_forward(x, w, conv.bias)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_implants_keep_any_conv_geometry(geometry):
    k, s, p, d, mode = geometry
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, k, stride=s, padding=p, dilation=d, padding_mode=mode).double()
    x = torch.randn(2, 3, 14, 13, dtype=torch.float64)
    kept, imp = torch.tensor([0, 2]), torch.tensor([1, 3, 4])
    ref = conv(x)
    pw = ImplantedConv2d(conv, kept, imp, "pointwise")
    assert pw(x).shape == ref.shape
    with torch.no_grad():
        pw.implant_u.copy_(torch.randn(3, 3, 1, 1, dtype=torch.float64))
    torch.testing.assert_close(pw(x), _centre_tap_reference(conv, kept, imp, pw.implant_u[:, :, 0, 0], x))
    torch.testing.assert_close(ImplantedConv2d(conv, kept, imp, "lowrank")(x), ref)   # full rank: exact
    kh, kw = conv.kernel_size
    full = min(len(imp), kh * kw)
    torch.testing.assert_close(ImplantedConv2d(conv, kept, imp, "dwpw", rank=full)(x), ref)


def test_truncated_implants_are_the_best_approximations():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1).double()
    kept, imp = torch.tensor([0]), torch.tensor([1, 2, 3, 4, 5])
    removed = conv.weight.detach()[imp]
    # lowrank, rank r: the filters U V are the rank-r truncated SVD of the removed filters
    lr = ImplantedConv2d(conv, kept, imp, "lowrank", rank=2)
    approx = (lr.implant_u[:, :, 0, 0] @ lr.implant_v.reshape(2, -1)).reshape(removed.shape).detach()
    sv = torch.linalg.svdvals(removed.reshape(5, -1))
    torch.testing.assert_close(torch.linalg.norm(approx - removed), torch.linalg.norm(sv[2:]))
    # dwpw, multiplier 1: W[o, c] ~ U[o, c] D[c], each input channel's slice by its best rank-1 approximation
    dw = ImplantedConv2d(conv, kept, imp, "dwpw")
    assert dw.implant_v.shape == (4, 1, 3, 3) and dw.implant_u.shape == (5, 4, 1, 1) and dw.rank == 1
    approx = (dw.implant_u[:, :, 0, 0, None, None] * dw.implant_v[None, :, 0]).detach()
    tail = sum(float((torch.linalg.svdvals(removed[:, c].reshape(5, 9))[1:] ** 2).sum()) for c in range(4))
    assert abs(float(((approx - removed) ** 2).sum()) - tail) < 1e-10


def test_implants_are_cheaper_and_counted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 5), nn.ReLU(), nn.Conv2d(16, 2, 1)).eval()
    x = (torch.randn(1, 8, 12, 12),)
    a = fxprune.analyze(model, x)
    macs = {}
    for kind, rank in (("pointwise", None), ("lowrank", 2), ("dwpw", None)):
        gm = apply_with_implants(a, remove={}, implant={0: list(range(4, 16))}, kind=kind, rank=rank)
        assert gm(*x).shape == model(*x).shape
        macs[kind] = fxprune.prune(gm, x, ratio=0.0).report.macs_before
    full = fxprune.prune(model, x, ratio=0.0).report.macs_before
    assert all(m < full for m in macs.values()), (macs, full)


@pytest.mark.parametrize("kind", ["pointwise", "lowrank", "dwpw"])
def test_every_kind_is_sound_and_prunes_again(kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU(),
                          ImplantedConv2d(nn.Conv2d(6, 5, 5, stride=2), torch.tensor([0, 2]),
                                          torch.tensor([1, 3, 4]), kind, rank=2),
                          nn.ReLU(), nn.Flatten(),
                          ImplantedLinear(nn.Linear(5 * 5 * 5, 7), torch.tensor([1, 3]),
                                          torch.tensor([0, 2, 4, 5, 6]), "lowrank", rank=3),
                          nn.ReLU(), nn.Linear(7, 2)).eval()
    x = (torch.randn(2, 3, 14, 14),)
    a = fxprune.analyze(model, x)
    assert not a.barriers and [g.size for g in a.groups] == [6, 5, 7]
    report = check_rules(model, x)
    assert {ImplantedConv2d, ImplantedLinear} <= set(report.checked_keys)
    check_pruning(model, x, plans=3)
    pruned = fxprune.prune(model, x, ratio=0.5).graph_module
    assert pruned(*x).shape == model(*x).shape and not fxprune.analyze(pruned, x).barriers
    conv = pruned.get_submodule("2")
    assert len(conv.kept_pos) + len(conv.implant_pos) == conv.out_channels


def test_linear_implant_exact_at_full_rank_and_kinds():
    torch.manual_seed(0)
    lin = nn.Linear(6, 5).double()
    x = torch.randn(2, 4, 6, dtype=torch.float64)                   # tokens
    m = ImplantedLinear(lin, torch.tensor([1, 4]), torch.tensor([0, 2, 3]), "lowrank")
    torch.testing.assert_close(m(x), lin(x))
    assert m.rank == 3 and ImplantedLinear(lin, torch.tensor([1]), torch.tensor([0, 2, 3, 4]), rank=1).rank == 1
    for kind in ("pointwise", "dwpw"):
        with pytest.raises(ConfigError, match="lowrank"):
            ImplantedLinear(lin, torch.tensor([1]), torch.tensor([0]), kind)
    with pytest.raises(ConfigError, match="at least one"):
        ImplantedLinear(lin, torch.tensor([], dtype=torch.long), torch.arange(5), "lowrank")
    with pytest.raises(ConfigError, match="implant kind"):
        ImplantedConv2d(nn.Conv2d(2, 2, 1), torch.tensor([0]), torch.tensor([1]), "magic")
    with pytest.raises(ConfigError, match="dense"):
        ImplantedConv2d(nn.Conv2d(2, 2, 3, groups=2), torch.tensor([0]), torch.tensor([1]), "lowrank")


# --------------------------------------------------------------------------- LeNet-5 and a Linear-heavy MLP


def _lenet(stride: int = 1) -> nn.Module:
    torch.manual_seed(0)
    model = zoo.LeNet5()
    if stride > 1:  # stride variants: conv1 5x5 padding 2 stride s, conv2 5x5 no padding stride s
        model.conv1.stride = model.conv2.stride = (stride, stride)
        model.pool1 = model.pool2 = nn.Identity()
        size = (((28 - 1) // stride + 1) - 5) // stride + 1
        model.fc1 = nn.Linear(16 * size * size, 120)
    return model.eval()


LENET_X = (torch.randn(2, 1, 28, 28),)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kind", ["pointwise", "lowrank", "dwpw"])
def test_lenet5_implants_run_reanalyse_and_prune_again(kind, stride):
    model = _lenet(stride)
    hist = one_shot(model, LENET_X, ratio=0.5, implant_ratio=0.5, implant_kind=kind, implant_rank=2,
                    progress=False)
    m = hist.best.metrics
    assert m["channels_implanted"] > 0 and m["params"] > 0 and m["macs"] > 0
    gm = hist.graph_module
    assert gm(*LENET_X).shape == model(*LENET_X).shape
    implanted = [n for n, mod in gm.named_modules() if isinstance(mod, (ImplantedConv2d, ImplantedLinear))]
    assert implanted and all(n.startswith("conv") for n in implanted)   # the authors' conv-only band
    again = fxprune.analyze(gm, LENET_X)
    assert not again.barriers
    check_pruning(gm, LENET_X, plans=2)
    pruned = fxprune.prune(gm, LENET_X, ratio=0.5).graph_module
    assert pruned(*LENET_X).shape == model(*LENET_X).shape


def test_lenet5_full_rank_implant_is_exact():
    model = _lenet()
    a = fxprune.analyze(model, LENET_X)
    conv2 = next(g.id for g in a.groups if any(m.param == "conv2.weight" for m in g.producers()))
    fc1 = next(g.id for g in a.groups if any(m.param == "fc1.weight" for m in g.producers()))
    gm = apply_with_implants(a, remove={}, implant={conv2: [1, 5, 9], fc1: list(range(0, 120, 3))},
                             kind="lowrank")
    torch.testing.assert_close(gm(*LENET_X), model(*LENET_X), rtol=1e-5, atol=1e-5)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.1),
                         nn.Linear(64, 48), nn.GELU(), nn.Linear(48, 10)).eval()


MLP_X = (torch.randn(4, 32),)


def test_linear_heavy_mlp_implants():
    model = _mlp()
    a = fxprune.analyze(model, MLP_X)
    assert family_groups(a) == [] and len(family_groups(a, ("conv", "linear"))) == 3
    scores = {g.id: np.arange(g.size, dtype=np.float64)[::-1].copy() for g in a.groups}
    below = {g.id: list(range(g.size // 2, g.size)) for g in a.groups}
    assert split_bands(a, scores, below, 0.5)[1] == {}               # default: conv layers only
    with pytest.raises(PlanError, match="not 'pointwise'"):
        apply_with_implants(a, {}, {0: [1]}, kind="pointwise")
    remove, implant = split_bands(a, scores, below, 0.5, kind="lowrank", families=("conv", "linear"))
    n_below = sum(len(c) for c in below.values())
    assert sum(len(c) for c in implant.values()) == n_below // 2 and set(implant) == {0, 1, 2}
    gm = apply_with_implants(a, remove, implant, kind="lowrank", rank=4)
    assert gm(*MLP_X).shape == model(*MLP_X).shape
    assert not fxprune.analyze(gm, MLP_X).barriers
    check_pruning(gm, MLP_X, plans=2)
    assert fxprune.prune(gm, MLP_X, ratio=0.5).graph_module(*MLP_X).shape == (4, 10)
    exact = apply_with_implants(a, {}, implant, kind="lowrank")      # full rank: exact
    torch.testing.assert_close(exact(*MLP_X), model(*MLP_X), rtol=1e-5, atol=1e-5)


def test_bands_count_only_the_chosen_families():
    model = _lenet()
    a = fxprune.analyze(model, LENET_X)
    convs = family_groups(a)
    assert len(convs) == 2 and len(family_groups(a, None)) == len(a.groups)
    scores = {g.id: np.arange(g.size, dtype=np.float64) for g in a.groups}
    below = {g.id: list(range(g.size // 2)) for g in a.groups}
    remove, implant = split_bands(a, scores, below, 0.5)
    n_conv = sum(len(below[g]) for g in convs)
    assert set(implant) <= set(convs) and sum(len(c) for c in implant.values()) == round(0.5 * n_conv)
    assert all(set(remove[g]) == set(below[g]) for g in below if g not in convs)
    with pytest.raises(ConfigError, match="implant_ratio"):
        split_bands(a, scores, below, 1.5)
    with pytest.raises(ConfigError, match="families"):
        family_groups(a, (1,))


def test_the_hap_implant_recipe_ranks_convolutions_and_implants_them():
    import fxprune
    from fxprune.modules import ImplantedConv2d
    from fxprune.testing import zoo

    model, x = zoo.ZOO["lenet5"]()
    torch.manual_seed(0)
    data = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))) for _ in range(2)]
    with pytest.warns(UserWarning, match="noisy Hutchinson traces"):  # 8 probes are too few: it says so
        history = fxprune.recipe("hap_implant").run(
            model, x, data=data, loss_fn=torch.nn.functional.cross_entropy, progress=False,
            scorer_params={"n_probes": 3, "tol": 0.02, "max_probes": 8})
    best = history.best
    gm = best.graph_module
    assert best.metrics["channels_implanted"] > 0
    assert any(isinstance(m, ImplantedConv2d) for m in gm.modules())
    assert gm.fc1.out_features == 120 and gm.fc2.out_features == 84       # linear layers are not ranked
    assert gm(*x).shape == model(*x).shape
    assert best.metrics["scorer"]["probes"] and "max_rel_error" in best.metrics["scorer"]
    assert best.metrics["scorer"]["probes_per_batch"] == [8, 8]
