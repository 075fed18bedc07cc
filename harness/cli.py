"""The ``otransfer`` command line: one command, subcommands.

Subcommands: ``solvers bench``, ``regularizers bench``,
``list {solvers,regularizers,models,datasets,suites}``, ``report solvers``, ``report SUITE``,
``run SUITE [--workers N]``, ``resume SUITE``, ``worker SUITE`` (one of many on a shared
storage), ``launch SUITE --slurm`` (workers as a SLURM job array), ``status SUITE``,
``schema`` (the suite files' JSON schema) and ``tune SUITE``. A new one plugs in by adding a
parser builder to :data:`_COMMANDS` (and, for ``list`` / ``report``, an entry to
:data:`_LISTERS` / :data:`_REPORTERS`).

Heavy packages (torch, pandas, matplotlib) are imported inside the handlers, so ``--help`` and
argument errors stay instant.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Callable, Sequence

from harness.experiments.batching import NO_BATCH_ENV  # light too

# STORAGE_ENV: the environment variable read for ``--storage`` when the option is not given
# (a URL with a password stays off the command line; PostgreSQL's libpq also reads PGPASSWORD
# and ~/.pgpass for a URL without one)
from harness.experiments.cluster import STORAGE_ENV  # a light module: no torch, no Optuna

# every URL and error line shown goes through these: no secret of the storage URL printed
from harness.experiments.secrets import redact, scrub

__all__ = ["main", "build_parser"]

#: What ``otransfer`` with no arguments runs: the embedded default suite, into
#: a folder git does not track (.gitignore), so a fresh clone's committed results/mini/ stays.
DEFAULT_ARGV = ["run", "mini", "--results", "results/local"]


def _fail(args: argparse.Namespace, exc, what: str | None = None, line: str | None = None) -> int:
    """Print ``otransfer COMMAND: <line or exc>`` on one line (the traceback before it with
    ``--debug``), without the storage URL's secrets; return 1."""
    if getattr(args, "debug", False) and isinstance(exc, BaseException):
        from harness.experiments.errors import scrubbed_traceback

        sys.stderr.write(scrubbed_traceback(exc, getattr(args, "storage", None)))
    line = scrub(str(exc if line is None else line), getattr(args, "storage", None))
    print(f"otransfer {what or args.command}: {line}", file=sys.stderr)
    return 1


def _method_names(values: Sequence[str]) -> list[str]:
    # Accept "--methods a,b c": commas and spaces both separate names.
    return [name for v in values for name in v.split(",") if name]


def _validate_methods(parser: argparse.ArgumentParser, names: list[str]) -> None:
    """Exit with the registry's message (close matches, known methods) on an unknown name."""
    import solvers

    for name in names:
        try:
            solvers.get_method(name)
        except ValueError as exc:
            parser.error(str(exc))


# --------------------------------------------------------------------------- solvers bench


def _cmd_solvers_bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from harness.reports import bench

    methods = _method_names(args.methods) if args.methods else None
    if methods is not None:
        _validate_methods(parser, methods)
    views = args.views or list(bench.VIEWS)
    unknown = [v for v in views if v not in bench.VIEWS]
    if unknown:
        parser.error(
            f"unknown view(s) {', '.join(map(repr, unknown))}; choose from {', '.join(bench.VIEWS)}"
        )
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.sizes is not None and min(args.sizes) < 1:
        parser.error("--sizes must be positive")
    records = bench.run(
        views=views,
        sizes=args.sizes,
        methods=methods,
        quick=args.quick,
        repeat=args.repeat,
        budget=args.budget,
        seed=args.seed,
        progress=not args.no_progress,
    )
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    runs = (
        "one timed run"
        if repeat == 1
        else f"median of up to {repeat} runs (fewer when one solve takes over a share of the "
        f"{args.budget:g} s budget; column `repeat` of the CSV)"
    )
    settings = (
        f"Timing: {runs} after one warm-up; seed {args.seed}; a method is not run past "
        f"the size where a solve takes, or is predicted to take, over {args.budget:g} s. "
        "Relative error = |value - exact| / exact."
    )
    paths = bench.write_outputs(records, args.out, command=args.command_line, settings=settings)
    for view in dict.fromkeys(records["view"]):
        print(f"\n{view}: solve time, ms (relative error)")
        print(bench.markdown_table(bench.time_table(records, view)))
    paths.update(_solvers_overhead(args, methods))
    print()
    for path in paths.values():
        print(f"wrote {path}")
    return 0


