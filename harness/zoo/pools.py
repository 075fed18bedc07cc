"""The test pool of the embedded datasets (``digits``, ``latent``, ``synthetic``): re-drawn per
seed, or one fixed draw that no seed trains on.

``test_pool: resampled`` (the default) is :func:`harness.zoo.data.stratified_split` with the
run's seed: every seed draws its own train/val/test partition of the same finite pool, so an
example tested under one seed is trained on under another and the seeds are not independent
replicates (Nadeau & Bengio 2003, "Inference for the generalization error": the variance of
the mean over resampled splits is underestimated by the naive ``s^2 / n``).

``test_pool: fixed`` draws the test split once, stratified, with :data:`FIXED_TEST_SEED` (the
same for every seed), and re-draws only val (stratified, seeded by the run's seed) and train
(the rest) from the remaining examples. The sizes are those of ``resampled``; no seed ever
trains or validates on a test example, so the per-seed results are paired on one test set.

A whole suite switches every stage whose dataset supports it with a top-level
``test_pool: fixed`` (:func:`apply_suite_test_pool`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

__all__ = ["TEST_POOLS", "FIXED_TEST_SEED", "check_test_pool", "pool_split", "stratified_split"]

#: The choices of the ``test_pool`` dataset parameter; the first is the default.
TEST_POOLS = ("resampled", "fixed")
#: ``random_state`` of the one stratified draw of the fixed test pool (any constant would do;
#: changing it changes every ``fixed`` result, so it is part of the method, never a seed).
FIXED_TEST_SEED = 314159


def check_test_pool(value: Any) -> str:
    """``value`` if it is one of :data:`TEST_POOLS`, else a one-line ``ValueError``."""
    if not isinstance(value, str) or value not in TEST_POOLS:
        raise ValueError(
            f"test_pool must be one of {', '.join(map(repr, TEST_POOLS))}; got {value!r}"
        )
    return value


def pool_split(
    y: np.ndarray, sizes: Mapping[str, int], seed: int, test_pool: str = "resampled"
) -> dict[str, np.ndarray]:
    """Disjoint stratified index sets ``{"train", "val", "test"}`` of ``sizes`` (train: the
    rest). ``resampled``: today's per-seed split, bit for bit; ``fixed``: the test set drawn
    with :data:`FIXED_TEST_SEED`, val with ``seed`` from the rest, train the remainder."""
    from sklearn.model_selection import train_test_split

    if check_test_pool(test_pool) == "resampled":
        return stratified_split(y, sizes, seed)
    idx = np.arange(len(y))
    rest, test = train_test_split(
        idx, test_size=int(sizes["test"]), stratify=y, random_state=FIXED_TEST_SEED
    )
    if int(sizes["val"]) > 0:
        rest, val = train_test_split(
            rest, test_size=int(sizes["val"]), stratify=y[rest], random_state=seed
        )
    else:
        val = rest[:0]
    return {"train": np.sort(rest), "val": np.sort(val), "test": np.sort(test)}


def stratified_split(y: np.ndarray, sizes: Mapping[str, int], seed: int) -> dict[str, np.ndarray]:
    """Disjoint stratified index sets: ``sizes`` for all but the first split, rest to it."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    out: dict[str, np.ndarray] = {}
    names = list(sizes)
    for k, name in enumerate(names[1:]):
        idx, held = train_test_split(
            idx, test_size=sizes[name], stratify=y[idx], random_state=seed + k
        )
        out[name] = np.sort(held)
    out[names[0]] = np.sort(idx)
    return out
