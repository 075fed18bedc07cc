"""Datasets of the three papers, by name, with their capabilities as data.

``load_dataset(name, split=...)`` returns a ``torch.utils.data.Dataset`` of ``(x, y)`` pairs.
Two datasets are embedded and need no files: ``digits`` (scikit-learn's bundled 1,797 8x8
images, seeded stratified train/val/test splits) and ``synthetic`` (a seeded Gaussian mixture).
The others read a local root: the ``root`` argument, else ``$OTRANSFER_DATA/<name>``, else
``~/.otransfer/data/<name>``. Nothing is ever downloaded; missing files raise
``FileNotFoundError`` saying which files to put where.

::

    train = load_dataset("digits", split="train", seed=0)
    src, tgt = digits_transfer_split("train", n_per_class=10)   # classes 0-4 vs 5-9, relabelled
    test = load_dataset("cifar10", split="test")                 # needs the files locally
"""

from __future__ import annotations

import functools
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from harness.zoo.pools import check_test_pool, pool_split, stratified_split
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
    "FileListDataset",
    "CifarDataset",
    "digits_transfer_split",
    "cifar_transform",
    "imagenet_transform",
    "CIFAR100_COARSE",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# CIFAR-100 fine label (alphabetical index) -> coarse label (20 superclasses), the standard table.
CIFAR100_COARSE = (
    4,
    1,
    14,
    8,
    0,
    6,
    7,
    7,
    18,
    3,
    3,
    14,
    9,
    18,
    7,
    11,
    3,
    9,
    7,
    11,
    6,
    11,
    5,
    10,
    7,
    6,
    13,
    15,
    3,
    15,
    0,
    11,
    1,
    10,
    12,
    14,
    16,
    9,
    11,
    5,
    5,
    19,
    8,
    8,
    15,
    13,
    14,
    17,
    18,
    10,
    16,
    4,
    17,
    4,
    2,
    0,
    17,
    4,
    18,
    17,
    10,
    3,
    2,
    12,
    12,
    16,
    12,
    1,
    9,
    19,
    2,
    10,
    0,
    1,
    16,
    12,
    9,
    13,
    15,
    13,
    16,
    19,
    2,
    4,
    6,
    19,
    5,
    5,
    8,
    19,
    18,
    1,
    2,
    15,
    6,
    0,
    17,
    8,
    14,
    13,
)


# --------------------------------------------------------------------------- registry


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


def _select_classes(idx: np.ndarray, y: np.ndarray, classes, relabel: bool):
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


DIGITS_SIZES = {"train": 1200, "val": 297, "test": 300}


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[torch.Tensor, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.data / 16.0, dtype=torch.float32)
    return x, np.asarray(d.target)


@functools.lru_cache(maxsize=16)
def _digits_splits(seed: int, test_pool: str = "resampled") -> dict[str, np.ndarray]:
    return pool_split(_digits_arrays()[1], DIGITS_SIZES, seed, test_pool)


@register_dataset(
    "digits",
    num_classes=10,
    input_kind="flat",
    needs_root=False,
    splits=("train", "val", "test"),
    paper="li2020",
    params={
        "classes": None,
        "relabel": True,
        "n_per_class": None,
        "image": False,
        "test_pool": "resampled",
    },
    description="scikit-learn's 1,797 8x8 digits in [0, 1]; stratified seeded "
    "splits train 1200 / val 297 / test 300 (test_pool: fixed: one "
    "test draw for every seed, harness/zoo/pools.py)",
)
def _digits(root, split, seed, *, classes, relabel, n_per_class, image, test_pool):
    x, y = _digits_arrays()
    idx = _digits_splits(seed, check_test_pool(test_pool))[split]
    idx, y, kept = _select_classes(idx, y, classes, relabel)
    if n_per_class is not None:
        idx = few_shot_indices(idx, y, int(n_per_class), seed)
    data = x[idx].view(-1, 1, 8, 8) if image else x[idx]
    names = [str(c) for c in (kept if kept is not None else range(10))]
    if kept is not None and not relabel:
        names = [str(c) for c in range(10)]
    return ArrayDataset(data, torch.as_tensor(y[idx]), names)


