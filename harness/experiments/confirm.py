"""``otransfer confirm``: the confirmatory run of the register, at one commit.

Each register's ``confirmatory:`` block (:mod:`harness.experiments.confirm_plan`) names, per
CPU twin, the fresh seeds, the fixed test pool and the overrides decided before the run.
``otransfer confirm [SUITE ...]`` runs them (``otransfer run SUITE --set ... --results
results/confirmatory``), resuming what an earlier session finished, and ``otransfer confirm
--report`` writes their tables and verdicts into ``results/confirmatory/<suite>/``.

One commit: a run refuses to start from a checkout with uncommitted changes to tracked files,
or from a commit other than the one its suite's confirmatory records were made at (check out
that commit, e.g. ``git worktree add ../pin SHA``, to resume). A suite whose committed
``runs.csv`` already holds every job of its plan is finished: it is skipped, never re-run over.

Later rounds (``--round N``, the block's ``rounds:``) run the same plan on fresh seeds into
``results/confirmatory-round<N>/``; all their suites at one commit (their committed
``runs.csv`` files are checked too, so a round can span sessions at a pinned commit), with
the CPU kernels the round names.
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
    "check_round_commit",
    "check_capability",
    "finished",
    "where",
    "round_root",
    "run_args",
    "report_args",
]

#: Results root of the confirmatory runs (the exploratory ones stay in results/).
CONFIRM_ROOT = Path("results") / "confirmatory"


class ConfirmError(ValueError):
    """A confirmatory run that must not start; one line naming the fix."""


def round_root(number: int = 1) -> Path:
    """Results root of round ``number``: results/confirmatory for the first."""
    return CONFIRM_ROOT if number == 1 else Path("results") / f"confirmatory-round{number}"


def selected(regs: Mapping[str, Any], names: Sequence[str], number: int = 1) -> dict[str, tuple]:
    """``{suite: (paper, block, run)}`` of ``names`` (all planned runs when empty), in the
    registers' order, each run as round ``number`` runs it."""
    from harness.experiments.confirm_plan import plans

    try:
        planned = plans(regs, number)
    except ValueError as exc:
        raise ConfirmError(str(exc)) from None
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


def _csv_shas(path: Path) -> set[str]:
    import pandas as pd

    try:
        return set(pd.read_csv(path, usecols=["git_sha"])["git_sha"].astype(str))
    except (ValueError, KeyError, OSError) as exc:
        raise ConfirmError(
            f"{path} is not a runs.csv of this project ({exc}); restore it from git"
        ) from None


def check_round_commit(root: Path, suites: Sequence[str], head: str) -> None:
    """:class:`ConfirmError` when a committed ``runs.csv`` of the round under ``root`` was
    made at another commit than ``head``: every suite of a round at one commit."""
    for suite in suites:
        path = root / suite / "runs.csv"
        other = sorted(_csv_shas(path) - {head}) if path.is_file() else []
        if other:
            raise ConfirmError(
                f"{path} was made at commit {other[0][:12]}, this checkout is "
                f"{head[:12]}; run the rest of the round from that commit (git worktree "
                f"add ../pin {other[0][:12]}) so that one commit decides its verdicts"
            )


def check_capability(rnd) -> None:
    """:class:`ConfirmError` when torch's CPU kernels are not the ones round ``rnd`` names."""
    want = getattr(rnd, "cpu_capability", None)
    if want is None:
        return
    import torch

    have = torch.backends.cpu.get_cpu_capability()
    if have != want:
        raise ConfirmError(
            f"round {rnd.number} runs on torch's {want} CPU kernels, this process has "
            f"{have}: start it with ATEN_CPU_CAPABILITY={want.lower()}"
        )


def finished(suite: str, root: Path) -> bool:
    """Whether ``root/suite`` holds a reported run (its ``runs.csv``) and no storage to
    resume: the run was reported from a storage that is gone (an earlier session's), so it is
    done and is not trained again over its committed records."""
    out = root / suite
    return (out / "runs.csv").is_file() and not (out / "runs.sqlite3").is_file()


def where(suite: str, root: Path) -> str:
    """Where the suite's run stands, in words: finished (at which commits), resumable, or
    not started."""
    out = root / suite
    if finished(suite, root):
        return f"finished at {', '.join(s[:12] for s in sorted(_csv_shas(out / 'runs.csv')))}"
    if (out / "runs.sqlite3").is_file():
        return "started (its storage is here: resumes)"
    return "not started"


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

    number = getattr(args, "round", 1)
    regs = load_registers()
    chosen = selected(regs, args.suites or [], number)
    root = round_root(number)
    if args.list:
        for suite, (paper, _block, run) in chosen.items():
            print(
                f"{suite} ({paper}): round {number}, {run.seeds.count} seeds "
                f"{run.seeds.first}..{run.seeds.first + run.seeds.count - 1}, test_pool "
                f"{run.test_pool}"
                + (f", set {run.set}" if run.set else "")
                + f"; {where(suite, root)}"
                + "\n  "
                + shlex.join(["otransfer", *run_args(suite, run, args.workers, root)])
            )
        return 0
    if args.report:
        have = {
            s: r
            for s, r in chosen.items()
            if (root / s / "runs.sqlite3").is_file() or (root / s / "runs.csv").is_file()
        }
        if not have:
            raise ConfirmError(
                f"no confirmatory records yet under {root}/: run `otransfer confirm"
                + (f" --round {number}`" if number > 1 else "`")
                + " first"
            )
        codes = [run_cli(report_args(s, r[2], root) + ["--quiet"]) for s, r in have.items()]
        return max(codes)
    head = check_clean()
    if number > 1:
        for block in {id(r[1]): r[1] for r in chosen.values()}.values():
            check_capability(block.round(number))
        check_round_commit(root, list(selected(regs, [], number)), head)
    for suite in chosen:
        check_commit(suite, storage_of(suite, root), head)
    todo = {s: r for s, r in chosen.items() if not finished(s, root)}
    for suite in [s for s in chosen if s not in todo]:
        print(
            f"otransfer confirm: {suite} is finished ({root / suite / 'runs.csv'}, its "
            "storage gone): skipped; move that folder away to run it again",
            flush=True,
        )
    codes = [0]
    for suite, (_, _, run) in todo.items():
        print(f"otransfer confirm: {suite} round {number} at {head[:12]}", flush=True)
        extra = ["--no-progress"] if args.no_progress else []
        codes.append(run_cli(run_args(suite, run, args.workers, root, extra)))
    return max(codes)
