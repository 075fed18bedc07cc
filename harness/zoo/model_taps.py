"""The taps: names of the layers where a model's representation is read, in one registry.

Every model of the zoo exposes ``model.tap_points: dict[str, str]`` mapping the names of the
representation contract to module paths, for :class:`harness.transfer.taps.Taps`:

- ``penultimate``: the (pooled) features fed to the classifier;
- ``stage1`` ... ``stage4``: four stages of roughly equal depth. Networks with four stages
  (torchvision ResNets, VGG, MobileNetV2) map them one to one; AlexNet maps its conv1, conv2,
  conv3-4 and conv5 blocks. CIFAR ResNets / WRNs / ShuffleNetV2 with three stages map
  ``stage1``..``stage3`` to the three stages and ``stage4`` to the penultimate (pooled)
  features, as lohit2020 does. MLPs map ``stage1``.. to their hidden layers (after the ReLU),
  as many as there are (a width-8 student has only ``stage1``);
- ``head``: the final linear layer (:func:`harness.zoo.models.replace_head` swaps it);
- ``source_head``: the second, source classifier of lu2017's JTLN
  (:func:`harness.zoo.models.with_source_head`);
- model-specific extras, e.g. AlexNet's ``fc6`` and ``fc7`` (after their ReLUs; lu2017).

``TAPS`` holds these names (a plugin model with taps of its own registers them with
:func:`register_tap` before its model); each registered model declares the taps it offers with
its default parameters (``ModelInfo.taps``, checked against ``TAPS`` when it registers; shown
by ``otransfer list models``)::

    get_tap("stgae1")  # ValueError: unknown tap 'stgae1'; did you mean 'stage1', ...? Known ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from solvers.registry import Registry

__all__ = [
    "STAGES",
    "CONTRACT_TAPS",
    "TapInfo",
    "TAPS",
    "register_tap",
    "get_tap",
    "all_taps",
    "check_taps",
]

STAGES = ("stage1", "stage2", "stage3", "stage4")


@dataclass(frozen=True)
class TapInfo:
    """One tap name and what a model reads there."""

    name: str
    description: str = ""


#: The tap names, by name (case and surrounding blanks forgiven, as for models).
TAPS: Registry[TapInfo] = Registry(
    "tap", make=lambda name, description, **caps: TapInfo(name, description, **caps)
)


def register_tap(name: str, description: str = "") -> str:
    """Register tap ``name`` (what a model reads there in ``description``); returns it."""
    return TAPS.register(name, description)


def get_tap(name: str) -> TapInfo:
    """Look up a tap by name; an unknown name raises with the close matches."""
    return TAPS.get(name)


def all_taps() -> dict[str, TapInfo]:
    """Every registered tap, in registration order."""
    return dict(TAPS.items())


def check_taps(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` in their registered spelling; an unknown one raises with the close matches."""
    return tuple(get_tap(n).name for n in names)


register_tap("penultimate", "the (pooled) features fed to the classifier")
for _i, _stage in enumerate(STAGES, 1):
    register_tap(_stage, f"the end of stage {_i} of four of roughly equal depth")
register_tap("head", "the final linear layer (its logits)")
register_tap("source_head", "the source classifier beside the head (lu2017 JTLN)")
register_tap("fc6", "AlexNet's fc6, after its ReLU (lu2017)")
register_tap("fc7", "AlexNet's fc7, after its ReLU (lu2017)")

#: The taps of the representation contract, which most models offer.
CONTRACT_TAPS = ("penultimate", *STAGES, "head")
