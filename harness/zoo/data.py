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

This module gathers the pieces: the registry and :func:`load_dataset`
(:mod:`harness.zoo.data_core`), the embedded datasets (:mod:`harness.zoo.data_embedded`,
:mod:`harness.zoo.data_glyphs`), the on-disk loaders (:mod:`harness.zoo.data_cifar`,
:mod:`harness.zoo.data_folders`) and what those share (:mod:`harness.zoo.data_files`).
Importing it registers every built-in dataset, in the order the listing shows them.
"""

from __future__ import annotations

# the order of these imports is the order of registration (``otransfer list datasets``), hence
# the isort splits
from harness.zoo.data_core import (
    DATASETS,
    ArrayDataset,
    BatchedView,
    DatasetInfo,
    all_datasets,
    available_datasets,
    batched_collate,
    dataset_root,
    few_shot_indices,
    get_dataset,
    held_splits,
    load_dataset,
    register_dataset,
)
from harness.zoo.data_embedded import DIGITS_SIZES, digits_splits, digits_transfer_split

# isort: split
from harness.zoo.data_files import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    FileListDataset,
    cifar_transform,
    imagenet_transform,
)

# isort: split
from harness.zoo.data_cifar import CIFAR100_COARSE, CifarDataset

# isort: split
from harness.zoo import data_folders  # noqa: F401 (registers its datasets)

# isort: split
from harness.zoo import data_glyphs  # noqa: F401 (registers glyphs, last)

#: The name tests/test_test_pool.py imports (:func:`harness.zoo.data_embedded.digits_splits`).
_digits_splits = digits_splits

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
    "few_shot_indices",
    "FileListDataset",
    "CifarDataset",
    "DIGITS_SIZES",
    "digits_splits",
    "digits_transfer_split",
    "cifar_transform",
    "imagenet_transform",
    "CIFAR100_COARSE",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]
