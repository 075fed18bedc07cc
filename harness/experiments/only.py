"""``--only KEY=V[,V...]``: run a subset of a suite's jobs by name (issue 24, as benchopt's
``-s SOLVER -d DATASET``).

Keys: ``stage``, ``task`` (a leaderboard column), ``method`` (alias ``row``: a row name, a row
with its grid point, or a regularizer spec), ``regularizer`` (the spec), ``dataset``, ``seed``.
Values of one filter are alternatives; several filters must all match. The jobs kept are the
suite's own (same configs, same keys: a later full run skips them), plus the teacher and init
jobs they load, whatever the filters say. A key that does not exist, or a value that matches no
job, is one line listing the valid ones.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from harness.experiments.suite import PRETRAINED, Job

__all__ = ["OnlyError", "parse_only", "select_jobs", "KEYS"]

#: The filter keys, and what each matches of a job.
KEYS = {
    "stage": lambda j: {j.stage},
    "task": lambda j: {j.task},
    "method": lambda j: {j.row, j.label, j.regularizer},
    "regularizer": lambda j: {j.regularizer},
    "dataset": lambda j: {j.dataset},
    "seed": lambda j: {str(j.seed)},
}
ALIASES = {"row": "method"}


class OnlyError(ValueError):
    """A ``--only`` filter that names no key or no job (its message is the one line)."""


def parse_only(specs: Iterable[str]) -> dict[str, set[str]]:
    """``{key: values}`` of ``--only`` strings (``"method=kd,omega_p"``); the values of a key
    given twice are joined."""
    out: dict[str, set[str]] = {}
    for spec in specs:
        key, sep, values = str(spec).partition("=")
        key = ALIASES.get(key.strip(), key.strip())
        if not sep or key not in KEYS:
            raise OnlyError(
                f"--only {spec!r}: give KEY=VALUE[,VALUE...] with KEY one of "
                f"{', '.join([*KEYS, *ALIASES])}"
            )
        vals = {v.strip() for v in values.split(",") if v.strip()}
        if not vals:
            raise OnlyError(f"--only {spec!r}: no value after '='")
        out.setdefault(key, set()).update(vals)
    return out


def _deps(job: Job) -> list[str]:
    return [
        job.config[r]
        for r in ("teacher", "init")
        if job.config.get(r) and job.config[r] != PRETRAINED
    ]


def select_jobs(jobs: Sequence[Job], only: Iterable[str] | Mapping[str, set[str]]) -> list[Job]:
    """The jobs of ``jobs`` that every filter of ``only`` matches, with the jobs they load
    (their teachers, their init stages, transitively), in the suite's order."""
    filters = dict(only) if isinstance(only, Mapping) else parse_only(only)
    for key, values in filters.items():
        have = sorted({v for j in jobs for v in KEYS[key](j) if v}, key=_order)
        missing = sorted(values - set(have))
        if missing:
            raise OnlyError(
                f"--only {key}={','.join(missing)} matches no job of the suite; "
                f"valid {key} values: {', '.join(have)}"
            )
    chosen = [j for j in jobs if all(KEYS[k](j) & v for k, v in filters.items())]
    if not chosen:
        raise OnlyError(
            "no job matches all of --only "
            + " --only ".join(f"{k}={','.join(sorted(v))}" for k, v in filters.items())
            + " together"
        )
    by_key = {j.key: j for j in jobs}
    keep, todo = set(), [j.key for j in chosen]
    while todo:
        key = todo.pop()
        if key not in keep and key in by_key:
            keep.add(key)
            todo += _deps(by_key[key])
    return [j for j in jobs if j.key in keep]


def _order(value: str):
    """Seeds in numeric order, names alphabetically."""
    return (0, int(value), "") if value.isdigit() else (1, 0, value)
