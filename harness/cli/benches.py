"""``otransfer solvers bench``, ``otransfer regularizers bench`` and ``otransfer bench
{throughput,agreement}``: the benchmarks."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.common import fail, flags, method_names, validate_methods

__all__ = ["add_solvers", "add_regularizers", "add_bench"]


# --------------------------------------------------------------------------- solvers bench


def _cmd_solvers_bench(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from harness.reports import bench

    methods = method_names(args.methods) if args.methods else None
    if methods is not None:
        validate_methods(parser, methods)
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


def _bench_parser(sub, group: str, group_help: str, help: str, description: str, parents=()):
    """``otransfer GROUP bench``: the parser of a group whose one action is a benchmark."""
    p = sub.add_parser(group, help=group_help, description=f"{group_help.split(' (')[0]}.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    return actions.add_parser("bench", help=help, description=description, parents=parents)


def add_solvers(sub) -> None:
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
        flags(no_progress="hide the progress bar"),
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
    b.set_defaults(func=_cmd_solvers_bench, parser=b)


def add_regularizers(sub) -> None:
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


def add_bench(sub) -> None:
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
        parents=flags(set="suite overrides (repeatable)"),
    )
    a.add_argument("suite", metavar="SUITE")
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
        return fail(args, exc)
    text = agreement.markdown(Path(args.suite).stem, timing, res, args.command_line)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text + f"\nwrote {out}; the runs are in {scratch}")
    return 0
