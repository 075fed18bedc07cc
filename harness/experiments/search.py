"""Hyper-parameter search with Optuna: ``otransfer tune SUITE``.

A suite's ``search:`` block (:class:`harness.experiments.suite.Search`) names a stage, one of its
regularizers, and a space over that regularizer's parameters (dotted keys, as in the stage's
``grid``) and its training settings (``train.lr`` ...). :func:`tune`

1. runs the stages the tuned stage depends on (``teacher``, ``init``) as ``run`` does, recorded
   in the suite's study (jobs already done are skipped);
2. adds trials to the search's own study, ``<suite>:tune:<stage>:<row>:<hash>``, in the same
   storage. A trial trains the stage's job at the sampled point (seed: the search's ``seed``)
   and scores it by its final **validation** accuracy; after each epoch that accuracy is
   reported to Optuna (``Trial.report``) and the pruner may stop the trial
   (``Trial.should_prune``). Several ``tune`` processes on one storage URL (a PostgreSQL
   server, say) share the search: the study is loaded if it exists;
3. re-runs the best point on the **test** split over the stage's seeds, recorded in the suite's
   study as ordinary jobs in the stage's table, row ``"<row> (tuned)"``, so ``otransfer report``
   shows it beside the grid rows; re-runs already recorded are skipped;
4. writes ``tune_<stage>_<row>.md`` (the trials, the best point, the re-runs) and the Optuna
   plots (optimisation history, intermediate values, parameter importances) as PNG into
   ``<results>/<suite>/``.

The hash in the study name covers the space and the trials' base job config (the stage's
settings, its teacher's key): editing either starts a new search rather than mixing trials
that are not comparable. A trial whose training fails (a non-finite loss: alpha too large) is
an Optuna FAIL, with its reason in the trial's user attributes; samplers ignore FAIL trials.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from harness.experiments.search_options import PRUNERS, SAMPLERS, build_option, check_option
from harness.experiments.search_points import (
    TUNED,
    anchor_jobs,
    point_suite,
    sample_point,
    select_search,
    stage_named,
    study_name,
    trial_jobs,
)
from harness.experiments.search_report import TuneSummary, write_tune_report
from harness.experiments.suite import (
    Search,
    Stage,
    Suite,
    canonical_json,
    config_key,
    expand,
    load_suite,
)

__all__ = [
    "tune",
    "TuneSummary",
    "PRUNERS",
    "SAMPLERS",
    "check_option",
    "select_search",
    "study_name",
    "trial_jobs",
    "sample_point",
    "write_tune_report",
    "TUNED",
]

#: A search stops when this many trials in a row raise the same error (a broken setup).
_MAX_SAME_ERRORS = 3


# --------------------------------------------------------------------------- search


def _run_dependencies(
    suite: Suite,
    search: Search,
    storage: str,
    results_root: str | os.PathLike,
    progress: bool,
    device: str | None,
    log: Callable[[str], None] | None,
) -> None:
    """Train the jobs of the stages the searched stage depends on (all seeds: the re-runs
    need them) with ``run``'s runner: claimed, so that several ``tune`` and ``worker``
    processes on one storage train each teacher once; those done are skipped."""
    from harness.experiments.runner import run_suite

    jobs = expand(point_suite(suite, search, {}, stage_named(suite, search.stage).seeds))
    deps = [j for j in jobs if j.stage != search.stage]
    if not deps:
        return
    s = run_suite(
        suite,
        storage=storage,
        progress=progress,
        results_root=results_root,
        log=log,
        device=device,
        jobs=deps,
    )
    if s.failures:
        key, reason = s.failures[0]
        stage = next(j.stage for j in deps if j.key == key)
        raise RuntimeError(
            f"{stage} job {key} FAILED: {reason}; the search of stage {search.stage!r} needs it"
        )


class _TrainingFailed(RuntimeError):
    """A trial's training ended with ``status="failed"`` (its reason is the message)."""


def _rdb(storage: str):
    """The search's storage: the records' (:func:`harness.experiments.records.open_rdb`), with
    Optuna's trial heartbeats, so that the RUNNING trial of a killed ``tune`` process is failed
    by the next one instead of lingering."""
    import optuna

    from harness.experiments.records import open_rdb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return open_rdb(storage, heartbeat_interval=30, grace_period=120)


