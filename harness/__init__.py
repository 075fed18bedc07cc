"""otransfer harness: five layers, each importing only those below it (tests/test_layers.py)::

    transfer/     taps, OT between representations, the regularizer registry and the papers' terms
    zoo/          models and datasets (registries, local-root loaders, embedded data)
    training/     the training loop, checkpoints, DDP helpers
    experiments/  suites, runner, claims, records, search, launcher, status, reference numbers
    reports/      leaderboards, verdicts, plots, benchmarks, asv collation
    cli/          argument parsing, a module per command group (imported by nothing else)

``transfer`` and ``zoo`` know no training; ``training`` knows no suites; nothing below
``reports`` imports it. ``solvers/`` (OT math) sits below all of them. The names below are
imported on first use (torch and the solvers load then), so that ``import harness`` and
``otransfer --help`` stay instant.
"""

from __future__ import annotations

from harness._lazy import attach

__all__, __getattr__, __dir__ = attach(
    __name__,
    {
        "Taps": "transfer.taps",
        "representation_ot": "transfer.representation",
        "solve_representation": "transfer.representation",
        "matched_fraction": "transfer.representation",
        "RegContext": "transfer.regularizers",
        "Regularizer": "transfer.regularizers",
        "build_regularizer": "transfer.regularizers",
        "available_regularizers": "transfer.regularizers",
        "get_regularizer": "transfer.regularizers",
        "build_model": "zoo.models",
        "all_models": "zoo.models",
        "replace_head": "zoo.models",
        "load_dataset": "zoo.data",
        "all_datasets": "zoo.data",
    },
)
