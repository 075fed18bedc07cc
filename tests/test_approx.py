"""Approximate methods against the exact value, and the closed forms of the fixed plans and REMD.

Tolerances come from the registry: a method with ``converges_to_exact`` states in ``value_rtol``
how close to exact OT it gets at its default parameters.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from _helpers import method_params, permutation_problem, points, problem, rel_err, weights

from solvers import get_method, solve, solve_sample

APPROX = method_params(input="cost", converges_to_exact=True)

# (n, m, uniform): rectangular both ways, square, uniform and not
PROBLEMS = [(7, 11, False), (13, 5, False), (12, 12, True), (30, 17, True), (25, 25, False)]


def _emd(C, a=None, b=None):
    return float(
        solve(
            C.double(),
            None if a is None else a.double(),
            None if b is None else b.double(),
            method="emd",
        ).value
    )


def _quiet_solve(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return solve(*args, **kw)


@pytest.mark.parametrize("name", APPROX)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(
    "n,m,uniform", PROBLEMS, ids=[f"{n}x{m}{'u' if u else ''}" for n, m, u in PROBLEMS]
)
def test_reaches_registry_tolerance_at_defaults(name, dtype, n, m, uniform):
    info = get_method(name)
    rtol = info.value_rtol  # the method's own claim, from the registry
    assert rtol is not None and 0 < rtol < 1
    C, a, b = problem(n, m, seed=n * 100 + m, uniform=uniform, dtype=dtype)
    ref = _emd(C, a, b)
    res = _quiet_solve(C, a, b, method=name)
    assert res.value.dtype == dtype
    err = rel_err(res.value, ref)
    assert err <= rtol, (
        f"{name}: relative error {err:.3g} > value_rtol {rtol:g} (converged={res.converged})"
    )
    assert torch.isfinite(res.plan).all() and (res.plan >= 0).all()


def _tighter(params: dict) -> dict:
    """The method's accuracy parameters tightened: ``reg`` / 3, ``tol`` and certified ``gap``
    / 100 (``max_iter`` unchanged: POT's Sinkhorn has no eps-scaling and slows down fast)."""
    out = {}
    if "reg" in params:
        out["reg"] = params["reg"] / 3
    for key in ("tol", "gap"):
        if params.get(key):
            out[key] = params[key] / 100
    return out


@pytest.mark.parametrize("name", APPROX)
@pytest.mark.parametrize("n,m", [(7, 11), (13, 5)], ids=["7x11", "13x5"])
def test_tighter_parameters_get_closer(name, n, m):
    info = get_method(name)
    tight = _tighter(dict(info.params))
    assert tight, f"{name} has no accuracy parameter to tighten"
    C, a, b = problem(n, m, seed=42 + n)
    ref = _emd(C, a, b)
    err0 = rel_err(_quiet_solve(C, a, b, method=name).value, ref)
    res = _quiet_solve(C, a, b, method=name, **tight)
    err1 = rel_err(res.value, ref)
    assert err1 < err0 or err1 <= 1e-7, (err0, err1, tight)
    assert err1 <= info.value_rtol / 2, (err0, err1, tight)


def test_sinkhorn_small_reg_is_nearly_exact():
    """Sinkhorn at reg = 1e-4 (eps = 1e-4 of the cost range) is within 1e-5 of exact OT."""
    if not get_method("sinkhorn").is_available:
        pytest.skip("sinkhorn not available")
    C, a, b = problem(9, 14, seed=3)
    ref = _emd(C, a, b)
    info = get_method("sinkhorn")
    tight = {k: v / 100 for k, v in info.params.items() if k in ("tol", "gap") and v}
    res = _quiet_solve(C, a, b, method="sinkhorn", reg=1e-4, max_iter=50_000, **tight)
    assert rel_err(res.value, ref) <= 1e-5
    # the plan is near the (unique) LP plan
    exact = solve(C, a, b, method="emd").plan
    assert float((res.plan - exact).abs().sum()) <= 1e-2


@pytest.mark.parametrize("name", APPROX)
def test_finds_the_permutation(name):
    """C = cost(x, x[perm]): the approximate plan puts its mass on the permutation."""
    C, perm, expected = permutation_problem(12, seed=1)
    res = _quiet_solve(C, method=name)
    assert torch.equal(res.plan.argmax(0), perm)
    assert float(res.value) <= get_method(name).value_rtol * float(C.mean())


@pytest.mark.parametrize("name", method_params(input="points"))
@pytest.mark.parametrize("cost", ["euclidean", "sqeuclidean", "cosine"])
def test_point_methods_track_exact_ot_loosely(name, cost):
    """Point methods claim no tolerance (GeomLoss anneals with one step per eps), but their value
    is a finite, positive estimate within 50% of exact OT on 12 vs 9 Gaussian points, and its
    gradient reaches the points."""
    info = get_method(name)
    assert info.value_rtol is None and not info.approximates_ot
    x, y = points(12, 9, seed=0)
    x.requires_grad_(True)
    ref = float(solve_sample(x.detach(), y, cost=cost, method="emd").value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = solve_sample(x, y, cost=cost, method=name)
    assert rel_err(res.value, ref) <= 0.5
    res.value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# --- closed forms: REMD, Omega_U, Omega_I ---------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_remd_matches_lohit_eq8(seed):
    """lohit2020 Eq. 8 for a batch of b samples with uniform weights:
    REMD = (1/b) max(sum_i min_j C_ij, sum_j min_i C_ij); a lower bound on OT."""
    nb = 10
    C, _, _ = problem(nb, nb, seed=seed, uniform=True)
    res = solve(C, method="remd")
    by_hand = max(C.min(dim=1).values.sum(), C.min(dim=0).values.sum()) / nb
    assert float(res.value) == pytest.approx(float(by_hand), rel=1e-12)
    assert float(res.value) <= _emd(C) + 1e-12


@pytest.mark.parametrize("n,m,uniform", [(7, 11, True), (13, 5, False)])
def test_remd_weighted_relaxations(n, m, uniform):
    """General weights (Eq. 5-7): max(sum_j b_j min_i C_ij, sum_i a_i min_j C_ij), <= OT; the
    plan satisfies the marginal of the active relaxation exactly."""
    C, a, b = problem(n, m, seed=7, uniform=uniform)
    res = solve(C, a, b, method="remd")
    r1 = (b * C.min(dim=0).values).sum()
    r2 = (a * C.min(dim=1).values).sum()
    assert float(res.value) == pytest.approx(float(max(r1, r2)), rel=1e-12)
    assert float(res.value) <= _emd(C, a, b) + 1e-12
    rows_ok = torch.allclose(res.plan.sum(1), a, atol=1e-12)
    cols_ok = torch.allclose(res.plan.sum(0), b, atol=1e-12)
    assert rows_ok or cols_ok
    assert cols_ok if r1 >= r2 else rows_ok


@pytest.mark.parametrize("n,m", [(8, 8), (6, 13)])
def test_uniform_plan_is_mean_cost(n, m):
    """li2020 Eq. 6: Omega_U = <1/(d d'), M> is the mean of all entries of M."""
    C, _, _ = problem(n, m, seed=n + m, uniform=True)
    res = solve(C, method="uniform")
    assert float(res.value) == pytest.approx(float(C.mean()), rel=1e-12)
    assert torch.allclose(res.plan, torch.full((n, m), 1.0 / (n * m), dtype=C.dtype))


def test_uniform_plan_nonuniform_weights_is_a_C_b():
    C, a, b = problem(6, 9, seed=2)
    res = solve(C, a, b, method="uniform")
    assert float(res.value) == pytest.approx(float(a @ C @ b), rel=1e-12)


@pytest.mark.parametrize("n", [1, 5, 9])
def test_identity_plan_is_trace(n):
    """li2020 Eq. 5: Omega_I = <I/d, M> = trace(M) / d."""
    C, _, _ = problem(n, n, seed=n, uniform=True)
    res = solve(C, method="identity")
    assert float(res.value) == pytest.approx(float(torch.trace(C)) / n, rel=1e-12)
    assert torch.allclose(res.plan, torch.eye(n, dtype=C.dtype) / n)


def test_fixed_plans_bound_exact_ot():
    """Every feasible plan costs at least OT: identity and uniform are >= emd >= remd."""
    C, _, _ = problem(10, 10, seed=5, uniform=True)
    ot = _emd(C)
    assert float(solve(C, method="identity").value) >= ot - 1e-12
    assert float(solve(C, method="uniform").value) >= ot - 1e-12
    assert float(solve(C, method="remd").value) <= ot + 1e-12
    w = weights(10, seed=1)
    assert float(solve(C, w, w, method="uniform").value) >= _emd(C, w, w) - 1e-12
