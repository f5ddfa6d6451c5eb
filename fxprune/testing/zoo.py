"""A zoo of small, hand-written reference architectures for testing fxprune.

Every model here is written from the original papers (not copied from any
library), in a deliberately tiny configuration so that a forward pass on CPU
takes a few milliseconds.  All models are traceable with
:func:`torch.fx.symbolic_trace`: forward methods contain no data-dependent
Python control flow, and shape-dependent code goes through tensor ops
(``x.shape``, ``x.size()``, ``.view``, ``.reshape``, ``.flatten``).

Each factory seeds the RNG with ``torch.manual_seed(0)`` and returns
``(model.eval(), example_inputs)`` where ``example_inputs`` is a tuple of
positional arguments for ``model(*example_inputs)``.

By default the factories also give every normalisation layer non-trivial
parameters and running statistics (and ConvNeXt's layer-scale ``gamma``
non-tiny values), see :func:`randomize_norms`.  Freshly initialised norms are
identity maps (weight 1, bias 0, mean 0, var 1) which would hide channel-
indexing bugs in a pruner; pass ``perturb_norms=False`` to get the plain
paper-style initialisation.

:data:`ZOO` maps model names to their factories.  :func:`llama_7b_meta` builds
a Llama-2-7B-shaped model on the ``meta`` device (no real weight memory).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    # helpers
    "randomize_norms",
    "channel_shuffle",
    "rotate_half",
    "repeat_kv",
    # ResNet
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    # MobileNet
    "InvertedResidual",
    "MobileNetV2",
    "SqueezeExcitation",
    "InvertedResidualV3",
    "MobileNetV3",
    # DenseNet
    "DenseLayer",
    "DenseBlock",
    "Transition",
    "DenseNet",
    # Inception
    "ConvBNReLU",
    "InceptionBlock",
    "InceptionV1",
    # ShuffleNet
    "ShuffleUnit",
    "ShuffleNetV2",
    # UNet
    "DoubleConv",
    "UNet",
    # ConvNeXt
    "LayerNorm2d",
    "ConvNeXtBlock",
    "ConvNeXt",
    # ViT
    "Attention",
    "SeparateQKVAttention",
    "Mlp",
    "ViTBlock",
    "VisionTransformer",
    # Llama
    "RMSNorm",
    "LlamaAttention",
    "LlamaMLP",
    "LlamaBlock",
    "Llama",
    # LeNet
    "LeNet5",
    # factories
    "resnet_basic",
    "resnet_bottleneck",
    "mobilenet_v2",
    "mobilenet_v3",
    "densenet",
    "inception",
    "shufflenet_v2",
    "unet",
    "convnext",
    "vit",
    "vit_separate_qkv",
    "llama",
    "lenet5",
    "llama_7b_meta",
    "ZOO",
]

ModelAndInputs = tuple[nn.Module, tuple[Tensor, ...]]


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` (MobileNet rule)."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:  # never round down by more than 10 %
        new_v += divisor
    return new_v


@torch.no_grad()
def randomize_norms(model: nn.Module) -> nn.Module:
    """Give norm layers (and layer-scale ``gamma``) non-trivial random values.

    BatchNorm: weight ~ U(0.5, 1.5), bias ~ N(0, 0.1), running_mean ~ N(0, 0.1),
    running_var ~ U(0.5, 1.5).  LayerNorm / :class:`LayerNorm2d` /
    :class:`RMSNorm`: weight ~ U(0.5, 1.5), bias ~ N(0, 0.1).
    :class:`ConvNeXtBlock` ``gamma`` ~ U(0.5, 1.5).  Uses the global RNG.
    Modifies ``model`` in place and returns it.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None:
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
            if m.running_mean is not None:
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        elif isinstance(m, (nn.LayerNorm, LayerNorm2d, RMSNorm)):
            if getattr(m, "weight", None) is not None:
                m.weight.uniform_(0.5, 1.5)
            if getattr(m, "bias", None) is not None:
                m.bias.normal_(0.0, 0.1)
        if isinstance(m, ConvNeXtBlock):
            m.gamma.uniform_(0.5, 1.5)
    return model