def digits_transfer_split(
    split: str = "train",
    *,
    seed: int = 0,
    source_classes: Sequence[int] = (0, 1, 2, 3, 4),
    target_classes: Sequence[int] = (5, 6, 7, 8, 9),
    n_per_class: int | None = None,
    source_n_per_class: int | None = None,
    image: bool = False,
) -> tuple[ArrayDataset, ArrayDataset]:
    """Source and target tasks of the digits transfer experiments.

    Returns ``(source, target)``: the ``split`` of ``digits`` restricted to ``source_classes``
    and to ``target_classes``, each relabelled ``0..k-1`` in the order given. ``n_per_class``
    samples a few-shot target (seeded); ``source_n_per_class`` does the same for the source.
    """
    if set(source_classes) & set(target_classes):
        raise ValueError("source and target classes must be disjoint")
    src = load_dataset(
        "digits",
        split=split,
        seed=seed,
        classes=tuple(source_classes),
        n_per_class=source_n_per_class,
        image=image,
    )
    tgt = load_dataset(
        "digits",
        split=split,
        seed=seed,
        classes=tuple(target_classes),
        n_per_class=n_per_class,
        image=image,
    )
    return src, tgt


@register_dataset(
    "synthetic",
    num_classes=4,
    input_kind="flat",
    needs_root=False,
    splits=("train", "val", "test"),
    params={
        "n_samples": 1000,
        "dims": 16,
        "classes": 4,
        "separation": 3.0,
        "data_seed": 0,
        "val_fraction": 0.15,
        "test_fraction": 0.15,
        "n_per_class": None,
        "test_pool": "resampled",
    },
    description="seeded Gaussian mixture: one isotropic Gaussian per class, "
    "means at distance ~separation; n_per_class: few-shot subset; "
    "test_pool: resampled | fixed (harness/zoo/pools.py)",
)
def _synthetic(
    root,
    split,
    seed,
    *,
    n_samples,
    dims,
    classes,
    separation,
    data_seed,
    val_fraction,
    test_fraction,
    n_per_class,
    test_pool,
):
    g = torch.Generator().manual_seed(int(data_seed))
    means = torch.randn(classes, dims, generator=g)
    means = separation * means / means.norm(dim=1, keepdim=True).clamp_min(1e-12)
    y = torch.arange(n_samples) % classes
    x = means[y] + torch.randn(n_samples, dims, generator=g)
    n_val, n_test = int(round(val_fraction * n_samples)), int(round(test_fraction * n_samples))
    sizes = {"train": n_samples - n_val - n_test, "val": n_val, "test": n_test}
    idx = pool_split(y.numpy(), sizes, seed, check_test_pool(test_pool))[split]
    if n_per_class is not None:
        idx = few_shot_indices(idx, y.numpy(), int(n_per_class), seed)
    return ArrayDataset(x[idx], y[idx], [str(c) for c in range(classes)])


@functools.lru_cache(maxsize=8)
def _latent_arrays(
    n_samples: int,
    dims: int,
    latent: int,
    num_classes: int,
    separation: float,
    noise: float,
    data_seed: int,
) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(int(data_seed))
    basis, _ = torch.linalg.qr(torch.randn(dims, latent, generator=g))  # dims x latent, Q^T Q = I
    means = torch.randn(num_classes, latent, generator=g)
    means = separation * means / means.norm(dim=1, keepdim=True).clamp_min(1e-12)
    y = torch.arange(n_samples) % num_classes
    z = means[y] + torch.randn(n_samples, latent, generator=g)
    x = z @ basis.T + noise * torch.randn(n_samples, dims, generator=g)
    return x, y.numpy()


@functools.lru_cache(maxsize=64)
def _latent_splits(
    arrays: tuple,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    test_pool: str = "resampled",
) -> dict[str, np.ndarray]:
    n_samples = arrays[0]
    n_val, n_test = int(round(val_fraction * n_samples)), int(round(test_fraction * n_samples))
    sizes = {"train": n_samples - n_val - n_test, "val": n_val, "test": n_test}
    return pool_split(_latent_arrays(*arrays)[1], sizes, seed, test_pool)


