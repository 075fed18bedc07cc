"""Checks made before the first job of a run starts (issue 24, item 7): every dataset folder
the jobs still to run need exists. A missing one is one line naming the dataset, the folder,
how many jobs need it and how to provide it, instead of a failed record per job."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

__all__ = ["missing_data_roots", "check_data_roots"]


def _roots(job: Any) -> list[tuple[str, Path]]:
    """``(dataset, folder)`` of each dataset a job loads that reads files (a joint source
    too)."""
    from harness.zoo.data import dataset_root, get_dataset

    cfg = job.config
    pairs = [(cfg.get("dataset"), dict(cfg.get("dataset_params") or {}))]
    source = cfg.get("source") or {}
    if source.get("dataset"):
        pairs.append((source["dataset"], dict(source.get("dataset_params") or {})))
    out = []
    for name, params in pairs:
        if name and get_dataset(name).needs_root:
            out.append((name, dataset_root(name, params.get("root"))))
    return out


def missing_data_roots(jobs: Iterable[Any]) -> list[tuple[str, Path, int]]:
    """``(dataset, folder, jobs needing it)`` of each folder that does not exist."""
    need = Counter(pair for job in jobs for pair in _roots(job))
    return [(name, root, n) for (name, root), n in need.items() if not os.path.isdir(root)]


def check_data_roots(jobs: Iterable[Any]) -> None:
    """``FileNotFoundError`` (one line) when a dataset folder the jobs need is missing."""
    missing = missing_data_roots(jobs)
    if not missing:
        return
    name, root, n = missing[0]
    more = (
        f"; also missing: {', '.join(str(r) for _, r, _ in missing[1:])}"
        if len(missing) > 1
        else ""
    )
    raise FileNotFoundError(
        f"dataset {name!r}: no folder {str(root)!r} ({n} job(s) to run need it){more}. Put its "
        f"files there, set OTRANSFER_DATA to the folder that holds {name}/, or give "
        f"dataset_params.root; nothing is downloaded (`otransfer list datasets` says what "
        f"each expects)"
    )
