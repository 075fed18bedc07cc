"""CRD's CIFAR networks beside the ResNets: VGG with BN and ShuffleNetV2."""

from __future__ import annotations

import torch
from torch import nn

from harness.zoo.model_core import register_model
from harness.zoo.model_taps import CONTRACT_TAPS

__all__ = ["CifarVGG", "ShuffleBasic", "ShuffleDown", "ShuffleNetV2"]


_VGG_CFG = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
}


class CifarVGG(nn.Module):
    """CRD's CIFAR VGG with BN: five conv blocks (block0..block4), max-pooling between the
    first four, global pooling, one linear layer. stage1..4 = block1..block4."""

    def __init__(
        self, num_classes: int, cfg=((64,), (128,), (256,), (512,), (512,)), in_channels: int = 3
    ):
        super().__init__()
        cin = in_channels
        for i, widths in enumerate(cfg):
            layers = []
            for w in widths:
                layers += [
                    nn.Conv2d(cin, w, 3, padding=1),
                    nn.BatchNorm2d(w),
                    nn.ReLU(inplace=True),
                ]
                cin = w
            setattr(self, f"block{i}", nn.Sequential(*layers))
            setattr(
                self, f"pool{i}", nn.MaxPool2d(2) if i < len(cfg) - 1 else nn.AdaptiveAvgPool2d(1)
            )
        self.n_blocks = len(cfg)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(cin, num_classes)
        self.tap_points = {
            "penultimate": "flatten",
            "stage1": "block1",
            "stage2": "block2",
            "stage3": "block3",
            "stage4": "block4",
            "head": "classifier",
        }

    def forward(self, x):
        for i in range(self.n_blocks):
            x = getattr(self, f"pool{i}")(getattr(self, f"block{i}")(x))
        return self.classifier(self.flatten(x))


for _name, _cfg in _VGG_CFG.items():
    register_model(
        _name,
        family="vgg",
        taps=CONTRACT_TAPS,
        paper="lohit2020",
        params={"cfg": tuple(map(tuple, _cfg)), "in_channels": 3},
        description=f"CRD CIFAR {_name} with BN",
    )(lambda num_classes, **p: CifarVGG(num_classes, **p))


class _ChannelShuffle(nn.Module):
    """``(n, g*c, h, w) -> (n, c*g, h, w)``: interleave the ``g`` channel groups (ShuffleNet)."""

    def __init__(self, groups: int = 2):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleBasic(nn.Module):
    """ShuffleNetV2 unit of stride 1: split the channels, transform one half
    (1x1 - 3x3 depthwise - 1x1), concatenate, shuffle (Ma et al. 2018, Fig. 3c)."""

    def __init__(self, channels: int):
        super().__init__()
        if channels % 2:
            raise ValueError(f"ShuffleBasic splits its channels in halves; got {channels}")
        self.keep = c = channels // 2  # RepDistiller's SplitBlock(0.5): x[:, :c], x[:, c:]
        self.conv1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.shuffle = _ChannelShuffle(2)

    def forward(self, x):
        x1, x2 = x[:, : self.keep], x[:, self.keep :]
        out = torch.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = torch.relu(self.bn3(self.conv3(out)))
        return self.shuffle(torch.cat([x1, out], 1))


class ShuffleDown(nn.Module):
    """ShuffleNetV2 unit of stride 2: both branches downsample (3x3 depthwise, stride 2) to
    ``cout / 2`` channels each; concatenate, shuffle (Ma et al. 2018, Fig. 3d)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        # left: 3x3 dw (stride 2) - 1x1
        self.conv1 = nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right: 1x1 - 3x3 dw (stride 2) - 1x1
        self.conv3 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.shuffle = _ChannelShuffle(2)

    def forward(self, x):
        left = torch.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = torch.relu(self.bn3(self.conv3(x)))
        right = torch.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return self.shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 for CIFAR as in CRD (RepDistiller ``models/ShuffleNetv2.py``, ``ShuffleV2``).

    Stem ``conv1``: 3 -> 24 channels, *1x1*, stride 1, BN, ReLU (RepDistiller's; the 3x3 stem of
    kuangliu's pytorch-cifar, which it derives from, is commented out there), no max-pooling.
    Three stages ``layer1..3``, each one :class:`ShuffleDown` (stride 2) then ``num_blocks``
    :class:`ShuffleBasic` units; ``conv2`` 1x1 to ``out_channels[3]``, BN, ReLU, global
    average pooling, ``linear``. Module names and parameter shapes are RepDistiller's, so its
    ``state_dict`` loads as is (``{"model": state}`` checkpoints unwrapped first). On 32x32
    inputs (net_size 1): stage outputs ``(n, 116, 16, 16)``, ``(n, 232, 8, 8)``,
    ``(n, 464, 4, 4)``, penultimate 1024-d.

    Tap points (RepDistiller's ``is_feat`` features ``f1..f4``): stage1..3 = layer1..3 (the
    stages' outputs, after the last unit's channel shuffle), stage4 = penultimate = the pooled
    1024-d features after ``conv2``-BN-ReLU, as the CIFAR ResNets map theirs (lohit2020's
    4-stage mapping: "the output of the fourth stage is the penultimate layer output").
    """

    def __init__(
        self,
        num_classes: int,
        out_channels=(116, 232, 464, 1024),
        num_blocks=(3, 7, 3),
        in_channels: int = 3,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        for i, (c, n) in enumerate(zip(out_channels[:3], num_blocks, strict=False)):
            setattr(
                self,
                f"layer{i + 1}",
                nn.Sequential(ShuffleDown(cin, c), *[ShuffleBasic(c) for _ in range(n)]),
            )
            cin = c
        self.conv2 = nn.Conv2d(cin, out_channels[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # = RepDistiller's avg_pool2d(4) on 4x4 maps
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(out_channels[3], num_classes)
        self.tap_points = {
            "penultimate": "flatten",
            "stage1": "layer1",
            "stage2": "layer2",
            "stage3": "layer3",
            "stage4": "flatten",
            "head": "linear",
        }

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.linear(self.flatten(self.avgpool(x)))


register_model(
    "shufflenet_v2",
    family="shufflenet",
    taps=CONTRACT_TAPS,
    paper="lohit2020",
    params={"out_channels": (116, 232, 464, 1024), "num_blocks": (3, 7, 3), "in_channels": 3},
    description="CRD ShuffleV2 for CIFAR (net_size 1: 116/232/464 channels, "
    "(3, 7, 3) units, 1024-d penultimate); stage4 = penultimate",
)(lambda num_classes, **p: ShuffleNetV2(num_classes, **p))
