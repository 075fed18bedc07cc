"""The dataset registry and what every loader shares: :class:`DatasetInfo`, ``DATASETS``,
:func:`load_dataset` (one split of a dataset by name, its options checked), the local roots
(:func:`dataset_root`), in-memory datasets (:class:`ArrayDataset`, :class:`BatchedView`) and the
class selection and few-shot sampling of the embedded datasets. The loaders themselves register
in :mod:`harness.zoo.data_embedded`, :mod:`harness.zoo.data_cifar`,
:mod:`harness.zoo.data_folders` and :mod:`harness.zoo.data_glyphs`; :mod:`harness.zoo.data`
imports them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from solvers.registry import Registry, did_you_mean

__all__ = [
    "DatasetInfo",
    "DATASETS",
    "register_dataset",
    "get_dataset",
    "all_datasets",
    "available_datasets",
    "held_splits",
    "load_dataset",
    "dataset_root",
    "ArrayDataset",
    "BatchedView",
    "batched_collate",
    "select_classes",
    "few_shot_indices",
]


@dataclass(frozen=True)
class DatasetInfo:
    """Capabilities of one registered dataset.

    Attributes
    ----------
    name : str
    loader : callable
        ``fn(root, split, seed, **params) -> Dataset`` (``root`` is ``None`` when not needed).
    num_classes : int
    input_kind : str
        ``"flat"`` or ``"image"`` (the default output; ``digits`` has ``image=True``).
    needs_root : bool
        Reads files from a local root (not embedded).
    splits : tuple of str
    params : Mapping[str, Any]
        Keyword options and their defaults.
    paper, description : str
    """

    name: str
    loader: Callable[..., Dataset]
    num_classes: int
    input_kind: str = "image"
    needs_root: bool = True
    splits: tuple[str, ...] = ("train", "test")
    params: Mapping[str, Any] = field(default_factory=dict)
    paper: str = ""
    description: str = ""


#: The datasets, by name (installed plugins: entry point group ``otransfer.datasets``).
DATASETS: Registry[DatasetInfo] = Registry(
    "dataset",
    entry_points="otransfer.datasets",
    make=lambda name, fn, **capabilities: DatasetInfo(name=name, loader=fn, **capabilities),
)


def register_dataset(name: str, **capabilities: Any) -> Callable:
    """Register ``fn(root, split, seed, **params) -> Dataset`` as dataset ``name``."""
    return DATASETS.register(name, **capabilities)


def get_dataset(name: str) -> DatasetInfo:
    """Look up a dataset by name; an unknown name raises with the close matches."""
    return DATASETS.get(name)


def held_splits(name: str, params: Mapping[str, Any]) -> tuple[str, ...]:
    """The splits dataset ``name`` has with ``params``: a dataset that holds its validation
    split out of train (``val_size``) has none when ``val_size`` is 0."""
    info = get_dataset(name)
    if "val_size" in info.params and not params.get("val_size", info.params["val_size"]):
        return tuple(x for x in info.splits if x != "val")
    return tuple(info.splits)


def all_datasets() -> dict[str, DatasetInfo]:
    """Every registered dataset, in registration order."""
    return dict(DATASETS.items())


def available_datasets(**flags: Any) -> list[str]:
    """Names of the datasets whose capabilities match ``flags`` (``needs_root=False``)."""
    return DATASETS.names(**flags)


def dataset_root(name: str, root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$OTRANSFER_DATA/<name>``, else ``~/.otransfer/data/<name>``."""
    if root is not None:
        return Path(root).expanduser()
    base = os.environ.get("OTRANSFER_DATA")
    return (Path(base).expanduser() if base else Path.home() / ".otransfer" / "data") / name


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    split: str = "train",
    seed: int = 0,
    **kw: Any,
) -> Dataset:
    """Load one split of dataset ``name``.

    Parameters
    ----------
    name : str
    root : path, optional
        Local directory of the files (datasets with ``needs_root``); see :func:`dataset_root`.
    split : str
        One of ``DatasetInfo.splits``.
    seed : int
        Seed of the random splits and sampling (``digits``, ``synthetic``, ``val_size``).
    **kw
        The dataset's options (``DatasetInfo.params``); unknown ones raise ``ValueError``.
    """
    info = get_dataset(name)
    if split not in info.splits:
        raise ValueError(
            f"dataset {info.name!r} has no split {split!r}; splits: {', '.join(info.splits)}"
        )
    unknown = set(kw) - set(info.params)
    if unknown:
        bad = sorted(unknown)[0]
        hint = did_you_mean(bad, info.params)
        raise ValueError(
            f"unknown option {bad!r} for dataset {info.name!r}{hint} Options: "
            f"{', '.join(info.params) or 'none'}"
        )
    params = {**info.params, **kw}
    r = dataset_root(info.name, root) if info.needs_root else None
    return info.loader(r, split, int(seed), **params)


# --------------------------------------------------------------------------- in-memory data


class ArrayDataset(Dataset):
    """``(x[i], y[i])`` from tensors. Attributes ``data``, ``targets`` (long), ``classes``."""

    def __init__(self, data: torch.Tensor, targets: torch.Tensor, classes: Sequence = ()):
        assert len(data) == len(targets)
        self.data = data
        self.targets = torch.as_tensor(targets, dtype=torch.long)
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        return self.data[i], self.targets[i]

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x[idx], y[idx])`` by one tensor index: the batch ``default_collate`` would stack
        from ``[self[i] for i in idx]``, without the per-example calls (see
        :func:`batched_collate`)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return self.data[idx], self.targets[idx]


class _Batch(tuple):
    """A batch already stacked by :class:`BatchedView` (see :func:`batched_collate`)."""


class BatchedView(Dataset):
    """A dataset with a ``batch(idx)`` method seen through DataLoader's batched fetch
    (``__getitems__``): one tensor indexing per batch instead of one call per example. Use it
    with ``collate_fn=batched_collate``; the batches are the tensors ``default_collate`` would
    stack from the examples (tests/test_data.py)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[i]

    def __getitems__(self, idx):
        return _Batch(self.dataset.batch(idx))


def batched_collate(samples):
    """``collate_fn``: a batch that :class:`BatchedView` stacked passes through; a list of
    examples is stacked by ``default_collate``."""
    from torch.utils.data import default_collate

    if isinstance(samples, _Batch):
        return tuple(samples)
    return default_collate(samples)


def select_classes(idx: np.ndarray, y: np.ndarray, classes, relabel: bool):
    """Keep the indices whose label is in ``classes``; map labels to ``0..k-1`` (order given)."""
    if classes is None:
        return idx, y, None
    classes = [int(c) for c in classes]
    keep = idx[np.isin(y[idx], classes)]
    if relabel:
        lut = {c: i for i, c in enumerate(classes)}
        y = np.array([lut.get(int(v), -1) for v in y])
    return keep, y, classes


def few_shot_indices(idx: np.ndarray, y: np.ndarray, n_per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 7919)
    out = []
    for c in np.unique(y[idx]):
        members = idx[y[idx] == c]
        if len(members) < n_per_class:
            raise ValueError(
                f"class {int(c)} has {len(members)} examples, fewer than n_per_class={n_per_class}"
            )
        out.append(rng.choice(members, n_per_class, replace=False))
    return np.sort(np.concatenate(out))