def _solvers_overhead(args: argparse.Namespace, methods: list[str] | None) -> dict[str, Path]:
    """The wrapper-vs-routine table: solve() against lap.lapjv / ot.emd."""
    from harness.reports import bench, overhead

    df = overhead.measure_overhead(methods=methods, seed=args.seed)
    if df.empty:
        return {}
    table = overhead.overhead_table(df)
    title = (
        "wrapper overhead: solve() vs the routine it calls, li2020 neuron problems "
        "(float64), median ms of interleaved calls"
    )
    print(f"\n{title}")
    print(bench.markdown_table(table))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "overhead.csv", index=False)
    (out / "overhead.md").write_text(
        f"# {title}\n\n`{args.command_line}`\n\n{bench.markdown_table(table)}\n"
    )
    return {"overhead_csv": out / "overhead.csv", "overhead_md": out / "overhead.md"}


# --------------------------------------------------------------------------- regularizers bench


def _cmd_regularizers_bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from harness.reports import step_bench

    unknown = [c for c in args.models if c not in step_bench.CASES]
    if unknown:
        parser.error(
            f"unknown model case(s) {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(step_bench.CASES)}"
        )
    if args.steps < 1 or args.repeats < 1 or args.batch < 2:
        parser.error("--steps and --repeats must be >= 1 and --batch >= 2")
    specs = step_bench.DEFAULT_SPECS
    if args.methods:
        labels = {label for label, _, _ in specs}
        bad = [m for m in args.methods if m not in labels]
        if bad:
            parser.error(
                f"unknown row(s) {', '.join(map(repr, bad))}; choose from {', '.join(labels)}"
            )
        specs = tuple(s for s in specs if s[0] in args.methods or s[0] == step_bench.BASELINE)
    df = step_bench.run(
        args.models, specs, batch=args.batch, steps=args.steps, repeats=args.repeats
    )
    paths = step_bench.write_outputs(df, args.out, command=args.command_line)
    print()
    print(step_bench.ratio_table(df).to_markdown())
    for path in paths.values():
        print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- list


def _list_solvers(args: argparse.Namespace) -> int:
    import pandas as pd

    import solvers

    rows = []
    for name, info in solvers.all_methods().items():
        if info.exact:
            approx = "exact"
        elif info.converges_to_exact:
            approx = f"rtol {info.value_rtol:g}" if info.value_rtol is not None else "yes"
        else:
            approx = "no"  # fixed plans and relaxations do not approximate OT
        rows.append(
            {
                "name": name,
                "input": info.input,
                "exact": "yes" if info.exact else "no",
                "approx": approx,
                "plan": "yes" if info.returns_plan else "no",
                "batched": "yes" if info.batched else "no",
                "requires": ", ".join(info.requires) or "-",
                "installed": "yes" if info.is_available else "no",
                "description": info.description,
            }
        )
    print(pd.DataFrame(rows).to_markdown(index=False))
    return 0


def _list_regularizers(args: argparse.Namespace) -> int:
    import pandas as pd

    from harness.transfer.regularizers import all_regularizers

    rows = [
        {
            "name": name,
            "paper": info.paper or "-",
            "plan": info.plan or "-",
            "taps": ", ".join(info.taps) or "-",
            "needs": ", ".join(
                k
                for k, v in (
                    ("teacher", info.needs_teacher),
                    ("initial weights", info.needs_initial_weights),
                    ("source head", info.needs_source_head),
                )
                if v
            )
            or "-",
            "params": ", ".join(f"{k}={v}" for k, v in info.params.items()) or "-",
            "description": info.description,
        }
        for name, info in all_regularizers().items()
    ]
    print(pd.DataFrame(rows).to_markdown(index=False))
    return 0


def _list_models(args: argparse.Namespace) -> int:
    import pandas as pd

    from harness.zoo.models import all_models

    rows = [
        {
            "name": name,
            "family": info.family,
            "input": info.input_kind,
            "size": "x".join(map(str, info.input_size)),
            "paper": info.paper or "-",
            "taps": ", ".join(info.taps) or "-",
            "description": info.description,
        }
        for name, info in all_models().items()
    ]
    print(pd.DataFrame(rows).to_markdown(index=False))
    return 0


def _list_datasets(args: argparse.Namespace) -> int:
    import pandas as pd

    from harness.zoo.data import all_datasets

    rows = [
        {
            "name": name,
            "classes": info.num_classes,
            "input": info.input_kind,
            "local root": "yes" if info.needs_root else "embedded",
            "splits": ", ".join(info.splits),
            "paper": info.paper or "-",
            "description": info.description,
        }
        for name, info in all_datasets().items()
    ]
    print(pd.DataFrame(rows).to_markdown(index=False))
    return 0


def _list_suites(args: argparse.Namespace) -> int:
    import pandas as pd

    from harness.experiments.suite import SUITES_DIR, available_suites, expand, load_suite

    rows = []
    for name in available_suites():
        try:
            suite = load_suite(name)
            rows.append(
                {
                    "name": name,
                    "stages": ", ".join(s.name for s in suite.stages),
                    "jobs": len(expand(suite)),
                    "seeds": len(suite.seeds),
                    "description": " ".join(suite.description.split()),
                }
            )
        except Exception as exc:  # a broken file is listed with its error
            rows.append(
                {
                    "name": name,
                    "stages": "-",
                    "jobs": "-",
                    "seeds": "-",
                    "description": f"ERROR: {exc}",
                }
            )
    if not rows:
        print(f"no suites in {SUITES_DIR}")
        return 0
    print(pd.DataFrame(rows).to_markdown(index=False))
    return 0


