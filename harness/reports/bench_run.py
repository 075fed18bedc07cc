"""The solver comparison benchmark, measured: every registered OT method on the problems of
the papers (:mod:`harness.reports.bench` lays the records out).

Two views of representation transfer give the problems (docs/architecture.md, the
representation contract):

* ``neurons`` (li2020, Omega_P): a batch of ``n = 64`` examples, ``d`` neurons per layer; each
  neuron is a point in R^64 (its activations over the batch), cost ``||A_i - T_j||_2`` (li2020
  Eq. 3). The student's neurons are a noisy permutation of the teacher's, so the exact plan is far
  from the identity.
* ``samples`` (lohit2020): a batch of ``n`` examples with 256 features each, cosine cost
  (lohit2020 Eq. 3); the student's features are a noisy copy of the teacher's.

For each (view, size, method) the benchmark times one call of :func:`solvers.solve` (points
methods: :func:`solvers.solve_sample`) on data built beforehand, then the same call
followed by ``value.backward()``, and measures the value's relative error against the exact
reference method, the marginal error, the iterations and convergence. Records are rows of a
pandas frame; the Markdown tables are pure functions of it.

Method names come only from the registry (``solvers.available()``).
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch

import solvers

if TYPE_CHECKING:  # pandas and matplotlib are imported where they are used
    import pandas as pd

__all__ = [
    "VIEWS",
    "View",
    "Problem",
    "COLUMNS",
    "BUDGET_S",
    "GROWTH",
    "run",
    "run_once",
    "warm_up",
    "invalid_reason",
    "reference_method",
]

#: Columns of ``bench.csv``, in order. ``size`` is ``d`` (neurons) or ``n`` (samples).
COLUMNS = [
    "view",
    "size_name",
    "size",
    "n",
    "m",
    "k",
    "cost",
    "method",
    "input",
    "exact",
    "status",
    "reason",
    "repeat",
    "time_ms",
    "time_backward_ms",
    "warmup_ms",
    "value",
    "ref_method",
    "ref_value",
    "rel_error",
    "marginal_error",
    "n_iter",
    "converged",
    "seed",
]

#: Default budget for one solve, seconds: a method slower than this at some size is not run at
#: larger sizes (POT's Sinkhorn baseline takes ~50 s at d = 256).
BUDGET_S = 20.0
#: A method's time at the next size is predicted as ``t * (size / last_size) ** GROWTH``; a
#: predicted overrun is skipped unrun. One dense pass over the cost grows as size**2, but small
#: sizes are dominated by fixed overheads, so measured growth between them is nearer size**1
#: (IPOT: 0.3 s at d = 64, 0.5 s at d = 256); 1.5 still stops POT's Sinkhorn (5 s at d = 64,
#: ~50 s at d = 256) before it runs.
GROWTH = 1.5


@dataclass(frozen=True)
class Problem:
    """One seeded OT problem: teacher points ``x`` (n, k), student points ``y`` (m, k).

    ``C = cost(x, y)`` in float32, computed once here so that timings exclude it.
    """

    view: str
    size: int
    x: torch.Tensor
    y: torch.Tensor
    cost: str
    C: torch.Tensor
    seed: int

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def m(self) -> int:
        return self.y.shape[0]

    @property
    def k(self) -> int:
        return self.x.shape[1]


def _neurons(size: int, seed: int) -> Problem:
    # li2020 neuron view: z (d, 64) teacher pre-activations, one row per neuron; the student is
    # a noisy permutation w = 0.7 z[perm] + sqrt(1 - 0.7^2) noise (unit variance, correlation 0.7).
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(size, 64, generator=g)
    perm = torch.randperm(size, generator=g)
    w = 0.7 * z[perm] + math.sqrt(1 - 0.49) * torch.randn(size, 64, generator=g)
    x, y = z.relu(), w.relu()
    C = solvers.cost_matrix(x, y, "euclidean").float()
    return Problem("neurons", size, x, y, "euclidean", C, seed)


def _samples(size: int, seed: int) -> Problem:
    # lohit2020 sample view: n examples with 256 post-ReLU features; the student is a noisy
    # copy of the teacher (same examples, so no permutation), cosine cost.
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(size, 256, generator=g)
    s = 0.7 * t + math.sqrt(1 - 0.49) * torch.randn(size, 256, generator=g)
    x, y = t.relu(), s.relu()
    C = solvers.cost_matrix(x, y, "cosine").float()
    return Problem("samples", size, x, y, "cosine", C, seed)


@dataclass(frozen=True)
class View:
    """A family of benchmark problems indexed by one size."""

    name: str
    size_name: str
    sizes: tuple[int, ...]
    quick_sizes: tuple[int, ...]
    description: str
    build: Callable[[int, int], Problem]


VIEWS: dict[str, View] = {
    v.name: v
    for v in (
        View(
            "neurons",
            "d",
            (64, 128, 256, 512, 1024, 2048),
            (64, 256),
            "li2020 neuron view: n = 64 examples, d neurons per layer, each a point in R^64; "
            "euclidean cost; student = noisy permutation of the teacher",
            _neurons,
        ),
        View(
            "samples",
            "n",
            (16, 32, 64, 128, 256),
            (16, 64),
            "lohit2020 sample view: n examples with 256 features each; cosine cost; "
            "student = noisy copy of the teacher",
            _samples,
        ),
    )
}


def invalid_reason(info: solvers.MethodInfo, problem: Problem) -> str | None:
    """Why ``info`` cannot run on ``problem`` (capabilities from the registry), or None."""
    if not info.is_available:
        return f"not installed (needs {', '.join(info.requires)})"
    if info.square_only and problem.n != problem.m:
        return f"needs n == m, got {problem.n} x {problem.m}"
    # Benchmark problems have uniform marginals and both points and a cost matrix, so the
    # uniform_only and input flags never exclude a method here.
    return None


def reference_method(problem: Problem) -> str | None:
    """The first installed exact method that can solve ``problem`` (registration order)."""
    for name in solvers.available(exact=True):
        if invalid_reason(solvers.get_method(name), problem) is None:
            return name
    return None


def run_once(
    info: solvers.MethodInfo, problem: Problem, backward: bool = False, **params
) -> solvers.OTResult:
    """Solve ``problem`` once with ``info``'s defaults, optionally followed by ``backward``.

    The gradient flows to the cost matrix for cost methods and to the points for points methods,
    as in training; the leaves are fresh views of the prebuilt data (no copy). ``params``
    override the method's defaults.
    """
    if info.input == "points":
        x, y = problem.x, problem.y
        if backward:
            x, y = x.detach().requires_grad_(True), y.detach().requires_grad_(True)
        res = solvers.solve_sample(x, y, cost=problem.cost, method=info.name, **params)
    else:
        C = problem.C.detach().requires_grad_(True) if backward else problem.C
        res = solvers.solve(C, method=info.name, **params)
    if backward:
        res.value.sum().backward()
    return res


def warm_up(info: solvers.MethodInfo, view: str, seed: int = 0) -> None:
    """Pay ``info``'s one-time costs (lazy imports, KeOps compilation) on a tiny problem of
    ``view``: KeOps kernels depend on the cost and the point dimension, not on the size.

    Iterations are capped (``max_iter`` where the method has one): a tiny problem can be the
    slowest to converge (POT's Sinkhorn runs its 10^5 iterations at d = 4).
    """
    params = {"max_iter": 10} if "max_iter" in info.params else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "max_iter reached" and the like are expected here
        run_once(info, VIEWS[view].build(4, seed), backward=True, **params)


def _timed(fn: Callable[[], solvers.OTResult]) -> tuple[float, solvers.OTResult]:
    t0 = time.perf_counter()
    res = fn()
    return time.perf_counter() - t0, res


def _measure(info: solvers.MethodInfo, problem: Problem, repeat: int, budget: float) -> dict:
    """Time one (method, problem) cell: one warm-up, then up to ``repeat`` solves and as many
    solve + backward runs; fewer repeats when one solve would use up the budget."""
    # The warm-up pays lazy imports and KeOps compilation; it runs the backward too, since
    # KeOps compiles the gradient formulas on the first backward (~20 s on 2 cores).
    warm, res = _timed(lambda: run_once(info, problem, backward=True))
    first, res = _timed(lambda: run_once(info, problem))
    reps = max(1, min(repeat, int(budget // max(first, 1e-9))))
    times = [first] + [_timed(lambda: run_once(info, problem))[0] for _ in range(reps - 1)]
    btimes = [_timed(lambda: run_once(info, problem, backward=True))[0] for _ in range(reps)]
    return {
        "repeat": reps,
        "time_ms": 1e3 * statistics.median(times),
        "time_backward_ms": 1e3 * statistics.median(btimes),
        "warmup_ms": 1e3 * warm,
        "value": float(res.value.detach().sum()),
        "marginal_error": res.marginal_error,
        "n_iter": res.n_iter,
        "converged": res.converged,
    }


def run(
    *,
    views: Sequence[str] = tuple(VIEWS),
    sizes: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    quick: bool = False,
    repeat: int | None = None,
    budget: float = BUDGET_S,
    seed: int = 0,
    progress: bool = True,
) -> "pd.DataFrame":
    """Run the solver comparison and return one record per (view, size, method).

    Parameters
    ----------
    views : sequence of str
        Keys of :data:`VIEWS`.
    sizes : sequence of int, optional
        Sizes for every view (``d`` neurons or ``n`` examples); the view's defaults otherwise
        (its ``quick_sizes`` with ``quick``).
    methods : sequence of str, optional
        Registry names; all installed methods (``solvers.available()``) by default.
    quick : bool
        Small sizes and ``repeat = 1`` (about a minute on 2 cores).
    repeat : int, optional
        Timed runs per cell after one warm-up (median reported); 3 by default, 1 with ``quick``.
    budget : float
        Seconds allowed for one solve. A method whose median solve exceeds it, or whose predicted
        time at the next size (``t * size_ratio**GROWTH``) does, is skipped at larger sizes and
        recorded as such.
    seed : int
        Seed of the problem generator.
    progress : bool
        Show a tqdm progress bar on stderr.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`COLUMNS`; ``status`` is ``ok``, ``skipped`` (``reason`` says why) or
        ``error`` (``reason`` holds the exception).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    names = list(methods) if methods is not None else solvers.available()
    infos = [solvers.get_method(name) for name in names]  # unknown names raise ValueError
    repeat = repeat if repeat is not None else (1 if quick else 3)
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    plan = _plan(views, sizes, quick)
    total = sum(len(s) for _, s in plan) * len(infos)
    records: list[dict] = []
    bar = tqdm(
        total=total, desc="solvers bench", unit="cell", disable=not progress, dynamic_ncols=True
    )
    with warnings.catch_warnings():
        # torch's beta-state notices for the sparse kernels would break the progress bar.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        for view, vsizes in plan:
            # method -> (size, seconds) of its last measured solve, and a skip reason once the
            # budget is spent; reset per view since the problems differ.
            last: dict[str, tuple[int, float]] = {}
            stop: dict[str, str] = {}
            for size in vsizes:
                problem = view.build(size, seed)
                ref = reference_method(problem)
                ref_value = math.nan
                if ref is not None:  # untimed: the timed reference cell is measured below
                    ref_value = float(run_once(solvers.get_method(ref), problem).value)
                for info in infos:
                    bar.set_postfix_str(f"{view.name} {view.size_name}={size} {info.name}")
                    cell = (view, size, problem, ref, ref_value, seed)
                    records.append(_cell(info, cell, repeat, budget, last, stop))
                    bar.update(1)
    bar.close()
    return pd.DataFrame.from_records(records).reindex(columns=COLUMNS)


def _plan(views: Sequence[str], sizes: Sequence[int] | None, quick: bool) -> list:
    """``[(View, sorted sizes)]`` of the views asked for; an unknown view raises ValueError."""
    plan = []
    for vname in views:
        if vname not in VIEWS:
            raise ValueError(f"unknown view {vname!r}; choose from {sorted(VIEWS)}")
        view = VIEWS[vname]
        vsizes = sorted(
            set(sizes if sizes is not None else (view.quick_sizes if quick else view.sizes))
        )
        plan.append((view, vsizes))
    return plan


def _cell(info, cell: tuple, repeat: int, budget: float, last: dict, stop: dict) -> dict:
    """The record of one (view, size, method) cell, ``cell = (view, size, problem,
    reference method, reference value, seed)``: measured, or skipped with its reason.
    ``last`` (method -> (size, seconds) of its last solve) and ``stop`` (method -> why it is
    not run at larger sizes) are updated."""
    view, size, problem, ref, ref_value, seed = cell
    rec = {
        "view": view.name,
        "size_name": view.size_name,
        "size": size,
        "n": problem.n,
        "m": problem.m,
        "k": problem.k,
        "cost": problem.cost,
        "method": info.name,
        "input": info.input,
        "exact": info.exact,
        "status": "skipped",
        "reason": "",
        "ref_method": ref or "",
        "ref_value": ref_value,
        "seed": seed,
    }
    reason = invalid_reason(info, problem) or stop.get(info.name)
    if reason is None and info.name in last:
        s0, t0 = last[info.name]
        predicted = t0 * (size / s0) ** GROWTH
        if predicted > budget:
            reason = (
                f"predicted over the {budget:g} s budget ({t0:.3g} s at "
                f"{view.size_name}={s0}, time ~ size^{GROWTH:g})"
            )
            stop[info.name] = reason
    if reason is not None:
        rec["reason"] = reason
    else:
        try:
            rec.update(_measure(info, problem, repeat, budget))
            rec["status"] = "ok"
        except Exception as exc:  # recorded, never hidden; the bench goes on
            rec.update(status="error", reason=f"{type(exc).__name__}: {exc}")
            stop[info.name] = "error at a smaller size"
    if rec["status"] == "ok":
        t = rec["time_ms"] / 1e3
        last[info.name] = (size, t)
        if t > budget:
            stop[info.name] = f"over the {budget:g} s budget ({t:.3g} s at {view.size_name}={size})"
        v = rec["value"]
        rec["rel_error"] = abs(v - ref_value) / abs(ref_value) if ref_value != 0 else math.nan
    return rec
