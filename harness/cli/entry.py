"""The ``otransfer`` entry point: the top parser, which gathers each command group's
subcommands, and :func:`main`, which parses, reads the storage URL from the environment and
runs the subcommand with its errors on one line.

Heavy packages (torch, pandas, matplotlib) are imported inside the handlers, so ``--help`` and
argument errors stay instant.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Sequence

from harness.cli import benches, cluster, listing, running
from harness.cli.common import DEBUG_HELP, Parser, fail

# STORAGE_ENV: the environment variable read for ``--storage`` when the option is not given
# (a URL with a password stays off the command line; PostgreSQL's libpq also reads PGPASSWORD
# and ~/.pgpass for a URL without one)
from harness.experiments.cluster import STORAGE_ENV  # a light module: no torch, no Optuna

__all__ = ["main", "build_parser", "DEFAULT_ARGV", "STORAGE_ENV"]

#: What ``otransfer`` with no arguments runs: the embedded default suite, into a folder git
#: does not track (.gitignore), so a fresh clone's committed results/mini/ stays.
DEFAULT_ARGV = ["run", "mini", "--results", "results/local"]


def _add_plan(sub) -> None:  # otransfer plan SUITE: harness/reports/plan.py
    from harness.reports.plan import add_plan_parser

    add_plan_parser(sub)


def _commands():
    """Parser builders, one per top-level subcommand, in the order ``--help`` lists them."""
    return [
        benches.add_solvers,
        benches.add_regularizers,
        listing.add_list,
        listing.add_report,
        running.add_run,
        running.add_resume,
        running.add_worker,
        cluster.add_launch,
        cluster.add_status,
        listing.add_schema,
        running.add_tune,
        benches.add_bench,
        lambda sub: running.add_confirm(sub, main),
        _add_plan,
    ]


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
    parser.add_argument("--debug", action="store_true", default=False, help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for add in _commands():
        add(sub)
    return parser


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
        return fail(args, exc)
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
        return fail(args, exc, line=line)
