"""Run a suite: expand it, train each stage's jobs in order, record every job (design.md).

Teachers are trained once: their artefact is ``<results>/<suite>/artefacts/<key>.pt`` (the
``state_dict``), reused when present. A student loads its teacher's artefact by the teacher
job's key (in its config). Jobs whose key is already completed in the storage are skipped, so
``run`` after a crash or a kill is a resume.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .suite import Job, Suite, apply_overrides, expand, load_suite

__all__ = ["run_suite", "RunSummary", "quick_suite"]


@dataclasses.dataclass
class RunSummary:
    suite: str
    storage: str
    jobs: int
    skipped: int
    completed: int
    failed: int
    wall_time: float
    failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    keys: list[str] = dataclasses.field(default_factory=list)


def quick_suite(suite: Suite) -> Suite:
    """``suite`` with 1 epoch per stage and only its first seed (a smoke run), named
    ``<name>-quick`` so that its records and artefacts stay apart from the real runs."""
    stages = tuple(dataclasses.replace(s, train={**s.train, "epochs": 1}, seeds=s.seeds[:1])
                   for s in suite.stages)
    return dataclasses.replace(suite, name=f"{suite.name}-quick", stages=stages,
                               seeds=suite.seeds[:1])


def _split_params(params: Mapping[str, Any]) -> tuple[dict, dict]:
    """(train-split params, val/test params): ``n_per_class`` sub-samples the train split only."""
    train = dict(params)
    evals = {k: v for k, v in params.items() if k != "n_per_class"}
    return train, evals


def _datasets(cfg: Mapping[str, Any]):
    from .data import get_dataset, load_dataset

    tr_p, ev_p = _split_params(cfg["dataset_params"])
    name, seed = cfg["dataset"], int(cfg["seed"])
    train_set = load_dataset(name, split="train", seed=seed, **tr_p)
    splits = get_dataset(name).splits
    val_set = load_dataset(name, split="val", seed=seed, **ev_p) if "val" in splits else None
    test_set = load_dataset(name, split="test", seed=seed, **ev_p) if "test" in splits else None
    classes = getattr(train_set, "classes", None)
    k = len(classes) if classes else get_dataset(name).num_classes
    return train_set, val_set, test_set, k


def _build(cfg: Mapping[str, Any], num_classes: int, weights: str | os.PathLike | None = None):
    from .models import build_model

    mp = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg["model_params"].items()}
    return build_model(cfg["model"], num_classes, weights_path=weights, **mp)


def _save_atomic_state(model, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)


def _run_job(job: Job, jobs_by_key: Mapping[str, Job], artefacts: Path, progress: bool,
             save: bool) -> dict[str, Any]:
    import torch

    from .regularizers import build_regularizer
    from .train import TrainConfig, train

    cfg = job.config
    torch.manual_seed(job.seed)
    train_set, val_set, test_set, k = _datasets(cfg)
    model = _build(cfg, k)
    teacher = None
    if cfg.get("teacher"):
        tpath = artefacts / f"{cfg['teacher']}.pt"
        if not tpath.is_file():
            raise FileNotFoundError(f"teacher artefact {tpath} missing (teacher job "
                                    f"{cfg['teacher']} did not complete)")
        tcfg = jobs_by_key[cfg["teacher"]].config
        teacher = _build(tcfg, k, weights=tpath).eval()
    reg = None
    if cfg["regularizer"] != "none" or cfg["regularizer_params"]:
        reg = build_regularizer(cfg["regularizer"], **cfg["regularizer_params"])
        if reg.needs_teacher and teacher is None:
            raise ValueError(f"regularizer {cfg['regularizer']!r} needs a teacher: give the "
                             "stage 'teacher: <earlier stage>'")
    tc = dict(cfg["train"])
    tc["milestones"] = tuple(tc.get("milestones", ()))
    result = train(model, train_set, val_set, config=TrainConfig(**tc), regularizer=reg,
                   teacher=teacher, test_set=test_set, progress=progress)
    epochs = result.history.get("epochs", []) if result.history else []
    last = epochs[-1] if epochs else {}
    losses = {k[len("train/"):]: float(v) for k, v in last.items()
              if k.startswith("train/") and isinstance(v, (int, float))}
    metrics = {"status": result.status, "reason": result.reason,
               "val_accuracy": result.final_val_accuracy,
               "best_val_accuracy": result.best_val_accuracy,
               "test_accuracy": result.test_accuracy, "wall_time": result.wall_time,
               "epochs_completed": result.epochs_completed, "final_losses": losses}
    if result.status == "completed" and save:
        path = artefacts / f"{job.key}.pt"
        _save_atomic_state(model, path)
        metrics["artefact"] = str(path)
    return metrics


def run_suite(suite: Suite | str | os.PathLike, storage: str | None = None,
              overrides: Iterable[str] = (), progress: bool = True, quick: bool = False,
              results_root: str | os.PathLike = "results",
              on_job: Callable[[Job, Mapping[str, Any]], None] | None = None,
              log: Callable[[str], None] | None = print) -> RunSummary:
    """Run every job of ``suite`` not yet completed in ``storage``; record each one.

    Parameters
    ----------
    suite : Suite, path or name
        A loaded suite, a suite file or a name in ``suites/``.
    storage : str, optional
        Any Optuna storage URL; default ``sqlite:///<results_root>/<suite>/runs.sqlite3``.
    overrides : iterable of str
        ``--set`` strings (``stages.students.train.epochs=2``), applied before expansion.
    progress : bool
        Training progress bars.
    quick : bool
        1 epoch per stage and the first seed only (smoke run).
    results_root : path
        Artefacts go to ``<results_root>/<suite>/artefacts/<key>.pt``.
    on_job : callable, optional
        ``on_job(job, metrics)`` after each recorded job (what it raises propagates).
    log : callable, optional
        One line per job; ``None`` is silent.
    """
    from . import records
    from .suite import _check, _Lines

    overrides = list(overrides)
    if not isinstance(suite, Suite):
        suite = load_suite(suite, overrides)
    elif overrides:
        suite = _check(apply_overrides(suite.raw, overrides), suite.path, _Lines(""))
    if quick:
        suite = quick_suite(suite)
    storage = storage or records.default_storage(suite.name, results_root)
    artefacts = Path(results_root) / suite.name / "artefacts"
    jobs = expand(suite)
    by_key = {j.key: j for j in jobs}
    teacher_keys = {j.config["teacher"] for j in jobs if j.config.get("teacher")}
    study = records.open_study(storage, suite.name)
    done = records.done_keys(storage, suite.name)
    say = log or (lambda s: None)
    t0 = time.perf_counter()
    summary = RunSummary(suite.name, storage, len(jobs), 0, 0, 0, 0.0,
                         keys=[j.key for j in jobs])
    for i, job in enumerate(jobs, 1):
        tag = f"[{i}/{len(jobs)}] {job.stage} {job.dataset} {job.regularizer} seed={job.seed}"
        is_teacher = job.key in teacher_keys
        if job.key in done and (not is_teacher or (artefacts / f"{job.key}.pt").is_file()):
            summary.skipped += 1
            say(f"{tag}: done ({job.key}), skipped")
            continue
        trial = records.start_record(study, job)
        try:
            metrics = _run_job(job, by_key, artefacts, progress, save=is_teacher)
        except Exception as exc:  # recorded, and the run goes on
            metrics = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        except BaseException:  # Ctrl-C: record the interruption, then stop
            records.finish_record(study, trial, {"status": "failed", "reason": "interrupted"})
            raise
        records.finish_record(study, trial, metrics)
        if metrics["status"] == "completed":
            summary.completed += 1
            done.add(job.key)
            say(f"{tag}: test {100 * metrics['test_accuracy']:.1f}% "
                f"({metrics['wall_time']:.1f} s)")
        else:
            summary.failed += 1
            summary.failures.append((job.key, metrics.get("reason", "")))
            say(f"{tag}: FAILED: {metrics.get('reason', '')}")
        if on_job is not None:
            on_job(job, metrics)
    summary.wall_time = time.perf_counter() - t0
    return summary
