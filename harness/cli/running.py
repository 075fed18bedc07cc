"""``otransfer run``, ``resume``, ``worker``, ``tune`` and ``confirm``: the commands that train
a suite's jobs."""

from __future__ import annotations

import argparse
import signal
from typing import Callable, Sequence

from harness.cli.common import fail, flags
from harness.experiments.secrets import redact, scrub

__all__ = [
    "cmd_run",
    "spawn_local_workers",
    "add_run",
    "add_resume",
    "add_worker",
    "add_tune",
    "add_confirm",
]


def _on_sigterm(signum, frame):  # a worker told to stop: record the interruption, release
    raise SystemExit(128 + signum)


def spawn_local_workers(args: argparse.Namespace) -> int:
    """``run --workers N``: N ``otransfer worker`` processes on one storage; wait for them."""
    from harness.experiments.cluster import spawn_workers
    from harness.experiments.progress import is_terminal

    codes, storage, errors = spawn_workers(
        args.suite,
        args.workers,
        results=args.results,
        storage=args.storage,
        overrides=args.set or (),
        quick=args.quick,
        device=args.device,
        stale_after=args.stale_after,
        heartbeat=args.heartbeat,
        bar=not (args.no_progress or not is_terminal()),
        only=args.only or (),
        threads=args.threads,
        batch=not args.no_batch,
    )
    print(
        f"\n{args.workers} workers exited with {codes}"
        + ("; this process runs what they left" if any(codes) else "")
        + "".join(f"\n  {line}" for line in errors)
    )  # why, one line per distinct error
    args.storage = storage  # this process's own pass reads the same records
    return max(codes) if any(codes) else 0


def cmd_run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from harness.experiments.records import StorageError
    from harness.experiments.runner import run_suite
    from harness.experiments.suite import SuiteError

    if args.workers < 1:
        parser.error(f"--workers must be >= 1; got {args.workers}")
    if getattr(args, "smoke", False):  # every template, 2 steps, stand-in data
        from harness.experiments.smoke import smoke_cli

        try:
            return smoke_cli(args)
        except (FileNotFoundError, SuiteError, ValueError) as exc:
            return fail(args, exc)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1; got {args.threads}")
    if args.command == "worker":
        signal.signal(signal.SIGTERM, _on_sigterm)
    code, spawned = 0, args.workers > 1
    args.finished = 0  # jobs completed by this process: the Ctrl-C line says how many

    def count(job, metrics):
        args.finished += metrics.get("status") == "completed"

    try:
        if spawned:  # then this process's own pass finds what they left: it retries nothing
            code = spawn_local_workers(args)
        summary = run_suite(
            args.suite,
            storage=args.storage,
            overrides=args.set or (),
            progress=not args.no_progress,
            quick=args.quick,
            device=args.device,
            results_root=args.results,
            worker=args.command == "worker" or spawned,
            stale_after=args.stale_after,
            heartbeat=args.heartbeat,
            on_job=count,
            batch=not args.no_batch,
            only=args.only or (),
            threads=args.threads,
        )
    except (FileNotFoundError, SuiteError, StorageError, ValueError) as exc:
        return fail(args, exc)
    from harness.training.distributed import is_main

    if not is_main():  # torchrun: rank 0 reports
        return 0
    _print_summary(args, summary)
    return 1 if (summary.failed or code) else 0


def _print_summary(args: argparse.Namespace, summary) -> None:
    """The run's summary line and failures; after a run that has records, its verdicts,
    leaderboard and the files written."""
    line = (
        f"{summary.suite}: {summary.jobs} jobs, {summary.completed} run, "
        f"{summary.skipped} already done, {summary.by_others} done by other workers, "
        f"{summary.failed} failed in {summary.wall_time:.1f} s; records in "
        f"{redact(summary.storage)}"
    )
    failures = [
        f"  failed {key}: {scrub(reason, args.storage)}" for key, reason in summary.failures
    ]
    if args.command == "worker" or not (summary.completed or summary.skipped or summary.by_others):
        print("\n" + "\n".join([line, *failures]))
        return
    from harness.reports.tables import write_report

    try:
        paths = write_report(
            summary.suite, summary.storage, keys=summary.keys, results_root=args.results
        )
    except ValueError as exc:
        print("\n" + "\n".join([line, *failures, f"no report: {scrub(exc, args.storage)}"]))
        return
    # the answer first (verdicts), the tables behind it, then where everything is
    if "verdicts" in paths:
        from harness.reports.verdict_text import verdict_summary

        print("\n" + verdict_summary(paths["verdicts"]))
    print("\n" + paths["md"].read_text())
    files = [str(p) for p in paths.values()]
    plots = [f for f in files if f.endswith(".png")]
    tables = [f for f in files if not f.endswith(".png")]
    print(
        "\n".join(
            [
                line,
                *failures,
                f"tables: {', '.join(tables)}",
                *([f"plots: {', '.join(plots)}"] if plots else []),
            ]
        )
    )


