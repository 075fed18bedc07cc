"""What the on-disk loaders share: the CIFAR and ImageNet transforms, the one-line error for a
dataset whose files are missing under its root, :class:`FileListDataset` (images from a list of
paths), and the seeded ``val`` split held out of a train set (:func:`holdout`,
:func:`with_holdout`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMG_PARAMS",
    "HOLDOUT_PARAMS",
    "HOLDOUT_SPLITS",
    "cifar_transform",
    "imagenet_transform",
    "split_transform",
    "missing_error",
    "require_files",
    "read_lines",
    "FileListDataset",
    "holdout",
    "with_holdout",
]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IMG_PARAMS = {"augment": None, "transform": None, "ten_crop": False}
#: Datasets without an official validation split hold one out of train (``val_size`` > 0).
HOLDOUT_PARAMS = {**IMG_PARAMS, "val_size": 0}
HOLDOUT_SPLITS = ("train", "val", "test")


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


def split_transform(kind: str, split: str, augment, ten_crop: bool = False):
    train = (split in ("train", "trainval", "all")) if augment is None else bool(augment)
    if kind == "cifar":
        return cifar_transform(train)
    return imagenet_transform(train, ten_crop=ten_crop)


# --------------------------------------------------------------------------- file datasets


def missing_error(name: str, root: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"dataset {name!r} not found under {str(root)!r}: {what} (nothing is downloaded; pass "
        f"root=..., or set OTRANSFER_DATA so that $OTRANSFER_DATA/{name} holds the files)"
    )


def require_files(name: str, root: Path, rel: Sequence[str], what: str) -> None:
    missing = [r for r in rel if not (root / r).exists()]
    if missing:
        raise missing_error(
            name, root, f"missing {', '.join(str(root / m) for m in missing)}. {what}"
        )


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


def holdout(ds: Dataset, split: str, val_size: int, seed: int, n: int) -> Dataset:
    """Carve a seeded ``val`` split of ``val_size`` examples out of a train set."""
    from torch.utils.data import Subset

    if split not in ("train", "val") or val_size <= 0:
        if split == "val":
            raise ValueError("split 'val' needs val_size > 0 (held out from train)")
        return ds
    perm = np.random.default_rng(seed).permutation(n)
    return Subset(ds, np.sort(perm[:val_size] if split == "val" else perm[val_size:]).tolist())


def with_holdout(load):
    """``load`` plus a seeded ``val`` split of ``val_size`` train images (test transform), the
    rest staying ``train``: for cross-validating hyper-parameters where the dataset ships none
    (li2020 A.2 picks learning rates and weights by cross-validation)."""

    def wrapped(root, split, seed, *, augment, transform, ten_crop, val_size):
        if split != "val":
            ds = load(root, split, seed, augment=augment, transform=transform, ten_crop=ten_crop)
            return holdout(ds, split, int(val_size), seed, len(ds))
        if transform is None:
            transform = split_transform("imagenet", "test", augment, ten_crop)
        ds = load(root, "train", seed, augment=augment, transform=transform, ten_crop=ten_crop)
        return holdout(ds, "val", int(val_size), seed, len(ds))

    wrapped.__doc__ = load.__doc__
    return wrapped


def read_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