#: ``otransfer list WHAT``.
_LISTERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "solvers": _list_solvers,
    "regularizers": _list_regularizers,
    "models": _list_models,
    "datasets": _list_datasets,
    "suites": _list_suites,
}


def _cmd_list(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    return _LISTERS[args.what](args)


# --------------------------------------------------------------------------- report


def _report_solvers(args: argparse.Namespace) -> int:
    from harness.reports import asv as asv_report

    try:
        paths = asv_report.write_report(
            args.asv_results, args.out or "results/solvers", machine=args.machine
        )
    except (FileNotFoundError, ValueError) as exc:
        return _fail(args, exc, "report solvers")
    for path in paths.values():
        print(f"wrote {path}")
    return 0


def _report_suite(args: argparse.Namespace) -> int:
    from harness.experiments.records import StorageError
    from harness.experiments.suite import SuiteError
    from harness.reports.tables import report_suite

    try:
        paths = report_suite(
            args.suite,
            args.storage,
            args.out,
            overrides=args.set or (),
            quick=args.quick,
            from_csv=getattr(args, "from_csv", None),
            selection=getattr(args, "selection", "loso"),
            results_root=getattr(args, "results", "results"),
        )
    except (FileNotFoundError, SuiteError) as exc:
        return _fail(args, exc, "report")
    except (ValueError, StorageError) as exc:  # no records; a storage that cannot be read
        return _fail(args, exc, f"report {args.suite}")
    if not getattr(args, "quiet", False):
        print(paths["md"].read_text())
    for path in paths.values():
        print(f"wrote {path}")
    return 0


#: ``otransfer report NAME`` for names that are not suites; any other name is a suite
#: (:func:`_report_suite`).
_REPORTERS: dict[str, Callable[[argparse.Namespace], int]] = {"solvers": _report_solvers}


def _report_all(args: argparse.Namespace) -> int:
    """Every suite of suites/ with records under results/, then results/README.md."""
    from harness.reports.tables import report_all

    def warn(msg):
        print(f"otransfer report --all: {scrub(msg)}", file=sys.stderr)

    status, written = report_all(
        args.results,
        lambda name, csv: _report_suite(
            argparse.Namespace(**{**vars(args), "suite": name, "quiet": True, "from_csv": csv})
        ),
        warn,
    )
    for path in written:
        print(f"wrote {path}")
    return status


def _cmd_report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.all:
        if args.suite or args.out or args.storage or args.from_csv:
            parser.error(
                "--all reports every suite into results/: give no SUITE, --out, "
                "--storage or --from-csv"
            )
        return _report_all(args)
    if not args.suite:
        parser.error("give a SUITE (or 'solvers'), or --all")
    return _REPORTERS.get(args.suite, _report_suite)(args)


# --------------------------------------------------------------------------- run / resume


def _on_sigterm(signum, frame):  # a worker told to stop: record the interruption, release
    raise SystemExit(128 + signum)


def _spawn_workers(args: argparse.Namespace) -> int:
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
    )
    print(
        f"\n{args.workers} workers exited with {codes}"
        + ("; this process runs what they left" if any(codes) else "")
        + "".join(f"\n  {line}" for line in errors)
    )  # why, one line per distinct error
    args.storage = storage  # this process's own pass reads the same records
    return max(codes) if any(codes) else 0


def _cmd_run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
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
            return _fail(args, exc)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1; got {args.threads}")
        from harness.training.threads import THREADS_ENV

        os.environ[THREADS_ENV] = str(args.threads)  # this process and the workers it starts
    if args.command == "worker":
        signal.signal(signal.SIGTERM, _on_sigterm)
    code, spawned = 0, args.workers > 1
    args.finished = 0  # jobs completed by this process: the Ctrl-C line says how many

    def count(job, metrics):
        args.finished += metrics.get("status") == "completed"

    if args.no_batch:  # spawned workers inherit it
        os.environ[NO_BATCH_ENV] = "1"
    try:
        if spawned:  # then this process's own pass finds what they left: it retries nothing
            code = _spawn_workers(args)
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
        )
    except (FileNotFoundError, SuiteError, StorageError, ValueError) as exc:
        return _fail(args, exc)
    from harness.training.distributed import is_main

    if not is_main():  # torchrun: rank 0 reports
        return 0
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
        return 1 if (summary.failed or code) else 0
    from harness.reports.tables import write_report

    try:
        paths = write_report(
            summary.suite, summary.storage, keys=summary.keys, results_root=args.results
        )
    except ValueError as exc:
        print("\n" + "\n".join([line, *failures, f"no report: {scrub(exc, args.storage)}"]))
        return 1 if (summary.failed or code) else 0
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
    return 1 if (summary.failed or code) else 0


