"""Exact methods against an independent LP solver (scipy's HiGHS), and the closed forms of the
square uniform case (Birkhoff: the optimal plan is a permutation / n)."""

from __future__ import annotations

import pytest
import torch
from _helpers import (
    assert_plan_marginals,
    lp_reference,
    method_params,
    permutation_problem,
    problem,
    rel_err,
)

from solvers import available, get_method, solve

EXACT = method_params(exact=True)
EXACT_GENERAL = method_params(exact=True, square_only=False, uniform_only=False)
EXACT_POT = method_params(exact=True, potentials=True)


@pytest.mark.parametrize("name", EXACT_GENERAL)
@pytest.mark.parametrize("n,m", [(7, 11), (13, 5), (1, 4), (12, 12)])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_matches_linprog_rectangular_nonuniform(name, n, m, seed):
    C, a, b = problem(n, m, seed=seed)
    ref, _ = lp_reference(C, a, b)
    res = solve(C, a, b, method=name)
    assert res.converged
    assert rel_err(res.value, ref) <= 1e-6, (float(res.value), ref)
    assert (res.plan >= 0).all()
    assert_plan_marginals(res.plan, a, b, atol=1e-10)
    assert rel_err((res.plan * C).sum(), ref) <= 1e-6


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("n", [1, 2, 9, 16])
def test_exact_matches_linprog_square_uniform(name, n):
    """Every exact method (``assignment`` included) on a square uniform problem."""
    C, a, b = problem(n, n, seed=n, uniform=True)
    ref, _ = lp_reference(C, a, b)
    res = solve(C, a, b, method=name)
    assert res.converged
    assert rel_err(res.value, ref) <= 1e-6, (float(res.value), ref)
    assert_plan_marginals(res.plan, a, b, atol=1e-10)


@pytest.mark.parametrize("name", EXACT)
def test_exact_float32_input(name):
    """float32 costs give a float32 result that agrees with the float64 LP to float32 accuracy."""
    C, a, b = problem(9, 9, seed=3, uniform=True)
    ref, _ = lp_reference(C, a, b)
    res = solve(C.float(), a.float(), b.float(), method=name)
    assert res.value.dtype == torch.float32 and res.plan.dtype == torch.float32
    assert rel_err(res.value, ref) <= 1e-5


@pytest.mark.parametrize("name", EXACT_POT)
@pytest.mark.parametrize("n,m", [(7, 11), (13, 5)])
def test_exact_potentials_are_lp_duals(name, n, m):
    """Dual feasibility f_i + g_j <= C_ij, complementary slackness on the support, and no
    duality gap: <a, f> + <b, g> = <P, C>."""
    C, a, b = problem(n, m, seed=5)
    res = solve(C, a, b, method=name)
    f, g = res.potentials
    reduced = C - f[:, None] - g[None, :]
    assert float(reduced.min()) >= -1e-9
    support = res.plan > 1e-12
    assert float(reduced[support].abs().max()) <= 1e-9
    assert float((a * f).sum() + (b * g).sum()) == pytest.approx(float(res.value), rel=1e-9)


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("n", [5, 12])
def test_square_uniform_plan_is_permutation(name, n):
    """n = m uniform: the exact plan is a permutation matrix / n (Birkhoff; unique a.s.)."""
    C, a, b = problem(n, n, seed=20 + n, uniform=True)
    res = solve(C, a, b, method=name)
    P = res.plan * n
    assert torch.allclose(P, P.round(), atol=1e-10), "entries are 0 or 1/n"
    assert torch.equal(P.round().sum(0), torch.ones(n, dtype=P.dtype))
    assert torch.equal(P.round().sum(1), torch.ones(n, dtype=P.dtype))
    # the permutation is the optimal assignment (independent check by scipy)
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(C.numpy())
    assert torch.equal(P.round().argmax(1), torch.as_tensor(cols))


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("cost", ["euclidean", "sqeuclidean"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_permutation_closed_form(name, cost, seed):
    """C = cost(x, x[perm]): value 0 and the plan is the permutation."""
    C, perm, expected = permutation_problem(10, seed=seed, cost=cost)
    res = solve(C, method=name)
    # the GEMM-based euclidean distance of coinciding points is ~sqrt(round-off), not 0
    assert abs(float(res.value)) <= (1e-7 if cost == "euclidean" else 1e-12)
    assert torch.allclose(res.plan, expected, atol=1e-12)


def test_available_exact_names_the_exact_methods():
    exact = available(exact=True)
    assert "emd" in exact and "assignment" in exact
    assert all(get_method(n).exact for n in exact)


def test_emd_and_assignment_agree_on_square_uniform():
    C, a, b = problem(15, 15, seed=7, uniform=True)
    v = {
        name: float(solve(C, method=name).value)
        for name in available(exact=True, uniform_only=False)
        + available(exact=True, uniform_only=True)
    }
    assert max(v.values()) - min(v.values()) <= 1e-12 * max(1.0, max(v.values()))


def test_emd_unnormalised_mass():
    """Total mass 2.5 (not 1): value scales with the mass; masses equal to 1e-5 relative are
    accepted and reconciled."""
    C, a, b = problem(6, 8, seed=11, mass=2.5)
    ref, _ = lp_reference(C, a, b)
    res = solve(C, a, b, method="emd")
    assert rel_err(res.value, ref) <= 1e-6
    res2 = solve(C, a, b * (1 + 1e-7), method="emd")
    assert rel_err(res2.value, ref) <= 1e-6
    assert_plan_marginals(res2.plan, a, b, atol=1e-5)
