"""Launch a suite's workers on a cluster with submitit.

Workers pull jobs (:mod:`harness.experiments.claims`), so a cluster needs only N
``otransfer worker`` processes on one storage and one shared results directory.
:func:`launch` submits them as one SLURM job array (``submitit.AutoExecutor``), or as local
processes (submitit's ``LocalExecutor``: the same code path, used by the tests and on a single
machine)::

    export OTRANSFER_STORAGE=postgresql+psycopg2://user@db-host/otransfer
    otransfer launch li2020_table1 --slurm --array 16 --partition gpu --gpus-per-task 1 \\
        --time 240 --results /shared/otransfer/results
    otransfer launch li2020_table1 --slurm --slurm-config slurm.yaml --array 16

The SLURM parameters are one mapping handed as it is to submitit's
``executor.update_parameters(**slurm)``: ``timeout_min``, ``gpus_per_node``, ``mem_gb`` ...
(every cluster) and ``slurm_partition``, ``slurm_qos``, ``slurm_setup`` ... (SLURM only; the
``local_`` ones locally; those of :data:`AT_INIT`, such as ``slurm_max_num_timeout``, go to
``AutoExecutor`` itself, as submitit requires), read from a YAML file
(:func:`read_slurm_config`) with the command line's flags over it.

Each array task runs :class:`WorkerTask`, which calls
:func:`harness.experiments.runner.run_suite` as ``otransfer worker`` does. On preemption or
timeout SLURM signals the task (``USR2``, sent ``slurm_signal_delay_s`` before the limit);
submitit then calls :meth:`WorkerTask.checkpoint`, which requeues the same task: the
interrupted job's claim is released on the way out (the runner's interruption path) and the
job resumes from its last epoch checkpoint in the shared ``artefacts/`` directory, by
whichever worker takes it next. A task killed without a signal (``SIGKILL``, a lost node)
leaves its claim to go stale after ``stale_after`` seconds of the database's clock (at once
for another worker on the same host).

A storage URL read from ``OTRANSFER_STORAGE`` reaches the tasks in the environment they
inherit, never in submitit's pickles or on a command line; any other (``--storage``, the
default SQLite file of ``--local``) is handed to :class:`WorkerTask` as an argument, so it is
in the pickle of submitit's folder. Nothing here writes to ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.training import safe_io

__all__ = [
    "WorkerTask",
    "launch",
    "LaunchError",
    "read_slurm_config",
    "spawn_workers",
    "STORAGE_ENV",
    "SLURM_DEFAULTS",
    "AT_INIT",
]

STORAGE_ENV = "OTRANSFER_STORAGE"

#: The submitit parameters of a launch unless its ``slurm`` mapping says otherwise
#: (``slurm_array_parallelism`` defaults to the number of workers).
SLURM_DEFAULTS: dict[str, Any] = {
    "timeout_min": 240,
    "tasks_per_node": 1,
    "nodes": 1,
    "slurm_max_num_timeout": 3,
    "slurm_signal_delay_s": 120,
}


class LaunchError(ValueError):
    """A launch that cannot work as asked (SQLite across nodes, no submitit ...)."""


def _submitit():
    from harness.zoo.models import optional_import

    return optional_import("submitit", "cluster", "otransfer launch")


@dataclasses.dataclass
class WorkerTask:
    """One worker of a launched suite: what a SLURM array task (or a local process) runs.

    Attributes mirror ``otransfer worker``'s options; ``storage`` None: the URL is read from
    the task's environment (``OTRANSFER_STORAGE``), so that no password lands in submitit's
    folder.
    """

    suite: str
    results_root: str
    overrides: Sequence[str] = ()
    quick: bool = False
    device: str | None = None
    stale_after: float = 120.0
    heartbeat: float = 10.0
    storage: str | None = None

    def __call__(self) -> dict[str, Any]:
        from harness.experiments.runner import run_suite

        storage = self.storage or os.environ.get(STORAGE_ENV) or None
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


def read_slurm_config(path: str | os.PathLike) -> dict[str, Any]:
    """The submitit parameters of a YAML file (``--slurm-config``): a mapping with string keys
    (``slurm_partition: gpu``, ``timeout_min: 240`` ...); an empty file is no parameter.
    Raises :class:`LaunchError`, one line naming the file, on anything else."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise LaunchError(f"SLURM config {path}: cannot be read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise LaunchError(f"SLURM config {path}: not valid YAML{at}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LaunchError(
            f"SLURM config {path}: must be a mapping of submitit parameters "
            f"(slurm_partition: gpu, timeout_min: 240 ...); got a {type(data).__name__}"
        )
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise LaunchError(
            f"SLURM config {path}: keys must be submitit parameter names (strings); got {bad[0]!r}"
        )
    return dict(data)


#: submitit's parameters of an executor's construction (``slurm_max_num_timeout`` ...), which
#: ``update_parameters`` refuses: they go to ``AutoExecutor(...)`` instead
AT_INIT = ("max_num_timeout", "max_pickle_size_gb", "python")


