"""Where the batched engine's time goes: cProfile of one ``otransfer bench throughput`` slice.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python scripts/profile_batched.py li2020_table2-cpu \\
        [--spec none,kd,omega_u] [--seeds 8] [--out FILE]

The slice's teachers are trained first, unprofiled; then its students run batched (as
``otransfer run`` does) through :func:`harness.experiments.runner.run_suite` under cProfile,
and the cumulative time of each function is sorted into the rows of :data:`ROWS` (nested):
the records (Optuna storage), the batched training (teacher forward, regularizer terms and
their OT solves, backward and step, data), evaluation. ``--spec`` keeps some of the slice's
regularizers (as scripts/throughput_group.py does). The one-job profile is
scripts/profile_jobs.py; both write markdown to ``--out`` (results/throughput/).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
from pathlib import Path

from profile_jobs import cumulative

#: row -> (file part, function name), as in scripts/profile_jobs.py
ROWS = [
    ("whole slice, batched (run_suite)", ("runner.py", "run_suite")),
    ("  records: start, finish (Optuna storage)", ("runner.py", "store")),
    ("  batched training (train_batched)", ("batched.py", "train_batched")),
    ("    data loading (batches)", ("dataloader.py", "__next__")),
    ("    training steps", ("batched.py", "train_step")),
    ("      teacher forward", ("batched.py", "teacher_forward")),
    ("      regularizer terms", ("batched.py", "loss_terms")),
    ("        OT: solve (registry wrapper + routine)", ("_api.py", "solve")),
    ("          ot.emd (POT network simplex)", ("_network_simplex.py", "emd")),
    ("          lap.lapjv", ("_exact.py", "assignment")),
    ("      backward + clip + SGD step", ("batched.py", "optimizer_step")),
    ("    end of epoch (validation)", ("batched.py", "end_epoch")),
    ("    test evaluation + results", ("batched.py", "results")),
]


def profile(suite: str, spec: str | None, seeds: int) -> tuple[str, float, dict[str, float]]:
    from harness.experiments.runner import run_suite
    from harness.reports import throughput as tp

    stage, specs, grid, train = tp.SLICES[suite]
    kept = spec.split(",") if spec else specs
    unknown = sorted(set(kept) - set(specs))
    if unknown:
        raise SystemExit(f"{', '.join(unknown)} not in the slice's regularizers {specs}")
    tp.SLICES[suite] = (stage, kept, grid, train)
    overrides = tp._overrides(suite, seeds)
    students, teachers = tp._slice(suite, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        base, root = Path(tmp) / "teachers", Path(tmp) / "batched"
        run_suite(
            suite, overrides=overrides, jobs=teachers, results_root=base, progress=False, log=None
        )
        shutil.copytree(base / suite, root / suite)
        prof = cProfile.Profile()
        t0 = time.process_time()
        prof.enable()
        tp._timed(suite, overrides, students, root, batch=True)
        prof.disable()
        spent = time.process_time() - t0
    label = f"{suite} {stage}: {', '.join(kept)}; {len(students)} jobs ({seeds} seeds)"
    return label, spent, cumulative(pstats.Stats(prof), ROWS)


def main() -> None:
    from harness.reports import throughput as tp

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", choices=sorted(tp.SLICES))
    ap.add_argument("--spec", help="regularizers of the slice to keep, comma-separated")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--out", type=Path, help="write the table (markdown) here as well")
    a = ap.parse_args()
    label, spent, rows = profile(a.suite, a.spec, a.seeds)
    whole = next(iter(rows.values()))
    lines = [
        f"## {label}",
        "",
        f"CPU time of the batched way (profiled): {spent:.2f} s; shares of the profiled",
        "time of run_suite (the first row)",
        "",
        "| where (nested rows are inside the row above) | s | share |",
        "|---|---:|---:|",
        *(f"| `{k}` | {v:.2f} | {100 * v / whole:.0f} % |" for k, v in rows.items()),
    ]
    print("\n".join(lines))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