# --------------------------------------------------------------------------- parser


def _bench_parser(sub, group: str, group_help: str, help: str, description: str):
    """``otransfer GROUP bench``: the parser of a group whose one action is a benchmark."""
    p = sub.add_parser(group, help=group_help, description=f"{group_help.split(' (')[0]}.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    return actions.add_parser("bench", help=help, description=description)


def _add_solvers(sub) -> None:
    b = _bench_parser(
        sub,
        "solvers",
        "OT solver tools (benchmark)",
        "compare every OT method on the problems of li2020 and lohit2020",
        (
            "Time every registered OT method (see `otransfer list solvers`) on seeded problems: "
            "the neuron view of li2020 (n = 64 examples, d neurons, euclidean cost) and the "
            "sample view of lohit2020 (n examples, 256 features, cosine cost). Reports the "
            "median solve time, solve + backward time, relative error vs the exact method, "
            "marginal error, iterations and convergence; and the wrapper's overhead: solve() "
            "against the routine it calls (lap.lapjv, ot.emd) at d = 16..512. Writes "
            "bench.csv, bench.md, bench_time.png, bench_accuracy.png, overhead.csv and "
            "overhead.md into --out."
        ),
    )
    b.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        metavar="N",
        help="sizes for every selected view (d neurons / n examples); default: "
        "neurons 64..2048, samples 16..256 (with --quick: 64 256 / 16 64)",
    )
    b.add_argument(
        "--methods",
        nargs="+",
        metavar="NAME",
        help="registry names, comma- or space-separated; default: every installed "
        "method (`otransfer list solvers`)",
    )
    b.add_argument(
        "--views",
        nargs="+",
        metavar="VIEW",
        help="problem families: neurons (li2020), samples (lohit2020); default: all",
    )
    b.add_argument(
        "--quick", action="store_true", help="small sizes and --repeat 1: about a minute on 2 cores"
    )
    b.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="timed runs per cell after one warm-up (default 3; 1 with --quick)",
    )
    b.add_argument(
        "--budget",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="a method slower than this per solve (measured, or predicted as "
        "time ~ size^2) is not run at larger sizes",
    )
    b.add_argument("--seed", type=int, default=0, help="seed of the problem generator (default 0)")
    b.add_argument(
        "--out",
        default="results/solvers",
        metavar="DIR",
        help="output directory (default results/solvers)",
    )
    b.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    b.set_defaults(func=_cmd_solvers_bench, parser=b)


def _add_regularizers(sub) -> None:
    b = _bench_parser(
        sub,
        "regularizers",
        "regularizer tools (training-step benchmark)",
        "training-step time of each regularizer / the L2-SP step (li2020 §4.4)",
        (
            "Time one training step (student forward, reference forward when needed, "
            "regularizer with its OT solve, backward, SGD step) of each regularizer on random "
            "batches of the model's input shape, in the fine-tuning setting of li2020 "
            "(reference = the student's starting point), and divide by the L2-SP step time "
            "measured in the same run. Writes step_time.{csv,md} into --out."
        ),
    )
    b.add_argument(
        "--models",
        nargs="+",
        default=["resnet56", "cnn"],
        metavar="CASE",
        help="resnet56 (3x32x32 input), cnn (digits 1x8x8), mlp (64); default: resnet56 cnn",
    )
    b.add_argument(
        "--methods",
        nargs="+",
        metavar="ROW",
        help="rows to time besides l2sp (default: all: none, omega_i, omega_u, "
        "omega_p and its plans, kd)",
    )
    b.add_argument("--batch", type=int, default=64, help="batch size (default 64, as li2020)")
    b.add_argument("--steps", type=int, default=8, help="timed steps per repeat (default 8)")
    b.add_argument(
        "--repeats", type=int, default=5, help="interleaved repeats; the median is kept (default 5)"
    )
    b.add_argument(
        "--out",
        default="results/regularizers",
        metavar="DIR",
        help="output directory (default results/regularizers)",
    )
    b.set_defaults(func=_cmd_regularizers_bench, parser=b)