def _finish(model: nn.Module, perturb: bool) -> nn.Module:
    if perturb:
        randomize_norms(model)
    return model.eval()


# --------------------------------------------------------------------------- #
# ResNet (He et al., 2015)
# --------------------------------------------------------------------------- #


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """torchvision's ``downsample``: a strided 1x1 conv + BN when the shape changes, else None."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class _ResidualUnit(nn.Module):
    """``relu(branch(x) + identity)``, the identity projected by ``downsample`` when set."""

    def _branch(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        out = self._branch(x)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class BasicBlock(_ResidualUnit):
    """ResNet basic block: 3x3 conv-BN-ReLU, 3x3 conv-BN, residual add, ReLU."""

    expansion: int = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_planes, planes * self.expansion, stride)

    def _branch(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class Bottleneck(_ResidualUnit):
    """ResNet bottleneck block: 1x1 reduce, 3x3 (strided), 1x1 expand (x4)."""

    expansion: int = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(in_planes, planes * self.expansion, stride)

    def _branch(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class ResNet(nn.Module):
    """ResNet: 7x7/2 stem + maxpool, four stages of residual blocks, GAP, fc."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        widths: Sequence[int] = (8, 16, 32, 64),
        stem_width: int = 8,
        num_classes: int = 10,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_planes = stem_width
        stages: list[nn.Module] = []
        for i, (n, w) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            blocks: list[nn.Module] = []
            for j in range(n):
                blocks.append(block(in_planes, w, stride if j == 0 else 1))
                in_planes = w * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


# --------------------------------------------------------------------------- #
# MobileNetV2 (Sandler et al., 2018)
# --------------------------------------------------------------------------- #


