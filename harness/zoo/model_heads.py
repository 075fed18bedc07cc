"""A model's head and weights: the final linear layer (:func:`head_module`,
:func:`replace_head`), lu2017's second, source classifier (:func:`with_source_head`), and local
state_dicts (:func:`read_state`, :func:`load_weights`; nothing is downloaded)."""

from __future__ import annotations

import os
from typing import Mapping

import torch
from torch import nn

__all__ = [
    "read_state",
    "head_fits",
    "load_weights",
    "head_module",
    "replace_head",
    "DualHead",
    "with_source_head",
]


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
