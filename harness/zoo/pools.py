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

import copy
from typing import Any, Mapping

import numpy as np

__all__ = ["TEST_POOLS", "FIXED_TEST_SEED", "check_test_pool", "pool_split",
           "apply_suite_test_pool"]

#: The choices of the ``test_pool`` dataset parameter; the first is the default.
TEST_POOLS = ("resampled", "fixed")
#: ``random_state`` of the one stratified draw of the fixed test pool (any constant would do;
#: changing it changes every ``fixed`` result, so it is part of the method, never a seed).
FIXED_TEST_SEED = 314159


def check_test_pool(value: Any) -> str:
    """``value`` if it is one of :data:`TEST_POOLS`, else a one-line ``ValueError``."""
    if not isinstance(value, str) or value not in TEST_POOLS:
        raise ValueError(f"test_pool must be one of {', '.join(map(repr, TEST_POOLS))}; "
                         f"got {value!r}")
    return value


def pool_split(y: np.ndarray, sizes: Mapping[str, int], seed: int,
               test_pool: str = "resampled") -> dict[str, np.ndarray]:
    """Disjoint stratified index sets ``{"train", "val", "test"}`` of ``sizes`` (train: the
    rest). ``resampled``: today's per-seed split, bit for bit; ``fixed``: the test set drawn
    with :data:`FIXED_TEST_SEED`, val with ``seed`` from the rest, train the remainder."""
    from sklearn.model_selection import train_test_split

    from harness.zoo.data import stratified_split

    if check_test_pool(test_pool) == "resampled":
        return stratified_split(y, sizes, seed)
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=int(sizes["test"]), stratify=y,
                                  random_state=FIXED_TEST_SEED)
    if int(sizes["val"]) > 0:
        rest, val = train_test_split(rest, test_size=int(sizes["val"]), stratify=y[rest],
                                     random_state=seed)
    else:
        val = rest[:0]
    return {"train": np.sort(rest), "val": np.sort(val), "test": np.sort(test)}


def apply_suite_test_pool(raw: Any) -> Any:
    """The raw suite with its top-level ``test_pool`` (if any) written into the
    ``dataset_params`` (and ``source.dataset_params``) of every stage whose datasets all take
    a ``test_pool`` parameter and that does not set one itself. The default value
    (``resampled``) writes nothing, so job keys stay as they were; ``fixed`` is part of every
    job config it reaches, so those jobs' keys differ from the resampled runs'. A bad value is
    a ``ValueError`` naming the choices (the caller names the key and line)."""
    if not isinstance(raw, dict) or "test_pool" not in raw:
        return raw
    value = check_test_pool(raw["test_pool"])
    if value == TEST_POOLS[0] or not isinstance(raw.get("stages"), dict):
        return raw
    out = copy.deepcopy(raw)
    for stage in out["stages"].values():
        if not isinstance(stage, dict):
            continue  # reported by the stage checks
        datasets = stage.get("dataset")
        _set_pool(stage, [datasets] if isinstance(datasets, str) else datasets, value)
        source = stage.get("source")
        if isinstance(source, dict):
            _set_pool(source, [source.get("dataset")], value)
    return out


def _takes_test_pool(name: Any) -> bool:
    from harness.zoo.data import all_datasets

    info = all_datasets().get(name) if isinstance(name, str) else None
    return info is not None and "test_pool" in info.params


def _set_pool(block: dict, datasets: Any, value: str) -> None:
    """Set ``block["dataset_params"]["test_pool"]`` when every one of ``datasets`` takes it."""
    if not isinstance(datasets, list) or not datasets \
            or not all(_takes_test_pool(d) for d in datasets):
        return
    params = block.get("dataset_params")
    if params is None:
        block["dataset_params"] = params = {}
    if isinstance(params, dict):
        params.setdefault("test_pool", value)
