"""Model registry: every model builds, runs, exposes its tap points, and swaps its head.

Small members run for real on CPU; the heavy ones (ResNet-110, WRN-28-10, torchvision
ResNets ...) are built and run on the ``meta`` device (shapes only, no memory, no init cost),
and preact_resnet1001 is exercised through a shallow member of its family (depth 11).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.models import (STAGES, all_models, build_model, get_model, head_module,
                            replace_head)
from harness.taps import Taps

# run for real (fast); everything else is built on the meta device
REAL = {"mlp", "cnn", "resnet20", "resnet8x4", "wrn_16_2", "wrn", "vgg8", "mobilenet_v2",
        "preact_resnet1001"}
SMALL_PARAMS = {"preact_resnet1001": {"depth": 11}}
NUM_CLASSES = 7


def _input(name: str, device="cpu") -> torch.Tensor:
    info = get_model(name)
    size = info.input_size
    if info.input_kind == "image" and size[-1] == 224:
        size = (size[0], 32, 32)  # torchvision nets are size-agnostic; keep CPU tests fast
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


@pytest.mark.parametrize("name", ["mlp", "resnet20", "vgg8", "mobilenet_v2"])
def test_replace_head(name):
    device = "meta" if name == "mobilenet_v2" else "cpu"
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
    assert 0.26e6 < n_params("resnet20") < 0.29e6       # He et al.: 0.27M
    assert 0.83e6 < n_params("resnet56") < 0.88e6       # 0.85M
    assert 1.6e6 < n_params("resnet110") < 1.8e6        # 1.7M
    assert n_params("resnet56_slim") < n_params("resnet56") / 3
    assert 1.1e6 < n_params("resnet8x4", ) < 1.3e6      # CRD: 1.23M
    assert 7.3e6 < n_params("resnet32x4") < 7.5e6       # CRD: 7.43M
    assert 0.68e6 < n_params("wrn_16_2") < 0.71e6       # 0.70M
    assert 36.4e6 < n_params("wrn_28_10") < 36.6e6      # 36.5M
    assert 10.1e6 < n_params("preact_resnet1001") < 10.4e6  # 10.2M


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


def test_unknown_names_suggest():
    with pytest.raises(ValueError, match="resnet20"):
        build_model("resnet2O", 10)
    with pytest.raises(ValueError, match="widths"):
        build_model("mlp", 10, width=(3,))