def _conv_bn_act(
    cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU6
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_act(inp, hidden, 1))
        layers += [
            _conv_bn_act(hidden, hidden, 3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 with a configurable (small) inverted-residual setting."""

    def __init__(
        self,
        num_classes: int = 10,
        stem_channels: int = 16,
        last_channels: int = 64,
        setting: Sequence[tuple[int, int, int, int]] = (
            # t, c, n, s
            (1, 8, 1, 1),
            (6, 12, 2, 2),
            (6, 16, 2, 2),
            (6, 24, 1, 1),
        ),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        features: list[nn.Module] = [_conv_bn_act(3, stem_channels, 3, stride=2)]
        cin = stem_channels
        for t, c, n, s in setting:
            for i in range(n):
                features.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(_conv_bn_act(cin, last_channels, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last_channels, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


# --------------------------------------------------------------------------- #
# MobileNetV3-small (Howard et al., 2019)
# --------------------------------------------------------------------------- #


class SqueezeExcitation(nn.Module):
    """SE module: GAP -> 1x1 reduce -> ReLU -> 1x1 expand -> hardsigmoid -> x * s."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.hardsigmoid = nn.Hardsigmoid(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        s = self.avgpool(x)
        s = self.fc2(self.relu(self.fc1(s)))
        s = self.hardsigmoid(s)
        return x * s


class InvertedResidualV3(nn.Module):
    """MobileNetV3 block: [1x1 expand], kxk depthwise, [SE], 1x1 projection."""

    def __init__(
        self, cin: int, kernel: int, expanded: int, cout: int, use_se: bool, use_hs: bool, stride: int
    ) -> None:
        super().__init__()
        act: type[nn.Module] = nn.Hardswish if use_hs else nn.ReLU
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(_conv_bn_act(cin, expanded, 1, act=act))
        layers.append(_conv_bn_act(expanded, expanded, kernel, stride=stride, groups=expanded, act=act))
        if use_se:
            layers.append(SqueezeExcitation(expanded, _make_divisible(expanded // 4, 8)))
        layers.append(_conv_bn_act(expanded, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = out + x
        return out


class MobileNetV3(nn.Module):
    """MobileNetV3-small style network (scaled down)."""

    def __init__(
        self,
        num_classes: int = 10,
        setting: Sequence[tuple[int, int, int, bool, bool, int]] = (
            # kernel, expanded, out, SE, hardswish, stride
            (3, 16, 16, True, False, 2),
            (3, 48, 16, False, False, 2),
            (3, 48, 16, False, False, 1),
            (5, 64, 24, True, True, 2),
            (5, 96, 24, True, True, 1),
            (5, 96, 32, True, True, 1),
        ),
        stem_channels: int = 16,
        last_hidden: int = 64,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_act(3, stem_channels, 3, stride=2, act=nn.Hardswish)]
        cin = stem_channels
        for k, exp, cout, se, hs, s in setting:
            layers.append(InvertedResidualV3(cin, k, exp, cout, se, hs, s))
            cin = cout
        last_conv = 6 * cin
        layers.append(_conv_bn_act(cin, last_conv, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(last_conv, last_hidden),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(last_hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


# --------------------------------------------------------------------------- #
# DenseNet (Huang et al., 2017)
# --------------------------------------------------------------------------- #


class DenseLayer(nn.Module):
    """DenseNet-BC layer: BN-ReLU-Conv1x1 (bottleneck) - BN-ReLU-Conv3x3."""

    def __init__(self, in_features: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        inter = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_features, inter, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(inter)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(inter, growth_rate, 3, padding=1, bias=False)

    def forward(self, features: list[Tensor]) -> Tensor:
        x = torch.cat(features, 1)
        x = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.Module):
    """Dense block: each layer sees the concatenation of all previous features."""

    def __init__(self, num_layers: int, in_features: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(in_features + i * growth_rate, growth_rate, bn_size) for i in range(num_layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Module):
    """DenseNet transition: BN, ReLU, 1x1 conv (compression), 2x2 avg pool."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_features, out_features, 1, bias=False)
        self.pool = nn.AvgPool2d(2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.conv(self.relu(self.norm(x))))


class DenseNet(nn.Module):
    """DenseNet-BC (CIFAR-style 3x3 stem) with compression 0.5."""

    def __init__(
        self,
        block_config: Sequence[int] = (3, 3, 3),
        growth_rate: int = 8,
        init_features: int = 16,
        bn_size: int = 4,
        compression: float = 0.5,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, init_features, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        nf = init_features
        for i, n in enumerate(block_config):
            blocks.append(DenseBlock(n, nf, growth_rate, bn_size))
            nf = nf + n * growth_rate
            if i != len(block_config) - 1:
                out = int(nf * compression)
                blocks.append(Transition(nf, out))
                nf = out
        self.blocks = nn.Sequential(*blocks)
        self.norm_final = nn.BatchNorm2d(nf)
        self.relu = nn.ReLU(inplace=True)
        self.classifier = nn.Linear(nf, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv0(x)
        x = self.blocks(x)
        x = self.relu(self.norm_final(x))
        x = F.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


# --------------------------------------------------------------------------- #
# Inception-v1 / GoogLeNet (Szegedy et al., 2014)
# --------------------------------------------------------------------------- #


class ConvBNReLU(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class InceptionBlock(nn.Module):
    """Inception module: 1x1 | 1x1->3x3 | 1x1->5x5 | 3x3 maxpool->1x1, concatenated."""

    def __init__(
        self, cin: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int, pool_proj: int
    ) -> None:
        super().__init__()
        self.branch1 = ConvBNReLU(cin, ch1x1, 1)
        self.branch2 = nn.Sequential(ConvBNReLU(cin, ch3x3red, 1), ConvBNReLU(ch3x3red, ch3x3, 3, padding=1))
        self.branch3 = nn.Sequential(ConvBNReLU(cin, ch5x5red, 1), ConvBNReLU(ch5x5red, ch5x5, 5, padding=2))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), ConvBNReLU(cin, pool_proj, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        outputs = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(outputs, 1)


class InceptionV1(nn.Module):
    """Small GoogLeNet: stem, inception 3a/3b, maxpool, inception 4a, GAP, fc."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.4) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(3, 16, 3, stride=1, padding=1)
        self.conv2 = ConvBNReLU(16, 24, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        # channel ratios follow the paper's 3a/3b/4a, divided by ~8
        self.inception3a = InceptionBlock(24, 8, 12, 16, 2, 4, 4)  # -> 32
        self.inception3b = InceptionBlock(32, 16, 16, 24, 4, 12, 8)  # -> 60
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = InceptionBlock(60, 24, 12, 26, 2, 6, 8)  # -> 64
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv2(self.conv1(x))
        x = self.maxpool1(x)
        x = self.inception3b(self.inception3a(x))
        x = self.maxpool2(x)
        x = self.inception4a(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))


# --------------------------------------------------------------------------- #
# ShuffleNetV2 (Ma et al., 2018)
# --------------------------------------------------------------------------- #


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Channel shuffle: [B, g*c, H, W] -> view [B, g, c, H, W] -> swap -> flatten."""
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    x = x.view(b, -1, h, w)
    return x


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (stride 1: channel split; stride 2: two branches)."""

    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError("stride must be 1 or 2")
        self.stride = stride
        branch_features = oup // 2
        if stride == 1 and inp != branch_features * 2:
            raise ValueError("stride-1 unit needs inp == oup")
        self.branch1: nn.Module | None = None
        if stride == 2:
            self.branch1 = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride=2, padding=1, groups=inp, bias=False),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, branch_features, 1, bias=False),
                nn.BatchNorm2d(branch_features),
                nn.ReLU(inplace=True),
            )
        b2_in = inp if stride == 2 else branch_features
        self.branch2 = nn.Sequential(
            nn.Conv2d(b2_in, branch_features, 1, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
            nn.Conv2d(
                branch_features, branch_features, 3, stride=stride, padding=1, groups=branch_features, bias=False
            ),
            nn.BatchNorm2d(branch_features),
            nn.Conv2d(branch_features, branch_features, 1, bias=False),
            nn.BatchNorm2d(branch_features),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.branch1 is None:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2: conv1 + maxpool, three stages of shuffle units, conv5, GAP, fc."""

    def __init__(
        self,
        stages_repeats: Sequence[int] = (2, 3, 2),
        stages_out_channels: Sequence[int] = (8, 16, 32, 64, 128),
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        c0 = stages_out_channels[0]
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, c0, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c0), nn.ReLU(inplace=True)
        )
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = c0
        stages: list[nn.Module] = []
        for repeats, cout in zip(stages_repeats, stages_out_channels[1:4]):
            units: list[nn.Module] = [ShuffleUnit(cin, cout, 2)]
            units += [ShuffleUnit(cout, cout, 1) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*units))
            cin = cout
        self.stage2, self.stage3, self.stage4 = stages
        c5 = stages_out_channels[-1]
        self.conv5 = nn.Sequential(
            nn.Conv2d(cin, c5, 1, bias=False), nn.BatchNorm2d(c5), nn.ReLU(inplace=True)
        )
        self.fc = nn.Linear(c5, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage2(x)
        x = self.stage3(x)
        x = self.stage4(x)
        x = self.conv5(x)
        x = x.mean([2, 3])
        return self.fc(x)


# --------------------------------------------------------------------------- #
# UNet (Ronneberger et al., 2015)
# --------------------------------------------------------------------------- #


class DoubleConv(nn.Module):
    """(3x3 conv, padding 1, BN, ReLU) x 2."""

    def __init__(self, cin: int, cout: int, mid: int | None = None) -> None:
        super().__init__()
        mid = cout if mid is None else mid
        self.block = nn.Sequential(
            nn.Conv2d(cin, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class UNet(nn.Module):
    """Two-level UNet with transposed-conv upsampling and concatenated skips."""

    def __init__(self, in_chans: int = 3, n_classes: int = 2, base: int = 8) -> None:
        super().__init__()
        c1, c2, c3 = base, 2 * base, 4 * base
        self.inc = DoubleConv(in_chans, c1)
        self.pool1 = nn.MaxPool2d(2)
        self.down1 = DoubleConv(c1, c2)
        self.pool2 = nn.MaxPool2d(2)
        self.down2 = DoubleConv(c2, c3)
        self.up1 = nn.ConvTranspose2d(c3, c2, 2, stride=2)
        self.conv_up1 = DoubleConv(2 * c2, c2)
        self.up2 = nn.ConvTranspose2d(c2, c1, 2, stride=2)
        self.conv_up2 = DoubleConv(2 * c1, c1)
        self.outc = nn.Conv2d(c1, n_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.inc(x)
        x2 = self.down1(self.pool1(x1))
        x3 = self.down2(self.pool2(x2))
        u1 = self.up1(x3)
        y = self.conv_up1(torch.cat([x2, u1], dim=1))
        u2 = self.up2(y)
        y = self.conv_up2(torch.cat([x1, u2], dim=1))
        return self.outc(y)


# --------------------------------------------------------------------------- #
# ConvNeXt (Liu et al., 2022)
# --------------------------------------------------------------------------- #


class LayerNorm2d(nn.Module):
    """Channels-first LayerNorm over dim 1 of an [B, C, H, W] tensor, by hand."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: dw7x7, channels-last LN, Linear 4x, GELU, Linear, gamma, residual."""

    def __init__(self, dim: int, layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.dwconv(x)
        x = x.permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C)
        x = self.norm(x)
        x = self.pwconv2(self.act(self.pwconv1(x)))
        x = self.gamma * x
        x = x.permute(0, 3, 1, 2)
        return shortcut + x


class ConvNeXt(nn.Module):
    """ConvNeXt: 4x4/4 patchify stem, stages of blocks with LN+2x2/2 downsampling."""

    def __init__(
        self,
        depths: Sequence[int] = (1, 1, 2, 1),
        dims: Sequence[int] = (8, 16, 32, 32),
        num_classes: int = 10,
        layer_scale_init_value: float = 1e-6,
    ) -> None:
        super().__init__()
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(
            nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0]))
        )
        for i in range(len(dims) - 1):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2))
            )
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtBlock(d, layer_scale_init_value) for _ in range(n)])
            for n, d in zip(depths, dims)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        x = self.norm(x.mean([-2, -1]))
        return self.head(x)


# --------------------------------------------------------------------------- #
# Vision Transformer (Dosovitskiy et al., 2020)
# --------------------------------------------------------------------------- #


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv Linear, written by hand."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class SeparateQKVAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v Linears and SDPA."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=qkv_bias) for _ in range(3))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, _ = x.shape
        q, k, v = (lin(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
                   for lin in (self.q, self.k, self.v))
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, -1))


