"""The solver wrapper's overhead: :func:`solvers.solve` against the routine it calls.

For each exact method with one underlying routine (``assignment``: ``lap.lapjv``; ``emd``:
POT's ``ot.emd``) and each size ``d``, the li2020 neuron problem of the solver benchmark
(float64, so that the wrapper has no dtype to convert) is solved by both, interleaved (one
routine call, one wrapper call, repeated), and the medians compared: ``ratio = solve / routine``
(within 1.2 for d = 16-512). What the wrapper adds: input checks, the result's plan
as a tensor, the marginal error, the envelope gradient. ``overhead_us`` is that addition in
microseconds: where the routine itself takes a few microseconds (lapjv at d = 16-64) it, not the
ratio, is the number to read (a fixed cost of some tens of torch/NumPy calls, ~1-3 us each, plus
the O(d^2) passes every solve needs: the finiteness check, the dense plan, ``<P, C>``).
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

import solvers

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SIZES", "ROUTINES", "measure_overhead", "overhead_table"]

SIZES = (16, 64, 256, 512)
CELL_S = 0.5  # seconds of timed calls per (method, size), both sides together


def _lapjv(C: np.ndarray, a: np.ndarray) -> object:
    import lap

    return lap.lapjv(C, extend_cost=False)


def _emd(C: np.ndarray, a: np.ndarray) -> object:
    solvers.quiet_keops()
    import ot

    return ot.emd(a, a, C)


#: method -> (name of the routine, the routine on the float64 cost and uniform weights)
ROUTINES: dict[str, tuple[str, Callable[[np.ndarray, np.ndarray], object]]] = {
    "assignment": ("lap.lapjv", _lapjv),
    "emd": ("ot.emd", _emd),
}


def _cell(
    method: str, routine: Callable, C: torch.Tensor, min_reps: int
) -> tuple[float, float, int]:
    C64 = C.numpy()
    a = np.full(C.shape[0], 1.0 / C.shape[0])
    calls = (lambda: routine(C64, a), lambda: solvers.solve(C, method=method))
    first = []
    for call in calls:  # warm-up (lazy imports), and the time of one call
        call()
        t0 = time.perf_counter()
        call()
        first.append(time.perf_counter() - t0)
    reps = max(min_reps, min(1000, int(CELL_S / max(sum(first), 1e-9))))
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(reps):  # interleaved: a load change hits both sides alike
        for side, call in enumerate(calls):
            t0 = time.perf_counter()
            call()
            times[side].append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times[0]), 1e3 * statistics.median(times[1]), reps


def measure_overhead(
    sizes: Sequence[int] = SIZES,
    methods: Sequence[str] | None = None,
    seed: int = 0,
    min_reps: int = 5,
) -> "pd.DataFrame":
    """Median time of the routine and of ``solve`` per (method, size); one row each.

    Methods without a routine here, or not installed, are left out."""
    import pandas as pd

    from harness.reports.bench import VIEWS

    names = [
        m
        for m in (methods if methods is not None else ROUTINES)
        if m in ROUTINES and solvers.get_method(m).is_available
    ]
    rows = []
    for size in sizes:
        C = VIEWS["neurons"].build(int(size), seed).C.double()
        for name in names:
            label, routine = ROUTINES[name]
            r_ms, s_ms, reps = _cell(name, routine, C, min_reps)
            rows.append(
                {
                    "method": name,
                    "routine": label,
                    "size": int(size),
                    "repeat": reps,
                    "routine_ms": r_ms,
                    "solve_ms": s_ms,
                    "ratio": s_ms / r_ms,
                    "overhead_us": 1e3 * (s_ms - r_ms),
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "method",
            "routine",
            "size",
            "repeat",
            "routine_ms",
            "solve_ms",
            "ratio",
            "overhead_us",
        ],
    )


def overhead_table(df: "pd.DataFrame") -> "pd.DataFrame":
    """Rows ``method (routine)``, columns ``d``, cells ``solve ms / routine ms = ratio
    (+overhead us)``: the absolute overhead is the floor where the routine takes microseconds."""
    cells = df.assign(
        row=df["method"] + " (" + df["routine"] + ")",
        cell=[
            f"{s:.3g} / {r:.3g} = {q:.2f}x (+{1e3 * (s - r):.0f} us)"
            for s, r, q in zip(df["solve_ms"], df["routine_ms"], df["ratio"], strict=True)
        ],
    )
    table = cells.pivot(index="row", columns="size", values="cell")
    table.columns = [f"d={c}" for c in table.columns]
    table.index.name = "solve ms / routine ms"
    return table