def _run_like(sub, name: str, help: str, description: str) -> None:
    shared = flags(
        set="override a suite entry, dotted key, YAML value "
        "(e.g. stages.students.train.epochs=5, seeds=[0]); repeatable",
        storage="any Optuna storage URL (default sqlite:///results/SUITE/runs.sqlite3)",
        quick="smoke run: 1 epoch per stage, first seed and first grid value only",
        device="train on this device (cpu, cuda, cuda:1 ...) whatever the suite says; "
        "not part of the jobs' keys, so results stay comparable",
        no_progress="",
        results="results root: artefacts (teachers' weights, epoch checkpoints) and "
        "reports go to DIR/SUITE/; workers on several machines need it on a "
        "shared file system (default results)",
        stale_after="take over a job whose worker's heartbeat is older than S seconds "
        "(a dead worker on the same host is replaced at once; default 120)",
        heartbeat="seconds between the heartbeats of a worker's claims (default 10)",
    )
    if name != "worker":
        shared += flags(workers="start N worker processes on this machine (default 1)")
    p = sub.add_parser(name, help=help, description=description, parents=shared)
    p.add_argument("suite", metavar="SUITE", help="a suite name (suites/SUITE.yaml) or a file")
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads of each job (default: 1 for models under 2M parameters, "
        "else the cores this process may use / the workers sharing them); "
        "also OTRANSFER_THREADS",
    )
    p.add_argument(
        "--no-batch",
        action="store_true",
        help="train one model at a time (default: jobs that differ only in seed and "
        "regularizer weights train as one batched model where that is exact)",
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="KEY=V[,V]",
        help="run only the jobs whose KEY (stage, task, method/row, regularizer, "
        "dataset, seed) is one of the values, and the teachers they need; "
        "same keys as the full run; repeatable (all must match)",
    )
    if name == "run":
        p.add_argument(
            "--smoke",
            action="store_true",
            help="every job template, 2 steps at "
            "batch 2 on synthetic stand-in data, eval, checkpoint, resume (throwaway)",
        )
    p.set_defaults(func=cmd_run, parser=p, workers=1)


def add_run(sub) -> None:
    _run_like(
        sub,
        "run",
        "run an experiment suite (skips jobs already done)",
        "Expand SUITE into jobs (stages x datasets x regularizers x params x seeds), "
        "train each job not yet completed in the storage, record it (Optuna trial), "
        "then write results/SUITE/leaderboard.{md,csv,tex}.",
    )


def add_worker(sub) -> None:
    _run_like(
        sub,
        "worker",
        "one of many workers sharing a suite's jobs",
        "Run SUITE's jobs alongside other workers on the same --storage (any Optuna "
        "storage; PostgreSQL for several machines): each job is claimed before it "
        "runs, none runs twice to completion, and the job of a worker that died is "
        "taken over and resumed from its last epoch checkpoint. Start it N times. "
        "Unlike run, a worker does not retry jobs that failed before (resume does).",
    )


def add_resume(sub) -> None:
    _run_like(
        sub,
        "resume",
        "finish what a crash or a kill left undone",
        "Same as `run`: jobs completed in the storage are skipped.",
    )


# --------------------------------------------------------------------------- tune


def _cmd_tune(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from harness.experiments.search import tune
    from harness.experiments.suite import SuiteError, expand, load_suite

    if args.trials is not None and args.trials < 1:
        parser.error(f"--trials must be >= 1; got {args.trials}")
    if args.timeout is not None and args.timeout <= 0:
        parser.error(f"--timeout must be > 0 seconds; got {args.timeout}")
    try:
        s = tune(
            args.suite,
            trials=args.trials,
            storage=args.storage,
            stage=args.stage,
            regularizer=args.regularizer,
            timeout=args.timeout,
            results_root=args.results,
            overrides=args.set or (),
            progress=args.progress,
            device=args.device,
            reruns=not args.no_rerun,
        )
    except (FileNotFoundError, SuiteError, ValueError, RuntimeError) as exc:
        return fail(args, exc)
    print(
        f"\n{s.study}: {s.trials} trial(s) added ({s.completed} complete, {s.pruned} pruned, "
        f"{s.failed} failed), {s.total} in the study, {s.wall_time:.1f} s"
    )
    if s.best_number is None:
        print("no trial has completed: no best point yet")
        return 1
    print(
        f"best: trial {s.best_number}, val accuracy {100 * s.best_value:.2f} %: "
        + ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.best_point.items()
        )
    )
    if s.test_mean is not None:
        print(
            f"re-runs on test: {100 * s.test_mean:.1f} ± {100 * s.test_std:.1f} % over "
            f"{sum(r['test_accuracy'] is not None for r in s.reruns)} seed(s)"
        )
    from harness.reports.tables import write_report

    try:  # the leaderboard, with the tuned row beside the grid rows
        keys = [j.key for j in expand(load_suite(args.suite, args.set or ()))]
        s.paths["leaderboard"] = write_report(
            s.suite, s.storage, results_root=args.results, keys=keys
        )["md"]
    except ValueError:
        pass
    for path in s.paths.values():
        print(f"wrote {path}")
    return 1 if any(r["test_accuracy"] is None for r in s.reruns) else 0


