"""The CIFAR ResNets: He et al.'s basic-block ResNets (and CRD's x4 variants), the
pre-activation bottleneck ResNets of li2020, and the Wide ResNets."""

from __future__ import annotations

from torch import nn

from harness.zoo.model_core import register_model
from harness.zoo.model_taps import CONTRACT_TAPS

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "PreActBottleneck",
    "PreActResNet",
    "WideBasic",
    "WideResNet",
]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(out + res)


class CifarResNet(nn.Module):
    """He et al. (2016) CIFAR ResNet, depth 6n+2, as in the CRD repository.

    ``channels = [stem, s1, s2, s3]``: ``[16, 16, 32, 64]`` (resnet20..110),
    ``[32, 64, 128, 256]`` (the x4 variants of CRD). Tap points: stage1..3 = layer1..3,
    stage4 = penultimate = the pooled features (lohit2020's 4-stage mapping).
    """

    def __init__(
        self, num_classes: int, depth: int = 20, channels=(16, 16, 32, 64), in_channels: int = 3
    ):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.relu = nn.ReLU(inplace=True)
        cin = channels[0]
        for i, (c, s) in enumerate(zip(channels[1:], (1, 2, 2), strict=False)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, c, s if j == 0 else 1))
                cin = c
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)
        self.tap_points = {
            "penultimate": "flatten",
            "stage1": "layer1",
            "stage2": "layer2",
            "stage3": "layer3",
            "stage4": "flatten",
            "head": "fc",
        }

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


def _register_cifar_resnet(name, depth, channels, paper, desc):
    register_model(
        name,
        family="resnet_cifar",
        taps=CONTRACT_TAPS,
        paper=paper,
        description=desc,
        params={"depth": depth, "channels": tuple(channels), "in_channels": 3},
    )(lambda num_classes, **p: CifarResNet(num_classes, **p))


for _d in (20, 32, 56, 110):
    _register_cifar_resnet(
        f"resnet{_d}",
        _d,
        (16, 16, 32, 64),
        "li2020,lohit2020",
        f"CIFAR ResNet-{_d} (He et al., 16/32/64 channels)",
    )
_register_cifar_resnet(
    "resnet56_slim",
    56,
    (8, 8, 16, 32),
    "li2020",
    "CIFAR ResNet-56 at half width (8/16/32 channels), compression student",
)
_register_cifar_resnet(
    "resnet8x4", 8, (32, 64, 128, 256), "lohit2020", "CRD resnet8x4 (channels 32/64/128/256)"
)
_register_cifar_resnet(
    "resnet32x4", 32, (32, 64, 128, 256), "lohit2020", "CRD resnet32x4 (channels 32/64/128/256)"
)


class PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        out = planes * 4
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut = None
        if stride != 1 or cin != out:
            self.shortcut = nn.Conv2d(cin, out, 1, stride, bias=False)

    def forward(self, x):
        pre = self.relu(self.bn1(x))
        res = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + res


class _PreActTrunk(nn.Module):
    """Stem conv, three stages of pre-activation blocks, then BN-ReLU-pool-linear: the shape
    shared by the pre-activation ResNets and the Wide ResNets. Stage modules are named
    ``{prefix}1..3`` (state-dict keys and tap paths); stage4 = penultimate = pooled features."""

    def _build(self, num_classes, in_channels, widths, n, make_block, expansion, prefix, stem=16):
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        self._stages = [f"{prefix}{i + 1}" for i in range(3)]
        cin = stem
        for name, (c, s) in zip(self._stages, zip(widths, (1, 2, 2), strict=False), strict=False):
            blocks = []
            for j in range(n):
                blocks.append(make_block(cin, c, s if j == 0 else 1))
                cin = c * expansion
            setattr(self, name, nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)
        self.tap_points = {
            "penultimate": "flatten",
            "stage4": "flatten",
            "head": "fc",
            **{f"stage{i + 1}": name for i, name in enumerate(self._stages)},
        }

    def forward(self, x):
        x = self.conv1(x)
        for name in self._stages:
            x = getattr(self, name)(x)
        return self.fc(self.flatten(self.avgpool(self.relu(self.bn(x)))))