def _add_list(sub) -> None:
    p = sub.add_parser(
        "list",
        help="list registered components",
        description="List registered components and their capabilities.",
    )
    p.add_argument("what", choices=sorted(_LISTERS), help="what to list")
    p.set_defaults(func=_cmd_list, parser=p)


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="collate results into tables and plots",
        description="Collate results into tables. `report solvers` reads the latest asv "
        "results of the timing suite (suites/timing) and writes asv.md and "
        "asv.csv in the layout of bench.md.",
    )
    p.add_argument(
        "suite",
        metavar="SUITE",
        nargs="?",
        help="a suite name or file (tables into results/SUITE/), or 'solvers'",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="every suite with records under results/ (runs.sqlite3, else the "
        "committed runs.csv), then results/VERDICTS.md and the index "
        "results/README.md",
    )
    p.add_argument(
        "--from-csv",
        metavar="PATH",
        default=None,
        help="report from a runs.csv (e.g. the committed results/SUITE/runs.csv) "
        "instead of the Optuna storage; per-epoch plots are kept as drawn",
    )
    p.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage of the suite's records (default sqlite:///results/SUITE/runs.sqlite3)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="K=V",
        help="the overrides the runs were made with (a suite's table counts the jobs "
        "of its current expansion only)",
    )
    p.add_argument("--quick", action="store_true", help="report the --quick smoke run")
    p.add_argument(
        "--selection",
        choices=("loso", "pooled"),
        default="loso",
        help="how `select: val` rows pick their grid point: loso (default; each "
        "seed on the other seeds' validation accuracy) or pooled (the old "
        "rule: one point on all seeds' mean, for comparison)",
    )
    p.add_argument(
        "--asv-results",
        default=".asv/results",
        metavar="DIR",
        help="asv results_dir of asv.conf.json (default .asv/results)",
    )
    p.add_argument("--machine", help="asv machine name (default: the most recent run)")
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output directory (default results/solvers, or results/SUITE)",
    )
    p.add_argument("--quiet", action="store_true", help="print only the files written")
    p.add_argument(
        "--results",
        default="results",
        metavar="DIR",
        help="results root, as run's: records in DIR/SUITE/runs.sqlite3, tables to "
        "DIR/SUITE/ (default results)",
    )
    p.set_defaults(func=_cmd_report, parser=p)


def _add_run_like(sub, name: str, help: str, description: str) -> None:
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("suite", metavar="SUITE", help="a suite name (suites/SUITE.yaml) or a file")
    p.add_argument(
        "--set",
        action="append",
        metavar="K=V",
        help="override a suite entry, dotted key, YAML value "
        "(e.g. stages.students.train.epochs=5, seeds=[0]); repeatable",
    )
    p.add_argument(
        "--storage",
        metavar="URL",
        help="any Optuna storage URL (default sqlite:///results/SUITE/runs.sqlite3)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 epoch per stage, first seed and first grid value only",
    )
    p.add_argument(
        "--device",
        metavar="DEV",
        help="train on this device (cpu, cuda, cuda:1 ...) whatever the suite says; "
        "not part of the jobs' keys, so results stay comparable",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
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
        "--results",
        default="results",
        metavar="DIR",
        help="results root: artefacts (teachers' weights, epoch checkpoints) and "
        "reports go to DIR/SUITE/; workers on several machines need it on a "
        "shared file system (default results)",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        default=120.0,
        metavar="S",
        help="take over a job whose worker's heartbeat is older than S seconds "
        "(a dead worker on the same host is replaced at once; default 120)",
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between the heartbeats of a worker's claims (default 10)",
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
    if name != "worker":
        p.add_argument(
            "--workers",
            type=int,
            default=1,
            metavar="N",
            help="start N worker processes on this machine (default 1)",
        )
    p.set_defaults(func=_cmd_run, parser=p, workers=1)


def _add_run(sub) -> None:
    _add_run_like(
        sub,
        "run",
        "run an experiment suite (skips jobs already done)",
        "Expand SUITE into jobs (stages x datasets x regularizers x params x seeds), "
        "train each job not yet completed in the storage, record it (Optuna trial), "
        "then write results/SUITE/leaderboard.{md,csv,tex}.",
    )


def _add_worker(sub) -> None:
    _add_run_like(
        sub,
        "worker",
        "one of many workers sharing a suite's jobs",
        "Run SUITE's jobs alongside other workers on the same --storage (any Optuna "
        "storage; PostgreSQL for several machines): each job is claimed before it "
        "runs, none runs twice to completion, and the job of a worker that died is "
        "taken over and resumed from its last epoch checkpoint. Start it N times. "
        "Unlike run, a worker does not retry jobs that failed before (resume does).",
    )


def _add_resume(sub) -> None:
    _add_run_like(
        sub,
        "resume",
        "finish what a crash or a kill left undone",
        "Same as `run`: jobs completed in the storage are skipped.",
    )


#: Parser builders, one per top-level subcommand; run, resume and tune join here.
_COMMANDS = [
    _add_solvers,
    _add_regularizers,
    _add_list,
    _add_report,
    _add_run,
    _add_resume,
    _add_worker,
]


# --------------------------------------------------------------------------- launch / status


def _cmd_launch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from harness.experiments.cluster import LaunchError, launch
    from harness.experiments.suite import SuiteError

    if args.slurm == args.local:
        parser.error("give one of --slurm (a SLURM job array) or --local (processes here)")
    if args.array < 1:
        parser.error(f"--array must be >= 1; got {args.array}")
    executor = "slurm" if args.slurm else "local"
    try:
        jobs, info = launch(
            args.suite,
            storage=args.storage,
            executor=executor,
            workers=args.array,
            folder=args.folder,
            results_root=args.results,
            overrides=args.set or (),
            quick=args.quick,
            device=args.device,
            stale_after=args.stale_after,
            heartbeat=args.heartbeat,
            timeout_min=args.time,
            partition=args.partition,
            gpus_per_task=args.gpus_per_task,
            cpus_per_task=args.cpus_per_task,
            mem_gb=args.mem_gb,
            max_requeue=args.max_requeue,
            parallelism=args.parallelism,
            account=args.account,
            qos=args.qos,
            constraint=args.constraint,
            setup=args.setup or (),
        )
    except (FileNotFoundError, SuiteError, LaunchError, ModuleNotFoundError) as exc:
        return _fail(args, exc)
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
        storage=os.environ.get(STORAGE_ENV),
        overrides=args.set or (),
        quick=args.quick,
        results_root=args.results,
    )
    print(format_status(st))
    return 0 if (not st.failed and not st.waiting and not st.running) else (codes or 1)


