"""Model registry: every model builds, runs, exposes its tap points, and swaps its head.

Small members run for real on CPU; the heavy ones (ResNet-110, WRN-28-10, torchvision
ResNets ...) are built and run on the ``meta`` device (shapes only, no memory, no init cost),
and preact_resnet1001 is exercised through a shallow member of its family (depth 11).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.transfer.taps import Taps
from harness.zoo.models import (
    STAGES,
    all_models,
    build_model,
    get_model,
    head_module,
    replace_head,
    with_source_head,
)

# run for real (fast); everything else is built on the meta device
REAL = {
    "mlp",
    "cnn",
    "resnet20",
    "resnet8x4",
    "wrn_16_2",
    "wrn",
    "vgg8",
    "mobilenet_v2",
    "preact_resnet1001",
    "shufflenet_v2",
}
SMALL_PARAMS = {"preact_resnet1001": {"depth": 11}}
NUM_CLASSES = 7
#: smallest input side of the torchvision nets run at less than 224 (AlexNet's stride-4 conv1
#: and three 3x3/2 poolings need >= 63 pixels)
MIN_SIDE = {"alexnet": 64}


def _input(name: str, device="cpu") -> torch.Tensor:
    info = get_model(name)
    size = info.input_size
    if info.input_kind == "image" and size[-1] == 224:
        side = MIN_SIDE.get(name, 32)  # torchvision nets are size-agnostic; keep CPU tests fast
        size = (size[0], side, side)
    return torch.randn(2, *size, device=device)


def _build(name: str):
    kw = SMALL_PARAMS.get(name, {})
    if name in REAL:
        return build_model(name, NUM_CLASSES, **kw), "cpu"
    with torch.device("meta"):
        return build_model(name, NUM_CLASSES, **kw), "meta"


@pytest.mark.parametrize("name", list(all_models()))
def test_builds_forward_and_taps(name):
    torch.manual_seed(0)
    model, device = _build(name)
    model.eval()
    points = model.tap_points
    assert "penultimate" in points and "head" in points
    assert "stage1" in points
    if get_model(name).family != "mlp":
        assert all(s in points for s in STAGES), points
    assert set(points) == set(get_model(name).taps)  # the taps `otransfer list models` shows
    assert isinstance(head_module(model), nn.Linear)
    assert head_module(model).out_features == NUM_CLASSES
    x = _input(name, device)
    names = [n for n in points if n != "head"]
    with Taps(model, names) as taps, torch.no_grad():
        y = model(x)
    assert y.shape == (2, NUM_CLASSES)
    assert set(taps.features) == set(names)
    for n, f in taps.features.items():
        assert f.dim() == 2 and f.shape[0] == 2, (n, f.shape)
    assert taps.features["penultimate"].shape[1] == head_module(model).in_features


@pytest.mark.parametrize(
    "name", ["mlp", "resnet20", "vgg8", "mobilenet_v2", "shufflenet_v2", "alexnet"]
)
def test_replace_head(name):
    device = "meta" if name in ("mobilenet_v2", "alexnet") else "cpu"
    with torch.device(device):
        model = build_model(name, 10)
    old_in = head_module(model).in_features
    assert replace_head(model, 3) is model
    assert head_module(model).out_features == 3 and head_module(model).in_features == old_in
    model.eval()
    with torch.no_grad():
        assert model(_input(name, device)).shape == (2, 3)


def test_mlp_teacher_student_widths():
    teacher = build_model("mlp", 10, widths=(256, 256))
    student = build_model("mlp", 10, widths=(8,))
    assert [m.out_features for m in teacher.modules() if isinstance(m, nn.Linear)] == [256, 256, 10]
    assert [m.out_features for m in student.modules() if isinstance(m, nn.Linear)] == [8, 10]
    assert set(student.tap_points) == {"penultimate", "stage1", "head"}
    with Taps(student, ["stage1"]) as taps:
        student(torch.randn(4, 64))
    assert taps.features["stage1"].shape == (4, 8)
    # image-shaped digits are flattened
    assert teacher(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_cnn_width_and_flat_input():
    net = build_model("cnn", 10, width=0.5)
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert net(torch.randn(3, 64)).shape == (3, 10)
    assert head_module(net).in_features == 32


def test_resnet_definitions():
    def n_params(name, **kw):
        with torch.device("meta"):
            return sum(p.numel() for p in build_model(name, 10, **kw).parameters())

    assert 0.26e6 < n_params("resnet20") < 0.29e6  # He et al.: 0.27M
    assert 0.83e6 < n_params("resnet56") < 0.88e6  # 0.85M
    assert 1.6e6 < n_params("resnet110") < 1.8e6  # 1.7M
    assert n_params("resnet56_slim") < n_params("resnet56") / 3
    assert (
        1.1e6
        < n_params(
            "resnet8x4",
        )
        < 1.3e6
    )  # CRD: 1.23M
    assert 7.3e6 < n_params("resnet32x4") < 7.5e6  # CRD: 7.43M
    assert 0.68e6 < n_params("wrn_16_2") < 0.71e6  # 0.70M
    assert 36.4e6 < n_params("wrn_28_10") < 36.6e6  # 36.5M
    assert 10.1e6 < n_params("preact_resnet1001") < 10.4e6  # 10.2M
    assert n_params("alexnet") == 57_044_810  # torchvision: 61,100,840 at 1000 classes
    assert n_params("shufflenet_v2") == 1_355_528 - 90 * 1025  # 1,355,528 at 100 classes


def _shufflenet_v2_params(num_classes, out=(116, 232, 464, 1024), blocks=(3, 7, 3)):
    """Parameters of RepDistiller's ShuffleV2, counted from its definition (BN: 2 per channel)."""
    n = 3 * 24 + 2 * 24  # conv1 1x1 3->24 (no bias), bn1
    cin = 24
    for c, k in zip(out[:3], blocks, strict=False):
        m = c // 2  # DownBlock: two branches of c/2 channels
        n += 9 * cin + 2 * cin + cin * m + 2 * m  # left: 3x3 dw, bn, 1x1, bn
        n += cin * m + 2 * m + 9 * m + 2 * m + m * m + 2 * m  # right: 1x1, bn, 3x3 dw, bn, 1x1, bn
        n += k * (2 * m * m + 9 * m + 6 * m)  # BasicBlocks on the split half: 1x1, dw, 1x1
        cin = c
    n += cin * out[3] + 2 * out[3]  # conv2 1x1, bn2
    return n + out[3] * num_classes + num_classes  # linear