def _fmt(point: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={canonical_json(v)}"
        for k, v in point.items()
    )


def tune(
    suite: Suite | str | os.PathLike,
    *,
    trials: int | None = None,
    storage: str | None = None,
    stage: str | None = None,
    regularizer: str | None = None,
    timeout: float | None = None,
    results_root: str | os.PathLike = "results",
    overrides: Iterable[str] = (),
    progress: bool = False,
    device: str | None = None,
    reruns: bool = True,
    plots: bool = True,
    log: Callable[[str], None] | None = print,
) -> TuneSummary:
    """Search a suite's ``search:`` block on validation, then re-run the best point on test.

    Parameters
    ----------
    suite : Suite, path or name
        A loaded suite, a suite file or a name in ``suites/``.
    trials : int, optional
        Trials this call adds to the search (default: the block's ``trials``).
    storage : str, optional
        Optuna storage URL shared with ``run`` (default
        ``sqlite:///<results_root>/<suite>/runs.sqlite3``). The search is its own study there.
    stage, regularizer : str, optional
        Pick the search block when the suite has several.
    timeout : float, optional
        Stop adding trials after this many seconds (a running trial finishes).
    results_root : path
        Artefacts, the tune table and the plots go to ``<results_root>/<suite>/``.
    overrides : iterable of str
        ``--set`` strings applied to the suite before anything (they change keys and the
        study's hash as they would for ``run``).
    progress : bool
        Training progress bars.
    device : str, optional
        Train on this device, whatever ``train.device`` says (not part of any key).
    reruns : bool
        Re-run the best point on test over the stage's seeds (default True).
    plots : bool
        Write the Optuna plots (PNG).
    log : callable, optional
        One line per trial and re-run; None is silent.

    Returns
    -------
    TuneSummary
    """
    import optuna

    from harness.experiments import records
    from harness.experiments.suite import with_overrides

    say = log or (lambda s: None)
    t0 = time.perf_counter()
    overrides = list(overrides)
    if not isinstance(suite, Suite):
        suite = load_suite(suite, overrides)
    elif overrides:
        suite = with_overrides(suite, overrides)
    search = select_search(suite, stage, regularizer)
    n_trials = int(trials if trials is not None else search.trials)
    if n_trials < 1:
        raise ValueError(f"trials must be >= 1; got {n_trials}")
    storage = storage or records.default_storage(suite.name, results_root)
    out_dir = Path(results_root) / suite.name
    artefacts = out_dir / "artefacts"
    stage_obj = stage_named(suite, search.stage)

    # 1. the teacher / init stages, as `run` trains them (skipped when done)
    _run_dependencies(suite, search, storage, results_root, progress, device, log)

    # 2. the search: its own study in the same storage
    name = study_name(suite, search)
    study = _open_search_study(suite, search, name, storage)
    summary = TuneSummary(suite.name, name, storage, search.stage, search.row)
    objective = _objective(
        suite,
        search,
        name,
        artefacts,
        progress,
        device,
        records.done_artefacts(storage, suite.name),
    )
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # on_trial says what happened
    try:
        study.optimize(
            objective,
            n_trials=n_trials,
            timeout=timeout,
            catch=(Exception,),
            callbacks=[_trial_logger(summary, say)],
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    best = _best_trial(study, summary, say)

    # 3. the best point on test, over the stage's seeds, in the suite's study
    if best is not None and reruns:
        _rerun_best(
            suite,
            search,
            stage_obj,
            name,
            best,
            summary,
            storage,
            results_root,
            progress,
            device,
            log,
        )

    # 4. the table of trials and the plots
    summary.paths = write_tune_report(
        study, search, out_dir, summary, plots=plots, table=stage_obj.table
    )
    summary.wall_time = time.perf_counter() - t0
    return summary


def _open_search_study(suite: Suite, search: Search, name: str, storage: str):
    """The search's own Optuna study (loaded when other ``tune`` processes made it)."""
    import optuna

    study = optuna.create_study(
        study_name=name,
        storage=_rdb(storage),
        direction="maximize",
        load_if_exists=True,
        sampler=build_option("sampler", search.sampler),
        pruner=build_option("pruner", search.pruner),
    )
    for key, value in {
        "suite": suite.name,
        "stage": search.stage,
        "row": search.row,
        "regularizer": search.regularizer,
        "dataset": search.dataset,
        "space": canonical_json(search.space),
        "seed": search.seed,
    }.items():
        study.set_user_attr(key, value)
    return study


def _objective(
    suite: Suite,
    search: Search,
    name: str,
    artefacts: Path,
    progress: bool,
    device: str | None,
    arts: Mapping[str, Mapping[str, Any]],
) -> Callable:
    """The Optuna objective: train the sampled point on each of the search's seeds in turn;
    its value is the mean final validation accuracy. Every epoch of every seed is one step of
    the pruner (seed i, epoch e is step i * epochs + e in every trial alike)."""
    import optuna

    from harness.experiments.runner import run_job
    from harness.training.checkpoints import remove_checkpoint

    def objective(trial) -> float:
        point = sample_point(trial, search.space)
        jobs, by_key = trial_jobs(suite, search, point, list(search.seeds))
        _describe_trial(trial, search, jobs, point)
        step = 0
        accs: list[float] = []

        def on_epoch(epoch: int, record: Mapping[str, Any]) -> None:
            nonlocal step
            acc = record.get("val/accuracy")
            if acc is None:  # eval_every > 1: no validation this epoch
                return
            trial.report(float(acc), step)
            step += 1
            if trial.should_prune():
                trial.set_user_attr("val_accuracy", float(acc))
                trial.set_user_attr("epochs_completed", epoch + 1)
                trial.set_user_attr("seeds_completed", len(accs))
                raise optuna.TrialPruned(
                    f"pruned after epoch {epoch + 1} of seed "
                    f"{len(accs) + 1} (val accuracy {100 * acc:.1f} %)"
                )

        start = time.perf_counter()
        try:
            for job in jobs:
                # a key of its own per trial: its epoch checkpoint cannot meet another's
                run = dataclasses.replace(
                    job, key=f"{job.key}.{name.rsplit(':', 1)[1]}.t{trial.number}"
                )
                try:
                    metrics = run_job(
                        run,
                        by_key,
                        artefacts,
                        progress,
                        save=False,
                        device=device,
                        on_epoch=on_epoch,
                        records=arts,
                    )
                finally:
                    remove_checkpoint(artefacts / f"{run.key}.ckpt")
                for key in ("status", "reason", "best_val_accuracy", "epochs_completed"):
                    trial.set_user_attr(key, metrics.get(key))
                if metrics["status"] != "completed" or metrics.get("val_accuracy") is None:
                    trial.set_user_attr("val_accuracy", metrics.get("val_accuracy"))
                    raise _TrainingFailed(
                        f"seed {job.seed}: " + (metrics.get("reason") or "no validation accuracy")
                    )
                accs.append(float(metrics["val_accuracy"]))
        except optuna.TrialPruned:
            trial.set_user_attr("status", "pruned")
            raise
        except Exception as exc:  # a config no term or model accepts: this trial fails
            trial.set_user_attr("status", "failed")
            trial.set_user_attr("reason", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            trial.set_user_attr("wall_time", time.perf_counter() - start)
        value = sum(accs) / len(accs)
        trial.set_user_attr("val_accuracy", value)
        trial.set_user_attr("val_accuracies", accs)
        return value

    return objective


def _describe_trial(trial, search: Search, jobs, point: Mapping[str, Any]) -> None:
    """The trial's user attributes naming what it trains (its jobs, the point, the code)."""
    from harness.experiments import records

    for key, value in {
        "key": jobs[0].key,
        "config": jobs[0].config_json(),
        "keys": [j.key for j in jobs],
        "point": canonical_json(point),
        "seed": search.seed,
        "seeds": list(search.seeds),
        "git_sha": records.git_sha(),
    }.items():
        trial.set_user_attr(key, value)


def _trial_logger(summary: TuneSummary, say: Callable[[str], None]) -> Callable:
    """The ``study.optimize`` callback: counts, one line per trial, and a stop when the same
    error ends ``_MAX_SAME_ERRORS`` trials in a row (the setup's error, not the point's)."""
    errors: list[str] = []  # reasons of this call's latest trials that raised

    def on_trial(study, frozen) -> None:
        state = frozen.state.name
        summary.trials += 1
        summary.completed += state == "COMPLETE"
        summary.pruned += state == "PRUNED"
        summary.failed += state == "FAIL"
        a = frozen.user_attrs
        what = {
            "COMPLETE": f"val {100 * (frozen.value or 0):.1f} %",
            "PRUNED": f"pruned after epoch {a.get('epochs_completed', '?')} (val "
            f"{100 * (a.get('val_accuracy') or 0):.1f} %)",
            "FAIL": f"FAILED: {a.get('reason', '')}",
        }.get(state, state)
        point = json.loads(a["point"]) if "point" in a else frozen.params
        say(f"[tune {frozen.number}] {what}; {_fmt(point)} ({a.get('wall_time', 0):.1f} s)")
        raised = state == "FAIL" and a.get("status") == "failed" and "val_accuracy" not in a
        errors[:] = errors + [a.get("reason", "")] if raised else []
        if len(errors) >= _MAX_SAME_ERRORS and len(set(errors[-_MAX_SAME_ERRORS:])) == 1:
            say(f"stopping: {_MAX_SAME_ERRORS} trials in a row failed with: {errors[-1]}")
            study.stop()

    return on_trial


def _best_trial(study, summary: TuneSummary, say: Callable[[str], None]):
    """The best complete trial (the earliest of equals), recorded in ``summary``; or None."""
    import optuna

    done = [
        t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE
    ]
    summary.total = len(study.get_trials(deepcopy=False))
    best = max(done, key=lambda t: (t.value, -t.number)) if done else None
    if best is not None:
        summary.best_number, summary.best_value = best.number, float(best.value)
        summary.best_point = json.loads(best.user_attrs["point"])
        say(f"best: trial {best.number}, val {100 * best.value:.1f} %; {_fmt(summary.best_point)}")
    return best


def _rerun_best(
    suite: Suite,
    search: Search,
    stage_obj: Stage,
    name: str,
    best,
    summary: TuneSummary,
    storage: str,
    results_root,
    progress: bool,
    device: str | None,
    log,
) -> None:
    """The best point on test over the stage's seeds, recorded in the suite's study as row
    ``<row> (tuned)``; the re-runs' test accuracies in ``summary``."""
    from harness.experiments import records
    from harness.experiments.runner import run_suite

    row = search.row + TUNED
    jobs, _ = trial_jobs(suite, search, summary.best_point, stage_obj.seeds)
    anchors = anchor_jobs(suite, search)
    tuned_jobs, extra = [], {}
    for job in jobs:
        # the search's name in the config: a tuned row never shares a key with a grid row
        cfg = {**job.config, "tuned": name}
        anchor = anchors.get((job.dataset, job.seed))
        job = dataclasses.replace(
            job,
            key=config_key(cfg),
            config=cfg,
            label=row,
            row=row,
            report=anchor.report if anchor else True,
        )
        tuned_jobs.append(job)
        extra[job.key] = {
            "tuned": True,
            "anchor": anchor.key if anchor else None,
            "tune_study": name,
            "tune_trial": best.number,
            "tune_val_accuracy": float(best.value),
            "tune_point": summary.best_point,
        }
    # run's runner: claimed (concurrent tune processes re-run each seed once), skipped when
    # recorded
    run_suite(
        suite,
        storage=storage,
        progress=progress,
        results_root=results_root,
        log=log,
        device=device,
        jobs=tuned_jobs,
        record_extra=extra,
    )
    frame = records.records_frame(storage, suite.name)
    by = {r["key"]: r for r in frame.to_dict("records")}
    accs = []
    for job in tuned_jobs:
        r = by.get(job.key)
        acc = r.get("test_accuracy") if r else None
        summary.reruns.append(
            {
                "seed": job.seed,
                "key": job.key,
                "status": "completed" if r else "failed",
                "test_accuracy": acc,
            }
        )
        if acc is not None and not (isinstance(acc, float) and math.isnan(acc)):
            accs.append(float(acc))
    if accs:
        mean = sum(accs) / len(accs)
        summary.test_mean = mean
        summary.test_std = math.sqrt(sum((a - mean) ** 2 for a in accs) / len(accs))