def add_tune(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="search a stage's regularization hyper-parameters (Optuna)",
        description="Search the space of SUITE's 'search:' block (regularizer parameters such as "
        "omega_p.alpha, kd.tau, solver beta/reg, taps; train.lr ...) on the "
        "validation split, pruning trials on their per-epoch validation accuracy; "
        "then re-run the best point on the test split over the stage's seeds, "
        "recorded as row '<regularizer> (tuned)' of the stage's leaderboard. The "
        "search is its own Optuna study in the storage of `run`: several tune "
        "processes on one --storage share it, and a second call adds trials. "
        "Writes results/SUITE/tune_<stage>_<regularizer>.md and its PNG plots.",
        parents=flags(
            storage="any Optuna storage URL (default sqlite:///DIR/SUITE/runs.sqlite3)",
            results="results root: artefacts, tune table and plots go to DIR/SUITE/ "
            "(default results)",
            set="override a suite entry, as for run (dotted key, YAML value); repeatable",
            device="train on this device (not part of any key)",
        ),
    )
    p.add_argument("suite", metavar="SUITE", help="a suite name (suites/SUITE.yaml) or a file")
    p.add_argument(
        "--trials",
        type=int,
        metavar="N",
        help="trials this call adds (default: the search block's 'trials')",
    )
    p.add_argument(
        "--stage", metavar="S", help="the search block of stage S (when the suite has several)"
    )
    p.add_argument(
        "--regularizer",
        metavar="SPEC",
        help="the search block of this regularizer (spec or row name), when a stage has several",
    )
    p.add_argument(
        "--timeout",
        type=float,
        metavar="SEC",
        help="add no trial after SEC seconds (the running one finishes)",
    )
    p.add_argument("--progress", action="store_true", help="show training progress bars")
    p.add_argument(
        "--no-rerun",
        action="store_true",
        help="search only: do not re-run the best point on test (e.g. on all but "
        "one of several workers)",
    )
    p.set_defaults(func=_cmd_tune, parser=p)


def _cmd_confirm(args: argparse.Namespace, parser: argparse.ArgumentParser, main) -> int:
    from harness.experiments.confirm import ConfirmError, command
    from harness.experiments.register import RegisterError

    if args.workers < 1:
        parser.error(f"--workers must be >= 1; got {args.workers}")
    if args.round < 1:
        parser.error(f"--round must be >= 1; got {args.round}")
    try:
        return command(args, main)
    except (ConfirmError, RegisterError) as exc:
        return fail(args, exc, "confirm")


def add_confirm(sub, main: Callable[[Sequence[str]], int]) -> None:
    """``otransfer confirm``; each of its runs is a call of ``main`` (the ``otransfer`` entry
    point, given by value: this module does not import it)."""
    p = sub.add_parser(
        "confirm",
        help="run the register's confirmatory runs (fresh seeds, one commit)",
        description="Run the confirmatory runs that claims/<paper>.yaml plans (its "
        "`confirmatory:` block: fresh seeds, the fixed test pool, overrides "
        "decided before the run) into results/confirmatory/SUITE/, at one commit; "
        "resumes what an earlier run finished. --report writes their tables and "
        "verdicts.",
        parents=flags(workers="worker processes per suite (default 1)", no_progress=""),
    )
    p.add_argument(
        "suites",
        metavar="SUITE",
        nargs="*",
        help="the planned suites to run (default: all, in the registers' order)",
    )
    p.add_argument("--list", action="store_true", help="print the plan and its commands")
    p.add_argument(
        "--round",
        type=int,
        default=1,
        metavar="N",
        help="a later round of the plan (the block's rounds:, fresh seeds, one commit) "
        "into results/confirmatory-roundN/ (default 1: results/confirmatory/)",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="report the confirmatory records into results/confirmatory/SUITE/ "
        "(results/confirmatory-roundN/SUITE/ with --round N)",
    )
    p.set_defaults(func=lambda args, parser: _cmd_confirm(args, parser, main), parser=p)
