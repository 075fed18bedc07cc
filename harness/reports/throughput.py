"""Jobs per CPU-second, one model at a time against seeds batched (``otransfer bench
throughput``).

For each of li2020_table2-cpu, li2020_table4-cpu and lohit2020_table1-cpu, one slice of a student
stage (the regularizers and grid points in :data:`SLICES`, ``--seeds`` seeds, the stage's
epochs/steps shortened as SLICES says so that the old way fits in minutes) is run twice through
:func:`harness.experiments.runner.run_suite` on fresh storages: ``batch=False`` (the old way)
and ``batch=True``, in this one process, so both see the same machine load. Teachers are
trained first (not timed) and their weights shared. Prints and writes jobs per CPU-second
(``time.process_time``: every thread of this process) for each way, and their ratio.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

#: suite -> (stage, regularizer specs kept, grid overrides, train overrides of the stage): the
#: stage's own grid (seeds x grid points train as one group, as in a twin's run; KD's tau kept
#: at 4), its epochs/steps shortened so that the old way fits in minutes
SLICES = {
    "li2020_table2-cpu": (
        "student_LM_digits",
        ["none", "kd", "omega_u", "omega_p"],
        {"alpha": [1.0e-3, 1.0e-2, 1.0e-1, 1.0, 10.0], "kd.tau": [4]},
        {"epochs": 10},
    ),
    "li2020_table4-cpu": (
        "batch_64",
        ["l2", "l2sp", "omega_p"],
        {"alpha": [1.0e-3, 1.0e-2, 1.0e-1]},
        {"steps": 150},
    ),
    "lohit2020_table1-cpu": (
        "student_C",
        ["none", "kd", "ot_samples_ipot"],
        {"ot_samples_ipot.alpha": [0.9, 1.0], "ot_samples_remd.alpha": [0.9, 1.0]},
        {"epochs": 10},
    ),
}


def _overrides(suite: str, seeds: int) -> list[str]:
    stage, _, grid, train = SLICES[suite]
    out = [f"seeds={list(range(seeds))}"]
    out += [f"stages.{stage}.grid.{k}={v}" for k, v in grid.items()]
    out += [f"stages.{stage}.train.{k}={v}" for k, v in train.items()]
    return out


def _slice(suite: str, overrides: list[str]):
    from harness.experiments.suite import PRETRAINED, expand, load_suite

    def _deps(job) -> list[str]:  # the jobs whose weights ``job`` loads
        return [
            job.config[r]
            for r in ("teacher", "init")
            if job.config.get(r) and job.config[r] != PRETRAINED
        ]

    stage, specs, _, _ = SLICES[suite]
    jobs = expand(load_suite(suite, overrides))
    students = [j for j in jobs if j.stage == stage and j.regularizer in specs]
    by_key = {j.key: j for j in jobs}
    teachers = {d: by_key[d] for j in students for d in _deps(j)}
    deeper = {d: by_key[d] for t in teachers.values() for d in _deps(t)}
    return students, [*deeper.values(), *teachers.values()]


def _timed(suite, overrides, jobs, root: Path, batch: bool) -> float:
    from harness.experiments.runner import run_suite

    t0 = time.process_time()
    summary = run_suite(
        suite,
        overrides=overrides,
        jobs=jobs,
        results_root=root,
        progress=False,
        log=None,
        batch=batch,
    )
    spent = time.process_time() - t0
    if summary.completed != len(jobs):
        raise SystemExit(f"{suite}: {summary.failed} failed: {summary.failures[:2]}")
    return spent


def bench(suite: str, seeds: int, tmp: Path) -> dict:
    overrides = _overrides(suite, seeds)
    students, teachers = _slice(suite, overrides)
    from harness.experiments.runner import run_suite

    base = tmp / "teachers"
    run_suite(
        suite, overrides=overrides, jobs=teachers, results_root=base, progress=False, log=None
    )
    row = {"suite": suite, "jobs": len(students)}
    for way, batch in (("one at a time", False), ("batched", True)):
        root = tmp / way.replace(" ", "_")
        # the teachers' records and weights both: a student trusts only recorded weights
        shutil.copytree(base / suite, root / suite, dirs_exist_ok=True)
        row[way] = _timed(suite, overrides, students, root, batch)
    row["ratio"] = row["one at a time"] / row["batched"]
    return row


def run(suites: list[str], seeds: int, out: Path | None, say=print) -> list[dict]:
    """Bench ``suites`` (keys of :data:`SLICES`) in this process; write ``out`` (markdown)."""
    unknown = sorted(set(suites) - set(SLICES))
    if unknown:
        raise ValueError(
            f"no throughput slice for {', '.join(unknown)}: choose among {', '.join(SLICES)}"
        )
    if seeds < 2:
        raise ValueError(f"--seeds {seeds}: batching needs at least 2 seeds")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for suite in suites:
            r = bench(suite, seeds, Path(tmp) / suite)
            rows.append(r)
            say(
                f"{suite}: {r['jobs']} jobs: one at a time {r['jobs'] / r['one at a time']:.3f}"
                f" jobs/CPU-s, batched {r['jobs'] / r['batched']:.3f} jobs/CPU-s, "
                f"ratio {r['ratio']:.1f}x"
            )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown(rows, seeds))
    return rows


def markdown(rows: list[dict], seeds: int) -> str:
    """The table of :func:`run`'s rows."""
    lines = [
        "# Throughput: seeds batched against one model at a time",
        "",
        f"Command: `OMP_NUM_THREADS=1 otransfer bench throughput --seeds {seeds}` "
        f"(both ways in one process, one after the other; CPU time of every thread)",
        "",
        "| suite | slice | jobs | one at a time (jobs/CPU-s) | batched (jobs/CPU-s) | ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        stage, specs, grid, train = SLICES[r["suite"]]
        what = f"{stage}: {', '.join(specs)}; {grid}; {train}"
        lines.append(
            f"| {r['suite']} | {what} | {r['jobs']} | "
            f"{r['jobs'] / r['one at a time']:.3f} | {r['jobs'] / r['batched']:.3f} | "
            f"{r['ratio']:.1f}x |"
        )
    return "\n".join(lines) + "\n"