def _executor(submitit, folder: Path, cluster: str, params: Mapping[str, Any]):
    """``AutoExecutor(folder, cluster, **at_init).update_parameters(**rest)`` with ``params``
    split between the two; submitit's refusal of a parameter as a LaunchError (its first line:
    the parameter and why)."""
    at_init = {k: v for k, v in params.items() if "_" in k and k.split("_", 1)[1] in AT_INIT}
    try:
        ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster, **at_init)
    except RuntimeError as exc:  # submitit's "Could not detect srun": no SLURM on this machine
        raise LaunchError(
            f"no SLURM here ({exc}): launch from a SLURM login node, or run the workers on this "
            "machine with `otransfer launch SUITE --local`"
        ) from exc
    try:
        ex.update_parameters(**{k: v for k, v in params.items() if k not in at_init})
    except (NameError, ValueError, TypeError, AssertionError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LaunchError(f"submitit refuses the SLURM parameters: {first}") from exc
    return ex


def launch(
    suite: str,
    *,
    slurm: Mapping[str, Any] | None = None,
    storage: str | None = None,
    executor: str = "slurm",
    workers: int = 2,
    folder: str | os.PathLike | None = None,
    results_root: str | os.PathLike = "results",
    task: Mapping[str, Any] | None = None,
):
    """Submit ``workers`` workers of ``suite``; return ``(jobs, info)``.

    Parameters
    ----------
    suite : str
        A suite name or file; it is loaded (and checked) here, so a malformed file fails
        before anything is queued.
    slurm : mapping, optional
        submitit parameters, passed as they are to ``executor.update_parameters`` over
        :data:`SLURM_DEFAULTS` (those of :data:`AT_INIT`, ``slurm_max_num_timeout``: requeues
        after a timeout ..., to ``AutoExecutor``): generic ones (``timeout_min``, ``gpus_per_node``,
        ``cpus_per_task``, ``mem_gb``), ``slurm_*`` ones (``slurm_partition``,
        ``slurm_array_parallelism``,
        ``slurm_setup``: shell lines run before each task, ``slurm_additional_parameters``
        ...) used on SLURM only, ``local_setup`` used locally only.
    storage : str, optional
        The records' URL (PostgreSQL for SLURM); default ``$OTRANSFER_STORAGE``, else the
        suite's SQLite file (``executor="local"`` only).
    executor : {"slurm", "local"}
        A SLURM job array, or local processes (submitit's ``LocalExecutor``).
    workers : int
        Array size: the number of worker tasks.
    folder : path, optional
        submitit's folder (logs, pickles); default ``<results_root>/<suite>/submitit``.
    task : mapping, optional
        The workers' options, :class:`WorkerTask`'s fields: ``overrides``, ``quick``,
        ``device``, ``stale_after``, ``heartbeat``.
    """
    from harness.experiments.records import default_storage
    from harness.experiments.secrets import redact
    from harness.experiments.suite import load_suite, quick_suite

    task = dict(task or {})
    if workers < 1:
        raise LaunchError(f"need at least one worker; got {workers}")
    if executor not in ("slurm", "local"):
        raise LaunchError(f"executor must be 'slurm' or 'local'; got {executor!r}")
    overrides = list(task.get("overrides", ()))
    loaded = load_suite(suite, overrides)  # a malformed suite fails here, not on a node
    name = quick_suite(loaded).name if task.get("quick") else loaded.name
    results_root = Path(results_root).resolve()
    inherited = os.environ.get(STORAGE_ENV) or None
    storage = storage or inherited or default_storage(name, results_root)
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
    ex = _executor(
        submitit,
        folder,
        executor,
        {
            **SLURM_DEFAULTS,
            "name": f"otransfer-{name}",
            "slurm_array_parallelism": workers,
            **(slurm or {}),
        },
    )
    # the URL of the environment stays there (the tasks inherit it); any other is an argument
    task.update(overrides=tuple(overrides), storage=None if storage == inherited else storage)
    worker = WorkerTask(suite_file, str(results_root), **task)
    with ex.batch():  # one SLURM job array
        jobs = [ex.submit(worker) for _ in range(workers)]
    info = {
        "suite": name,
        "executor": executor,
        "workers": workers,
        "job_ids": [j.job_id for j in jobs],
        "folder": str(folder),
        "results": str(results_root),
        "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "storage_from": "environment (OTRANSFER_STORAGE)"
        if worker.storage is None
        else "the task's arguments",
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
    threads: int | None = None,
    batch: bool = True,
) -> tuple[list[int], str, list[str]]:
    """``otransfer run --workers N`` on this machine: ``n`` ``otransfer worker`` processes on
    one storage, waited for; returns their exit codes, the storage URL and one line per
    distinct error of the workers that failed (:func:`harness.experiments.worker_logs.
    worker_errors`). Each worker's lines go to ``<results>/<suite>/logs/worker-K.log``; with
    ``bar`` (a terminal) one suite bar is drawn from the storage, otherwise the workers' plain
    lines also interleave on standard output. ``only``: ``--only`` filters, checked here;
    ``threads``, ``batch``: each worker's ``--threads`` and ``--no-batch`` (when False)."""
    import sys

    from harness.experiments.only import select_jobs
    from harness.experiments.progress import follow_workers
    from harness.experiments.records import default_storage
    from harness.experiments.secrets import scrub
    from harness.experiments.suite import expand, load_suite, quick_suite
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
    if threads is not None:
        cmd += ["--threads", str(threads)]
    if not batch:
        cmd.append("--no-batch")
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
