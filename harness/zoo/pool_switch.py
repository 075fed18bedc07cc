"""The suite-level ``test_pool`` switch (:func:`apply_suite_test_pool`): every stage whose
datasets take ``test_pool`` gets it in its ``dataset_params`` (harness/zoo/pools.py)."""

from __future__ import annotations

import copy
from typing import Any

from harness.zoo.pools import TEST_POOLS, check_test_pool  # noqa: F401


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
    if (
        not isinstance(datasets, list)
        or not datasets
        or not all(_takes_test_pool(d) for d in datasets)
    ):
        return
    params = block.get("dataset_params")
    if params is None:
        block["dataset_params"] = params = {}
    if isinstance(params, dict):
        params.setdefault("test_pool", value)
