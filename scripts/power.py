"""Power calculation for the confirmatory run, from the exploratory CPU twins.

    PYTHONPATH=$PWD python scripts/power.py [--out results/confirmatory]

For every registered premise and claim (claims/*.yaml) x column that a CPU twin has run
(results/<suite>/verdicts.csv): the sd of the paired per-seed differences (inverted from the
95 % t interval), the MDE at the committed n, and the seeds needed for MDE <= min_effect
(harness/reports/power.py). Per suite: the seeds to register by the rule stated in the
output (power.md), and the machine cost. Writes power.csv and power.md.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
from pathlib import Path

import numpy as np

from harness.experiments.register import canonical, entries, load_registers
from harness.reports.power import (
    ALPHA,
    N_CAP,
    POWER,
    mde,
    permutation_floor,
    sd_from_interval,
    seeds_needed,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
FIRST_SEED = 1000
DEFAULT_SPEEDUP = 1.0  # suites the throughput bench did not measure: no batching gain assumed


def _rows(suite: str) -> list[dict]:
    path = RESULTS / suite / "verdicts.csv"
    return list(csv.DictReader(path.open())) if path.exists() else []


def _num(x: str) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def column_rows(regs) -> list[dict]:
    """One row per registered entry x CPU-twin column with an interval."""
    out = []
    for paper, reg in regs.items():
        for fam, kind, e in entries(reg):
            if e is None:
                continue
            for loc in e.cpu_twin:
                want = canonical(loc.as_ or e.comparison)
                found = [
                    r
                    for r in _rows(loc.suite)
                    if canonical(r["claim"]) == want and (not loc.table or r["table"] == loc.table)
                ]
                by_task: dict[str, dict] = {}
                for r in found:  # a suite may write one comparison as premise and claim
                    if r["task"] not in by_task or r["kind"] == kind:
                        by_task[r["task"]] = r
                out.extend(_power_row(paper, fam, kind, e, loc.suite, r) for r in by_task.values())
    return out


def _power_row(paper, fam, kind, e, suite, r) -> dict:
    n, lo, hi = int(_num(r["n"]) if r["n"] else 0), _num(r["ci_low"]), _num(r["ci_high"])
    row = {
        "paper": paper,
        "family": fam.id,
        "family_claims": len(fam.claims),
        "kind": kind,
        "id": e.id,
        "test": e.kind_of_test,
        "suite": suite,
        "task": r["task"],
        "verdict": r["verdict"],
        "n": n,
        "mean_diff": _num(r["mean_diff"]),
        "min_effect": e.min_effect,
        "sd": math.nan,
        "mde_at_n": math.nan,
        "n_needed": None,
    }
    if n >= 2 and math.isfinite(lo) and math.isfinite(hi):
        sd = sd_from_interval(lo, hi, n)  # the verdicts' intervals are in points already
        need = seeds_needed(sd, e.min_effect)
        floor = permutation_floor(len(fam.claims) if kind == "claim" else 1)
        row.update(sd=sd, mde_at_n=mde(sd, n), n_needed=None if need is None else max(need, floor))
    return row


def _speedups() -> tuple[dict[str, float], str]:
    path = RESULTS / "throughput" / "throughput.md"
    if not path.exists():
        return {}, "no results/throughput/throughput.md: speed-up 1.0 assumed everywhere"
    found = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^\| (\S+) \|.*\| ([0-9.]+)x \|$", path.read_text(), flags=re.M)
    }
    return found, (
        "results/throughput/throughput.md (batched / one at a time, jobs per CPU-s, "
        f"--seeds 8): {', '.join(f'{k} {v}x' for k, v in found.items())}; "
        f"other suites: {DEFAULT_SPEEDUP}x (not measured, no gain assumed)"
    )


def _cost(suite: str) -> tuple[int, float]:
    """(committed seeds, CPU-seconds) of the suite's committed jobs (runs.csv wall_time)."""
    path = RESULTS / suite / "runs.csv"
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    seeds = {r["seed"] for r in rows}
    return len(seeds), sum(
        _num(r["wall_time"]) for r in rows if math.isfinite(_num(r["wall_time"]))
    )


