"""Shared, seeded helpers for the solver tests (imported as ``from _helpers import ...``).

Everything is parametrised from the registry: a new method is picked up by every test whose
capability flags it matches, without editing a list of names here. The fixtures live in
``conftest.py``.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch

from solvers import all_methods, cost_matrix, get_method, solve, solve_sample

DTYPES = (torch.float32, torch.float64)
POINT_DIM = 3  # KeOps compiles one formula per (dimension, dtype, cost): keep them few
# Square problems for square_only methods; every method that needs n == m gets SQUARE x SQUARE.
SQUARE = 9


# --- method selection --------------------------------------------------------------------------


def is_slow(info) -> bool:
    """Methods that compile code on first use (KeOps: 10-40 s per formula)."""
    return "pykeops" in info.requires


def method_params(*, compiling: bool = False, **flags):
    """``pytest.param`` per registered method whose capabilities match ``flags``.

    Unavailable methods are kept and skipped (so the report says why). Methods that compile
    code on first use (KeOps) are left out unless ``compiling=True``: tests that only check
    input validation (nothing is compiled) include them; everything that solves with them is
    gathered in one test per method (``test_conformance.test_compiling_method_end_to_end``), so
    that one xdist worker compiles each formula once instead of every worker compiling all.
    """
    out = []
    for name, info in all_methods().items():
        if any(getattr(info, k) != v for k, v in flags.items()):
            continue
        if is_slow(info) and not compiling:
            continue
        marks = []
        if not info.is_available:
            marks.append(pytest.mark.skip(reason=f"needs {', '.join(info.requires)}"))
        if is_slow(info):
            marks.append(pytest.mark.slow)
        out.append(pytest.param(name, marks=marks, id=name))
    return out


def compiling_method_params():
    """The methods that compile on first use, one ``pytest.param`` each."""
    return [p for p in method_params(compiling=True) if is_slow(get_method(p.values[0]))]


# --- seeded problems ---------------------------------------------------------------------------


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def weights(
    n: int, *, seed: int, uniform: bool = False, mass: float = 1.0, dtype=torch.float64
) -> torch.Tensor:
    """Positive weights summing to ``mass`` (uniform, or drawn in [0.2, 1.2] then normalised)."""
    if uniform:
        w = torch.full((n,), 1.0 / n, dtype=torch.float64)
    else:
        w = torch.rand(n, generator=gen(seed), dtype=torch.float64) + 0.2
        w = w / w.sum()
    w = w * mass
    assert torch.isclose(w.sum(), torch.tensor(mass, dtype=torch.float64))
    return w.to(dtype)


def problem(
    n: int, m: int, *, seed: int = 0, uniform: bool = False, dtype=torch.float64, mass: float = 1.0
):
    """A generic (non-degenerate almost surely) cost in [0, 1) and marginals ``a``, ``b``.

    Drawn in float64 and cast, so float32 and float64 variants are the same problem.
    """
    C = torch.rand(n, m, generator=gen(seed), dtype=torch.float64)
    a = weights(n, seed=seed + 1000, uniform=uniform, mass=mass)
    b = weights(m, seed=seed + 2000, uniform=uniform, mass=mass)
    assert C.shape == (n, m) and a.shape == (n,) and b.shape == (m,)
    return C.to(dtype), a.to(dtype), b.to(dtype)


def points(n: int, m: int, *, seed: int = 0, k: int = POINT_DIM, dtype=torch.float64):
    """Two Gaussian clouds, the second shifted, as (n, k) and (m, k)."""
    g = gen(seed)
    x = torch.randn(n, k, generator=g, dtype=torch.float64)
    y = torch.randn(m, k, generator=g, dtype=torch.float64) + 0.5
    return x.to(dtype), y.to(dtype)


def shape_for(info, n: int, m: int) -> tuple[int, int]:
    """Shrink to a square problem where the method needs one."""
    return (SQUARE, SQUARE) if info.square_only else (n, m)


def conformance_problem(name: str, *, dtype=torch.float64, n: int = 7, m: int = 11, seed: int = 0):
    """Points, cost and marginals satisfying ``name``'s capability flags (square / uniform)."""
    info = get_method(name)
    n, m = shape_for(info, n, m)
    x, y = points(n, m, seed=seed, dtype=dtype)
    C = cost_matrix(x, y, "euclidean")
    a = weights(n, seed=seed + 1, uniform=info.uniform_only, dtype=dtype)
    b = weights(m, seed=seed + 2, uniform=info.uniform_only, dtype=dtype)
    return x, y, C, a, b


