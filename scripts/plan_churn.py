"""How much an exact plan changes from one training step to the next (is a warm start worth it?).

    OMP_NUM_THREADS=1 python scripts/plan_churn.py [--taps N] -- run li2020_table2-cpu \
        --no-batch --only stage=student_LM_digits --only regularizer=omega_p --only seed=0 \
        --results /tmp/churn --no-progress

Runs the ``otransfer`` command after ``--`` in this process with POT's network simplex and the
assignment solver wrapped: each plan's support is compared with the previous plan of the same
shape and tap (``--taps``: how many solves of one shape a step makes, in order; 1 for one tap)
and the script prints how many steps kept the plan, and how many points (rows of the larger
side) changed partner per step. A plan that stays optimal from step to step would let an exact
solve be skipped on a certificate (no negative cycle in the residual graph); one that changes
at every step would not (results/throughput/throughput.md, "Exact plans from step to step").
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--taps", type=int, default=1, help="solves of one shape per step")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- otransfer arguments")
    a = ap.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("give the otransfer command after --, e.g. -- run li2020_table2-cpu ...")
    moved = _wrap_exact(a.taps)
    from harness.cli import main as otransfer

    try:
        otransfer(cmd)
    finally:
        _print(moved)


def _wrap_exact(taps: int) -> dict[tuple, list[int]]:
    """Wrap the exact solvers; returns ``{(shape, tap): moves}``, one entry a compared step."""
    import solvers._exact as E

    last, calls, moved = {}, Counter(), {}

    def watch(fn):
        def wrapped(C, a, b, **kw):
            out = fn(C, a, b, **kw)
            shape = tuple(C.shape)
            key = (shape, calls[shape] % taps)
            calls[shape] += 1
            support = out["plan"].detach().cpu().numpy() > 0
            if key in last:  # cells that changed, per point of the larger side
                moved.setdefault(key, []).append(int((last[key] != support).sum()) // 2)
            last[key] = support
            return out

        return wrapped

    E.emd = watch(E.emd)  # E.exact calls these module functions
    E.assignment = watch(E.assignment)
    return moved


def _print(moved: dict[tuple, list[int]]) -> None:
    if not moved:
        print("plan churn: no exact solve was compared (no two steps of one shape)")
    for (shape, tap), steps in sorted(moved.items()):
        m = np.asarray(steps)
        print(
            f"plan churn, {shape[0]} x {shape[1]} plan, tap {tap}: {len(m)} steps compared, "
            f"{int((m == 0).sum())} kept the plan; points that changed partner per step: "
            f"median {np.median(m):g}, min {m.min()}, max {m.max()}"
        )


if __name__ == "__main__":
    sys.exit(main())
