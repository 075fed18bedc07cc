"""Networks of the three papers, by name, with their capabilities as data.

Every model built here exposes ``model.tap_points: dict[str, str]`` mapping the names of the
representation contract (design.md) to module paths, for :class:`harness.transfer.taps.Taps`:

- ``penultimate``: the (pooled) features fed to the classifier;
- ``stage1`` ... ``stage4``: four stages of roughly equal depth. Networks with four stages
  (torchvision ResNets, VGG, MobileNetV2) map them one to one; AlexNet maps its conv1, conv2,
  conv3-4 and conv5 blocks. CIFAR ResNets / WRNs / ShuffleNetV2 with three stages map
  ``stage1``..``stage3`` to the three stages and ``stage4`` to the penultimate (pooled)
  features, as lohit2020 does. MLPs map ``stage1``.. to their hidden layers (after the ReLU),
  as many as there are (a width-8 student has only ``stage1``);
- ``head``: the final linear layer (:func:`replace_head` swaps it for fine-tuning);
- model-specific extras, e.g. AlexNet's ``fc6`` and ``fc7`` (after their ReLUs; lu2017).

::

    net = build_model("resnet20", num_classes=10)
    with Taps(net, ["stage1", "penultimate"]) as taps:
        logits = net(x)

Each name is registered once, where it is defined (:func:`register_model`); CLI choices and test
parametrisation read :func:`all_models` / :func:`available_models`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from solvers.registry import Registry, did_you_mean

__all__ = [
    "ModelInfo",
    "MODELS",
    "register_model",
    "get_model",
    "all_models",
    "available_models",
    "build_model",
    "replace_head",
    "head_module",
    "with_source_head",
    "DualHead",
    "STAGES",
    "read_state",
    "head_fits",
    "load_weights",
]

STAGES = ("stage1", "stage2", "stage3", "stage4")


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ModelInfo:
    """Capabilities of one registered model.

    Attributes
    ----------
    name : str
    factory : callable
        ``fn(num_classes, **params) -> nn.Module`` (with ``tap_points`` set).
    input_kind : str
        ``"flat"`` (vectors, e.g. digits' 64 pixels) or ``"image"`` (``(c, h, w)`` tensors).
    input_size : tuple of int
        The input shape the papers use, without the batch dimension.
    family : str
        ``"mlp"``, ``"cnn"``, ``"resnet_cifar"``, ``"preact_resnet"``, ``"wrn"``, ``"vgg"``,
        ``"shufflenet"``, ``"torchvision"``.
    params : Mapping[str, Any]
        Keyword parameters of the factory and their defaults.
    paper, description : str
    """

    name: str
    factory: Callable[..., nn.Module]
    input_kind: str = "image"
    input_size: tuple[int, ...] = (3, 32, 32)
    family: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    paper: str = ""
    description: str = ""


def _model_info(name: str, fn: Callable[..., nn.Module], **capabilities: Any) -> ModelInfo:
    info = ModelInfo(name=name, factory=fn, **capabilities)
    if info.input_kind not in ("flat", "image"):
        raise ValueError(f"model {name!r}: input_kind must be 'flat' or 'image'")
    return info


#: The models, by name (installed plugins: entry point group ``otransfer.models``).
MODELS: Registry[ModelInfo] = Registry("model", make=_model_info, entry_points="otransfer.models")


def register_model(name: str, **capabilities: Any) -> Callable:
    """Register ``fn(num_classes, **params) -> nn.Module`` as model ``name`` (decorator)."""
    return MODELS.register(name, **capabilities)


def get_model(name: str) -> ModelInfo:
    """Look up a model by name; an unknown name raises with the close matches."""
    return MODELS.get(name)


def all_models() -> dict[str, ModelInfo]:
    """Every registered model, in registration order."""
    return dict(MODELS.items())


def available_models(**flags: Any) -> list[str]:
    """Names of the models whose capabilities match ``flags`` (e.g. ``family="wrn"``)."""
    return MODELS.names(**flags)


def build_model(
    name: str, num_classes: int, *, weights_path: str | os.PathLike | None = None, **kw: Any
) -> nn.Module:
    """Build model ``name`` with a ``num_classes``-way head.

    Parameters
    ----------
    name : str
        A registered model.
    num_classes : int
    weights_path : path, optional
        A local ``state_dict`` file (``torch.save(model.state_dict(), path)``); nothing is ever
        downloaded. Head parameters whose shape differs from this model's (another number of
        classes) are skipped, so the head stays freshly initialised.
    **kw
        The model's parameters (``ModelInfo.params``); unknown ones raise ``ValueError``.

    Raises
    ------
    FileNotFoundError
        ``weights_path`` does not exist.
    """
    info = get_model(name)
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    unknown = set(kw) - set(info.params)
    if unknown:
        bad = sorted(unknown)[0]
        hint = did_you_mean(bad, info.params)
        raise ValueError(
            f"unknown parameter {bad!r} for model {info.name!r}{hint} "
            f"Parameters: {', '.join(info.params) or 'none'}"
        )
    params = {**info.params, **kw}
    model = info.factory(int(num_classes), **params)
    points = dict(getattr(model, "tap_points", {}))
    modules = dict(model.named_modules())
    missing = {k: v for k, v in points.items() if v not in modules}
    assert not missing and "head" in points, (name, missing)
    model.model_name = info.name
    if weights_path is not None:
        load_weights(model, weights_path)
    return model


def read_state(weights_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``state_dict`` saved in a local file (a ``{"state_dict": ...}`` or RepDistiller's
    ``{"model": ...}`` wrapper unwrapped)."""
    path = os.path.expanduser(os.fspath(weights_path))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"weights file {path!r} not found: put a state_dict saved with "
            f"torch.save(model.state_dict(), {path!r}) there (nothing is downloaded)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, truncated, or pickled objects (never run)
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ValueError(
            f"weights file {path!r} is not a torch state_dict ({type(exc).__name__}: {first})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    elif isinstance(state, dict) and isinstance(state.get("model"), Mapping):
        state = state["model"]  # RepDistiller (CRD) checkpoints: {"model": state, "epoch": ...}
    if (
        not isinstance(state, Mapping)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise ValueError(
            f"weights file {path!r} holds no state_dict (a mapping of parameter names to tensors)"
        )
    return state


def head_fits(model: nn.Module, state: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state`` holds a head of ``model``'s shape (same number of classes)."""
    head = model.tap_points["head"]
    own = dict(model.named_parameters())
    return all(
        k in state and state[k].shape == own[k].shape
        for k in (f"{head}.weight", f"{head}.bias")
        if k in own
    )


def load_weights(
    model: nn.Module, weights: str | os.PathLike | Mapping[str, torch.Tensor]
) -> nn.Module:
    """Load a local state_dict (a file, or one :func:`read_state` returned) into ``model``;
    head entries of another shape are skipped, so the head stays fresh."""
    state = weights if isinstance(weights, Mapping) else read_state(weights)
    own = model.state_dict()
    head = model.tap_points["head"] + "."
    keep = {
        k: v
        for k, v in state.items()
        if not (k.startswith(head) and k in own and own[k].shape != v.shape)
    }
    missing, unexpected = model.load_state_dict(keep, strict=False)
    missing = [k for k in missing if not k.startswith(head)]
    if missing or unexpected:
        what = "the given state" if isinstance(weights, Mapping) else repr(os.fspath(weights))
        raise ValueError(
            f"weights {what} do not fit {type(model).__name__}: missing "
            f"{missing[:5]}, unexpected {list(unexpected)[:5]}"
        )
    return model


def head_module(model: nn.Module) -> nn.Linear:
    """The final linear layer, ``model.tap_points['head']``."""
    return dict(model.named_modules())[model.tap_points["head"]]


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the final linear layer for a fresh ``num_classes``-way one (in place; returned)."""
    path = model.tap_points["head"]
    old = head_module(model)
    new = nn.Linear(old.in_features, int(num_classes), bias=old.bias is not None)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, new)
    return model


class DualHead(nn.Module):
    """The two classifiers of lu2017's JTLN on one shared feature vector (§3.1, Fig. 1).

    ``forward`` returns the *target* logits ``W_t f(x) + b_t``; it also runs the *source*
    classifier ``W_s f(x) + b_s``, whose output the tap point ``"source_head"`` records (the
    trainer reads it for the source cross-entropy and for the OT loss ``l_ot(h_s(x), h_t(x))``).
    """

    def __init__(self, target: nn.Linear, num_source_classes: int):
        super().__init__()
        self.target = target
        self.source = nn.Linear(
            target.in_features, int(num_source_classes), bias=target.bias is not None
        )
        self.source.to(device=target.weight.device, dtype=target.weight.dtype)

    def forward(self, h):
        self.source(h)  # recorded by the "source_head" tap
        return self.target(h)


def with_source_head(model: nn.Module, num_source_classes: int) -> nn.Module:
    """Give ``model`` a second, source classifier beside its head (lu2017 JTLN), in place.

    The head module becomes a :class:`DualHead`; ``tap_points["head"]`` then names the target
    classifier and ``tap_points["source_head"]`` the source one. Returns ``model``.
    """
    path = model.tap_points["head"]
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, DualHead(head_module(model), num_source_classes))
    model.tap_points = {
        **model.tap_points,
        "head": f"{path}.target",
        "source_head": f"{path}.source",
    }
    return model


# --------------------------------------------------------------------------- digits models


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
    params={"in_channels": 1, "width": 1.0, "depth": 1},
    description="small conv net for 8x8 digits (16/32/64 channels x width; "
    "`depth` conv layers a stage)",
)
def _cnn(num_classes, **p):
    return SmallCNN(num_classes, **p)


# --------------------------------------------------------------------------- CIFAR ResNets


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
        for i, (c, s) in enumerate(zip(channels[1:], (1, 2, 2))):
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
        for name, (c, s) in zip(self._stages, zip(widths, (1, 2, 2))):
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
    paper="li2020",
    params={"depth": 56, "in_channels": 3, "width": 1.0},
    description="pre-activation bottleneck ResNet-56 for CIFAR (16/32/64 x 4 "
    "channels, 256-d representation): li2020's compression student M",
)(lambda num_classes, **p: PreActResNet(num_classes, **p))
register_model(
    "preact_resnet56_slim",
    family="preact_resnet",
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
    paper="lohit2020",
    params={"depth": 16, "widen": 2, "dropout": 0.0, "in_channels": 3},
    description="Wide ResNet, any depth (6n+4) and widen factor",
)(lambda num_classes, **p: WideResNet(num_classes, **p))
for _d, _k in ((16, 2), (40, 2), (28, 10)):
    register_model(
        f"wrn_{_d}_{_k}",
        family="wrn",
        paper="lohit2020",
        params={"depth": _d, "widen": _k, "dropout": 0.0, "in_channels": 3},
        description=f"WRN-{_d}-{_k}",
    )(lambda num_classes, **p: WideResNet(num_classes, **p))


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
        for i, (c, n) in enumerate(zip(out_channels[:3], num_blocks)):
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
    paper="lohit2020",
    params={"out_channels": (116, 232, 464, 1024), "num_blocks": (3, 7, 3), "in_channels": 3},
    description="CRD ShuffleV2 for CIFAR (net_size 1: 116/232/464 channels, "
    "(3, 7, 3) units, 1024-d penultimate); stage4 = penultimate",
)(lambda num_classes, **p: ShuffleNetV2(num_classes, **p))


# --------------------------------------------------------------------------- torchvision


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


def optional_import(module: str, extra: str, what: str):
    """``module`` imported, or a one-line ``ModuleNotFoundError`` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"{what} needs {module.split('.')[0]}: pip install 'otransfer[{extra}]'"
        ) from None


def _torchvision(arch: str):
    taps = next(v for k, v in _TORCHVISION_TAPS.items() if arch.startswith(k))

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
        input_size=(3, 224, 224),
        paper=_paper,
        params={},
        description=f"torchvision {_arch} (weights=None; pass "
        f"weights_path= for a local state_dict)",
    )(_torchvision(_arch))
