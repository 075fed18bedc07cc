"""torchvision's ImageNet networks (ResNets, MobileNetV2, AlexNet), built without weights
(pass ``weights_path=`` for a local state_dict), with their tap points."""

from __future__ import annotations

from harness.zoo.model_core import register_model
from harness.zoo.optional import optional_import

__all__: list[str] = []


#: Tap points of the torchvision networks, by architecture prefix.
_TORCHVISION_TAPS = {
    # avgpool gives (n, c, 1, 1); Taps flattens it
    "resnet": {
        "penultimate": "avgpool",
        "stage1": "layer1",
        "stage2": "layer2",
        "stage3": "layer3",
        "stage4": "layer4",
        "head": "fc",
    },
    # resolution drops after features.3/6/13; classifier = drop, fc. Its pooling is functional:
    # penultimate = the last feature map, which Taps average-pools into exactly the classifier's
    # input (before dropout).
    "mobilenet_v2": {
        "penultimate": "features.18",
        "stage1": "features.3",
        "stage2": "features.6",
        "stage3": "features.13",
        "stage4": "features.18",
        "head": "classifier.1",
    },
    # features = conv1 relu pool | conv2 relu pool | conv3 relu conv4 relu conv5 relu pool;
    # classifier = drop, fc6, relu, drop, fc7, relu, fc8. Every tap is *after* a ReLU or a
    # pooling: the ReLUs are in place, so a Linear's own output would be overwritten.
    # penultimate = fc7 after its ReLU (lu2017's "fc7" features; the head's input, no dropout
    # between them); stage1..4 = the conv1, conv2, conv3-4 and conv5 blocks (pool1, pool2,
    # relu4, pool5).
    "alexnet": {
        "penultimate": "classifier.5",
        "fc7": "classifier.5",
        "fc6": "classifier.2",
        "stage1": "features.2",
        "stage2": "features.5",
        "stage3": "features.9",
        "stage4": "features.12",
        "head": "classifier.6",
    },
}


def _taps(arch: str) -> dict[str, str]:
    return next(v for k, v in _TORCHVISION_TAPS.items() if arch.startswith(k))


def _torchvision(arch: str):
    taps = _taps(arch)

    def build(num_classes, **p):
        tvm = optional_import("torchvision.models", "vision", f"model {arch!r}")

        model = getattr(tvm, arch)(weights=None, num_classes=num_classes, **p)
        model.tap_points = dict(taps)
        return model

    return build


for _arch, _paper in (
    ("resnet18", "li2020"),
    ("resnet34", "li2020"),
    ("resnet101", "li2020"),
    ("mobilenet_v2", "li2020"),
    ("alexnet", "lu2017"),
):
    register_model(
        _arch,
        family="torchvision",
        taps=tuple(_taps(_arch)),
        input_size=(3, 224, 224),
        paper=_paper,
        params={},
        description=f"torchvision {_arch} (weights=None; pass "
        f"weights_path= for a local state_dict)",
    )(_torchvision(_arch))
