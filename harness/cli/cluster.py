"""``otransfer launch`` (a suite's workers as a SLURM job array, or local processes, with
submitit) and ``otransfer status`` (where a suite stands)."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from harness.cli.common import fail, flags

__all__ = ["SLURM_FLAGS", "slurm_parameters", "add_launch", "add_status"]


#: launch's flags -> the submitit parameters they set, over --slurm-config's (``slurm_*``
#: apply on SLURM only, ``local_*`` locally only)
SLURM_FLAGS: dict[str, tuple[str, ...]] = {
    "time": ("timeout_min",),
    "partition": ("slurm_partition",),
    "gpus_per_task": ("gpus_per_node",),
    "cpus_per_task": ("cpus_per_task",),
    "mem_gb": ("mem_gb",),
    "max_requeue": ("slurm_max_num_timeout",),
    "parallelism": ("slurm_array_parallelism",),
    "account": ("slurm_account",),
    "qos": ("slurm_qos",),
    "constraint": ("slurm_constraint",),
    "setup": ("slurm_setup", "local_setup"),
}
#: flags whose 0 is a value; for the others 0 (or nothing) leaves the parameter unset
_ZERO_IS_A_VALUE = {"time", "max_requeue"}


def slurm_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The submitit parameters of ``otransfer launch``: --slurm-config's mapping, the flags
    given over it."""
    from harness.experiments.cluster import read_slurm_config

    params = read_slurm_config(args.slurm_config) if args.slurm_config else {}
    for flag, keys in SLURM_FLAGS.items():
        value = getattr(args, flag)
        if value is None or (not value and flag not in _ZERO_IS_A_VALUE):
            continue
        params.update(dict.fromkeys(keys, list(value) if flag == "setup" else value))
    return params


def _cmd_launch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from harness.experiments.cluster import LaunchError, launch
    from harness.experiments.suite import SuiteError

    if args.slurm == args.local:
        parser.error("give one of --slurm (a SLURM job array) or --local (processes here)")
    if args.array < 1:
        parser.error(f"--array must be >= 1; got {args.array}")
    executor = "slurm" if args.slurm else "local"
    task = {
        "overrides": tuple(args.set or ()),
        "quick": args.quick,
        "device": args.device,
        "stale_after": args.stale_after,
        "heartbeat": args.heartbeat,
    }
    try:
        jobs, info = launch(
            args.suite,
            slurm=slurm_parameters(args),
            storage=args.storage,
            executor=executor,
            workers=args.array,
            folder=args.folder,
            results_root=args.results,
            task=task,
        )
    except (FileNotFoundError, SuiteError, LaunchError, ModuleNotFoundError) as exc:
        return fail(args, exc)
    ids = info["job_ids"]
    print(
        f"{info['suite']}: {len(ids)} worker{'s' if len(ids) != 1 else ''} submitted "
        f"({executor}): job id{'s' if len(ids) != 1 else ''} {' '.join(map(str, ids))}"
    )
    print(f"  logs: {info['folder']}  (launch log {info['log']})")
    status_cmd = ["otransfer", "status", args.suite, "--results", str(args.results)]
    if args.quick:
        status_cmd.append("--quick")
    print(f"  progress: {shlex.join(status_cmd)}  (with OTRANSFER_STORAGE set as here)")
    if not args.wait:
        return 0
    codes = 0
    for job in jobs:  # --wait: block until every worker has exited
        try:
            out = job.result()
            print(
                f"  worker {job.job_id}: {out['completed']} run, {out['failed']} failed, "
                f"{out['by_others']} by others in {out['wall_time']:.0f} s"
            )
        except Exception as exc:  # a worker killed or failed: its jobs went to the others
            codes = 1
            print(f"  worker {job.job_id}: {job.state}: {str(exc).strip().splitlines()[-1]}")
    from harness.experiments.status import format_status, suite_status

    st = suite_status(
        args.suite,
        storage=args.storage,
        overrides=args.set or (),
        quick=args.quick,
        results_root=args.results,
    )
    print(format_status(st))
    return 0 if (not st.failed and not st.waiting and not st.running) else (codes or 1)


