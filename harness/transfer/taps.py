"""Collect a network's intermediate activations with forward hooks.

A *tap* names a layer either by its module path (``"layer3.5"``, ``"fc"``, ``"features.3"``, as
in ``model.named_modules()``) or by one of the names every model of ours exposes through the
attribute ``model.tap_points: dict[str, str]`` (``"penultimate"``, ``"stage1"`` ... ``"stage4"``,
mapped to module paths). See docs/architecture.md, the representation contract.

>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
>>> with Taps(net, ["1"]) as taps:
...     _ = net(torch.randn(5, 4))
>>> taps.features["1"].shape
torch.Size([5, 8])
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from solvers.registry import did_you_mean

__all__ = ["Taps", "tap_paths", "pool_features"]


def pool_features(x: torch.Tensor) -> torch.Tensor:
    """Reduce ``(n, c, *spatial)`` activations to ``(n, c)`` by global average pooling.

    Parameters
    ----------
    x : torch.Tensor
        Activations of shape ``(n, c)`` (returned as is) or ``(n, c, h, w)`` (any number of
        trailing spatial dimensions).

    Returns
    -------
    torch.Tensor
        ``(n, c)``: each channel is one neuron (li2020 §2.2: a neuron is summarised by its
        activations over the mini-batch; for conv maps, by its spatially averaged activation).
    """
    if x.dim() < 2:
        raise ValueError(
            f"activations must have shape (n, c) or (n, c, h, w); got {tuple(x.shape)}"
        )
    if x.dim() == 2:
        return x
    return x.flatten(2).mean(-1)


def tap_paths(model: nn.Module, names: Iterable[str]) -> dict[str, str]:
    """Resolve tap names to module paths of ``model``.

    Parameters
    ----------
    model : nn.Module
        The network; its ``tap_points`` attribute (when present) maps names such as
        ``"penultimate"`` or ``"stage1"`` to module paths.
    names : iterable of str
        Tap names or module paths.

    Returns
    -------
    dict
        ``{name: module_path}``, in the order given.

    Raises
    ------
    ValueError
        A name that is neither a tap point nor a module path, listing close matches and the
        available names.
    """
    if isinstance(names, str):
        names = [names]
    points = dict(getattr(model, "tap_points", None) or {})
    modules = dict(model.named_modules())
    out: dict[str, str] = {}
    for name in names:
        path = points.get(name, name)
        if path not in modules:
            out_of = f"tap point {name!r} -> {path!r}" if name in points else f"tap {name!r}"
            known = list(points) + [p for p in modules if p]
            hint = did_you_mean(name, known)
            raise ValueError(
                f"unknown {out_of} for {type(model).__name__}{hint} Tap points: "
                f"{', '.join(points) or 'none'}; module paths: {', '.join(known[len(points) :])}"
            )
        out[name] = path
    return out


class Taps:
    """Record the outputs of named layers on every forward pass.

    Hooks are registered on construction and removed by :meth:`remove` or on leaving a
    ``with`` block. After each forward pass, :attr:`features` holds the latest output of each
    tapped layer, keyed by the name it was requested under.

    Parameters
    ----------
    model : nn.Module
        The network to tap.
    names : iterable of str
        Module paths (``"layer3.5"``, ``"fc"``) or tap points of ``model.tap_points``
        (``"penultimate"``, ``"stage1"`` ... ``"stage4"``).
    pool : bool
        Reduce conv maps ``(n, c, h, w)`` to ``(n, c)`` by global average pooling (in the hook,
        so the full maps are not kept). ``False`` keeps the raw outputs.

    Attributes
    ----------
    paths : dict
        ``{name: module_path}``.
    features : dict
        ``{name: tensor}`` from the latest forward pass (tensors keep their autograd graph).

    Examples
    --------
    >>> taps = Taps(student, reg.taps)           # doctest: +SKIP
    >>> logits = student(x); feats = taps.features  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, names: Iterable[str], *, pool: bool = True):
        self.paths = tap_paths(model, names)
        self.pool = pool
        self.features: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        self._handles = [
            modules[path].register_forward_hook(self._hook(name))
            for name, path in self.paths.items()
        ]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
                output = output[0]  # e.g. (output, state) of recurrent layers
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"tap {name!r} ({self.paths[name]!r}) outputs "
                    f"{type(output).__name__}, not a tensor"
                )
            self.features[name] = pool_features(output) if self.pool else output

        return hook

    def clear(self) -> None:
        """Forget the recorded activations (their graphs are freed with them)."""
        self.features.clear()

    def remove(self) -> None:
        """Remove the hooks; :attr:`features` stays readable."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "Taps":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"Taps({self.paths}, pool={self.pool})"


def needs_maps(reg) -> bool:
    """Whether a regularizer reads un-pooled conv maps at some tap (lohit2020 App. C's conv
    embedding, ``embed: conv``): its taps are then recorded raw, and every term pools what it
    reads itself (``_feature_pair``)."""
    return reg is not None and any(
        "conv" in getattr(t, "modes", {}).values() for t in reg.terms.values()
    )