class Mlp(nn.Module):
    """Transformer MLP: Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PreNormResidual(nn.Module):
    """A pre-norm transformer block: ``x + attn(norm_a(x))`` then ``x + mlp(norm_b(x))``.

    Subclasses name the four parts as their reference implementation does
    (``PARTS``), so parameter names match timm / Hugging Face layouts.
    """

    PARTS: tuple[str, str, str, str] = ("norm1", "attn", "norm2", "mlp")

    def forward(self, x: Tensor) -> Tensor:
        norm_a, attn, norm_b, mlp = (getattr(self, name) for name in self.PARTS)
        x = x + attn(norm_a(x))
        return x + mlp(norm_b(x))


class ViTBlock(PreNormResidual):
    """Pre-norm transformer encoder block (timm naming)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, separate_qkv: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = (SeparateQKVAttention if separate_qkv else Attention)(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))


class VisionTransformer(nn.Module):
    """ViT: conv patch embedding, cls token, learned pos-embed, encoder, cls head."""

    def __init__(self, img_size: int = 32, patch_size: int = 8, in_chans: int = 3, embed_dim: int = 32,
                 depth: int = 2, num_heads: int = 4, mlp_ratio: float = 4.0, num_classes: int = 10,
                 separate_qkv: bool = False) -> None:
        super().__init__()
        num_patches = (img_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=0.02)
        self.blocks = nn.Sequential(
            *[ViTBlock(embed_dim, num_heads, mlp_ratio, separate_qkv) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        x = x.flatten(2).transpose(1, 2)  # [B, N, C]
        B = x.shape[0]
        cls = self.cls_token.expand(B, -1, -1)
        x = torch.cat((cls, x), dim=1)
        x = x + self.pos_embed
        x = self.blocks(x)
        x = self.norm(x[:, 0])
        return self.head(x)


# --------------------------------------------------------------------------- #
# Llama (Touvron et al., 2023)
# --------------------------------------------------------------------------- #


class RMSNorm(nn.Module):
    """Root-mean-square LayerNorm (no mean subtraction, no bias)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x: Tensor) -> Tensor:
    """Rotate the two halves of the last dim: (x1, x2) -> (-x2, x1)."""
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """Repeat kv heads ``n_rep`` times: [b, n_kv, t, d] -> [b, n_kv * n_rep, t, d]."""
    if n_rep == 1:
        return x
    b, n_kv, t, d = x.shape
    return x[:, :, None, :, :].expand(b, n_kv, n_rep, t, d).reshape(b, n_kv * n_rep, t, d)


class LlamaAttention(nn.Module):
    """Grouped-query causal self-attention with rotary position embedding."""

    def __init__(
        self, dim: int, n_heads: int, n_kv_heads: int, max_seq_len: int, rope_theta: float = 10000.0
    ) -> None:
        super().__init__()
        if n_heads % n_kv_heads != 0:
            raise ValueError("n_heads must be a multiple of n_kv_heads")
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.n_rep = n_heads // n_kv_heads
        self.head_dim = dim // n_heads
        self.q_proj = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * self.head_dim, dim, bias=False)
        # Rotary tables. Built with tensor ops only, so this also works under
        # ``with torch.device("meta")`` (the tables are then meta tensors).
        inv_freq = 1.0 / (
            rope_theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim)
        )
        t = torch.arange(max_seq_len, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)  # [T, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [T, D]
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        # Equivalent to ``self.cos[:T]``: under plain ``symbolic_trace`` a
        # buffer is a concrete tensor, and ``tensor[:proxy]`` cannot be traced,
        # while ``narrow`` with a Proxy length records a node.
        cos = self.cos.narrow(0, 0, T)
        sin = self.sin.narrow(0, 0, T)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = repeat_kv(k, self.n_rep)
        v = repeat_kv(v, self.n_rep)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out = out.transpose(1, 2).reshape(B, T, -1)
        return self.o_proj(out)


class LlamaMLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(PreNormResidual):
    """Llama decoder layer: pre-RMSNorm attention and SwiGLU MLP with residuals (Hugging Face naming)."""

    PARTS = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, intermediate_size: int, max_seq_len: int,
                 norm_eps: float = 1e-5, rope_theta: float = 10000.0) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(dim, norm_eps)
        self.self_attn = LlamaAttention(dim, n_heads, n_kv_heads, max_seq_len, rope_theta)
        self.post_attention_layernorm = RMSNorm(dim, norm_eps)
        self.mlp = LlamaMLP(dim, intermediate_size)


class Llama(nn.Module):
    """Llama-style decoder-only language model returning logits [B, T, vocab]."""

    def __init__(self, vocab_size: int = 64, dim: int = 32, n_layers: int = 2, n_heads: int = 4,
                 n_kv_heads: int = 2, intermediate_size: int = 64, max_seq_len: int = 32,
                 norm_eps: float = 1e-5, rope_theta: float = 10000.0) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab_size, dim)
        self.layers = nn.ModuleList(
            LlamaBlock(dim, n_heads, n_kv_heads, intermediate_size, max_seq_len, norm_eps, rope_theta)
            for _ in range(n_layers)
        )
        self.norm = RMSNorm(dim, norm_eps)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.embed_tokens(tokens)
        for layer in self.layers:
            h = layer(h)
        h = self.norm(h)
        return self.lm_head(h)


# --------------------------------------------------------------------------- #
# LeNet-5 (LeCun et al., 1998)
# --------------------------------------------------------------------------- #


class LeNet5(nn.Module):
    """LeNet-5 for 1x28x28 inputs (ReLU + max-pool modernisation)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(400, 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.relu3(self.fc1(x))
        x = self.relu4(self.fc2(x))
        return self.fc3(x)


# --------------------------------------------------------------------------- #
# Factories
# --------------------------------------------------------------------------- #


def _image(batch: int = 1, chans: int = 3, size: int = 32) -> tuple[Tensor, ...]:
    return (torch.randn(batch, chans, size, size),)


def _vision(build: Callable[[], nn.Module], doc: str, **image: int) -> Callable[..., ModelAndInputs]:
    """A zoo factory: seed 0, build, perturb norms, and an image batch (``_image(**image)``)."""

    def factory(perturb_norms: bool = True) -> ModelAndInputs:
        torch.manual_seed(0)
        return _finish(build(), perturb_norms), _image(**image)

    factory.__doc__ = doc
    return factory


resnet_basic = _vision(lambda: ResNet(BasicBlock, (2, 2, 2, 2), widths=(8, 16, 32, 64)),
                       "ResNet-18-shaped BasicBlock ResNet (layers 2-2-2-2, widths 8-64); 1x3x32x32.")
resnet_bottleneck = _vision(lambda: ResNet(Bottleneck, (1, 2, 1, 1), widths=(8, 16, 24, 32)),
                            "Bottleneck ResNet (layers 1-2-1-1, widths 8-32, expansion 4); 1x3x32x32.")
mobilenet_v2 = _vision(MobileNetV2, "Small MobileNetV2; input 1x3x32x32.")
mobilenet_v3 = _vision(MobileNetV3, "Small MobileNetV3-small; input 1x3x32x32.")
densenet = _vision(DenseNet, "DenseNet-BC, 3 blocks x 3 layers, growth 8; input 1x3x32x32.")
inception = _vision(InceptionV1, "Small Inception-v1 with three Inception blocks; input 1x3x32x32.")
shufflenet_v2 = _vision(ShuffleNetV2, "Small ShuffleNetV2 (repeats 2-3-2, channels 8-16-32-64-128); input 2x3x64x64.",
                        batch=2, size=64)
unet = _vision(UNet, "Two-level UNet, base width 8, 2 classes; input 1x3x32x32 -> 1x2x32x32.")
convnext = _vision(ConvNeXt, "Small ConvNeXt (depths 1-1-2-1, dims 8-16-32-32); input 1x3x32x32.")
vit = _vision(VisionTransformer, "ViT (dim 32, depth 2, 4 heads, patch 8) with fused qkv; input 2x3x32x32.", batch=2)
vit_separate_qkv = _vision(lambda: VisionTransformer(separate_qkv=True),
                           "ViT with separate q/k/v Linears and SDPA; input 2x3x32x32.", batch=2)
lenet5 = _vision(LeNet5, "LeNet-5; input 2x1x28x28.", batch=2, chans=1, size=28)


def llama(perturb_norms: bool = True) -> ModelAndInputs:
    """Tiny Llama (vocab 64, dim 32, 2 layers, 4 heads / 2 kv heads); tokens [2, 8]."""
    torch.manual_seed(0)
    model = Llama()
    tokens = torch.randint(0, 64, (2, 8), dtype=torch.long)
    return _finish(model, perturb_norms), (tokens,)


def llama_7b_meta(**overrides: int | float) -> ModelAndInputs:
    """Llama-2-7B-shaped :class:`Llama` on the meta device (no weight memory).

    Defaults: vocab 32000, dim 4096, 32 layers, 32 heads, 32 kv heads,
    intermediate 11008, max_seq_len 4096; any can be overridden by keyword.
    Returns ``(model.eval(), (tokens,))`` with meta LongTensor tokens [1, 16].
    """
    cfg: dict[str, int | float] = dict(
        vocab_size=32000,
        dim=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=32,
        intermediate_size=11008,
        max_seq_len=4096,
        norm_eps=1e-5,
        rope_theta=10000.0,
    )
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise TypeError(f"unknown Llama config keys: {sorted(unknown)}")
    cfg.update(overrides)
    with torch.device("meta"):
        model = Llama(**cfg)  # type: ignore[arg-type]
        tokens = torch.zeros(1, 16, dtype=torch.long)
    return model.eval(), (tokens,)


ZOO: dict[str, Callable[[], ModelAndInputs]] = {
    "resnet_basic": resnet_basic,
    "resnet_bottleneck": resnet_bottleneck,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3": mobilenet_v3,
    "densenet": densenet,
    "inception": inception,
    "shufflenet_v2": shufflenet_v2,
    "unet": unet,
    "convnext": convnext,
    "vit": vit,
    "vit_separate_qkv": vit_separate_qkv,
    "llama": llama,
    "lenet5": lenet5,
}
"""Model name -> zero-argument factory returning ``(model.eval(), example_inputs)``."""
