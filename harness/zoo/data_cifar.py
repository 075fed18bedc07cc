"""CIFAR-10, CIFAR-100, CIFAR-20 (CIFAR-100's coarse labels) from the python-pickle batches,
and SVHN, read from a local root (nothing is downloaded)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
from torch.utils.data import Dataset

from harness.zoo.data_core import register_dataset
from harness.zoo.data_files import holdout, require_files, split_transform
from harness.zoo.optional import optional_import

__all__ = ["CIFAR100_COARSE", "CifarDataset"]

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
        require_files(
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
        tf = transform if transform is not None else split_transform("cifar", split, augment)
        files = train_files if split in ("train", "val") else test_files
        ds = CifarDataset(
            root / folder, files, label_key, classes, tf, CIFAR100_COARSE if coarse else None
        )
        return holdout(ds, split, int(val_size), seed, len(ds))

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
    torchvision = optional_import("torchvision", "vision", "dataset 'svhn'")

    base = "train" if split == "val" else split
    require_files(
        "svhn", root, [f"{base}_32x32.mat"], f"Put the official {base}_32x32.mat in {str(root)!r}."
    )
    tf = (
        transform
        if transform is not None
        else split_transform("cifar", split, False if augment is None else augment)
    )
    ds = torchvision.datasets.SVHN(str(root), split=base, transform=tf, download=False)
    return holdout(ds, split, int(val_size), seed, len(ds))
