"""Launch a suite's workers on a cluster with submitit (issue 13).

Workers pull jobs (:mod:`harness.experiments.claims`), so a cluster needs only N ``otransfer worker``
processes on one storage and one shared results directory. :func:`launch` submits them as one
SLURM job array (``submitit.AutoExecutor``), or as local processes (submitit's
``LocalExecutor``: the same code path, used by the tests and on a single machine)::

    export OTRANSFER_STORAGE=postgresql+psycopg2://user@db-host/otransfer
    otransfer launch li2020_table1 --slurm --array 16 --partition gpu --gpus-per-task 1 \\
        --time 240 --results /shared/otransfer/results

Each array task runs :class:`WorkerTask`, which calls :func:`harness.experiments.runner.run_suite` as
``otransfer worker`` does. On preemption or timeout SLURM signals the task (``USR2``, sent
``signal_delay_s`` before the limit); submitit then calls :meth:`WorkerTask.checkpoint`, which
requeues the same task: the interrupted job's claim is released on the way out (the runner's
interruption path) and the job resumes from its last epoch checkpoint in the shared
``artefacts/`` directory, by whichever worker takes it next. A task killed without a signal
(``SIGKILL``, a lost node) leaves its claim to go stale after ``stale_after`` seconds of the
database's clock (at once for another worker on the same host).

The storage URL travels in the environment (``OTRANSFER_STORAGE``, inherited by the tasks),
never in submitit's pickles or on a command line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

from harness.training import safe_io

__all__ = ["WorkerTask", "launch", "LaunchError", "spawn_workers", "STORAGE_ENV"]

STORAGE_ENV = "OTRANSFER_STORAGE"


class LaunchError(ValueError):
    """A launch that cannot work as asked (SQLite across nodes, no submitit ...)."""


def _submitit():
    from harness.zoo.models import optional_import

    return optional_import("submitit", "cluster", "otransfer launch")


@dataclasses.dataclass
class WorkerTask:
    """One worker of a launched suite: what a SLURM array task (or a local process) runs.

    Attributes mirror ``otransfer worker``'s options; the storage URL is read from the task's
    environment (``OTRANSFER_STORAGE``) so that no password lands in submitit's folder.
    """

    suite: str
    results_root: str
    overrides: Sequence[str] = ()
    quick: bool = False
    device: str | None = None
    stale_after: float = 120.0
    heartbeat: float = 10.0

    def __call__(self) -> dict[str, Any]:
        from harness.experiments.runner import run_suite

        storage = os.environ.get(STORAGE_ENV) or None
        summary = run_suite(
            self.suite,
            storage=storage,
            overrides=list(self.overrides),
            progress=False,
            quick=self.quick,
            device=self.device,
            results_root=self.results_root,
            worker=True,
            stale_after=self.stale_after,
            heartbeat=self.heartbeat,
            log=lambda line: print(line, flush=True),
        )
        return {
            "suite": summary.suite,
            "jobs": summary.jobs,
            "completed": summary.completed,
            "failed": summary.failed,
            "skipped": summary.skipped,
            "by_others": summary.by_others,
            "wall_time": summary.wall_time,
        }

    def checkpoint(self, *args, **kwargs):
        """Preempted or timed out: requeue this same task (submitit's ``Checkpointable``
        protocol). The job in flight is resumed from its epoch checkpoint by the next worker
        that claims it; this task's claims are released when it exits."""
        submitit = _submitit()
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def launch(
    suite: str,
    *,
    storage: str | None = None,
    executor: str = "slurm",
    workers: int = 2,
    folder: str | os.PathLike | None = None,
    results_root: str | os.PathLike = "results",
    overrides: Sequence[str] = (),
    quick: bool = False,
    device: str | None = None,
    stale_after: float = 120.0,
    heartbeat: float = 10.0,
    timeout_min: int = 240,
    partition: str | None = None,
    gpus_per_task: int = 0,
    cpus_per_task: int | None = None,
    mem_gb: float | None = None,
    max_requeue: int = 3,
    parallelism: int | None = None,
    account: str | None = None,
    qos: str | None = None,
    constraint: str | None = None,
    setup: Sequence[str] = (),
    signal_delay_s: int = 120,
    extra: dict[str, Any] | None = None,
):
    """Submit ``workers`` workers of ``suite``; return ``(jobs, info)``.

    Parameters
    ----------
    suite : str
        A suite name or file; it is loaded (and checked) here, so a malformed file fails
        before anything is queued.
    storage : str, optional
        The records' URL (PostgreSQL for SLURM); default ``$OTRANSFER_STORAGE``, else the
        suite's SQLite file (``executor="local"`` only). Exported to the tasks' environment.
    executor : {"slurm", "local"}
        A SLURM job array, or local processes (submitit's ``LocalExecutor``).
    workers : int
        Array size: the number of worker tasks.
    folder : path, optional
        submitit's folder (logs, pickles); default ``<results_root>/<suite>/submitit``.
    timeout_min, partition, gpus_per_task, cpus_per_task, mem_gb, account, qos, constraint
        SLURM resources of each task.
    max_requeue : int
        Times a task is requeued after a timeout (submitit's ``max_num_timeout``); preemptions
        requeue without limit.
    parallelism : int, optional
        Tasks of the array running at once (``%`` of ``--array``); default all.
    setup : sequence of str
        Shell lines run before each task (``module load cuda``, ``source venv/bin/activate``).
    extra : dict, optional
        More ``slurm_additional_parameters`` (``{"exclusive": True}``).
    """
    from harness.experiments.records import default_storage
    from harness.experiments.runner import quick_suite
    from harness.experiments.secrets import redact
    from harness.experiments.suite import load_suite

    if workers < 1:
        raise LaunchError(f"need at least one worker; got {workers}")
    if executor not in ("slurm", "local"):
        raise LaunchError(f"executor must be 'slurm' or 'local'; got {executor!r}")
    loaded = load_suite(suite, list(overrides))  # a malformed suite fails here, not on a node
    name = quick_suite(loaded).name if quick else loaded.name
    results_root = Path(results_root).resolve()
    storage = storage or os.environ.get(STORAGE_ENV) or default_storage(name, results_root)
    if executor == "slurm" and storage.startswith("sqlite"):
        raise LaunchError(
            f"workers on several SLURM nodes need a database server: {redact(storage)} is "
            "a SQLite file, whose locks do not hold across machines on a network file system. "
            "Give --storage postgresql+psycopg2://USER@HOST/DB (or set OTRANSFER_STORAGE)"
        )
    submitit = _submitit()
    suite_file = str(Path(loaded.path).resolve()) if loaded.path else suite
    folder = (
        safe_io.ensure_dir(Path(folder))
        if folder
        else safe_io.ensure_dir(results_root / name / "submitit", results_root)
    )
    os.environ[STORAGE_ENV] = storage  # the tasks inherit it; it is not pickled
    ex = submitit.AutoExecutor(folder=str(folder), cluster=executor)
    params: dict[str, Any] = {
        "timeout_min": int(timeout_min),
        "tasks_per_node": 1,
        "nodes": 1,
        "name": f"otransfer-{name}",
    }
    if gpus_per_task:
        params["gpus_per_node"] = int(gpus_per_task)
    if cpus_per_task:
        params["cpus_per_task"] = int(cpus_per_task)
    if mem_gb:
        params["mem_gb"] = float(mem_gb)
    if executor == "slurm":
        slurm: dict[str, Any] = {
            "slurm_max_num_timeout": int(max_requeue),
            "slurm_signal_delay_s": int(signal_delay_s),
            "slurm_array_parallelism": int(parallelism or workers),
        }
        if partition:
            slurm["slurm_partition"] = partition
        if account:
            slurm["slurm_account"] = account
        if qos:
            slurm["slurm_qos"] = qos
        if constraint:
            slurm["slurm_constraint"] = constraint
        if setup:
            slurm["slurm_setup"] = list(setup)
        if extra:
            slurm["slurm_additional_parameters"] = dict(extra)
        params.update(slurm)
    elif setup:
        params["local_setup"] = list(setup)
    ex.update_parameters(**params)
    task = WorkerTask(
        suite_file,
        str(results_root),
        tuple(overrides),
        quick,
        device,
        float(stale_after),
        float(heartbeat),
    )
    with ex.batch():  # one SLURM job array
        jobs = [ex.submit(task) for _ in range(workers)]
    info = {
        "suite": name,
        "executor": executor,
        "workers": workers,
        "job_ids": [j.job_id for j in jobs],
        "folder": str(folder),
        "results": str(results_root),
        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "storage_from": "environment (OTRANSFER_STORAGE)",
    }
    log = results_root / name / "launches.jsonl"  # every launch of the suite, appended
    with safe_io.open_append(log, results_root) as fh:
        fh.write(json.dumps(info) + "\n")
    info["log"] = str(log)
    return jobs, info


