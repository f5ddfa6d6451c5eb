"""Resolution: re-analysis at a scaled input size, adapted embeddings, baked sizes reported by node."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxprune
from fxprune.analysis.resolution import at_resolution, scale_inputs
from fxprune.errors import ResolutionError
from fxprune.errors import ConfigError
from fxprune.modules import ResizeInputs
from fxprune.testing import zoo


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, repr(model)


def _unchanged(model, snap):
    state, structure = snap
    now = model.state_dict()
    return repr(model) == structure and all(torch.equal(now[k], v) for k, v in state.items())


@pytest.mark.parametrize("name", ["resnet_basic", "mobilenet_v2", "densenet", "unet", "shufflenet_v2"])
@pytest.mark.parametrize("scale", [2.0, 3.0])
def test_cnn_macs_scale_like_r_squared(name, scale):
    model, inputs = zoo.ZOO[name]()
    res = at_resolution(model, inputs, scale)
    assert res.model is model and res.adapted == ()  # nothing to adapt: the model itself
    assert res.input_shapes == tuple((*x.shape[:2], *(int(s * scale) for s in x.shape[2:])) for x in inputs)
    assert res.original_shapes == tuple(tuple(x.shape) for x in inputs)
    assert 0.9 * scale**2 <= res.macs / res.macs_before <= 1.02 * scale**2
    before = fxprune.analyze(model, inputs)
    assert [g.size for g in res.analysis.groups] == [g.size for g in before.groups]
    out = res.model(*res.example_inputs)
    assert out.shape[:2] == model(*inputs).shape[:2]


def test_a_cnn_prunes_at_the_new_size_and_the_model_is_untouched():
    model, inputs = zoo.resnet_basic()
    snap = _snapshot(model)
    res = at_resolution(model, inputs, size=48)
    assert res.input_shapes == ((1, 3, 48, 48),) and res.scale is None
    assert "avgpool" in res.fixed_size  # adaptive pooling keeps its output size
    pruned = fxprune.prune(res.model, res.example_inputs, ratio=0.5, analysis=res.analysis).graph_module
    assert pruned(torch.randn(2, 3, 48, 48)).shape == (2, 10)
    assert _unchanged(model, snap)


def _reference_embedding(pos, prefix, grid, new_grid):
    cells = pos[:, prefix:].transpose(1, 2).reshape(1, -1, *grid)
    shrink = any(n < o for n, o in zip(new_grid, grid))
    moved = F.interpolate(cells, size=new_grid, mode="bicubic", align_corners=False, antialias=shrink)
    return torch.cat([pos[:, :prefix], moved.flatten(2).transpose(1, 2)], 1)


@pytest.mark.parametrize("scale,grid", [(2.0, (8, 8)), (0.5, (2, 2)), (1.5, (6, 6))])
def test_vit_positional_embedding_is_interpolated(scale, grid):
    model, inputs = zoo.vit()
    snap = _snapshot(model)
    res = at_resolution(model, inputs, scale)
    (adapted,) = res.adapted
    assert (adapted.param, adapted.node, adapted.prefix, adapted.grid, adapted.new_grid) == \
        ("pos_embed", "add", 1, (4, 4), grid)
    new = res.model.get_parameter("pos_embed")
    assert new.shape == (1, 1 + grid[0] * grid[1], 32) and isinstance(new, nn.Parameter)
    torch.testing.assert_close(new, _reference_embedding(model.pos_embed.detach(), 1, (4, 4), grid))
    assert torch.equal(new[:, :1], model.pos_embed[:, :1])  # the class token is kept
    assert res.model(*res.example_inputs).shape == (2, 10)
    assert res.macs > 0 and res.analysis.groups
    assert _unchanged(model, snap) and model.pos_embed.shape == (1, 17, 32)


def test_without_adaptation_the_embedding_is_reported_by_node():
    model, inputs = zoo.vit()
    with pytest.raises(ResolutionError, match=r"(?s)node 'add' \(call_function add, reading pos_embed\).*adapt=False"):
        at_resolution(model, inputs, 2.0, adapt=False)


def test_a_flatten_into_a_linear_is_reported_by_node():
    model, inputs = zoo.lenet5()
    with pytest.raises(ResolutionError, match=r"node 'fc1' \(call_module fc1\) fails"):
        at_resolution(model, inputs, 2.0)


def test_an_input_too_small_for_the_strides_is_reported():
    model, inputs = zoo.convnext()
    with pytest.raises(ResolutionError, match="downsample_layers_2_1"):
        at_resolution(model, inputs, 0.25)


class FoldsIntoBatch(nn.Module):
    """``view(-1, 1600)``: at twice the size it still runs, folding positions into the batch."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 16, 1), nn.Linear(1600, 4)

    def forward(self, x):
        return self.fc(self.conv(x).view(-1, 1600))


def test_a_constant_view_that_silently_regroups_is_reported():
    model, inputs = FoldsIntoBatch(), (torch.randn(2, 3, 10, 10),)
    assert model(torch.randn(2, 3, 20, 20)).shape == (8, 4)  # silently wrong
    with pytest.raises(ResolutionError, match=r"'view' \(call_method view\).*regroup"):
        at_resolution(model, inputs, 2.0)


class MapEmbedding(nn.Module):
    """A learned positional map ``[1, C, H, W]`` added to conv features."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.pos = nn.Parameter(torch.randn(1, 8, 4, 4))
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.stem(x) + self.pos
        return self.head(x.mean((2, 3)))


def test_a_positional_map_is_interpolated():
    model, inputs = MapEmbedding(), (torch.randn(2, 3, 8, 8),)
    res = at_resolution(model, inputs, 2.0)
    (adapted,) = res.adapted
    assert (adapted.param, adapted.prefix, adapted.grid, adapted.new_grid) == ("pos", 0, (4, 4), (8, 8))
    expected = F.interpolate(model.pos.detach(), size=(8, 8), mode="bicubic", align_corners=False)
    torch.testing.assert_close(res.model.get_parameter("pos"), expected)
    assert res.model(*res.example_inputs).shape == (2, 3)


def test_scale_inputs_checks_its_arguments():
    x = (torch.randn(1, 3, 8, 8), torch.tensor([1, 2]))
    scaled = scale_inputs(x, 0.5)
    assert scaled[0].shape == (1, 3, 4, 4) and scaled[1] is x[1]
    assert scale_inputs(x, size=(5, 6))[0].shape == (1, 3, 5, 6)
    for bad in (dict(scale=0), dict(scale=-1.0), dict(), dict(scale=2.0, size=4), dict(size=(1, 2, 3))):
        with pytest.raises(ConfigError):
            scale_inputs(x, **bad)
    model, tokens = zoo.llama()
    with pytest.raises(ConfigError, match="spatial"):
        at_resolution(model, tokens, 2.0)


def test_resize_inputs_wrapper():
    res = at_resolution(*zoo.resnet_basic(), 0.5)
    wrapped = ResizeInputs(res.model, res.input_shapes)
    x = torch.randn(1, 3, 32, 32)
    small = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(wrapped(x), res.model(small))
    assert torch.equal(wrapped(small), res.model(small))  # already the right size: untouched
    assert "sizes=((16, 16),)" in repr(wrapped)