def _add_launch(sub) -> None:
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
    p.add_argument(
        "--parallelism",
        type=int,
        metavar="K",
        help="at most K array tasks at once (sbatch --array=...%%K; default all)",
    )
    p.add_argument("--partition", metavar="P", help="SLURM partition")
    p.add_argument(
        "--gpus-per-task", type=int, default=0, metavar="G", help="GPUs of each worker (default 0)"
    )
    p.add_argument("--cpus-per-task", type=int, metavar="C", help="CPU cores of each worker")
    p.add_argument("--mem-gb", type=float, metavar="GB", help="memory of each worker")
    p.add_argument(
        "--time",
        type=int,
        default=240,
        metavar="MIN",
        help="time limit of each task in minutes; a task that reaches it is requeued (default 240)",
    )
    p.add_argument(
        "--max-requeue",
        type=int,
        default=3,
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
    p.add_argument(
        "--storage",
        metavar="URL",
        help="records' storage (default $OTRANSFER_STORAGE; SQLite only with --local)",
    )
    p.add_argument(
        "--results",
        default="results",
        metavar="DIR",
        help="results root shared by the workers (default results)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="K=V",
        help="override a suite entry, as for run; repeatable",
    )
    p.add_argument("--quick", action="store_true", help="the --quick smoke run")
    p.add_argument("--device", metavar="DEV", help="train on this device (cuda, cpu ...)")
    p.add_argument(
        "--stale-after",
        type=float,
        default=120.0,
        metavar="S",
        help="take over a job whose worker's heartbeat is older than S seconds (default 120)",
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between heartbeats (default 10)",
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
        return _fail(args, exc)
    print(json.dumps(st.to_dict(), indent=1) if args.json else format_status(st, args.verbose))
    return 0


def _add_status(sub) -> None:
    p = sub.add_parser(
        "status",
        help="where a suite stands: done / running (by worker) / failed / waiting",
        description="Read SUITE's records and claims (nothing is written) and print how many "
        "of its jobs are done, running (by worker, with each heartbeat's age), "
        "failed (with the recorded reason) and waiting, the recent throughput "
        "and an ETA.",
    )
    p.add_argument("suite", metavar="SUITE", help="a suite name (suites/SUITE.yaml) or a file")
    p.add_argument(
        "--storage",
        metavar="URL",
        help="records' storage (default $OTRANSFER_STORAGE, else sqlite:///DIR/SUITE/runs.sqlite3)",
    )
    p.add_argument("--results", default="results", metavar="DIR", help="results root")
    p.add_argument(
        "--set",
        action="append",
        metavar="K=V",
        help="the overrides the suite runs with; repeatable",
    )
    p.add_argument("--quick", action="store_true", help="the --quick smoke run's jobs")
    p.add_argument(
        "--stale-after",
        type=float,
        default=120.0,
        metavar="S",
        help="flag a running claim whose heartbeat is older (default 120)",
    )
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--verbose", action="store_true", help="list every failure")
    p.set_defaults(func=_cmd_status, parser=p)


def _cmd_schema(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from harness.experiments.schema import dumps
    from harness.experiments.suite import SuiteError, load_suite

    try:  # its plugins: their names join the schema's
        if args.suite:
            load_suite(args.suite)
    except (FileNotFoundError, SuiteError) as exc:
        return _fail(args, exc)

    text = dumps()
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(text)
        print(
            f"wrote {args.out}; first line of a suite file: "
            f"# yaml-language-server: $schema={args.out}"
        )
    else:
        sys.stdout.write(text)
    return 0


def _add_schema(sub) -> None:
    p = sub.add_parser(
        "schema",
        help="print the JSON schema of suite files (for editors)",
        description="Print a JSON Schema (draft 2020-12) of suite files, generated from the "
        "declarations the suite checker uses (keys, types, registered models, "
        "datasets and regularizers, train options). Editors validate and complete "
        "YAML with it: `# yaml-language-server: $schema=PATH` on a suite's first "
        "line (VS Code YAML, yamlls).",
    )
    p.add_argument(
        "suite",
        metavar="SUITE",
        nargs="?",
        help="a suite whose plugins: are imported first (their names join the schema's)",
    )
    p.add_argument("--out", metavar="FILE", help="write it to FILE instead of stdout")
    p.set_defaults(func=_cmd_schema, parser=p)


_COMMANDS += [_add_launch, _add_status, _add_schema]


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
        return _fail(args, exc)
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


def _add_tune(sub) -> None:
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
    )
    p.add_argument("suite", metavar="SUITE", help="a suite name (suites/SUITE.yaml) or a file")
    p.add_argument(
        "--trials",
        type=int,
        metavar="N",
        help="trials this call adds (default: the search block's 'trials')",
    )
    p.add_argument(
        "--storage",
        metavar="URL",
        help="any Optuna storage URL (default sqlite:///DIR/SUITE/runs.sqlite3)",
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
    p.add_argument(
        "--results",
        default="results",
        metavar="DIR",
        help="results root: artefacts, tune table and plots go to DIR/SUITE/ (default results)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="K=V",
        help="override a suite entry, as for run (dotted key, YAML value); repeatable",
    )
    p.add_argument("--device", metavar="DEV", help="train on this device (not part of any key)")
    p.add_argument("--progress", action="store_true", help="show training progress bars")
    p.add_argument(
        "--no-rerun",
        action="store_true",
        help="search only: do not re-run the best point on test (e.g. on all but "
        "one of several workers)",
    )
    p.set_defaults(func=_cmd_tune, parser=p)


_COMMANDS.append(_add_tune)


# --------------------------------------------------------------------------- bench


def _cmd_bench_throughput(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from pathlib import Path

    from harness.reports import throughput

    try:
        throughput.run(
            args.suites, args.seeds, Path(args.out), say=lambda line: print(line, flush=True)
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(f"wrote {args.out}")
    return 0


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="throughput benchmarks (jobs per CPU-second)",
        description="Throughput benchmarks.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = actions.add_parser(
        "throughput",
        help="seeds batched against one model at a time",
        description="Run one slice of li2020_table2-cpu, li2020_table4-cpu and "
        "lohit2020_table1-cpu (harness/reports/throughput.py SLICES) the old way "
        "(one model at a time, --no-batch) and the new way (seeds batched) in this "
        "one process, on fresh storages, after training their teachers untimed; "
        "print jobs per CPU-second of each and their ratio. Minutes per suite.",
    )
    b.add_argument("--seeds", type=int, default=8, help="seeds per slice (default 8)")
    b.add_argument(
        "--suites",
        nargs="+",
        metavar="SUITE",
        default=["li2020_table2-cpu", "li2020_table4-cpu", "lohit2020_table1-cpu"],
        help="which slices (default: all three)",
    )
    b.add_argument(
        "--out",
        default="results/throughput/throughput.md",
        metavar="FILE",
        help="markdown table (default results/throughput/throughput.md)",
    )
    b.set_defaults(func=_cmd_bench_throughput, parser=b)
    a = actions.add_parser(
        "agreement",
        help="a whole twin batched against one model at a time",
        description="Run SUITE twice at this commit, `otransfer run --no-batch` and `otransfer "
        "run`, into fresh folders under --scratch; time both and compare per-job "
        "test accuracies (paired: sign-flip permutation test, bootstrap interval, "
        "equivalence margin 0.5 points) and every verdict. Writes --out.",
    )
    a.add_argument("suite", metavar="SUITE")
    a.add_argument("--set", action="append", metavar="K=V", help="suite overrides (repeatable)")
    a.add_argument(
        "--scratch",
        default=None,
        metavar="DIR",
        help="where the two runs go (default: a new temporary folder, kept)",
    )
    a.add_argument(
        "--out", default=None, metavar="FILE", help="default results/throughput/agreement-SUITE.md"
    )
    a.set_defaults(func=_cmd_bench_agreement, parser=a)


def _cmd_bench_agreement(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import tempfile
    from pathlib import Path

    from harness.reports import agreement

    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="otransfer-agreement-"))
    out = Path(args.out or f"results/throughput/agreement-{Path(args.suite).stem}.md")
    timing = {}
    try:
        for way, batch in (("single", False), ("batched", True)):
            timing[way] = agreement.run_twin(args.suite, scratch / way, batch, args.set or [])
            print(
                f"{way}: {timing[way]['wall']:.1f} s wall, {timing[way]['cpu']:.1f} s CPU",
                flush=True,
            )
        res = agreement.compare(timing["single"]["folder"], timing["batched"]["folder"])
    except (RuntimeError, ValueError, FileNotFoundError) as exc:
        return _fail(args, exc)
    text = agreement.markdown(Path(args.suite).stem, timing, res, args.command_line)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text + f"\nwrote {out}; the runs are in {scratch}")
    return 0


_COMMANDS.append(_add_bench)


def _cmd_confirm(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from harness.experiments.confirm import ConfirmError, command
    from harness.experiments.register import RegisterError

    if args.workers < 1:
        parser.error(f"--workers must be >= 1; got {args.workers}")
    try:
        return command(args, main)
    except (ConfirmError, RegisterError) as exc:
        return _fail(args, exc, "confirm")


def _add_confirm(sub) -> None:
    p = sub.add_parser(
        "confirm",
        help="run the register's confirmatory runs (fresh seeds, one commit)",
        description="Run the confirmatory runs that claims/<paper>.yaml plans (its "
        "`confirmatory:` block: fresh seeds, the fixed test pool, overrides "
        "decided before the run) into results/confirmatory/SUITE/, at one commit; "
        "resumes what an earlier run finished. --report writes their tables and "
        "verdicts.",
    )
    p.add_argument(
        "suites",
        metavar="SUITE",
        nargs="*",
        help="the planned suites to run (default: all, in the registers' order)",
    )
    p.add_argument("--list", action="store_true", help="print the plan and its commands")
    p.add_argument(
        "--report",
        action="store_true",
        help="report the confirmatory records into results/confirmatory/SUITE/",
    )
    p.add_argument(
        "--workers", type=int, default=1, metavar="N", help="worker processes per suite (default 1)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=_cmd_confirm, parser=p)


_COMMANDS.append(_add_confirm)


def _add_plan(sub) -> None:  # otransfer plan SUITE: harness/reports/plan.py
    from harness.reports.plan import add_plan_parser

    add_plan_parser(sub)


_COMMANDS.append(_add_plan)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``otransfer`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="otransfer",
        description="Benchmark and research harness for representation transfer by optimal "
        "transport.",
        epilog="With no arguments, `otransfer` runs `otransfer run mini --results "
        "results/local`, the embedded default suite (digits, CPU, about 2 minutes), into "
        "a folder git does not track. "
        "Run `otransfer COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    _add_debug(parser)
    return parser


def _add_debug(parser: argparse.ArgumentParser, top: bool = True) -> None:
    """``--debug`` on ``parser`` and every subcommand's parser (before or after COMMAND)."""
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print the traceback of an error as well as its one line (or set OTRANSFER_DEBUG=1)",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _add_debug(child, top=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``otransfer`` command line; return the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when None. Empty means
        :data:`DEFAULT_ARGV`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command_line = shlex.join(["otransfer", *argv])
    if not argv:
        argv = list(DEFAULT_ARGV)
        command_line = f"otransfer (= {shlex.join(['otransfer', *argv])})"
        print(
            f"otransfer: no command: running `{shlex.join(['otransfer', *argv])}` (into "
            f"{argv[-1]}/, which git does not track; `otransfer run mini` writes "
            "results/mini/)",
            file=sys.stderr,
        )
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:  # a bare group such as `otransfer solvers`
        parser.print_help()
        return 2
    args.command_line = command_line
    args.debug = bool(args.debug or os.environ.get("OTRANSFER_DEBUG"))
    args.storage_from_env = hasattr(args, "storage") and not args.storage
    if args.storage_from_env:
        # the storage URL (and its password) from the environment rather than the command line,
        # which every user of the machine can read (`ps`); spawned workers get it this way
        args.storage = os.environ.get(STORAGE_ENV) or None
    return _dispatch(args)


def _dispatch(args: argparse.Namespace) -> int:
    """Run the subcommand; an error of the machine or the input (a file as --results, a full
    disk, a storage that cannot be used) is one line, Ctrl-C one line and exit 130; a bug keeps
    its traceback."""
    from harness.experiments.errors import (
        check_results_root,
        interrupted,
        one_line,
        scrubbed_traceback,
    )

    try:
        if getattr(args, "results", None) is not None:
            check_results_root(args.results, write=args.command != "status")
    except ValueError as exc:  # a file, a link loop, a folder that cannot be written to
        return _fail(args, exc)
    try:
        # Each subparser stored itself as `parser`, so that errors print the right usage line.
        return int(args.func(args, args.parser) or 0)
    except KeyboardInterrupt as exc:
        if args.debug:
            sys.stderr.write(scrubbed_traceback(exc, getattr(args, "storage", None)))
        print(f"otransfer {args.command}: {interrupted(args)}", file=sys.stderr)
        return 130
    except Exception as exc:
        line = one_line(exc)
        if line is None:  # a bug: its traceback
            raise
        return _fail(args, exc, line=line)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
