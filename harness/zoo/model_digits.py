"""The digits models: an MLP on the 64 pixels and a small CNN on the 8x8 images."""

from __future__ import annotations

from torch import nn

from harness.zoo.model_core import register_model
from harness.zoo.model_taps import CONTRACT_TAPS

__all__ = ["MLP", "SmallCNN"]


class MLP(nn.Module):
    """``in -> widths... -> num_classes`` with ReLUs; image inputs are flattened.

    ``stages``: group the hidden layers into that many stages of equal depth (``len(widths)``
    a multiple of it) and tap ``stage<k>`` at the end of group ``k`` (lohit2020 §4: "4 stages of
    approximately equal depth, independent of the architecture or depth"), so that a deep MLP
    (8 layers, 2 a stage) and a shallow one (4 layers) of equal widths are tapped at matching
    depths; default: one stage per hidden layer."""

    def __init__(
        self, num_classes: int, in_features: int = 64, widths=(256, 256), stages: int | None = None
    ):
        super().__init__()
        widths = [int(w) for w in widths]
        per = 1
        if stages is not None:
            if int(stages) < 1 or len(widths) % int(stages):
                raise ValueError(
                    f"mlp: {len(widths)} hidden layers do not split into "
                    f"{stages} stages of equal depth"
                )
            per = len(widths) // int(stages)
        layers: list[nn.Module] = [nn.Flatten()]
        points: dict[str, str] = {}
        d = in_features
        for i, w in enumerate(widths):
            layers += [nn.Linear(d, w), nn.ReLU()]
            if (i + 1) % per == 0:
                points[f"stage{(i + 1) // per}"] = f"features.{len(layers) - 1}"
            d = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(d, num_classes)
        self.tap_points = {"penultimate": f"features.{len(layers) - 1}", **points, "head": "fc"}

    def forward(self, x):
        return self.fc(self.features(x))


@register_model(
    "mlp",
    input_kind="flat",
    input_size=(64,),
    family="mlp",
    taps=("penultimate", "stage1", "stage2", "head"),
    params={"in_features": 64, "widths": (256, 256), "stages": None},
    paper="li2020",
    description="MLP on digits' 64 pixels: teacher widths (256, 256), student (8,); "
    "stage<i> = hidden layer i (or the end of group i of `stages`)",
)
def _mlp(num_classes, **p):
    return MLP(num_classes, **p)


def _conv_bn(cin, cout, stride=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SmallCNN(nn.Module):
    """Three conv stages for 8x8 digits images (8x8 -> 4x4 -> 2x2), then pooling.

    ``depth``: conv-BN-ReLU layers per stage (the first strided), so that a deeper teacher and a
    shallower student of *equal widths* — lohit2020's resnet56 -> resnet20, vgg13 -> vgg8 — are
    tapped at the ends of matching stages, with no embedding between them."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: float = 1.0, depth: int = 1):
        super().__init__()
        if int(depth) < 1:
            raise ValueError(f"cnn depth must be >= 1 layer per stage, got {depth}")
        c = [max(1, round(b * width)) for b in (16, 32, 64)]
        self.in_channels = in_channels

        def stage(cin, cout, stride):
            if int(depth) == 1:  # the layout (and state_dict names) of depth 1
                return _conv_bn(cin, cout, stride)
            return nn.Sequential(
                _conv_bn(cin, cout, stride), *(_conv_bn(cout, cout) for _ in range(int(depth) - 1))
            )

        self.layer1 = stage(in_channels, c[0], 1)
        self.layer2 = stage(c[0], c[1], 2)
        self.layer3 = stage(c[1], c[2], 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c[2], num_classes)
        self.tap_points = {
            "penultimate": "flatten",
            "stage1": "layer1",
            "stage2": "layer2",
            "stage3": "layer3",
            "stage4": "flatten",
            "head": "fc",
        }

    def forward(self, x):
        if x.dim() == 2:  # flat digits
            side = int(round((x.shape[1] // self.in_channels) ** 0.5))
            x = x.view(x.shape[0], -1, side, side)
        return self.fc(self.flatten(self.pool(self.layer3(self.layer2(self.layer1(x))))))


@register_model(
    "cnn",
    input_kind="image",
    input_size=(1, 8, 8),
    family="cnn",
    taps=CONTRACT_TAPS,
    params={"in_channels": 1, "width": 1.0, "depth": 1},
    description="small conv net for 8x8 digits (16/32/64 channels x width; "
    "`depth` conv layers a stage)",
)
def _cnn(num_classes, **p):
    return SmallCNN(num_classes, **p)
