"""A checked suite expanded into its :class:`~harness.experiments.suite_types.Job` s:
datasets x regularizers x grid points x seeds per stage, each job keyed by the hash of its
resolved config. The jobs are counted first (a product of sizes) and a suite of more than
:func:`~harness.experiments.suite_checks.job_limit` jobs is refused."""

from __future__ import annotations

import itertools
import json
from typing import Any, Mapping, Sequence

from harness.experiments.suite_checks import count_jobs, job_count_problem, job_limit, takers
from harness.experiments.suite_types import (
    PRETRAINED,
    ROW_KEY,
    Job,
    Stage,
    Suite,
    SuiteError,
    canonical_json,
    config_key,
)

__all__ = ["accepts", "merge_params", "expand", "job_label"]


def accepts(spec: str, key: str, params: Mapping[str, Any] | None = None) -> bool:
    """Whether a term of ``spec`` takes grid key ``key``
    (:func:`~harness.experiments.suite_checks.takers`)."""
    return bool(takers(spec, key, params))


def merge_params(params: Mapping[str, Any], point: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` updated with a grid ``point``; a grid key replaces the same parameter however
    it is written (``kd.tau`` replaces ``tau`` and the reverse)."""
    out = dict(params)
    for k, v in point.items():
        _, dot, rest = k.partition(".")
        for other in list(out):
            _, odot, orest = other.partition(".")
            if (
                other == k
                or (dot and not odot and other == rest)
                or (not dot and odot and orest == k)
            ):
                del out[other]
        out[k] = v
    return out


def expand(suite: Suite) -> list[Job]:
    """Every job of ``suite``, stage by stage (in order), then dataset, spec, grid point, seed.

    A student's config holds its teacher job's key (same dataset and seed; the teacher stage's
    only dataset when it has one; its only seed when it has one, a teacher shared by every
    seed), so retraining a teacher differently changes the students' keys too.
    """
    from harness.training.loop import TrainConfig

    problem = job_count_problem(suite.name, count_jobs(suite.stages, accepts), job_limit())
    if problem:  # counted, not built: refused in microseconds
        raise SuiteError(f"{suite.path or suite.name}: {problem}")
    jobs: list[Job] = []
    by_stage: dict[str, list[Job]] = {}
    used = {ref for st in suite.stages for ref in (st.teacher, st.init) if ref}
    for stage in suite.stages:
        out = []
        report = stage.report if stage.report is not None else stage.name not in used
        for dataset in stage.datasets:
            for spec, params in stage.regularizers:
                params = dict(params)
                row = params.pop(ROW_KEY, None)
                axes = [k for k in stage.grid if accepts(spec, k, params)]
                for values in itertools.product(*(stage.grid[k] for k in axes)):
                    reg_params = merge_params(params, dict(zip(axes, values, strict=False)))
                    for seed in stage.seeds:
                        train = TrainConfig(**{**stage.train, "seed": int(seed)}).to_dict()
                        cfg = {
                            "suite": suite.name,
                            "stage": stage.name,
                            "model": stage.model,
                            "model_params": dict(stage.model_params),
                            "dataset": dataset,
                            "dataset_params": dict(stage.dataset_params),
                            "train": train,
                            "regularizer": spec,
                            "regularizer_params": reg_params,
                            "seed": int(seed),
                            "teacher": None,
                        }
                        if stage.analysis is not None:
                            cfg["analysis"] = dict(stage.analysis)
                        if stage.splits is not None:
                            cfg["splits"] = dict(stage.splits)
                        if stage.pretrained is not None:  # the path as written ($VARS kept)
                            cfg["pretrained"] = stage.pretrained
                        if stage.teacher == PRETRAINED:
                            cfg["teacher"] = PRETRAINED
                        elif stage.teacher is not None:
                            cfg["teacher"] = _teacher_key(
                                by_stage[stage.teacher], dataset, int(seed), stage, suite
                            )
                        if stage.init == PRETRAINED:
                            cfg["init"] = PRETRAINED
                        elif stage.init is not None:  # keys of plain stages stay as they were
                            cfg["init"] = _teacher_key(
                                by_stage[stage.init], dataset, int(seed), stage, suite, "init"
                            )
                        if stage.source is not None:
                            cfg["source"] = dict(stage.source)
                        cfg = json.loads(canonical_json(cfg))
                        label = job_label(row or spec, axes, values)
                        out.append(
                            Job(
                                suite.name,
                                stage.name,
                                config_key(cfg),
                                cfg,
                                label,
                                table=stage.table or stage.name,
                                task=(stage.task or "{dataset}").replace("{dataset}", dataset),
                                report=report,
                                reference=stage.reference,
                                row=row or spec,
                                select=stage.select,
                            )
                        )
        by_stage[stage.name] = out
        jobs.extend(out)
    return jobs


def job_label(row: str, axes: Sequence[str], values: Sequence[Any]) -> str:
    """A leaderboard row: the entry's row (or spec) and its grid point (``kd (kd.tau=2)``)."""
    return row + (
        " ("
        + ", ".join(f"{k}={canonical_json(v)}" for k, v in zip(axes, values, strict=False))
        + ")"
        if axes
        else ""
    )


def _teacher_key(
    teachers: list[Job], dataset: str, seed: int, stage: Stage, suite: Suite, ref: str = "teacher"
) -> str:
    cands = [j for j in teachers if j.dataset == dataset and j.seed == seed]
    if not cands and len({j.dataset for j in teachers}) == 1:
        cands = [j for j in teachers if j.seed == seed]
    if not cands:  # a teacher stage of one seed: its one job serves every seed (one teacher,
        # as the papers that distil from released networks have)
        same = [j for j in teachers if j.dataset == dataset] or (
            teachers if len({j.dataset for j in teachers}) == 1 else []
        )
        if len({j.seed for j in same}) == 1:
            cands = same
    if not cands:
        raise SuiteError(
            f"{suite.path}: stage {stage.name!r} needs a {getattr(stage, ref)!r} "
            f"job for dataset {dataset!r} and seed {seed}; there is none"
        )
    if len(cands) > 1:
        raise SuiteError(
            f"{suite.path}: stage {stage.name!r}: several {getattr(stage, ref)!r} "
            f"jobs for dataset {dataset!r} and seed {seed}; a {ref} stage needs "
            "one regularizer and no grid"
        )
    return cands[0].key
