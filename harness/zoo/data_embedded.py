"""The embedded datasets, which need no files: ``digits`` (scikit-learn's bundled 1,797 8x8
images, seeded stratified train/val/test splits; :func:`digits_transfer_split` for its source and
target tasks), ``synthetic`` (a seeded Gaussian mixture) and ``latent`` (classes sharing one
low-dimensional subspace).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch

from harness.zoo.data_core import (
    ArrayDataset,
    few_shot_indices,
    load_dataset,
    register_dataset,
    select_classes,
)
from harness.zoo.pools import check_test_pool, pool_split

__all__ = ["DIGITS_SIZES", "digits_splits", "digits_transfer_split"]

DIGITS_SIZES = {"train": 1200, "val": 297, "test": 300}


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[torch.Tensor, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.data / 16.0, dtype=torch.float32)
    return x, np.asarray(d.target)


@functools.lru_cache(maxsize=16)
def digits_splits(seed: int, test_pool: str = "resampled") -> dict[str, np.ndarray]:
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
    idx = digits_splits(seed, check_test_pool(test_pool))[split]
    idx, y, kept = select_classes(idx, y, classes, relabel)
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


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """``a . b`` exactly rounded (math.fsum of exactly rounded products): no BLAS, no order
    that a CPU's vector width could change."""
    return math.fsum((a * b).tolist())


def _orthonormal_columns(a: np.ndarray) -> np.ndarray:
    """Modified Gram-Schmidt on ``a``'s columns, elementwise float64 operations only."""
    q = a.copy()
    for j in range(q.shape[1]):
        for i in range(j):
            q[:, j] = q[:, j] - _dot(q[:, i], q[:, j]) * q[:, i]
        q[:, j] = q[:, j] / math.sqrt(_dot(q[:, j], q[:, j]))
    return q


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
    """The latent task's points, the same bits on every CPU: numpy's PCG64 normals (a stream
    numpy keeps stable) and float64 elementwise arithmetic in a fixed order (no LAPACK QR, no
    BLAS product, whose results depend on the CPU's instruction set), rounded once to float32.
    The torch/MKL version this replaced drew different points on AVX2 and AVX-512 machines."""
    rng = np.random.default_rng(int(data_seed))
    basis = _orthonormal_columns(rng.standard_normal((dims, latent)))  # dims x latent
    means = rng.standard_normal((num_classes, latent))
    norms = np.array([math.sqrt(_dot(m, m)) for m in means])
    means = separation * means / np.maximum(norms, 1e-12)[:, None]
    y = np.arange(n_samples) % num_classes
    z = means[y] + rng.standard_normal((n_samples, latent))
    x = z[:, :1] * basis[:, 0]
    for k in range(1, latent):  # z @ basis.T, one latent direction at a time
        x = x + z[:, k : k + 1] * basis[:, k]
    x = x + noise * rng.standard_normal((n_samples, dims))
    return torch.from_numpy(x.astype(np.float32)), y


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
    idx, y, kept = select_classes(idx, y, classes, relabel)
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