@register_dataset(
    "latent",
    num_classes=30,
    input_kind="flat",
    needs_root=False,
    splits=("train", "val", "test"),
    params={
        "n_samples": 6000,
        "dims": 64,
        "latent": 8,
        "num_classes": 30,
        "separation": 3.0,
        "noise": 1.0,
        "data_seed": 0,
        "val_fraction": 0.15,
        "test_fraction": 0.15,
        "classes": None,
        "relabel": True,
        "n_per_class": None,
        "coarse": None,
        "test_pool": "resampled",
    },
    description="seeded classes that share one low-dimensional subspace: class "
    "means on a sphere in a random `latent`-dimensional subspace of "
    "R^dims, isotropic noise in every direction; `classes` picks a "
    "subset (a source and a disjoint target task with the same "
    "structure: transfer by a learned projection); `coarse: k` "
    "relabels class c as c % k (the same images under k super-classes, "
    "CIFAR-20's relation to CIFAR-100); test_pool: resampled | "
    "fixed (harness/zoo/pools.py)",
)
def _latent(
    root,
    split,
    seed,
    *,
    n_samples,
    dims,
    latent,
    num_classes,
    separation,
    noise,
    data_seed,
    val_fraction,
    test_fraction,
    classes,
    relabel,
    n_per_class,
    coarse,
    test_pool,
):
    """A transfer task whose premise holds by construction: every class lives in the same
    ``latent``-dimensional subspace, so features learned on some classes (a projection onto the
    subspace) serve the others, while a network trained from scratch on a few images per class
    must find the subspace among ``dims`` noisy directions."""
    arrays = (
        int(n_samples),
        int(dims),
        int(latent),
        int(num_classes),
        float(separation),
        float(noise),
        int(data_seed),
    )
    x, y = _latent_arrays(*arrays)
    idx = _latent_splits(
        arrays, float(val_fraction), float(test_fraction), int(seed), check_test_pool(test_pool)
    )[split]
    idx, y, kept = _select_classes(idx, y, classes, relabel)
    names = [str(c) for c in (kept if kept is not None and relabel else range(num_classes))]
    if coarse is not None:  # super-classes of the same images: c -> c % coarse
        if not (isinstance(coarse, int) and 1 < coarse < len(names)):
            raise ValueError(
                f"latent coarse must be an integer in [2, {len(names) - 1}]; got {coarse!r}"
            )
        y = np.where(y >= 0, y % coarse, y)
        names = [f"super{c}" for c in range(coarse)]
    if n_per_class is not None:
        idx = few_shot_indices(idx, y, int(n_per_class), seed)
    return ArrayDataset(x[idx], torch.as_tensor(y[idx]), names)


# --------------------------------------------------------------------------- transforms


class _StackCrops:
    """Apply ``per_crop`` to each crop of a ``TenCrop`` and stack (picklable for workers)."""

    def __init__(self, per_crop):
        self.per_crop = per_crop

    def __call__(self, crops):
        return torch.stack([self.per_crop(c) for c in crops])


def cifar_transform(train: bool, mean=CIFAR_MEAN, std=CIFAR_STD):
    """CIFAR: random crop 32 with padding 4 and horizontal flip (train), normalise."""
    from torchvision import transforms as T

    aug = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train else []
    return T.Compose([*aug, T.ToTensor(), T.Normalize(mean, std)])


def imagenet_transform(
    train: bool,
    *,
    size: int = 224,
    resize: int = 256,
    ten_crop: bool = False,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
):
    """ImageNet-style: random resized crop + flip (train); resize 256, centre crop 224 (test);
    ``ten_crop=True`` returns ``(10, 3, 224, 224)`` per image (li2020's test protocol: average
    the ten predictions)."""
    from torchvision import transforms as T

    norm = [T.ToTensor(), T.Normalize(mean, std)]
    if train:
        return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *norm])
    if ten_crop:
        return T.Compose([T.Resize(resize), T.TenCrop(size), _StackCrops(T.Compose(norm))])
    return T.Compose([T.Resize(resize), T.CenterCrop(size), *norm])


def _transform(kind: str, split: str, augment, ten_crop: bool = False):
    train = (split in ("train", "trainval", "all")) if augment is None else bool(augment)
    if kind == "cifar":
        return cifar_transform(train)
    return imagenet_transform(train, ten_crop=ten_crop)


