"""Where a job's time goes: cProfile of one representative job of three CPU twins.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python scripts/profile_jobs.py \\
        [--out results/throughput/profile.md]

For each suite the job's teacher (and init) jobs are trained first, unprofiled, into a
temporary results folder; then the job itself runs under cProfile through
:func:`harness.experiments.train_job.run_job`, as ``otransfer run`` would run it. The cumulative
time of each function is sorted into buckets (forward/backward, OT solve, solver wrapper,
data loading, evaluation, storage) by the file and name of the frames (nested rows).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

#: (suite, stage, regularizer spec, grid point (or None: the first)) of the profiled jobs
JOBS = [
    ("li2020_table2-cpu", "student_LM_digits", "omega_p", {"alpha": 0.1}),
    ("li2020_table4-cpu", "batch_64", "omega_p", {"alpha": 0.01}),
    ("lohit2020_table1-cpu", "student_C", "ot_samples_ipot", {"ot_samples_ipot.alpha": 0.9}),
]

#: row -> (file part, function name): inclusive (cumulative) time of that function; rows nest
#: (the OT solve is inside the regularizer, which is inside the training step)
ROWS = [
    ("whole job (run_job)", ("train_job.py", "run_job")),
    ("  data: load the datasets", ("train_job.py", "load_datasets")),
    ("  models: build student, load teacher", ("train_job.py", "load_teacher")),
    ("  train()", ("loop.py", "train")),
    ("    data loading (batches)", ("dataloader.py", "__next__")),
    ("    training steps", ("loop.py", "train_step")),
    ("      student forward (+ taps)", ("module.py", "_wrapped_call_impl@train_step")),
    ("      teacher forward", ("loop.py", "context")),
    ("      regularizer terms", ("loop.py", "loss_terms")),
    ("        OT: solve_sample (wrapper + solver)", ("solvers", "solve_sample")),
    ("        OT: solve (registry wrapper)", ("_api.py", "solve")),
    ("      backward + clip + SGD step", ("loop.py", "optimizer_step")),
    ("        backward", ("autograd", "backward")),
    ("        SGD step", ("sgd.py", "step")),
    ("      logging (per-step scalars)", ("loop.py", "log_step")),
    ("    end of epoch (validation)", ("loop.py", "end_epoch")),
    ("    checkpoint (torch.save)", ("loop.py", "save_checkpoint")),
    ("    test evaluation + result", ("loop.py", "result")),
]


def _job(suite_name: str, stage: str, spec: str, point):
    from harness.experiments.suite import expand, load_suite

    jobs = expand(load_suite(suite_name))
    for j in jobs:
        params = j.config["regularizer_params"]
        if (
            j.stage == stage
            and j.regularizer == spec
            and j.seed == 0
            and all(params.get(k.split(".")[-1], params.get(k)) == v for k, v in point.items())
        ):
            return j, {x.key: x for x in jobs}
    raise SystemExit(f"no job {suite_name}/{stage}/{spec} {point}")


def _train_deps(job, by_key, artefacts: Path) -> None:
    from harness.experiments.train_job import job_deps, run_job

    for key in job_deps(job):
        dep = by_key[key]
        _train_deps(dep, by_key, artefacts)
        if not (artefacts / f"{key}.pt").is_file():
            run_job(dep, by_key, artefacts, progress=False, save=True)


def cumulative(stats: pstats.Stats, rows=None) -> dict[str, float]:
    """Seconds per row of ``rows`` (default :data:`ROWS`; the function's cumulative time;
    ``name@caller``: only the calls from that caller)."""
    out: dict[str, float] = {}
    for label, (part, name) in rows or ROWS:
        name, _, caller = name.partition("@")
        total = 0.0
        for (file, _, fn), (_, _, _, cum, callers) in stats.stats.items():
            if fn != name or part not in file:
                continue
            if caller:
                total += sum(v[3] for (cf, _, cn), v in callers.items() if cn == caller)
            else:
                total += cum
        out[label] = total
    return out


def profile(
    suite_name: str, stage: str, spec: str, point, root: Path
) -> tuple[str, float, dict, str]:
    from harness.experiments.train_job import run_job

    job, by_key = _job(suite_name, stage, spec, point)
    artefacts = root / suite_name / "artefacts"
    _train_deps(job, by_key, artefacts)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    metrics = run_job(job, by_key, artefacts, progress=False, save=False)
    prof.disable()
    wall = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    buckets = cumulative(stats)
    import io

    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
    top = "\n".join(line for line in buf.getvalue().splitlines()[6:] if line.strip())
    label = f"{suite_name} {stage} {spec} {point} seed 0 (test {metrics['test_accuracy']:.3f})"
    return label, wall, buckets, top


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/throughput/profile.md")
    args = ap.parse_args()
    lines = [
        "# Where a job's time goes (cProfile, OMP_NUM_THREADS=1)",
        "",
        "Command: `PYTHONPATH=$PWD OMP_NUM_THREADS=1 python scripts/profile_jobs.py`",
        "",
        "Each row is the cumulative time of one function (cProfile), rows indented under the",
        "row they run inside; what a row's children do not cover is that row's own Python.",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for suite_name, stage, spec, point in JOBS:
            label, wall, buckets, top = profile(suite_name, stage, spec, point, Path(tmp))
            lines += [
                f"## {label}",
                "",
                f"wall time (profiled): {wall:.2f} s",
                "",
                "| where (nested rows are inside the row above) | s | share |",
                "|---|---:|---:|",
            ]
            for name, _ in ROWS:
                s = buckets.get(name, 0.0)
                lines.append(f"| `{name}` | {s:.2f} | {100 * s / wall:.0f} % |")
            lines += ["", "Top functions by own time:", "", "```", top, "```", ""]
            print("\n".join(lines[-30:]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
