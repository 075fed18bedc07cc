"""Networks of the three papers, by name, with their capabilities as data.

Every model built here exposes ``model.tap_points: dict[str, str]`` mapping tap names
(``penultimate``, ``stage1`` ... ``stage4``, ``head``, model-specific extras; the registry of
tap names and what each reads: :mod:`harness.zoo.model_taps`) to module paths, for
:class:`harness.transfer.taps.Taps`::

    net = build_model("resnet20", num_classes=10)
    with Taps(net, ["stage1", "penultimate"]) as taps:
        logits = net(x)

Each name is registered once, where it is defined (:func:`register_model`); CLI choices and test
parametrisation read :func:`all_models` / :func:`available_models`.

This module gathers the pieces: the registry and :func:`build_model`
(:mod:`harness.zoo.model_core`), heads and weights (:mod:`harness.zoo.model_heads`), the taps
(:mod:`harness.zoo.model_taps`) and the networks by family (:mod:`harness.zoo.model_digits`,
:mod:`harness.zoo.model_resnets`, :mod:`harness.zoo.model_crd`,
:mod:`harness.zoo.model_torchvision`). Importing it registers every built-in model, in the order
the listing shows them.
"""

from __future__ import annotations

# the order of these imports is the order of registration (``otransfer list models``), hence
# the isort splits
from harness.zoo.model_core import (
    MODELS,
    ModelInfo,
    all_models,
    available_models,
    build_model,
    get_model,
    register_model,
)
from harness.zoo.model_heads import (
    DualHead,
    head_fits,
    head_module,
    load_weights,
    read_state,
    replace_head,
    with_source_head,
)
from harness.zoo.model_taps import STAGES, TAPS, TapInfo, all_taps, get_tap, register_tap
from harness.zoo.optional import optional_import

# isort: split
from harness.zoo.model_digits import MLP, SmallCNN

# isort: split
from harness.zoo.model_resnets import CifarResNet, PreActResNet, WideResNet

# isort: split
from harness.zoo.model_crd import CifarVGG, ShuffleNetV2

# isort: split
from harness.zoo import model_torchvision  # noqa: F401 (registers the torchvision networks)

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
    "TapInfo",
    "TAPS",
    "register_tap",
    "get_tap",
    "all_taps",
    "optional_import",
    "MLP",
    "SmallCNN",
    "CifarResNet",
    "PreActResNet",
    "WideResNet",
    "CifarVGG",
    "ShuffleNetV2",
]
