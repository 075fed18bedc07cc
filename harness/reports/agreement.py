"""Batched against one model at a time on a whole twin: per-job accuracies and verdicts
(``otransfer bench agreement SUITE``).

The twin is run twice at this commit into two fresh results folders, ``otransfer run --no-batch``
(one model at a time) and ``otransfer run`` (seeds and grid points batched), each in its own
process with the same thread policy. Every job is the same job on both sides (same key: same
config, seed, grid point), so the per-job differences ``d = acc_batched - acc_single`` (accuracy
points) are paired. In float64 the two are equal to round-off (tests/test_batched.py); in float32
the summation order of the batched kernels differs, a trajectory drifts, and ``d`` is noise of the
size of a run-to-run perturbation. The test, declared here before any run:

* primary: the two-sided sign-flip permutation test of ``mean(d) = 0``
  (:func:`scipy.stats.permutation_test`, ``permutation_type="samples"``, 10,000 resamples,
  seeded), and the 95 % percentile bootstrap interval of ``mean(d)``
  (:func:`scipy.stats.bootstrap`);
* equivalence: the batched engine *agrees* when that interval lies inside ``+-MARGIN`` points;
* scale: the standard deviation of ``d`` beside the seed-to-seed standard deviation of the
  one-model runs (median over the cells of a row x column x grid point): ``d`` is noise when its
  spread is not larger than what another seed gives;
* verdicts: the two reports' verdicts on every claim and column, and how many are equal.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["MARGIN", "run_twin", "compare", "markdown"]

#: equivalence margin of the mean per-job difference, accuracy points (declared before the runs)
MARGIN = 0.5


def run_twin(suite: str, root: Path, batch: bool, overrides: list[str] = ()) -> dict:
    """``otransfer run SUITE`` into ``root`` in a child process; its wall and CPU seconds."""
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        suite,
        "--results",
        str(root),
        "--no-progress",
        *[a for o in overrides for a in ("--set", o)],
    ]
    if not batch:
        cmd.append("--no-batch")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(cmd[2:])} failed: {' / '.join(tail)}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "folder": root / suite}


def _runs(folder: Path):
    import pandas as pd

    df = pd.read_csv(folder / "runs.csv")
    return df.set_index("key")


def compare(single: Path, batched: Path, seed: int = 0) -> dict:
    """The paired comparison of two results folders of one twin (module docstring)."""
    import pandas as pd
    from scipy import stats

    a, b = _runs(single), _runs(batched)
    keys = a.index.intersection(b.index)
    if len(keys) < 2:
        raise ValueError(f"{single} and {batched} share {len(keys)} jobs: nothing to pair")
    d = 100 * (b.loc[keys, "test_accuracy"] - a.loc[keys, "test_accuracy"]).to_numpy(float)
    mean = lambda x, axis=-1: np.mean(x, axis=axis)  # noqa: E731
    rng = np.random.default_rng(seed)
    perm = stats.permutation_test(
        (d,),
        mean,
        permutation_type="samples",
        n_resamples=10_000,
        alternative="two-sided",
        random_state=rng,
    )
    boot = stats.bootstrap(
        (d,), mean, n_resamples=10_000, method="percentile", confidence_level=0.95, random_state=rng
    )
    cells = [c for c in ("stage", "table", "task", "method", "regularizer") if c in a.columns]
    seed_sd = (
        a.loc[keys]
        .assign(acc=100 * a.loc[keys, "test_accuracy"])
        .groupby(cells, dropna=False)["acc"]
        .std(ddof=1)
        .dropna()
    )
    lo, hi = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
    out = {
        "n": int(len(d)),
        "identical": int(np.sum(d == 0)),
        "mean": float(d.mean()),
        "lo": lo,
        "hi": hi,
        "p": float(perm.pvalue),
        "sd": float(d.std(ddof=1)),
        "seed_sd": float(seed_sd.median()) if len(seed_sd) else float("nan"),
        "agrees": bool(-MARGIN < lo and hi < MARGIN),
        "only_single": int(len(a.index.difference(b.index))),
        "only_batched": int(len(b.index.difference(a.index))),
    }
    va, vb = (pd.read_csv(f / "verdicts.csv") for f in (single, batched))
    on = [c for c in ("table", "kind", "claim", "task") if c in va.columns]
    both = va.merge(vb, on=on, suffixes=("_single", "_batched"))
    out["verdicts"] = int(len(both))
    out["verdicts_equal"] = int((both["verdict_single"] == both["verdict_batched"]).sum())
    out["verdicts_differ"] = both.loc[
        both["verdict_single"] != both["verdict_batched"],
        [*on, "verdict_single", "verdict_batched"],
    ]
    return out


def markdown(suite: str, timing: dict, res: dict, command: str) -> str:
    """The agreement page of one twin."""
    s, b = timing["single"], timing["batched"]
    lines = [
        f"# {suite}: seeds batched against one model at a time",
        "",
        f"Command: `{command}` (this commit, this machine; each way in its own process)",
        "",
        "| way | wall s | CPU s |",
        "|---|---:|---:|",
        f"| one at a time (`--no-batch`) | {s['wall']:.1f} | {s['cpu']:.1f} |",
        f"| batched | {b['wall']:.1f} | {b['cpu']:.1f} |",
        f"| ratio | {s['wall'] / b['wall']:.2f}x | {s['cpu'] / b['cpu']:.2f}x |",
        "",
        "## Per-job test accuracy, batched - one at a time (points)",
        "",
        f"- jobs paired: {res['n']} (only one way: {res['only_single']} / "
        f"{res['only_batched']}); identical: {res['identical']}",
        f"- mean difference {res['mean']:+.3f}, 95 % bootstrap interval "
        f"[{res['lo']:+.3f}, {res['hi']:+.3f}]; sign-flip permutation p = {res['p']:.3f}",
        f"- sd of the differences {res['sd']:.2f} against a seed-to-seed sd of "
        f"{res['seed_sd']:.2f} (median over cells, one-model runs)",
        f"- equivalence margin +-{MARGIN} points (declared before the runs): "
        f"**{'agrees' if res['agrees'] else 'does not agree'}**",
        "",
        "## Verdicts",
        "",
        f"{res['verdicts_equal']} of {res['verdicts']} claim x column verdicts equal.",
    ]
    if len(res["verdicts_differ"]):
        lines += ["", "Differing:", "", res["verdicts_differ"].to_markdown(index=False)]
    return "\n".join(lines) + "\n"