class PreActResNet(_PreActTrunk):
    """Pre-activation bottleneck ResNet for CIFAR (He et al. 2016b), depth 9n+2 (1001: n=111).

    Tap points: stage1..3 = layer1..3, stage4 = penultimate = pooled features after the final
    BN-ReLU.
    """

    def __init__(
        self, num_classes: int, depth: int = 1001, in_channels: int = 3, width: float = 1.0
    ):
        super().__init__()
        if (depth - 2) % 9 or depth < 11:
            raise ValueError(
                f"pre-activation bottleneck ResNet depth must be 9n+2 (n >= 1), got {depth}"
            )
        if not (width > 0 and all(float(c * width).is_integer() for c in (16, 32, 64))):
            raise ValueError(f"width must scale 16/32/64 channels to whole numbers; got {width}")
        c = [int(k * width) for k in (16, 32, 64)]
        self._build(
            num_classes,
            in_channels,
            tuple(c),
            (depth - 2) // 9,
            PreActBottleneck,
            expansion=4,
            prefix="layer",
            stem=c[0],
        )


register_model(
    "preact_resnet1001",
    family="preact_resnet",
    taps=CONTRACT_TAPS,
    paper="li2020",
    params={"depth": 1001, "in_channels": 3, "width": 1.0},
    description="pre-activation bottleneck ResNet-1001 for CIFAR (slow; pass a "
    "smaller depth=9n+2 for tests)",
)(lambda num_classes, **p: PreActResNet(num_classes, **p))
# li2020 §4.3: "L->M and W->M, with learned representation of dimension d' = 256": the
# pre-activation bottleneck ResNet at depth 56 (9n+2, n = 6; 64 x 4 = 256-d penultimate), the
# family of the L teacher (ResNet-1001). The paper does not say which ResNet-56 it used; the
# basic-block `resnet56` has a 64-d representation. S ("ResNet-56-Slim") is M at half the
# channels (8/16/32 x 4: 128-d); the paper does not say how it slims M.
register_model(
    "preact_resnet56",
    family="preact_resnet",
    taps=CONTRACT_TAPS,
    paper="li2020",
    params={"depth": 56, "in_channels": 3, "width": 1.0},
    description="pre-activation bottleneck ResNet-56 for CIFAR (16/32/64 x 4 "
    "channels, 256-d representation): li2020's compression student M",
)(lambda num_classes, **p: PreActResNet(num_classes, **p))
register_model(
    "preact_resnet56_slim",
    family="preact_resnet",
    taps=CONTRACT_TAPS,
    paper="li2020",
    params={"depth": 56, "in_channels": 3, "width": 0.5},
    description="preact_resnet56 at half the channels (8/16/32 x 4, 128-d "
    "representation): li2020's compression student S",
)(lambda num_classes, **p: PreActResNet(num_classes, **p))


class WideBasic(nn.Module):
    def __init__(self, cin, cout, stride=1, dropout=0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut = (
            None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)
        )

    def forward(self, x):
        pre = self.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(_PreActTrunk):
    """Wide ResNet WRN-depth-widen (Zagoruyko & Komodakis), depth 6n+4, channels
    16, 16k, 32k, 64k. Tap points: stage1..3 = block1..3, stage4 = penultimate."""

    def __init__(
        self,
        num_classes: int,
        depth: int = 16,
        widen: int = 2,
        dropout: float = 0.0,
        in_channels: int = 3,
    ):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        self._build(
            num_classes,
            in_channels,
            (16 * widen, 32 * widen, 64 * widen),
            (depth - 4) // 6,
            lambda cin, c, s: WideBasic(cin, c, s, dropout),
            expansion=1,
            prefix="block",
        )


register_model(
    "wrn",
    family="wrn",
    taps=CONTRACT_TAPS,
    paper="lohit2020",
    params={"depth": 16, "widen": 2, "dropout": 0.0, "in_channels": 3},
    description="Wide ResNet, any depth (6n+4) and widen factor",
)(lambda num_classes, **p: WideResNet(num_classes, **p))
for _d, _k in ((16, 2), (40, 2), (28, 10)):
    register_model(
        f"wrn_{_d}_{_k}",
        family="wrn",
        taps=CONTRACT_TAPS,
        paper="lohit2020",
        params={"depth": _d, "widen": _k, "dropout": 0.0, "in_channels": 3},
        description=f"WRN-{_d}-{_k}",
    )(lambda num_classes, **p: WideResNet(num_classes, **p))