def test_shufflenet_v2_matches_repdistiller():
    """CRD's ShuffleV2 (net_size 1): parameter count and stage shapes on 32x32 inputs."""
    assert _shufflenet_v2_params(100) == 1_355_528  # lohit2020's student, ~1.36M
    net = build_model("shufflenet_v2", 100)
    assert sum(p.numel() for p in net.parameters()) == _shufflenet_v2_params(100)
    # RepDistiller's module names, so its checkpoints load as they are
    assert {
        "conv1.weight",
        "layer1.0.conv5.weight",
        "layer2.7.conv3.weight",
        "conv2.weight",
        "bn2.running_mean",
        "linear.weight",
    } <= set(net.state_dict())
    assert [len(net.layer1), len(net.layer2), len(net.layer3)] == [4, 8, 4]  # Down + 3/7/3
    shapes = {}
    hooks = [
        net.get_submodule(p).register_forward_hook(
            lambda m, i, o, k=k: shapes.__setitem__(k, tuple(o.shape))
        )
        for k, p in net.tap_points.items()
        if k != "head"
    ]
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(3, 3, 32, 32)).shape == (3, 100)
    for h in hooks:
        h.remove()
    assert shapes == {
        "stage1": (3, 116, 16, 16),
        "stage2": (3, 232, 8, 8),
        "stage3": (3, 464, 4, 4),
        "stage4": (3, 1024),
        "penultimate": (3, 1024),
    }


def test_alexnet_taps():
    """torchvision AlexNet: fc6 / fc7 (penultimate) after their ReLUs, the head is fc8."""
    with torch.device("meta"):
        net = build_model("alexnet", 10)
    assert net.tap_points["penultimate"] == net.tap_points["fc7"] == "classifier.5"
    assert head_module(net) is net.classifier[6] and head_module(net).in_features == 4096
    net.eval()
    with Taps(net, ["stage1", "stage2", "stage3", "stage4", "fc6", "fc7"]) as taps:
        net(torch.randn(2, 3, 224, 224, device="meta"))
    assert {k: tuple(v.shape) for k, v in taps.features.items()} == {
        "stage1": (2, 64),
        "stage2": (2, 192),
        "stage3": (2, 256),
        "stage4": (2, 256),
        "fc6": (2, 4096),
        "fc7": (2, 4096),
    }
    with_source_head(net, 5)  # lu2017's JTLN: a source classifier beside fc8
    assert net.tap_points["head"] == "classifier.6.target"
    assert net.tap_points["source_head"] == "classifier.6.source"
    assert net(torch.randn(2, 3, 224, 224, device="meta")).shape == (2, 10)


def test_weights_path(tmp_path):
    net = build_model("resnet20", 10)
    path = tmp_path / "w.pt"
    torch.save(net.state_dict(), path)
    again = build_model("resnet20", 10, weights_path=path)
    assert torch.equal(again.conv1.weight, net.conv1.weight)
    other = build_model("resnet20", 4, weights_path=path)  # new head, rest loaded
    assert torch.equal(other.layer3[0].conv1.weight, net.layer3[0].conv1.weight)
    assert head_module(other).out_features == 4
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_model("mobilenet_v2", 10, weights_path=tmp_path / "missing.pt")


