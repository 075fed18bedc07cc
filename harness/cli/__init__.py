"""The ``otransfer`` command line: one command, subcommands, one module per command group.

Subcommands: ``solvers bench``, ``regularizers bench``, ``bench {throughput,agreement}``
(:mod:`harness.cli.benches`); ``list {solvers,regularizers,models,datasets,suites}``,
``report solvers``, ``report SUITE``, ``schema`` (:mod:`harness.cli.listing`); ``run SUITE
[--workers N]``, ``resume SUITE``, ``worker SUITE`` (one of many on a shared storage), ``tune
SUITE``, ``confirm`` (:mod:`harness.cli.running`); ``launch SUITE --slurm`` (workers as a SLURM
job array), ``status SUITE`` (:mod:`harness.cli.cluster`); ``plan SUITE``
(:mod:`harness.reports.plan`). The flags several subcommands share are defined once in
:mod:`harness.cli.common`; the top parser and :func:`main` are in :mod:`harness.cli.entry`. A
new subcommand plugs in by a parser builder in :func:`harness.cli.entry._commands`.
"""

from __future__ import annotations

from harness.cli.entry import DEFAULT_ARGV, STORAGE_ENV, build_parser, main

__all__ = ["main", "build_parser", "DEFAULT_ARGV", "STORAGE_ENV"]
