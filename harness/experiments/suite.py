"""Experiment suites: YAML files of stages, grids and seeds, expanded into hashed jobs.

The file format, for users, is in docs/suite-format.md. This module is the public entry point:
:func:`load_suite` / :func:`parse_suite` read and check a suite (the YAML in
:mod:`~harness.experiments.suite_yaml`, the checks in :mod:`~harness.experiments.suite_stage`,
:mod:`~harness.experiments.suite_values`, :mod:`~harness.experiments.suite_search` and
:mod:`~harness.experiments.suite_checks`), :func:`expand` turns it into jobs
(:mod:`~harness.experiments.suite_expand`); the types are in
:mod:`~harness.experiments.suite_types`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterable

from harness.experiments.plugins import suite_plugins
from harness.experiments.suite_expand import expand, merge_params
from harness.experiments.suite_stage import check_suite
from harness.experiments.suite_types import (
    PRETRAINED,
    Job,
    Search,
    Stage,
    Suite,
    SuiteError,
    canonical_json,
    config_key,
    resolve_split,
)
from harness.experiments.suite_yaml import (
    YamlLines,
    apply_overrides,
    located_error,
    parse_override,
    parse_yaml,
    read_suite_text,
)

__all__ = [
    "SuiteError",
    "Suite",
    "Stage",
    "Job",
    "Search",
    "PRETRAINED",
    "load_suite",
    "parse_suite",
    "suite_file_text",
    "with_overrides",
    "merge_params",
    "slug",
    "expand",
    "apply_overrides",
    "parse_override",
    "available_suites",
    "quick_suite",
    "SUITES_DIR",
    "config_key",
    "canonical_json",
    "resolve_split",
]


#: Where suite names resolve (``suites/<name>.yaml`` at the repository root).
SUITES_DIR = Path(__file__).resolve().parents[2] / "suites"


def available_suites(directory: str | os.PathLike | None = None) -> list[str]:
    d = Path(directory) if directory else SUITES_DIR
    return sorted(p.stem for p in d.glob("*.yaml")) + sorted(p.stem for p in d.glob("*.yml"))


def _resolve_path(path_or_name: str | os.PathLike) -> Path:
    p = Path(path_or_name)
    if p.suffix in (".yaml", ".yml") or p.exists() or p.is_symlink():
        if p.is_dir():
            raise FileNotFoundError(
                f"suite file {str(p)!r} is a directory: give a .yaml file in it, or a suite name"
            )
        if p.is_symlink() and not p.exists():
            raise FileNotFoundError(
                f"suite file {str(p)!r} is a link to nothing (a broken link or a loop of links)"
            )
        if not p.is_file():
            raise FileNotFoundError(
                f"suite file {str(p)!r} not found" + (" (not a regular file)" if p.exists() else "")
            )
        return p
    for ext in (".yaml", ".yml"):
        cand = SUITES_DIR / f"{p.name}{ext}"
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"no suite {str(path_or_name)!r}: not a file and not in {SUITES_DIR} "
        f"(known: {', '.join(available_suites()) or 'none'})"
    )


def load_suite(path_or_name: str | os.PathLike, overrides: Iterable[str] = ()) -> Suite:
    """Load and check a suite by file path or by name (``suites/<name>.yaml``).

    ``overrides`` are ``"dotted.key=value"`` strings (values YAML-parsed), applied before the
    schema check. Raises :class:`SuiteError` (file, key, line) on a malformed file.
    """
    path = _resolve_path(path_or_name)
    return parse_suite(read_suite_text(path), str(path), overrides)


def suite_file_text(path_or_name: str | os.PathLike) -> str:
    """The text of a suite file (a name in suites/ or a path), read as :func:`load_suite`
    reads it."""
    return read_suite_text(_resolve_path(path_or_name))


def parse_suite(text: str, filename: str = "<suite>", overrides: Iterable[str] = ()) -> Suite:
    """The checked :class:`Suite` of suite text ``text`` (``filename`` names it in errors), with
    ``--set`` ``overrides`` applied before the check."""
    root, raw = parse_yaml(text, filename)
    lines = YamlLines(root)
    raw = apply_overrides(raw if raw is not None else {}, overrides)
    suite_plugins(raw, filename, lambda path, msg: located_error(filename, lines, path, msg))
    return check_suite(raw, filename, lines)


def with_overrides(suite: Suite, overrides: Iterable[str]) -> Suite:
    """``suite`` (loaded) with ``--set`` ``overrides`` applied and checked again."""
    overrides = list(overrides)
    if not overrides:
        return suite
    return check_suite(apply_overrides(suite.raw, overrides), suite.path, YamlLines(None))


def slug(name: str) -> str:
    """A file-name-safe form of a table name (``"transfer+compression"`` ->
    ``transfer-compression``)."""
    import re

    return re.sub(r"[^A-Za-z0-9_.]+", "-", str(name)).strip("-").lower() or "table"


def quick_suite(suite: Suite) -> Suite:
    """``suite`` with 1 epoch per stage (no step budget), only its first seed and the first value
    of each grid axis (a smoke run), named ``<name>-quick`` so that its records and artefacts
    stay apart from the real runs."""
    stages = tuple(
        dataclasses.replace(
            s,
            train={**s.train, "epochs": 1, "steps": 0 if s.train.get("steps") == 0 else None},
            seeds=s.seeds[:1],
            grid={k: tuple(v[:1]) for k, v in s.grid.items()},
        )
        for s in suite.stages
    )
    return dataclasses.replace(
        suite, name=f"{suite.name}-quick", stages=stages, seeds=suite.seeds[:1]
    )