@pytest.mark.parametrize("name, num_classes", [("shufflenet_v2", 100), ("alexnet", 1000)])
def test_weights_path_round_trip(tmp_path, name, num_classes):
    """A saved state_dict (torchvision's ImageNet AlexNet, CRD's ShuffleV2) loads into the model;
    another number of classes keeps everything but a fresh head."""
    torch.manual_seed(0)
    net = build_model(name, num_classes)
    path = tmp_path / f"{name}.pth"
    if name == "shufflenet_v2":  # RepDistiller saves {"model": state_dict, "epoch": ...}
        torch.save({"model": net.state_dict(), "epoch": 240, "best_acc": 71.8}, path)
    else:
        torch.save(net.state_dict(), path)
    again = build_model(name, num_classes, weights_path=path)
    for k, v in net.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
    other = build_model(name, 4, weights_path=path)
    head = net.tap_points["head"]
    for k, v in net.state_dict().items():
        if not k.startswith(head + "."):
            assert torch.equal(other.state_dict()[k], v), k
    assert head_module(other).out_features == 4


def test_unknown_names_suggest():
    with pytest.raises(ValueError, match="resnet20"):
        build_model("resnet2O", 10)
    with pytest.raises(ValueError, match="widths"):
        build_model("mlp", 10, width=(3,))


def test_ot_samples_between_resnet32x4_and_shufflenet_v2():
    """lohit2020's resnet32x4 -> ShuffleNetV2 pair: the widths differ at all four taps
    (64/128/256/256 vs 116/232/464/1024), so ot_samples_ipot learns a linear embedding of
    the teacher's features per tap (lohit2020 §4.1, embed="teacher"); two SGD steps train it."""
    from torch.utils.data import TensorDataset

    from harness.training.loop import TrainConfig, train
    from harness.transfer.regularizers import build_regularizer

    torch.manual_seed(0)
    teacher, student = build_model("resnet32x4", 10), build_model("shufflenet_v2", 10)
    data = TensorDataset(torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,)))
    reg = build_regularizer("ot_samples_ipot", alpha=0.9)
    assert reg.taps == STAGES
    before = {k: v.detach().clone() for k, v in student.named_parameters()}
    res = train(
        student,
        data,
        None,
        regularizer=reg,
        teacher=teacher,
        progress=False,
        config=TrainConfig(steps=2, batch_size=8, lr=0.01, eval_every=1, log_every=1),
    )
    assert res.status == "completed", res.reason
    assert res.steps == 2
    emb = reg.terms["ot_samples_ipot"].embeddings
    assert {k: (m.in_features, m.out_features) for k, m in emb.items()} == {
        "stage1__teacher": (64, 116),
        "stage2__teacher": (128, 232),
        "stage3__teacher": (256, 464),
        "stage4__teacher": (256, 1024),
    }
    steps = res.history["steps"]
    assert len(steps["train/ot_samples_ipot"]) == 2
    assert all(torch.isfinite(torch.as_tensor(v)) for v in steps["train/ot_samples_ipot"])
    assert any(not torch.equal(before[k], v) for k, v in student.named_parameters())


def _preact_bottleneck_params(depth: int, width: float, num_classes: int) -> int:
    """Parameters of He et al.'s pre-activation bottleneck CIFAR ResNet, counted by hand:
    stem 3x3 conv; per unit BN-1x1-BN-3x3-BN-1x1 (+ a 1x1 projection where the shape
    changes); final BN; linear head."""
    n = (depth - 2) // 9
    c = [int(k * width) for k in (16, 32, 64)]
    total = 3 * 9 * c[0]  # stem, no bias
    cin = c[0]
    for planes in c:
        for j in range(n):
            out = 4 * planes
            total += (
                2 * cin
                + cin * planes
                + 2 * planes
                + 9 * planes * planes
                + 2 * planes
                + planes * out
            )
            if cin != out or j == 0 and planes != c[0]:
                total += cin * out  # projection shortcut
            cin = out
    return total + 2 * cin + cin * num_classes + num_classes


@pytest.mark.parametrize(
    "name,width,dim", [("preact_resnet56", 1.0, 256), ("preact_resnet56_slim", 0.5, 128)]
)
def test_li2020_resnet56_students_have_the_papers_representation(name, width, dim):
    """li2020 §4.3: M has d' = 256; S is M with half the channels at each layer."""
    model = build_model(name, 100)
    assert sum(p.numel() for p in model.parameters()) == _preact_bottleneck_params(56, width, 100)
    with Taps(model, ["penultimate", "stage1", "stage3"], pool=False) as taps, torch.no_grad():
        model.eval()(torch.zeros(2, 3, 32, 32))
        feats = dict(taps.features)
    assert feats["penultimate"].shape == (2, dim)
    assert feats["stage1"].shape[1] == int(64 * width)  # 16 x 4 channels after stage 1
    assert feats["stage3"].shape[1:] == (dim, 8, 8)
