"""The jobs of a search point (``otransfer tune``): the search block chosen, the suite cut to
the searched stage and its dependencies with a point merged in as a grid point is, the study's
name, and a point sampled from an Optuna trial."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from harness.experiments.suite import (
    PRETRAINED,
    Job,
    Search,
    Stage,
    Suite,
    SuiteError,
    canonical_json,
    config_key,
    expand,
    merge_params,
)

__all__ = [
    "TUNED",
    "select_search",
    "stage_named",
    "dependency_stages",
    "point_suite",
    "trial_jobs",
    "study_name",
    "sample_point",
    "anchor_jobs",
]

#: Suffix of the leaderboard row of the re-runs of a search's best point.
TUNED = " (tuned)"
_TRAIN = "train."


def select_search(suite: Suite, stage: str | None = None, regularizer: str | None = None) -> Search:
    """The search block of ``suite`` for ``stage`` (and ``regularizer``: spec or row name);
    either may be omitted when it leaves one block. Raises :class:`SuiteError` otherwise."""
    cands = list(suite.searches)
    if not cands:
        raise SuiteError(
            f"{suite.path}: suite {suite.name!r} has no 'search:' block (see "
            "harness/experiments/suite.py: stage, regularizer, space)"
        )
    if stage is not None:
        cands = [s for s in cands if s.stage == stage]
    if regularizer is not None:
        cands = [s for s in cands if regularizer in (s.regularizer, s.row)]
    have = ", ".join(f"--stage {s.stage} --regularizer {s.row!r}" for s in suite.searches)
    if not cands:
        raise SuiteError(
            f"{suite.path}: no search block for stage {stage!r}"
            + (f" and regularizer {regularizer!r}" if regularizer else "")
            + f"; the suite searches: {have}"
        )
    if len(cands) > 1:
        raise SuiteError(f"{suite.path}: several search blocks match; choose one with {have}")
    return cands[0]


def stage_named(suite: Suite, name: str) -> Stage:
    return next(st for st in suite.stages if st.name == name)


def dependency_stages(suite: Suite, stage: Stage) -> list[Stage]:
    """The stages ``stage`` needs trained first (its teacher and init, transitively), in the
    suite's order."""
    need, todo = set(), [stage]
    while todo:
        st = todo.pop()
        for ref in (st.teacher, st.init):
            if ref and ref != PRETRAINED and ref not in need:
                need.add(ref)
                todo.append(stage_named(suite, ref))
    return [st for st in suite.stages if st.name in need]


def point_suite(
    suite: Suite, search: Search, point: Mapping[str, Any], seeds: Sequence[int]
) -> Suite:
    """``suite`` cut to the searched stage and its dependencies, the stage holding one
    regularizer entry (the searched one with ``point`` merged in, as a grid point is) and no
    grid, on the searched dataset and ``seeds``. Dependency stages keep their keys; their
    ``report`` is pinned to its value in the full suite (they are used, so False unless set)."""
    stage = stage_named(suite, search.stage)
    reg = {k: v for k, v in point.items() if not k.startswith(_TRAIN)}
    train = {k[len(_TRAIN) :]: v for k, v in point.items() if k.startswith(_TRAIN)}
    tuned = dataclasses.replace(
        stage,
        datasets=(search.dataset,),
        grid={},
        seeds=tuple(int(s) for s in seeds),
        regularizers=((search.regularizer, merge_params(search.params, reg)),),
        train={**stage.train, **train},
    )
    deps = [
        dataclasses.replace(st, report=st.report if st.report is not None else False)
        for st in dependency_stages(suite, stage)
    ]
    return dataclasses.replace(suite, stages=(*deps, tuned))


def trial_jobs(
    suite: Suite, search: Search, point: Mapping[str, Any], seeds: Sequence[int]
) -> tuple[list[Job], dict[str, Job]]:
    """The searched stage's jobs at ``point`` (one per seed;
    :func:`harness.experiments.suite.expand` builds them, so keys and validation are those of
    grid points) and every job by key (the teacher and init jobs they load)."""
    jobs = expand(point_suite(suite, search, point, seeds))
    return [j for j in jobs if j.stage == search.stage], {j.key: j for j in jobs}


def study_name(suite: Suite, search: Search) -> str:
    """``<suite>:tune:<stage>:<row>:<hash>``, the hash over the space and the trials' base job
    config (the stage without a point)."""
    base = trial_jobs(suite, search, {}, [search.seed])[0][0]
    what = {"space": search.space, "base": base.config}
    if len(search.seeds) > 1:  # one seed: the fingerprint of the studies made before seeds
        what["seeds"] = list(search.seeds)
    fingerprint = config_key(what)
    return f"{suite.name}:tune:{search.stage}:{search.row}:{fingerprint[:8]}"


def _encode(choice: Any) -> Any:
    """An Optuna categorical value for a choice: scalars as they are, lists as JSON text."""
    return (
        choice
        if choice is None or isinstance(choice, (str, int, float, bool))
        else canonical_json(choice)
    )


def sample_point(trial, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Draw one point of ``space`` (normalised dimensions of a :class:`Search`) from ``trial``."""
    point: dict[str, Any] = {}
    for key, dim in space.items():
        if "choices" in dim:
            encoded = [_encode(c) for c in dim["choices"]]
            point[key] = dim["choices"][encoded.index(trial.suggest_categorical(key, encoded))]
        elif dim["type"] == "int":
            point[key] = trial.suggest_int(
                key, dim["low"], dim["high"], step=dim["step"] or 1, log=dim["log"]
            )
        else:
            point[key] = trial.suggest_float(
                key, float(dim["low"]), float(dim["high"]), step=dim["step"], log=dim["log"]
            )
    return point


def anchor_jobs(suite: Suite, search: Search) -> dict[tuple[str, int], Job]:
    """The suite's own job of the searched regularizer entry, per (dataset, seed): the last grid
    point (the tuned row is listed after the entry's rows) whose key ties the tuned re-runs to
    the suite's current expansion in the report."""
    out = {}
    for j in expand(suite):
        if j.stage == search.stage and j.regularizer == search.regularizer and j.row == search.row:
            out[(j.dataset, j.seed)] = j
    return out
