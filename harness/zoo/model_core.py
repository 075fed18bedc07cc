"""The model registry and its builder: :class:`ModelInfo`, ``MODELS``, :func:`build_model`
(a model by name, its parameters checked, optionally a local state_dict loaded). The networks
register in :mod:`harness.zoo.model_digits`, :mod:`harness.zoo.model_resnets`,
:mod:`harness.zoo.model_crd` and :mod:`harness.zoo.model_torchvision`; :mod:`harness.zoo.models`
imports them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import nn

from harness.zoo.model_heads import load_weights
from harness.zoo.model_taps import check_taps
from solvers.registry import Registry, did_you_mean

__all__ = [
    "ModelInfo",
    "MODELS",
    "register_model",
    "get_model",
    "all_models",
    "available_models",
    "build_model",
]


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
    taps : tuple of str
        The tap points the model offers with its default parameters (registered taps,
        :mod:`harness.zoo.model_taps`); empty: not declared.
    """

    name: str
    factory: Callable[..., nn.Module]
    input_kind: str = "image"
    input_size: tuple[int, ...] = (3, 32, 32)
    family: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    paper: str = ""
    description: str = ""
    taps: tuple[str, ...] = ()


def _model_info(name: str, fn: Callable[..., nn.Module], **capabilities: Any) -> ModelInfo:
    if "taps" in capabilities:
        capabilities = {**capabilities, "taps": check_taps(capabilities["taps"])}
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