def suite_rows(rows: list[dict], speedups: dict[str, float]) -> list[dict]:
    """Per suite, the registered seed count: the rule of :data:`RULE`."""
    out = []
    for suite in sorted({r["suite"] for r in rows}):
        claims = [
            r
            for r in rows
            if r["suite"] == suite and r["kind"] == "claim" and math.isfinite(r["sd"])
        ]
        if not claims:
            continue
        needs = [r["n_needed"] if r["n_needed"] is not None else N_CAP for r in claims]
        floor = permutation_floor(max(r["family_claims"] for r in claims))
        proposed = max(floor, math.ceil(statistics.median(needs)))
        mdes = [mde(r["sd"], proposed) for r in claims]
        over = sum(m > r["min_effect"] for m, r in zip(mdes, claims, strict=True))
        committed, cpu_s = _cost(suite)
        speed = speedups.get(suite, DEFAULT_SPEEDUP)
        hours = cpu_s * proposed / max(committed, 1) / speed / 3600
        out.append(
            {
                "suite": suite,
                "columns": len(claims),
                "committed_seeds": committed,
                "needed_median": statistics.median(needs),
                "needed_p75": float(np.percentile(needs, 75)),
                "needed_max": max(needs),
                "unreachable": sum(r["n_needed"] is None for r in claims),
                "floor": floor,
                "proposed_seeds": proposed,
                "mde_median": statistics.median(mdes),
                "over_min_effect": over,
                "speedup": speed,
                "cpu_hours": hours,
            }
        )
    return out


RULE = f"""\
**The rule (fixed before any confirmatory seed is drawn).** For each registered claim x column
of a suite: sd of the paired per-seed differences from its exploratory 95 % t interval,
`sd = half-width * sqrt(n) / t_(0.975, n-1)`; MDE = the mean difference at which the exact
two-sided one-sample t test (alpha {ALPHA}, noncentral t) has power {POWER}; needed n = the
fewest seeds (2..{N_CAP}) with MDE <= the entry's `min_effect`, raised to the sign-flip floor of
its family, `n >= log2(2 m / {ALPHA})` (m claims, Holm), and counted as {N_CAP} where even
{N_CAP} seeds do not reach it. **The suite's confirmatory seed count is the median of its
claims' needed n (rounded up), and at least the floor of its largest family.** Premises are
listed for information; they do not enter the rule. Seeds: {FIRST_SEED}, {FIRST_SEED + 1}, ...
(fresh: no exploratory run used them), `test_pool: fixed` (harness/zoo/pools.py)."""


def _fmt(x, nd=2):
    if x is None:
        return f">{N_CAP}"
    if isinstance(x, float):
        return "" if math.isnan(x) else f"{x:.{nd}f}"
    return str(x)