def run_method(name: str, x, y, C, a, b, **params):
    """``solve`` for cost methods, ``solve_sample`` for point methods (euclidean cost)."""
    info = get_method(name)
    if info.input == "cost":
        return solve(C, a, b, method=name, **params)
    assert info.input == "points", info.input
    return solve_sample(x, y, a, b, cost="euclidean", method=name, **params)


@functools.lru_cache(maxsize=None)
def solved(name: str, dtype_name: str):
    """The conformance solve of ``name``, cached per process: (problem, result)."""
    dtype = getattr(torch, dtype_name)
    prob = conformance_problem(name, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_method(name, *prob)
    return prob, res


# --- references --------------------------------------------------------------------------------


def lp_reference(C, a, b):
    """Exact OT by scipy's HiGHS LP solver, independent of POT: ``(value, plan)`` in float64.

    Variables ``P`` flattened row-major; equality constraints ``P 1 = a`` and ``P^T 1 = b``.
    """
    from scipy.optimize import linprog

    C = np.asarray(torch.as_tensor(C).detach().double())
    a = np.asarray(torch.as_tensor(a).detach().double())
    b = np.asarray(torch.as_tensor(b).detach().double())
    n, m = C.shape
    rows = np.kron(np.eye(n), np.ones((1, m)))  # (n, nm): sum_j P_ij
    cols = np.kron(np.ones((1, n)), np.eye(m))  # (m, nm): sum_i P_ij
    res = linprog(
        C.ravel(),
        A_eq=np.vstack([rows, cols]),
        b_eq=np.concatenate([a, b]),
        bounds=(0, None),
        method="highs",
    )
    assert res.status == 0, res.message
    return float(res.fun), res.x.reshape(n, m)


def rel_err(value, ref) -> float:
    value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    ref = float(ref.detach()) if isinstance(ref, torch.Tensor) else float(ref)
    return abs(value - ref) / max(abs(ref), 1e-300)


def assert_plan_marginals(plan, a, b, atol):
    """``plan 1 == a`` and ``plan^T 1 == b`` up to ``atol`` (L1, max over a batch)."""
    plan, a, b = (t.detach().double() for t in (plan, a, b))
    ea = float((plan.sum(-1) - a).abs().sum(-1).max())
    eb = float((plan.sum(-2) - b).abs().sum(-1).max())
    assert ea <= atol and eb <= atol, f"marginal errors rows {ea:.3g}, cols {eb:.3g} > {atol:.3g}"


def permutation_problem(n: int, *, seed: int, dtype=torch.float64, cost="euclidean"):
    """Cost between distinct points ``x`` and ``x[perm]``: OT value 0, plan = the permutation.

    Returns ``C``, ``perm`` and the expected plan ``P[i, j] = 1/n`` iff ``perm[j] == i``.
    """
    g = gen(seed)
    x = torch.randn(n, POINT_DIM, generator=g, dtype=torch.float64)
    perm = torch.randperm(n, generator=g)
    C = cost_matrix(x, x[perm], cost).to(dtype)
    expected = torch.zeros(n, n, dtype=dtype)
    expected[perm, torch.arange(n)] = 1.0 / n
    assert torch.allclose(expected.sum(0), torch.full((n,), 1.0 / n, dtype=dtype))
    return C, perm, expected
