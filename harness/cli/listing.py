"""``otransfer list WHAT``, ``otransfer report`` and ``otransfer schema``: what is registered,
the tables of what was run, the suite files' JSON schema. A new ``list`` / ``report`` target
plugs in by an entry in :data:`LISTERS` / :data:`REPORTERS`."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from harness.cli.common import fail, flags
from harness.experiments.secrets import scrub

__all__ = ["LISTERS", "REPORTERS", "add_list", "add_report", "add_schema"]


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
LISTERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "solvers": _list_solvers,
    "regularizers": _list_regularizers,
    "models": _list_models,
    "datasets": _list_datasets,
    "suites": _list_suites,
}


def _cmd_list(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    return LISTERS[args.what](args)


# --------------------------------------------------------------------------- report


def _report_solvers(args: argparse.Namespace) -> int:
    from harness.reports import asv as asv_report

    try:
        paths = asv_report.write_report(
            args.asv_results, args.out or "results/solvers", machine=args.machine
        )
    except (FileNotFoundError, ValueError) as exc:
        return fail(args, exc, "report solvers")
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
        return fail(args, exc, "report")
    except (ValueError, StorageError) as exc:  # no records; a storage that cannot be read
        return fail(args, exc, f"report {args.suite}")
    if not getattr(args, "quiet", False):
        print(paths["md"].read_text())
    for path in paths.values():
        print(f"wrote {path}")
    return 0


#: ``otransfer report NAME`` for names that are not suites; any other name is a suite
#: (:func:`_report_suite`).
REPORTERS: dict[str, Callable[[argparse.Namespace], int]] = {"solvers": _report_solvers}


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
    return REPORTERS.get(args.suite, _report_suite)(args)


def add_list(sub) -> None:
    p = sub.add_parser(
        "list",
        help="list registered components",
        description="List registered components and their capabilities.",
    )
    p.add_argument("what", choices=sorted(LISTERS), help="what to list")
    p.set_defaults(func=_cmd_list, parser=p)


def add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="collate results into tables and plots",
        description="Collate results into tables. `report solvers` reads the latest asv "
        "results of the timing suite (suites/timing) and writes asv.md and "
        "asv.csv in the layout of bench.md.",
        parents=flags(
            storage="Optuna storage of the suite's records "
            "(default sqlite:///results/SUITE/runs.sqlite3)",
            set="the overrides the runs were made with (a suite's table counts the jobs "
            "of its current expansion only)",
            quick="report the --quick smoke run",
            results="results root, as run's: records in DIR/SUITE/runs.sqlite3, tables to "
            "DIR/SUITE/ (default results)",
        ),
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
    p.set_defaults(func=_cmd_report, parser=p)


def _cmd_schema(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from harness.experiments.schema import dumps
    from harness.experiments.suite import SuiteError, load_suite

    try:  # its plugins: their names join the schema's
        if args.suite:
            load_suite(args.suite)
    except (FileNotFoundError, SuiteError) as exc:
        return fail(args, exc)

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


def add_schema(sub) -> None:
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