# --------------------------------------------------------------------------- file datasets


def _missing(name: str, root: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"dataset {name!r} not found under {str(root)!r}: {what} (nothing is downloaded; pass "
        f"root=..., or set OTRANSFER_DATA so that $OTRANSFER_DATA/{name} holds the files)"
    )


def _require(name: str, root: Path, rel: Sequence[str], what: str) -> None:
    missing = [r for r in rel if not (root / r).exists()]
    if missing:
        raise _missing(name, root, f"missing {', '.join(str(root / m) for m in missing)}. {what}")


class FileListDataset(Dataset):
    """Images from a list of paths with integer labels, opened with PIL as RGB."""

    def __init__(
        self,
        paths: Sequence[Path],
        targets: Sequence[int],
        classes: Sequence[str],
        transform=None,
        target_transform=None,
    ):
        self.paths = list(paths)
        self.targets = [int(t) for t in targets]
        self.classes = list(classes)
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            img = im.convert("RGB")
        y = self.targets[i]
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            y = self.target_transform(y)
        return img, y


def _holdout(ds: Dataset, split: str, val_size: int, seed: int, n: int) -> Dataset:
    """Carve a seeded ``val`` split of ``val_size`` examples out of a train set."""
    from torch.utils.data import Subset

    if split not in ("train", "val") or val_size <= 0:
        if split == "val":
            raise ValueError("split 'val' needs val_size > 0 (held out from train)")
        return ds
    perm = np.random.default_rng(seed).permutation(n)
    return Subset(ds, np.sort(perm[:val_size] if split == "val" else perm[val_size:]).tolist())


_CIFAR_PARAMS = {"augment": None, "transform": None, "val_size": 0}