def spawn_workers(
    suite: str,
    n: int,
    *,
    results,
    storage: str | None = None,
    overrides: Sequence[str] = (),
    quick: bool = False,
    device: str | None = None,
    stale_after: float = 120.0,
    heartbeat: float = 10.0,
    bar: bool = False,
    only: Sequence[str] = (),
) -> tuple[list[int], str, list[str]]:
    """``otransfer run --workers N`` on this machine: ``n`` ``otransfer worker`` processes on
    one storage, waited for; returns their exit codes, the storage URL and one line per
    distinct error of the workers that failed (:func:`harness.experiments.worker_logs.
    worker_errors`). Each worker's lines go to ``<results>/<suite>/logs/worker-K.log``; with
    ``bar`` (a terminal) one suite bar is drawn from the storage, otherwise the workers' plain
    lines also interleave on standard output. ``only``: ``--only`` filters, checked here."""
    import sys

    from harness.experiments.only import select_jobs
    from harness.experiments.progress import follow_workers
    from harness.experiments.records import default_storage
    from harness.experiments.runner import quick_suite
    from harness.experiments.secrets import scrub
    from harness.experiments.suite import expand, load_suite
    from harness.experiments.worker_logs import log_paths, start_workers, worker_errors
    from harness.training.threads import WORKERS_ENV

    loaded = load_suite(suite, overrides)
    shown = quick_suite(loaded) if quick else loaded  # where run_suite records
    # a bad filter fails here, not in every worker
    jobs = select_jobs(expand(shown), only) if only else None
    storage = storage or default_storage(shown.name, results)
    # the URL travels in the environment, not on the workers' command lines (visible in `ps`)
    env = {**os.environ, STORAGE_ENV: storage, WORKERS_ENV: str(n)}  # n share the cores
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "worker",
        suite,
        "--results",
        str(results),
        "--no-progress",
        "--stale-after",
        str(stale_after),
        "--heartbeat",
        str(heartbeat),
    ]
    for kv in overrides:
        cmd += ["--set", kv]
    for spec in only:
        cmd += ["--only", spec]
    if quick:
        cmd.append("--quick")
    if device:
        cmd += ["--device", device]
    logs = safe_io.ensure_dir(Path(results) / shown.name / "logs", results)
    paths = log_paths(logs, n)
    files = []
    for path in paths:  # truncated, never written through a link planted there
        safe_io.write_bytes(path, b"", results)
        files.append(safe_io.open_append(path, results))
    wait, procs = start_workers(cmd, env, files, echo=not bar)
    try:
        if bar:
            print(f"{n} workers; their logs: {logs}/worker-*.log", file=sys.stderr)
            follow_workers(shown, storage, lambda: any(p.poll() is None for p in procs), jobs)
    finally:
        codes = wait()
        for f in files:
            f.close()
    return codes, storage, worker_errors(paths, codes, lambda s: scrub(s, storage))
