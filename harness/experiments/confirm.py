"""``otransfer confirm``: the confirmatory run of the register, at one commit.

Each register's ``confirmatory:`` block (:mod:`harness.experiments.confirm_plan`) names, per
CPU twin, the fresh seeds, the fixed test pool and the overrides decided before the run.
``otransfer confirm [SUITE ...]`` runs them (``otransfer run SUITE --set ... --results
results/confirmatory``), resuming what an earlier session finished, and ``otransfer confirm
--report`` writes their tables and verdicts into ``results/confirmatory/<suite>/``.

One commit: a run refuses to start from a checkout with uncommitted changes to tracked files,
or from a commit other than the one its suite's confirmatory records were made at (check out
that commit, e.g. ``git worktree add ../pin SHA``, to resume).
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = [
    "CONFIRM_ROOT",
    "ConfirmError",
    "selected",
    "check_clean",
    "check_commit",
    "run_args",
    "report_args",
]

#: Results root of the confirmatory runs (the exploratory ones stay in results/).
CONFIRM_ROOT = Path("results") / "confirmatory"


class ConfirmError(ValueError):
    """A confirmatory run that must not start; one line naming the fix."""


def selected(regs: Mapping[str, Any], names: Sequence[str]) -> dict[str, tuple]:
    """``{suite: (paper, block, run)}`` of ``names`` (all planned runs when empty), in the
    registers' order."""
    from harness.experiments.confirm_plan import plans

    planned = plans(regs)
    if not planned:
        raise ConfirmError(
            "no register has a confirmatory block (claims/<paper>.yaml: "
            "confirmatory:); see docs/claims.md"
        )
    unknown = [n for n in names if n not in planned]
    if unknown:
        raise ConfirmError(
            f"{unknown[0]!r} has no confirmatory run in claims/*.yaml; planned: "
            f"{', '.join(planned)}"
        )
    return {n: planned[n] for n in (names or planned)}


def _git(*args: str) -> str:
    out = subprocess.run(
        ["git", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parent,
    )
    if out.returncode:
        raise ConfirmError(
            f"git {' '.join(args)} failed: {out.stderr.strip()[:200]}; "
            "a confirmatory run needs a git checkout of the project"
        )
    return out.stdout


def check_clean() -> str:
    """HEAD's sha; :class:`ConfirmError` when tracked files have uncommitted changes (the run
    would not be reproducible from its commit)."""
    dirty = [
        line[3:]
        for line in _git("status", "--porcelain", "--untracked-files=no").splitlines()
        if line.strip()
    ]
    if dirty:
        raise ConfirmError(
            f"uncommitted changes to {dirty[0]}"
            + (f" and {len(dirty) - 1} more tracked file(s)" if len(dirty) > 1 else "")
            + "; a confirmatory run is made at one commit: commit or stash them"
        )
    return _git("rev-parse", "HEAD").strip()


def check_commit(suite: str, storage: str, head: str) -> None:
    """:class:`ConfirmError` when ``storage`` holds records of ``suite`` made at another
    commit than ``head``."""
    from harness.experiments import records

    shas = (
        set(records.records_frame(storage, suite)["git_sha"])
        if _has_records(storage, suite)
        else set()
    )
    other = sorted(shas - {head})
    if other:
        raise ConfirmError(
            f"{suite}: its confirmatory records were made at commit "
            f"{other[0][:12]}, this checkout is {head[:12]}; resume from that "
            f"commit (git worktree add ../pin {other[0][:12]}) so that one "
            "commit decides the verdicts"
        )


def _has_records(storage: str, suite: str) -> bool:
    """Whether ``storage`` holds completed records of ``suite``. No file yet: none (and none
    made); a file that is not the project's database is the storage's one-line
    :class:`~harness.experiments.records.StorageError`, never "no records", so a damaged
    store cannot skip the one-commit check."""
    from harness.experiments import records

    path = storage.removeprefix("sqlite:///")
    if path != storage and not Path(path).is_file():
        return False
    return bool(records.done_keys(storage, suite))


def storage_of(suite: str, root: Path = CONFIRM_ROOT) -> str:
    return f"sqlite:///{root / suite / 'runs.sqlite3'}"


def run_args(
    suite: str, run, workers: int = 1, root: Path = CONFIRM_ROOT, extra: Sequence[str] = ()
) -> list[str]:
    """The ``otransfer run`` arguments of one confirmatory run."""
    from harness.experiments.confirm_plan import run_overrides

    sets = [a for o in run_overrides(run) for a in ("--set", o)]
    return ["run", suite, *sets, "--results", str(root), "--workers", str(workers), *extra]


def report_args(suite: str, run, root: Path = CONFIRM_ROOT) -> list[str]:
    """The ``otransfer report`` arguments of one confirmatory run: from its storage when
    present, else from its committed ``runs.csv``."""
    from harness.experiments.confirm_plan import run_overrides

    sets = [a for o in run_overrides(run) for a in ("--set", o)]
    out = root / suite
    source = (
        ["--storage", storage_of(suite, root)]
        if (out / "runs.sqlite3").is_file()
        else ["--from-csv", str(out / "runs.csv")]
    )
    return ["report", suite, *sets, *source, "--out", str(out)]


def command(args, run_cli) -> int:
    """``otransfer confirm``: list, run or report the planned confirmatory runs; ``run_cli``
    is :func:`harness.cli.main` (each run is an ``otransfer run``)."""
    from harness.experiments.register import load_registers

    chosen = selected(load_registers(), args.suites or [])
    if args.list:
        for suite, (paper, _block, run) in chosen.items():
            print(
                f"{suite} ({paper}): {run.seeds.count} seeds {run.seeds.first}.."
                f"{run.seeds.first + run.seeds.count - 1}, test_pool {run.test_pool}"
                + (f", set {run.set}" if run.set else "")
                + "\n  "
                + shlex.join(["otransfer", *run_args(suite, run, args.workers)])
            )
        return 0
    if args.report:
        have = {
            s: r
            for s, r in chosen.items()
            if (CONFIRM_ROOT / s / "runs.sqlite3").is_file()
            or (CONFIRM_ROOT / s / "runs.csv").is_file()
        }
        if not have:
            raise ConfirmError(
                "no confirmatory records yet under results/confirmatory/: "
                "run `otransfer confirm` first"
            )
        codes = [run_cli(report_args(s, r[2]) + ["--quiet"]) for s, r in have.items()]
        return max(codes)
    head = check_clean()
    for suite in chosen:
        check_commit(suite, storage_of(suite), head)
    codes = []
    for suite, (_, _, run) in chosen.items():
        print(f"otransfer confirm: {suite} at {head[:12]}", flush=True)
        codes.append(
            run_cli(
                run_args(
                    suite, run, args.workers, extra=["--no-progress"] if args.no_progress else []
                )
            )
        )
    return max(codes)