class CifarDataset(Dataset):
    """CIFAR from the python-pickle batches (the official ``cifar-*-python`` format, the one
    torchvision reads), without torchvision's checksum check. ``label_key``: ``"labels"``
    (CIFAR-10), ``"fine_labels"`` (CIFAR-100); ``label_map`` maps labels (CIFAR-20)."""

    def __init__(
        self,
        folder: Path,
        files: Sequence[str],
        label_key: str,
        classes,
        transform=None,
        label_map: Sequence[int] | None = None,
    ):
        xs, ys = [], []
        for f in files:
            with open(folder / f, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.extend(entry[label_key])
        self.data = np.concatenate(xs).transpose(0, 2, 3, 1)  # (n, 32, 32, 3)
        ys = np.asarray(ys, dtype=np.int64)
        self.targets = (np.asarray(label_map)[ys] if label_map is not None else ys).tolist()
        self.classes = list(classes)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        from PIL import Image

        img = Image.fromarray(self.data[i])
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[i]


def _cifar(
    folder: str,
    train_files: Sequence[str],
    test_files: Sequence[str],
    meta: str,
    name: str,
    label_key: str,
    names_key: str,
    coarse: bool = False,
):
    def load(root, split, seed, *, augment, transform, val_size):
        _require(
            name,
            root,
            [f"{folder}/{f}" for f in (*train_files, *test_files, meta)],
            f"Put the python version of the dataset (the extracted {folder}/ folder of "
            f"the official tar.gz) in {str(root)!r}.",
        )
        with open(root / folder / meta, "rb") as fh:
            classes = pickle.load(fh, encoding="latin1").get(names_key, [])
        if coarse:
            classes = [str(c) for c in range(20)] if not classes else classes
        tf = transform if transform is not None else _transform("cifar", split, augment)
        files = train_files if split in ("train", "val") else test_files
        ds = CifarDataset(
            root / folder, files, label_key, classes, tf, CIFAR100_COARSE if coarse else None
        )
        return _holdout(ds, split, int(val_size), seed, len(ds))

    return load


_C10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
register_dataset(
    "cifar10",
    num_classes=10,
    splits=("train", "val", "test"),
    params=_CIFAR_PARAMS,
    paper="lohit2020",
    description="CIFAR-10 (python format: cifar-10-batches-py/)",
)(
    _cifar(
        "cifar-10-batches-py",
        _C10_TRAIN,
        ["test_batch"],
        "batches.meta",
        "cifar10",
        "labels",
        "label_names",
    )
)
register_dataset(
    "cifar100",
    num_classes=100,
    splits=("train", "val", "test"),
    params=_CIFAR_PARAMS,
    paper="lohit2020",
    description="CIFAR-100 (python format: cifar-100-python/)",
)(
    _cifar(
        "cifar-100-python",
        ["train"],
        ["test"],
        "meta",
        "cifar100",
        "fine_labels",
        "fine_label_names",
    )
)
register_dataset(
    "cifar20",
    num_classes=20,
    splits=("train", "val", "test"),
    params=_CIFAR_PARAMS,
    paper="li2020",
    description="CIFAR-100 with its 20 coarse labels (fine -> coarse table)",
)(
    _cifar(
        "cifar-100-python",
        ["train"],
        ["test"],
        "meta",
        "cifar20",
        "fine_labels",
        "coarse_label_names",
        coarse=True,
    )
)


@register_dataset(
    "svhn",
    num_classes=10,
    splits=("train", "val", "test", "extra"),
    params=_CIFAR_PARAMS,
    paper="li2020",
    description="SVHN cropped digits (torchvision format: <split>_32x32.mat)",
)
def _svhn(root, split, seed, *, augment, transform, val_size):
    from harness.zoo.models import optional_import

    torchvision = optional_import("torchvision", "vision", "dataset 'svhn'")

    base = "train" if split == "val" else split
    _require(
        "svhn", root, [f"{base}_32x32.mat"], f"Put the official {base}_32x32.mat in {str(root)!r}."
    )
    tf = (
        transform
        if transform is not None
        else _transform("cifar", split, False if augment is None else augment)
    )
    ds = torchvision.datasets.SVHN(str(root), split=base, transform=tf, download=False)
    return _holdout(ds, split, int(val_size), seed, len(ds))


_IMG_PARAMS = {"augment": None, "transform": None, "ten_crop": False}
#: Datasets without an official validation split hold one out of train (``val_size`` > 0).
_HOLDOUT_PARAMS = {**_IMG_PARAMS, "val_size": 0}
_HOLDOUT_SPLITS = ("train", "val", "test")


def _with_holdout(load):
    """``load`` plus a seeded ``val`` split of ``val_size`` train images (test transform), the
    rest staying ``train``: for cross-validating hyper-parameters where the dataset ships none
    (li2020 A.2 picks learning rates and weights by cross-validation)."""

    def wrapped(root, split, seed, *, augment, transform, ten_crop, val_size):
        if split != "val":
            ds = load(root, split, seed, augment=augment, transform=transform, ten_crop=ten_crop)
            return _holdout(ds, split, int(val_size), seed, len(ds))
        if transform is None:
            transform = _transform("imagenet", "test", augment, ten_crop)
        ds = load(root, "train", seed, augment=augment, transform=transform, ten_crop=ten_crop)
        return _holdout(ds, "val", int(val_size), seed, len(ds))

    wrapped.__doc__ = load.__doc__
    return wrapped


def _read_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


@register_dataset(
    "aircraft",
    num_classes=100,
    splits=("train", "val", "trainval", "test", "all"),
    params={
        **_IMG_PARAMS,
        "annotation": "variant",
        "manufacturer": None,
        "exclude_manufacturer": None,
    },
    paper="lu2017",
    description="FGVC-Aircraft 2013b (fgvc-aircraft-2013b/data/...); "
    "manufacturer='Boeing' / 'Airbus' keeps one manufacturer's "
    "images, relabelled over its variants; exclude_manufacturer= "
    "keeps the others: lu2017's ITL source/target split; split "
    "'all' = trainval + test (lu2017's source: every image of the "
    "other manufacturers)",
)
def _aircraft(
    root,
    split,
    seed,
    *,
    augment,
    transform,
    ten_crop,
    annotation,
    manufacturer,
    exclude_manufacturer,
):
    data = root / "fgvc-aircraft-2013b" / "data"
    if not data.is_dir() and (root / "data" / "images").is_dir():
        data = root / "data"
    names_file = {
        "variant": "variants.txt",
        "family": "families.txt",
        "manufacturer": "manufacturers.txt",
    }[annotation]
    parts = ("trainval", "test") if split == "all" else (split,)
    lists = [f"images_{annotation}_{p}.txt" for p in parts] + [names_file, "images"]
    if manufacturer is not None or exclude_manufacturer is not None:
        lists += [f"images_manufacturer_{p}.txt" for p in parts]
    missing = [str(data / f) for f in lists if not (data / f).exists()]
    if missing:
        raise _missing(
            "aircraft",
            root,
            f"missing {', '.join(missing)}. Extract the official "
            f"fgvc-aircraft-2013b.tar.gz in {str(root)!r} (so that "
            f"{str(root / 'fgvc-aircraft-2013b' / 'data' / 'images')!r} holds the "
            f".jpg files).",
        )
    rows = [
        ln.split(" ", 1) for p in parts for ln in _read_lines(data / f"images_{annotation}_{p}.txt")
    ]
    classes = _read_lines(data / names_file)
    if manufacturer is not None or exclude_manufacturer is not None:
        maker = dict(
            ln.split(" ", 1)
            for p in parts
            for ln in _read_lines(data / f"images_manufacturer_{p}.txt")
        )
        if manufacturer is not None:
            rows = [r for r in rows if maker.get(r[0]) == manufacturer]
        if exclude_manufacturer is not None:
            rows = [r for r in rows if maker.get(r[0]) != exclude_manufacturer]
        if not rows:
            raise ValueError(
                f"no aircraft left in split {split!r} with manufacturer="
                f"{manufacturer!r}, exclude_manufacturer={exclude_manufacturer!r}; "
                f"manufacturers: {', '.join(sorted(set(maker.values())))}"
            )
        classes = [c for c in classes if c in {r[1] for r in rows}]
    lut = {c: i for i, c in enumerate(classes)}
    tf = transform if transform is not None else _transform("imagenet", split, augment, ten_crop)
    return FileListDataset(
        [data / "images" / f"{i}.jpg" for i, _ in rows], [lut[c] for _, c in rows], classes, tf
    )


@register_dataset(
    "cub200",
    num_classes=200,
    params=_HOLDOUT_PARAMS,
    splits=_HOLDOUT_SPLITS,
    paper="li2020",
    description="CUB-200-2011 (CUB_200_2011/images.txt, image_class_labels.txt, "
    "train_test_split.txt, images/); val_size= holds out a val split",
)
@_with_holdout
def _cub(root, split, seed, *, augment, transform, ten_crop):
    base = root / "CUB_200_2011"
    files = [
        "images.txt",
        "image_class_labels.txt",
        "train_test_split.txt",
        "classes.txt",
        "images",
    ]
    _require(
        "cub200",
        root,
        [f"CUB_200_2011/{f}" for f in files],
        f"Extract the official CUB_200_2011.tgz in {str(root)!r}.",
    )
    paths = dict(ln.split(" ", 1) for ln in _read_lines(base / "images.txt"))
    labels = dict(ln.split(" ", 1) for ln in _read_lines(base / "image_class_labels.txt"))
    is_train = dict(ln.split(" ", 1) for ln in _read_lines(base / "train_test_split.txt"))
    classes = [ln.split(" ", 1)[1] for ln in _read_lines(base / "classes.txt")]
    want = "1" if split == "train" else "0"
    ids = [i for i in paths if is_train[i] == want]
    tf = transform if transform is not None else _transform("imagenet", split, augment, ten_crop)
    return FileListDataset(
        [base / "images" / paths[i] for i in ids], [int(labels[i]) - 1 for i in ids], classes, tf
    )


@register_dataset(
    "food101",
    num_classes=101,
    params=_HOLDOUT_PARAMS,
    splits=_HOLDOUT_SPLITS,
    paper="li2020",
    description="Food-101 (food-101/meta/{classes,train,test}.txt, "
    "food-101/images/<class>/<id>.jpg); val_size= holds out a val split",
)
@_with_holdout
def _food(root, split, seed, *, augment, transform, ten_crop):
    base = root / "food-101"
    _require(
        "food101",
        root,
        ["food-101/meta/classes.txt", f"food-101/meta/{split}.txt", "food-101/images"],
        f"Extract the official food-101.tar.gz in {str(root)!r}.",
    )
    classes = _read_lines(base / "meta" / "classes.txt")
    lut = {c: i for i, c in enumerate(classes)}
    items = _read_lines(base / "meta" / f"{split}.txt")
    tf = transform if transform is not None else _transform("imagenet", split, augment, ten_crop)
    return FileListDataset(
        [base / "images" / f"{it}.jpg" for it in items],
        [lut[it.split("/")[0]] for it in items],
        classes,
        tf,
    )


def _image_folder(name: str, folders: Mapping[str, str], hint: str):
    def load(root, split, seed, *, augment, transform, ten_crop):
        from harness.zoo.models import optional_import

        torchvision = optional_import("torchvision", "vision", f"dataset {name!r}")

        sub = folders[split]
        _require(
            name,
            root,
            [sub],
            f"Expected one folder per class: "
            f"{str(root / sub / '<class>' / '<image>.jpg')!r}. {hint}",
        )
        tf = (
            transform if transform is not None else _transform("imagenet", split, augment, ten_crop)
        )
        return torchvision.datasets.ImageFolder(str(root / sub), transform=tf)

    return load


register_dataset(
    "cars196",
    num_classes=196,
    params=_HOLDOUT_PARAMS,
    splits=_HOLDOUT_SPLITS,
    paper="li2020",
    description="Stanford Cars, ImageFolder layout train/<class>/, test/<class>/; "
    "val_size= holds out a val split",
)(
    _with_holdout(
        _image_folder(
            "cars196",
            {"train": "train", "test": "test"},
            "Sort the Stanford Cars images into class folders (devkit annotations).",
        )
    )
)
register_dataset(
    "dogs120",
    num_classes=120,
    params=_HOLDOUT_PARAMS,
    splits=_HOLDOUT_SPLITS,
    paper="li2020",
    description="Stanford Dogs, ImageFolder layout train/<breed>/, test/<breed>/; "
    "val_size= holds out a val split",
)(
    _with_holdout(
        _image_folder(
            "dogs120",
            {"train": "train", "test": "test"},
            "Split the Stanford Dogs Images/<breed>/ folders with train_list.mat / test_list.mat.",
        )
    )
)
register_dataset(
    "imagenet",
    num_classes=1000,
    splits=("train", "val"),
    params=_IMG_PARAMS,
    paper="li2020",
    description="ImageNet ILSVRC-2012, ImageFolder layout train/<wnid>/, val/<wnid>/",
)(
    _image_folder(
        "imagenet",
        {"train": "train", "val": "val"},
        "Use the standard ILSVRC-2012 train/ and val/ folders (val sorted into <wnid>/ folders).",
    )
)


# ---- glyphs: the embedded many-class source task (rendering: harness.zoo.glyphs)
from harness.zoo.glyphs import LETTERS, render_glyphs  # noqa: E402


@register_dataset(
    "glyphs",
    num_classes=len(LETTERS),
    input_kind="flat",
    needs_root=False,
    splits=("train", "val", "test"),
    params={
        "chars": LETTERS,
        "size": 8,
        "n_per_class": 120,
        "data_seed": 0,
        "val_fraction": 0.1,
        "test_fraction": 0.1,
        "few_shot": None,
        "image": False,
    },
    description="characters rendered from matplotlib's fonts under random affine transforms, "
    "8x8 like digits (letters, 52 classes by default): an embedded many-class "
    "source task",
)
def _glyphs(
    root,
    split,
    seed,
    *,
    chars,
    size,
    n_per_class,
    data_seed,
    val_fraction,
    test_fraction,
    few_shot,
    image,
):
    x, y = render_glyphs(str(chars), int(size), int(n_per_class), int(data_seed))
    n = len(y)
    n_val, n_test = int(round(val_fraction * n)), int(round(test_fraction * n))
    sizes = {"train": n - n_val - n_test, "val": n_val, "test": n_test}
    idx = stratified_split(y, sizes, seed)[split]
    if few_shot is not None:
        idx = few_shot_indices(idx, y, int(few_shot), seed)
    data = x[idx].view(-1, 1, int(size), int(size)) if image else x[idx]
    return ArrayDataset(data, torch.as_tensor(y[idx]), list(chars))