def _add_slurm_flags(p: argparse.ArgumentParser) -> None:
    """launch's flags of :data:`SLURM_FLAGS`. time, max-requeue, gpus-per-task: their defaults
    are launch's (SLURM_DEFAULTS), so that a --slurm-config value holds unless the flag is given."""
    p.add_argument(
        "--parallelism",
        type=int,
        metavar="K",
        help="at most K array tasks at once (sbatch --array=...%%K; default all)",
    )
    p.add_argument("--partition", metavar="P", help="SLURM partition")
    p.add_argument("--gpus-per-task", type=int, metavar="G", help="GPUs of each worker (default 0)")
    p.add_argument("--cpus-per-task", type=int, metavar="C", help="CPU cores of each worker")
    p.add_argument("--mem-gb", type=float, metavar="GB", help="memory of each worker")
    p.add_argument(
        "--time",
        type=int,
        metavar="MIN",
        help="time limit of each task in minutes; a task that reaches it is requeued (default 240)",
    )
    p.add_argument(
        "--max-requeue",
        type=int,
        metavar="N",
        help="requeues after a timeout (preemptions requeue always; default 3)",
    )
    p.add_argument("--account", help="SLURM account")
    p.add_argument("--qos", help="SLURM quality of service")
    p.add_argument("--constraint", help="SLURM node constraint")
    p.add_argument(
        "--setup",
        action="append",
        metavar="LINE",
        help="a shell line run before each worker (module load ..., source "
        "venv/bin/activate); repeatable",
    )


def add_launch(sub) -> None:
    p = sub.add_parser(
        "launch",
        help="start a suite's workers as a SLURM job array (submitit)",
        description="Submit N `otransfer worker` processes of SUITE with submitit: a SLURM job "
        "array (--slurm) or local processes (--local). Workers share the jobs "
        "through one storage (PostgreSQL across nodes: --storage or "
        "OTRANSFER_STORAGE) and one results directory (--results, on a shared file "
        "system). A task preempted or timed out is requeued and its job resumes "
        "from its last epoch checkpoint. Prints the job ids; follow the run with "
        "`otransfer status SUITE`.",
        parents=flags(
            storage="records' storage (default $OTRANSFER_STORAGE; SQLite only with --local)",
            results="results root shared by the workers (default results)",
            set="override a suite entry, as for run; repeatable",
            quick="the --quick smoke run",
            device="train on this device (cuda, cpu ...)",
            stale_after="take over a job whose worker's heartbeat is older than S seconds "
            "(default 120)",
            heartbeat="seconds between heartbeats (default 10)",
        ),
    )
    p.add_argument("suite", metavar="SUITE", help="a suite name (suites/SUITE.yaml) or a file")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--slurm", action="store_true", help="submit a SLURM job array")
    where.add_argument(
        "--local",
        action="store_true",
        help="run the workers as local processes (submitit's LocalExecutor)",
    )
    p.add_argument(
        "--array",
        "--workers",
        dest="array",
        type=int,
        default=2,
        metavar="N",
        help="number of workers: the job array's size (default 2)",
    )
    _add_slurm_flags(p)
    p.add_argument(
        "--slurm-config",
        metavar="FILE",
        help="a YAML mapping of submitit parameters (slurm_partition: gpu, timeout_min: 240, "
        "slurm_additional_parameters: {...}), passed to submitit as it is; the flags above "
        "override it",
    )
    p.add_argument(
        "--folder",
        metavar="DIR",
        help="submitit's logs and pickles (default DIR/SUITE/submitit of --results)",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait for every worker to exit, then print the suite's status",
    )
    p.set_defaults(func=_cmd_launch, parser=p)


def _cmd_status(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import json

    from harness.experiments.records import StorageError
    from harness.experiments.status import format_status, suite_status
    from harness.experiments.suite import SuiteError

    try:
        st = suite_status(
            args.suite,
            storage=args.storage,
            overrides=args.set or (),
            quick=args.quick,
            results_root=args.results,
            stale_after=args.stale_after,
        )
    except (FileNotFoundError, SuiteError, StorageError, ValueError) as exc:
        return fail(args, exc)
    print(json.dumps(st.to_dict(), indent=1) if args.json else format_status(st, args.verbose))
    return 0


def add_status(sub) -> None:
    p = sub.add_parser(
        "status",
        help="where a suite stands: done / running (by worker) / failed / waiting",
        description="Read SUITE's records and claims (nothing is written) and print how many "
        "of its jobs are done, running (by worker, with each heartbeat's age), "
        "failed (with the recorded reason) and waiting, the recent throughput "
        "and an ETA.",
        parents=flags(
            storage="records' storage (default $OTRANSFER_STORAGE, else "
            "sqlite:///DIR/SUITE/runs.sqlite3)",
            results="results root",
            set="the overrides the suite runs with; repeatable",
            quick="the --quick smoke run's jobs",
            stale_after="flag a running claim whose heartbeat is older (default 120)",
        ),
    )
    p.add_argument("suite", metavar="SUITE", help="a suite name (suites/SUITE.yaml) or a file")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--verbose", action="store_true", help="list every failure")
    p.set_defaults(func=_cmd_status, parser=p)
