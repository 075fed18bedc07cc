"""Exact solvers: POT's network simplex and scipy's Hungarian algorithm."""

from __future__ import annotations

import numpy as np
import torch

from ._quiet import quiet_keops
from ._registry import module_available, register


def _f64(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.float64 and t.device.type == "cpu" and not t.requires_grad:
        return t.numpy()  # a view: no copy, no conversion
    return t.detach().cpu().to(torch.float64).numpy()


def _cpu(t: torch.Tensor) -> np.ndarray | None:
    """A NumPy view of a CPU tensor (no copy), None elsewhere (CUDA: keep to torch)."""
    if t.device.type != "cpu":
        return None
    return t.detach().numpy() if t.requires_grad else t.numpy()


def _like(x: np.ndarray, C: torch.Tensor) -> torch.Tensor:
    """``torch.from_numpy(x).to(dtype=C.dtype, device=C.device)``; a view when that is x."""
    t = torch.from_numpy(x)
    if C.dtype == torch.float64 and C.device.type == "cpu":
        return t
    return t.to(dtype=C.dtype, device=C.device)


def _range(C64: np.ndarray, cost_range: tuple[float, float] | None) -> tuple[float, float]:
    """``(min C, max C)``: as ``solve`` measured it in its finiteness check, else one pass."""
    return cost_range if cost_range is not None else (float(C64.min()), float(C64.max()))


@register(
    "emd",
    exact=True,
    value_rtol=1e-9,
    potentials=True,
    devices=("cpu", "cuda"),
    requires=("ot",),
    params={"max_iter": 10_000_000, "num_threads": 1},
    cost_range=True,
    description="exact OT by network simplex (POT ot.emd), any marginals, n != m",
)
def emd(
    C, a, b, *, max_iter: int, num_threads: int, cost_range: tuple[float, float] | None = None
) -> dict:
    """Solve OT exactly with POT's network simplex (Bonneel et al. 2011), in float64 on the CPU.

    Parameters
    ----------
    max_iter : int
        Simplex pivots allowed; hitting it is reported as ``converged=False``.
    num_threads : int
        Threads for POT's solver.
    """
    quiet_keops()
    import ot

    a64, C64 = _f64(a), _f64(C)
    b64 = a64 if b is a else _f64(b)
    b64 = b64 * (a64.sum() / b64.sum())  # equal to float64 precision (checked upstream to 1e-5)
    # POT's network simplex reports "infeasible" (zero plan) on negative costs; OT is invariant
    # to C -> C - c up to c * mass, so solve on C - min(C) >= 0 and shift the row potentials back
    shift = min(_range(C64, cost_range)[0], 0.0)
    plan, log = ot.emd(
        a64,
        b64,
        C64 - shift if shift < 0 else C64,
        numItermax=int(max_iter),
        log=True,
        numThreads=num_threads,
    )
    log["u"] = log["u"] + shift
    log["cost"] = log["cost"] + shift * a64.sum()
    converged = log.get("result_code", 1) == 1 and not log.get("warning")
    return {
        "plan": _like(plan, C),
        "potentials": (_like(log["u"], C), _like(log["v"], C)),
        "converged": bool(converged),
        "extras": {
            "value_f64": float(log["cost"]),
            "warning": log.get("warning"),
            "reason": ""
            if converged
            else f"network simplex (POT): {log.get('warning')} "
            f"(result code {log.get('result_code')}); raise max_iter",
        },
    }


_BACKENDS = ("auto", "lap", "scipy")
LAP_SAFE = 1e5  # largest |C| given to lap.lapjv as it is (it fails from ~1e6 on)


@register(
    "assignment",
    exact=True,
    value_rtol=1e-9,
    square_only=True,
    uniform_only=True,
    devices=("cpu", "cuda"),
    requires=("scipy",),
    params={"backend": "auto"},
    cost_range=True,
    description="exact OT for n == m uniform: a permutation (LAPJV via lap, or scipy)",
)
def assignment(C, a, b, *, backend: str, cost_range: tuple[float, float] | None = None) -> dict:
    """Solve OT exactly as a linear assignment problem.

    Parameters
    ----------
    backend : {"auto", "lap", "scipy"}
        ``lap``: Jonker-Volgenant (``lap.lapjv``), 5x faster than scipy on the benchmark's
        d = 2048 neuron problems; ``scipy``: ``linear_sum_assignment``; ``auto``: lap if
        installed.

    Notes
    -----
    For ``n == m`` with uniform weights the extreme points of the transport polytope are the
    permutation matrices scaled by ``1/n`` (Birkhoff), so an optimal plan is a permutation.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"unknown assignment backend {backend!r}; choose one of {_BACKENDS}")
    C64 = _f64(C)
    if backend == "lap" or (backend == "auto" and module_available("lap")):
        import lap

        # lap.lapjv misassigns costs of large magnitude (from ~1e6: 16 to 27 % of random
        # 15 x 15 problems with entries ~1e7, measured against scipy; none up to 1e6): above
        # LAP_SAFE, reduce rows and columns to minimum 0 (same optimal assignment) and scale
        # to [0, 1] first
        if max(map(abs, _range(C64, cost_range))) > LAP_SAFE:
            C64 = C64 - C64.min(1, keepdims=True)
            C64 -= C64.min(0, keepdims=True)
            top = C64.max()
            C64 = C64 / top if top > 0 else C64
        _, cols, _ = lap.lapjv(C64, extend_cost=False)
        rows = np.arange(C64.shape[0])
    else:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(C64)
    a_np = _cpu(a)
    b_np = a_np if b is a else _cpu(b)
    return {
        "plan": _permutation(C, rows, cols, a, a_np),
        "converged": True,
        "marginal_error": _permutation_error(a, b, a_np, b_np),
    }


def _permutation(C: torch.Tensor, rows, cols, a: torch.Tensor, a_np) -> torch.Tensor:
    """The plan ``a[0] * P_sigma`` of the assignment ``rows -> cols``, like ``C``."""
    if a_np is not None and C.dtype in (torch.float64, torch.float32):
        # NumPy's zeroed allocation (calloc) and one scatter; a view, no copy
        buf = np.zeros(tuple(C.shape), dtype=np.float64 if C.dtype == torch.float64 else np.float32)
        buf[rows, cols] = a_np[0]
        return torch.from_numpy(buf)
    plan = torch.zeros_like(C)
    flat = torch.from_numpy(np.asarray(rows, dtype=np.int64) * C.shape[-1] + cols)
    plan.view(-1).index_fill_(0, flat.to(C.device), float(a[0]))  # one fill, not an index_put
    return plan


def _permutation_error(a: torch.Tensor, b: torch.Tensor, a_np, b_np) -> float:
    """Marginal error of ``a[0] * P_sigma``: its marginals are ``a[0]`` everywhere (no pass
    over the plan). ``a_np``, ``b_np``: NumPy views of ``a``, ``b`` (None off the CPU)."""
    if a_np is not None and b_np is not None:
        mass = a_np[0]
        if (a_np == mass).all() and (b is a or (b_np == mass).all()):
            return 0.0
    else:
        mass = float(a[0])
        lo_a, hi_a = torch.aminmax(a)
        lo_b, hi_b = torch.aminmax(b)
        if float(lo_a) == float(hi_a) == float(lo_b) == float(hi_b) == mass:
            return 0.0
    mass = float(a[0])
    return float(torch.maximum((a - mass).abs().sum(), (b - mass).abs().sum()))


@register(
    "exact",
    exact=True,
    value_rtol=1e-9,
    devices=("cpu", "cuda"),
    requires=("ot",),
    params={"backend": "auto"},
    cost_range=True,
    description="exact OT, fastest exact solver for the problem: assignment (LAPJV) when n == m "
    "with uniform marginals, else emd",
)
def exact(C, a, b, *, backend: str, cost_range: tuple[float, float] | None = None) -> dict:
    """Solve OT exactly with the fastest exact method that applies.

    li2020 solves Omega_P (Eq. 4) with IPOT "converging to the exact solution of Problem (1)";
    this returns that solution directly. For ``n == m`` with uniform weights (fine-tuning,
    ``d == d'``) an optimal plan is a permutation (Birkhoff) and LAPJV finds it, 10x faster than
    the network simplex at d = 2048 (results/solvers/bench.md); otherwise the network simplex
    (``emd``). ``backend`` is the assignment backend.
    """
    n, m = C.shape[-2:]
    if n == m and _uniform(a) and (b is a or _uniform(b)):
        return assignment(C, a, b, backend=backend, cost_range=cost_range)
    out = emd(C, a, b, max_iter=10_000_000, num_threads=1, cost_range=cost_range)
    out.pop("potentials")  # the assignment branch has none: one contract for the method
    return out


def _uniform(w: torch.Tensor) -> bool:
    w_np = _cpu(w)
    return bool((w_np == w_np[0]).all()) if w_np is not None else bool(torch.all(w == w[0]))