def write(out: Path, rows: list[dict], suites: list[dict], speed_note: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keys = list(rows[0])
    with (out / "power.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(
            {k: _fmt(r[k], 4) if isinstance(r[k], float) or r[k] is None else r[k] for k in keys}
            for r in rows
        )
    (out / "power.md").write_text(_markdown(rows, suites, speed_note))


def _markdown(rows, suites, speed_note) -> str:
    lines = [
        "# Confirmatory run: power calculation (issue 22)",
        "",
        "Command: `PYTHONPATH=$PWD python scripts/power.py` (reads claims/*.yaml and the "
        "committed results/<suite>/verdicts.csv and runs.csv; writes this file and "
        "power.csv, one row per registered entry x CPU-twin column).",
        "",
        RULE,
        "",
        "The verdicts' `mean_diff`, `ci_low`, `ci_high` are in accuracy points already "
        "(e.g. mini's `kd > none` +6.7), so no factor 100 is applied.",
        "",
        "Caveats: each sd is estimated from 5-20 exploratory seeds on resampled splits; "
        "the fixed test pool removes the test-set draw from the seed-to-seed variation, so "
        "these sds are likely upper bounds, and noisy ones. An sd of 0 (every seed gave the "
        "same difference, e.g. li2020_table3-cpu) gives MDE 0 and leaves only the "
        "permutation floor. One verdict column can count for two entries when two "
        "families name the same suite row.",
        "",
        f"Machine cost: the suite's committed job wall times (runs.csv `wall_time`, one "
        f"job at a time) x proposed / committed seeds / the batched speed-up. Speed-ups: "
        f"{speed_note}. CPU-hours; this machine has 2 cores, so wall-clock hours are at "
        f"best half of them.",
        "",
        "| suite | claim columns | committed seeds | needed n: median / p75 / max | "
        "> 200 | floor | **proposed seeds** | MDE at proposed (median, points) | "
        "columns with MDE > min_effect | speed-up | est. CPU-hours |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in suites:
        lines.append(
            f"| {s['suite']} | {s['columns']} | {s['committed_seeds']} | "
            f"{s['needed_median']:g} / {s['needed_p75']:g} / {s['needed_max']} | "
            f"{s['unreachable']} | {s['floor']} | **{s['proposed_seeds']}** | "
            f"{s['mde_median']:.2f} | {s['over_min_effect']} / {s['columns']} | "
            f"{s['speedup']:g}x | {s['cpu_hours']:.2f} |"
        )
    lines += [
        "",
        _reach(suites, rows),
        "",
        _blocks(suites),
        "",
        "## Per column",
        "",
        "| suite | kind | id | task | n | mean diff | sd | MDE at n | min_effect | needed n |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['suite']} | {r['kind']} | {r['id']} | {r['task']} | {r['n']} | "
            f"{_fmt(r['mean_diff'])} | {_fmt(r['sd'])} | {_fmt(r['mde_at_n'])} | "
            f"{r['min_effect']:g} | "
            f"{_fmt(r['n_needed']) if math.isfinite(r['sd']) else 'no interval'} |"
        )
    return "\n".join(lines) + "\n"


def _reach(suites, rows) -> str:
    total = sum(s["cpu_hours"] for s in suites)
    bad = [s for s in suites if s["over_min_effect"]]
    text = [
        f"**Where this machine cannot reach the effect of interest.** All suites at their "
        f"proposed counts: {total:.1f} CPU-hours (>= {total / 2:.1f} h on 2 cores). "
        "By construction of the median rule, up to half a suite's claim columns keep an "
        "MDE above their min_effect at the proposed count:"
    ]
    for s in bad:
        text.append(
            f"- {s['suite']}: {s['over_min_effect']} of {s['columns']} claim columns "
            f"(MDE median {s['mde_median']:.2f} points at {s['proposed_seeds']} seeds; "
            f"{s['unreachable']} need more than {N_CAP} seeds; covering all would take "
            f"{s['needed_max']}{'+' if s['unreachable'] else ''} seeds). Their "
            "confirmatory verdicts are underpowered and say so."
        )
    return "\n".join(text)


def _blocks(suites) -> str:
    text = [
        "## Proposed `confirmatory:` blocks (for claims/<paper>.yaml; not edited here)",
        "",
        "```yaml",
    ]
    for s in suites:
        n = s["proposed_seeds"]
        text += [
            f"# {s['suite']}",
            "confirmatory:",
            f"  suite: {s['suite']}",
            f"  seeds: [{FIRST_SEED}, ..., {FIRST_SEED + n - 1}]   # {n} seeds, "
            f"range({FIRST_SEED}, {FIRST_SEED + n})",
            "  test_pool: fixed            # harness/zoo/pools.py, FIXED_TEST_SEED",
            "  primary_test: >-",
            "    per claim x column, the paired per-seed differences (fixed test pool);",
            "    exact two-sided sign-flip (Wilcoxon signed-rank) p, Holm within the family;",
            "    superiority needs p < the Holm threshold and the 95 % t interval above 0,",
            "    non-inferiority its lower bound above -margin, equivalence TOST +-margin",
            f"  power: scripts/power.py (results/confirmatory/power.md), median rule, "
            f"alpha {ALPHA}, power {POWER}",
            "",
        ]
    return "\n".join(text[:-1] + ["```"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(RESULTS / "confirmatory"))
    args = ap.parse_args(argv)
    rows = column_rows(load_registers())
    speedups, note = _speedups()
    suites = suite_rows(rows, speedups)
    write(Path(args.out), rows, suites, note)
    for s in suites:
        print(
            f"{s['suite']}: {s['committed_seeds']} -> {s['proposed_seeds']} seeds, "
            f"MDE {s['mde_median']:.2f}, {s['over_min_effect']}/{s['columns']} over, "
            f"{s['cpu_hours']:.2f} CPU-h"
        )


if __name__ == "__main__":
    main()
