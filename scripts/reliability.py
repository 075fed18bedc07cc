"""Reliability figures of the many-workers runner: load, faults, bad input.

    python scripts/reliability.py load      --storage URL [--workers 4] [--suite load-40]
    python scripts/reliability.py faults    --storage URL [--workers 4] [--every 6]
    python scripts/reliability.py bad-input --storage URL
    python scripts/reliability.py claim-path --storage URL [--jobs 1000] [--workers 2]

Each writes ``results/reliability/<what>.md`` (the command, the machine, the numbers) and prints
it. ``load`` runs the suite with 1 worker, then with N, each on a fresh study (the suite renamed
``<suite>-<what>-<n>-<random>``); ``faults`` kills a random worker with SIGKILL every
``--every`` seconds and starts a new one in its place until every job is recorded; ``bad-input``
feeds the CLI broken suites, an unknown solver, a NaN-producing alpha and an unreachable
storage, and checks that every record finished before is still there afterwards.
``claim-path`` times what a worker does around each job, not the job: a synthetic suite of
``--jobs`` queued jobs whose training is replaced by a no-op, run by 1 and then N workers, each
storage operation of the runner (choosing and claiming the next job, starting the record,
moving the claim to ``recording``, writing the record, closing the claim) timed per call.

Counts come from the storage: a job is *lost* when it has no completed record, *duplicated*
when it has more than one.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "reliability"


def _renamed(suite: str, tag: str, tmp: Path) -> tuple[Path, str]:
    """A copy of ``suite`` under a fresh name (a fresh study in the storage)."""
    from harness.experiments.suite import load_suite

    s = load_suite(suite)
    name = f"{s.name}-{tag}-{uuid.uuid4().hex[:6]}"
    text = Path(s.path).read_text().replace(f"name: {s.name}", f"name: {name}", 1)
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    return path, name


def _counts(storage: str, name: str, keys: set[str]) -> dict[str, int]:
    import optuna

    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    done = collections.Counter(
        t.user_attrs.get("key")
        for t in trials
        if t.state.name == "COMPLETE" and t.user_attrs.get("status") == "completed"
    )
    return {
        "jobs": len(keys),
        "recorded": sum(1 for k in keys if done[k] >= 1),
        "lost": sum(1 for k in keys if done[k] == 0),
        "duplicated": sum(1 for k in keys if done[k] > 1),
        "failed attempts": sum(1 for t in trials if t.state.name == "FAIL"),
        "records": len(trials),
    }


def _worker(path: Path, storage: str, results: Path, log, extra=()) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "worker",
        str(path),
        "--storage",
        storage,
        "--results",
        str(results),
        "--no-progress",
        *extra,
    ]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _keys(path: Path) -> set[str]:
    from harness.experiments.suite import expand, load_suite

    return {j.key for j in expand(load_suite(path))}


def _machine() -> str:
    return (
        f"{platform.node()}, {os.cpu_count()} CPU cores, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def _write(what: str, lines: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    text = "\n".join(
        [
            f"# Reliability: {what}",
            "",
            f"`{shlex.join(['python', 'scripts/reliability.py', *sys.argv[1:]])}` "
            f"on {_machine()}, {time.strftime('%Y-%m-%d')}.",
            "",
            *lines,
            "",
        ]
    )
    (OUT / f"{what}.md").write_text(text)
    print(text)


def load(args) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in sorted({1, 2, args.workers}):  # 2: this machine's core count
            path, name = _renamed(args.suite, f"load{n}", tmp)
            logs = [open(tmp / f"{name}-{i}.log", "w") for i in range(n)]
            t0 = time.perf_counter()
            procs = [_worker(path, args.storage, tmp / "results", logs[i]) for i in range(n)]
            codes = [p.wait() for p in procs]
            wall = time.perf_counter() - t0
            c = _counts(args.storage, name, _keys(path))
            rows.append((n, wall, codes, c))
    base = rows[0][1]
    lines = [
        "| workers | wall time (s) | jobs/min | speed-up vs 1 | jobs | recorded | lost "
        "| duplicated | failed attempts | exit codes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, wall, codes, c in rows:
        lines.append(
            f"| {n} | {wall:.1f} | {60 * c['recorded'] / wall:.0f} | {base / wall:.2f}× "
            f"| {c['jobs']} | {c['recorded']} "
            f"| {c['lost']} | {c['duplicated']} | {c['failed attempts']} | {codes} |"
        )
    lines += [
        "",
        f"Suite `{args.suite}`, storage `{_redact(args.storage)}`; each worker with "
        "OMP_NUM_THREADS=1. The speed-up is bounded by the machine's cores: workers "
        "beyond the core count share them.",
    ]
    _write("load", lines)


def faults(args) -> None:
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path, name = _renamed(args.suite, "faults", tmp)
        keys = _keys(path)
        log = open(tmp / "workers.log", "w")
        extra = ["--heartbeat", "2", "--stale-after", "20"]
        procs = [
            _worker(path, args.storage, tmp / "results", log, extra) for _ in range(args.workers)
        ]
        kills, t0 = 0, time.perf_counter()
        deadline = t0 + args.timeout
        next_kill = t0 + args.every
        while time.perf_counter() < deadline:
            live = [p for p in procs if p.poll() is None]
            if not live:
                break
            if time.perf_counter() >= next_kill:
                victim = rng.choice(live)
                victim.kill()  # SIGKILL: nothing is released, nothing is recorded
                victim.wait()
                kills += 1
                procs.append(_worker(path, args.storage, tmp / "results", log, extra))
                next_kill += args.every
            time.sleep(0.2)
        for p in procs:  # after the deadline: whoever is left is told to stop
            if p.poll() is None:
                p.terminate()
                p.wait()
        wall = time.perf_counter() - t0
        # a last pass: what the killings left undone, finished by `resume` (it must be nothing)
        resume = subprocess.run(
            [
                sys.executable,
                "-m",
                "harness.cli",
                "resume",
                str(path),
                "--storage",
                args.storage,
                "--results",
                str(tmp / "results"),
                "--no-progress",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        last = [ln for ln in resume.stdout.splitlines() if " jobs, " in ln]
        c = _counts(args.storage, name, keys)
        worker_log = (tmp / "workers.log").read_text()
    lines = [
        f"{args.workers} workers on `{args.suite}` ({len(keys)} jobs), one killed with "
        f"SIGKILL every {args.every:g} s and replaced; heartbeat 2 s, stale-after 20 s.",
        "",
        "| wall time (s) | kills | jobs | recorded | lost | duplicated | failed attempts "
        "(killed mid-job) | take-overs logged |",
        "|---|---|---|---|---|---|---|---|",
        f"| {wall:.1f} | {kills} | {c['jobs']} | {c['recorded']} | {c['lost']} "
        f"| {c['duplicated']} | {c['failed attempts']} "
        f"| {worker_log.count('taken over from')} |",
        "",
        f"Then `otransfer resume`: {last[-1].strip() if last else resume.stdout[-300:]}",
    ]
    _write("faults", lines)


def _redact(url: str) -> str:
    from harness.experiments.records import redact as redact

    return redact(url)


def bad_input(args) -> None:
    from harness.experiments.records import records_frame

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path, name = _renamed("mini", "bad", tmp)
        # without mini's search block: the cases below replace the regularizer it tunes
        path.write_text(path.read_text().split("\nsearch:")[0])
        results = tmp / "results"
        quick_name = name + "-quick"

        def cli(*argv):
            out = subprocess.run(
                [sys.executable, "-m", "harness.cli", *argv],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=900,
            )
            lines = (out.stderr + out.stdout).splitlines()
            err = [
                ln for ln in lines if ln.startswith("otransfer") or "FAILED" in ln or "Error" in ln
            ]
            ran = [ln for ln in lines if "students digits omega_p" in ln]
            return out.returncode, (err or ran or lines[-1:] or [""])[0]

        def records():
            df = records_frame(args.storage, quick_name)
            return {(k, t) for k, t in zip(df["key"], df["test_accuracy"], strict=True)}

        base = ["--storage", args.storage, "--results", str(results), "--no-progress"]
        code, _ = cli("run", str(path), "--quick", *base)
        before = records()
        cases = []
        broken = tmp / "broken.yaml"
        broken.write_text(path.read_text().replace("stages:", "stages: [", 1))
        cases.append(("malformed YAML", cli("run", str(broken), "--quick", *base)))
        unknown_key = tmp / "unknown_key.yaml"
        unknown_key.write_text(
            path.read_text().replace("    dataset: digits\n", "    datset: digits\n", 1)
        )
        cases.append(("misspelt key", cli("run", str(unknown_key), "--quick", *base)))
        cases.append(
            (
                "unknown solver",
                cli(
                    "run",
                    str(path),
                    "--quick",
                    *base,
                    "--set",
                    "stages.students.regularizers=[{omega_p: {taps: [penultimate], plan: nosuch}}]",
                ),
            )
        )
        for alpha in ("1.0e+6", "1.0e+30"):
            cases.append(
                (
                    f"alpha = {alpha}",
                    cli(
                        "run",
                        str(path),
                        "--quick",
                        *base,
                        "--set",
                        f"stages.students.regularizers=[{{omega_p: {{taps: [penultimate], "
                        f"alpha: {alpha}}}}}]",
                    ),
                )
            )
        cases.append(
            (
                "unreachable storage",
                cli(
                    "run",
                    str(path),
                    "--quick",
                    "--storage",
                    "postgresql+psycopg2://otransfer:pw@127.0.0.1:1/none",
                    "--results",
                    str(results),
                ),
            )
        )
        after = records()
    lines = [
        f"First `otransfer run` of a copy of `mini` --quick (exit {code}): "
        f"{len(before)} finished records. Then each bad input, on the same storage:",
        "",
        "| input | exit | what the user reads |",
        "|---|---|---|",
    ]
    for what, (c, msg) in cases:
        msg = msg if isinstance(msg, str) else " ".join(msg)
        lines.append(f"| {what} | {c} | {msg.replace('|', '/')[:400]} |")
    lost = before - after
    lines += [
        "",
        f"Finished records before: {len(before)}; after: {len(after)}; "
        f"lost or changed: {len(lost)}.",
    ]
    _write("bad-input", lines)


# ---- claim-path cost: the runner's storage operations around a no-op job
_OPS = {  # the runner's `what` of each storage call, by prefix (the first that matches)
    "choosing the next job": "pick (read claims + claim)",
    "starting the record": "start record (trial + attrs)",
    "claiming the record": "claim -> recording",
    "claiming ": "claim a batch sibling",
    "recording the result": "finish record (attrs + value + state)",
    "closing the claim": "claim -> done",
}
_OTHER = "other storage calls"


def _synthetic_suite(tmp: Path, jobs: int, tag: str) -> tuple[Path, str]:
    name = f"claimpath-{tag}-{uuid.uuid4().hex[:6]}"
    path = tmp / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ndescription: {jobs} no-op jobs for the claim-path timing\n"
        f"seeds: [{', '.join(str(i) for i in range(jobs))}]\n"
        "stages:\n  only:\n    model: mlp\n    dataset: digits\n"
        "    train: {epochs: 1, batch_size: 64, lr: 0.05}\n"
    )
    return path, name


def claim_worker(args) -> None:
    """One worker over the synthetic suite with ``run_job`` a no-op; writes its timings."""
    import json

    from harness.experiments import records, runner

    times: dict[str, list[float]] = collections.defaultdict(list)
    plain = records.retrying

    def timed(fn, what, storage, *a, **kw):
        op = next((v for k, v in _OPS.items() if what.startswith(k)), _OTHER)
        t = time.perf_counter()
        try:
            return plain(fn, what, storage, *a, **kw)
        finally:
            times[op].append(time.perf_counter() - t)

    def no_op(job, by_key, artefacts, *a, **kw):  # a finished job's metrics, as run_job's
        Path(artefacts).mkdir(parents=True, exist_ok=True)
        return {
            "status": "completed",
            "reason": None,
            "val_accuracy": 0.5,
            "best_val_accuracy": 0.5,
            "test_accuracy": 0.5,
            "wall_time": 0.0,
            "epochs_completed": 1,
            "final_losses": {"ce": 1.0, "total": 1.0},
            "resumed_from_epoch": None,
            "epochs": [{"epoch": 1, "train/ce": 1.0, "val_accuracy": 0.5}],
        }

    records.retrying = timed
    runner.run_job = no_op
    t0 = time.perf_counter()
    summary = runner.run_suite(
        args.suite,
        storage=args.storage,
        worker=True,
        progress=False,
        log=None,
        results_root=args.results,
        poll=0.05,
    )
    wall = time.perf_counter() - t0
    Path(args.out).write_text(
        json.dumps({"wall": wall, "completed": summary.completed, "times": times})
    )


def claim_path(args) -> None:
    import json

    import numpy as np

    rows, per_op = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in sorted({1, args.workers}):
            path, name = _synthetic_suite(tmp, args.jobs, f"w{n}")
            outs = [tmp / f"{name}-{i}.json" for i in range(n)]
            logs = [open(tmp / f"{name}-{i}.log", "w") for i in range(n)]
            t0 = time.perf_counter()
            procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "claim-worker",
                        "--suite",
                        str(path),
                        "--storage",
                        args.storage,
                        "--results",
                        str(tmp / "results"),
                        "--out",
                        str(out),
                    ],
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "OMP_NUM_THREADS": "1"},
                )
                for out, log in zip(outs, logs, strict=True)
            ]
            codes = [p.wait() for p in procs]
            wall = time.perf_counter() - t0
            if any(codes):
                for log in logs:
                    log.close()
                raise SystemExit(
                    f"claim-path: a worker failed (exit codes {codes}):\n"
                    + (tmp / f"{name}-0.log").read_text()[-3000:]
                )
            res = [json.loads(o.read_text()) for o in outs]
            c = _counts(args.storage, name, _keys(path))
            if c["recorded"] != args.jobs:  # the no-op failed: not a timing of the claim path
                raise SystemExit(
                    f"claim-path: {args.jobs - c['recorded']} of {args.jobs} no-op jobs were "
                    f"not recorded with {n} worker(s) (see their trials' reason in study "
                    f"{name}); the timing would not be of the claim path"
                )
            times = collections.defaultdict(list)
            for r in res:
                for op, ts in r["times"].items():
                    times[op].extend(ts)
            in_run = max(r["wall"] for r in res)
            per_job = sum(sum(ts) for ts in times.values()) / max(c["recorded"], 1)
            rows.append((n, wall, in_run, per_job, c, codes))
            per_op[n] = times
            if n == 1:  # how choosing the next job scales with the queue left
                picks = res[0]["times"][_OPS["choosing the next job"]]
                first, last = picks[:100], picks[-101:-1]  # the very last pick finds nothing
    lines = [
        f"{args.jobs} queued no-op jobs (one stage, `{args.jobs}` seeds), storage "
        f"`{_redact(args.storage)}`. Each worker is `run_suite(worker=True)` with the "
        "training replaced by a no-op that returns a finished job's metrics, so what is "
        "timed is the claim path alone: every storage operation the runner makes around "
        "a job, per call (`records.retrying` wrapped).",
        "",
        "| workers | wall incl. start-up (s) | in run_suite (s) | jobs/min | storage ms "
        "per job (all workers' calls) | recorded | lost | duplicated | exit codes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, wall, in_run, per_job, c, codes in rows:
        lines.append(
            f"| {n} | {wall:.1f} | {in_run:.1f} | {60 * c['recorded'] / in_run:,.0f} "
            f"| {1e3 * per_job:.1f} | {c['recorded']} | {c['lost']} "
            f"| {c['duplicated']} | {codes} |"
        )
    for n, times in per_op.items():
        lines += [
            "",
            f"Per call, {n} worker{'s' if n > 1 else ''}:",
            "",
            "| operation | calls | median ms | p95 ms | max ms | mean ms |",
            "|---|---|---|---|---|---|",
        ]
        for op in [*_OPS.values(), _OTHER]:
            ts = 1e3 * np.asarray(times.get(op, [np.nan]))
            lines.append(
                f"| {op} | {len(times.get(op, []))} | {np.median(ts):.2f} "
                f"| {np.percentile(ts, 95):.2f} | {ts.max():.2f} | {ts.mean():.2f} |"
            )
    lines += [
        "",
        f"Choosing the next job, 1 worker: median {1e3 * np.median(first):.2f} ms over "
        f"the first 100 picks ({args.jobs} queued) and {1e3 * np.median(last):.2f} ms over "
        "the last 100 (100 queued, the rest done): the pick reads the suite's claims and "
        "scans the jobs left.",
        "",
        "The throwaway PostgreSQL of `scripts/pg-throwaway` runs with `fsync=off`; a "
        "server that syncs every commit adds its commit latency to each writing "
        "transaction.",
    ]
    _write("claim-path", lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["load", "faults", "bad-input", "claim-path", "claim-worker"])
    p.add_argument("--storage", required=True, help="storage URL (PostgreSQL for the figures)")
    p.add_argument("--suite", default="load-40")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--every", type=float, default=6.0, help="faults: seconds between kills")
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1000, help="claim-path: jobs queued")
    p.add_argument("--results", help=argparse.SUPPRESS)  # claim-worker's
    p.add_argument("--out", help=argparse.SUPPRESS)  # claim-worker's
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    {
        "load": load,
        "faults": faults,
        "bad-input": bad_input,
        "claim-path": claim_path,
        "claim-worker": claim_worker,
    }[args.what](args)


if __name__ == "__main__":
    main()
