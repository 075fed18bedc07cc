"""Invariants with hypothesis (as GeomLoss tests them): symmetry, cost scaling and
shifting, and the permutation closed form.

Direct methods (exact, fixed plans, REMD) are cheap and get full hypothesis runs; iterative
methods are checked on a few seeded draws of the same properties.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from _helpers import gen, method_params, permutation_problem
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solvers import get_method, solve

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

EXACT = method_params(exact=True)
COST = method_params(input="cost")
# direct = no iterations: exact solvers, fixed plans, REMD
DIRECT = [
    p for p in COST if get_method(p.values[0]).exact or get_method(p.values[0]).value_rtol is None
]
ITERATIVE = [p for p in COST if p not in DIRECT]


@st.composite
def ot_problems(draw, *, square=False, uniform=False, generic=True):
    """(C, a, b) in float64 with equal masses. ``generic``: continuous random draws (unique
    optimum a.s.); otherwise small integer costs, so ties and degenerate LPs come up."""
    n = draw(st.integers(1, 7))
    m = n if square else draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**31 - 1))
    mass = draw(st.sampled_from([1.0, 2.5]))
    g = gen(seed)
    if generic:
        C = torch.rand(n, m, generator=g, dtype=torch.float64) * draw(
            st.sampled_from([1e-3, 1.0, 1e3])
        )
    else:
        C = torch.randint(0, 3, (n, m), generator=g).double()
    if uniform:
        a = torch.full((n,), mass / n, dtype=torch.float64)
        b = torch.full((m,), mass / m, dtype=torch.float64)
    else:
        a = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
        b = torch.rand(m, generator=g, dtype=torch.float64) + 0.1
        a, b = mass * a / a.sum(), mass * b / b.sum()
    return C, a, b


def _solve(C, a, b, name, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return solve(C, a, b, method=name, **kw)


def _draw_for(data, name, generic=True):
    info = get_method(name)
    return data.draw(
        ot_problems(square=info.square_only, uniform=info.uniform_only, generic=generic)
    )


# --- symmetry -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXACT)
@SETTINGS
@given(data=st.data())
def test_symmetry_exact(name, data):
    """OT(C^T, b, a) = OT(C, a, b), and the plan is transposed (unique optimum a.s.)."""
    C, a, b = _draw_for(data, name)
    r = _solve(C, a, b, name)
    rt = _solve(C.T.contiguous(), b, a, name)
    scale = float(C.abs().max()) * float(a.sum())
    assert abs(float(r.value) - float(rt.value)) <= 1e-10 * scale + 1e-300
    assert torch.allclose(rt.plan.T, r.plan, atol=1e-9 * float(a.sum()))


@pytest.mark.parametrize("name", EXACT)
@SETTINGS
@given(data=st.data())
def test_symmetry_exact_degenerate(name, data):
    """With ties (integer costs) the optimum may not be unique: the values still agree and the
    transposed plan of the transposed problem is an optimal plan of the original one."""
    C, a, b = _draw_for(data, name, generic=False)
    r = _solve(C, a, b, name)
    rt = _solve(C.T.contiguous(), b, a, name)
    P = rt.plan.T
    assert float(r.value) == pytest.approx(float(rt.value), abs=1e-10 * float(a.sum()))
    assert torch.allclose(P.sum(1), a, atol=1e-10) and torch.allclose(P.sum(0), b, atol=1e-10)
    assert float((P * C).sum()) == pytest.approx(float(r.value), abs=1e-10)


@pytest.mark.parametrize(
    "name",
    [
        p
        for p in DIRECT
        if get_method(p.values[0]).feasible_plan and not get_method(p.values[0]).exact
    ],
)
@SETTINGS
@given(data=st.data())
def test_symmetry_fixed_plans(name, data):
    """Fixed feasible plans are symmetric too (diag(a) and a b^T / mass transpose)."""
    C, a, b = _draw_for(data, name)
    r, rt = _solve(C, a, b, name), _solve(C.T.contiguous(), b, a, name)
    assert torch.allclose(rt.plan.T, r.plan, rtol=1e-12, atol=1e-15)


def test_symmetry_remd():
    """REMD = max of the two relaxations, which swap under transposition."""
    if not get_method("remd").is_available:
        pytest.skip()
    for seed in range(5):
        C = torch.rand(4 + seed, 7, generator=gen(seed), dtype=torch.float64)
        assert float(solve(C, method="remd").value) == pytest.approx(
            float(solve(C.T, method="remd").value), rel=1e-14
        )


# --- cost scaling and shifting --------------------------------------------------------------------


def _check_scaling(name, C, a, b, k, c, rtol):
    mass = float(a.sum())
    v = float(_solve(C, a, b, name).value)
    vk = float(_solve(k * C, a, b, name).value)
    vc = float(_solve(C + c, a, b, name).value)
    scale = float(C.abs().max()) * mass + 1e-300
    assert abs(vk - k * v) <= rtol * k * scale, ("scale", v, vk)
    # the plan does not change with a shift: compare at the scale of the unshifted problem
    assert abs(vc - (v + c * mass)) <= rtol * scale + 1e-12 * abs(c) * mass, (
        "shift",
        v,
        vc - c * mass,
    )


@pytest.mark.parametrize("name", DIRECT)
@SETTINGS
@given(
    data=st.data(), k=st.sampled_from([1e-3, 0.5, 7.0, 1e4]), c=st.sampled_from([-3.0, 0.25, 100.0])
)
def test_cost_scaling_direct(name, data, k, c):
    """value(k C) = k value(C); value(C + c) = value(C) + c * mass (every plan has that mass)."""
    C, a, b = _draw_for(data, name)
    _check_scaling(name, C, a, b, k, c, rtol=1e-10)


@pytest.mark.parametrize("name", ITERATIVE)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shift", [0.25, -3.0, 100.0])
def test_cost_scaling_iterative(name, seed, shift):
    """``reg`` / ``beta`` are relative to the cost's range, so iterative methods are equivariant
    too: the same iterations run on a rescaled / shifted problem (up to round-off and tol).
    Shifts larger than the range (costs that are all negative, or far from 0) included."""
    info = get_method(name)
    n, m = (6, 6) if info.square_only else (5, 8)
    g = gen(seed)
    C = torch.rand(n, m, generator=g, dtype=torch.float64)
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.2
    b = torch.rand(m, generator=g, dtype=torch.float64) + 0.2
    a, b = 2.5 * a / a.sum(), 2.5 * b / b.sum()
    # a certified stop (``gap``) is relative to the value, which a shift changes by design; the
    # iterations themselves are equivariant, so compare them without it (gap=0)
    kw = {"gap": 0.0} if "gap" in info.params else {}
    mass = float(a.sum())
    v = float(_solve(C, a, b, name, **kw).value)
    vk = float(_solve(7.0 * C, a, b, name, **kw).value)
    vc = float(_solve(C + shift, a, b, name, **kw).value)
    scale = float(C.abs().max()) * mass
    tol = info.value_rtol / 10 * scale
    assert abs(vk - 7.0 * v) <= 7.0 * tol, ("scale", v, vk)
    assert abs(vc - (v + shift * mass)) <= tol + 1e-12 * abs(shift) * mass, ("shift", v, vc)


@pytest.mark.parametrize("name", [p for p in ITERATIVE if "gap" in get_method(p.values[0]).params])
@pytest.mark.parametrize("shift", [-3.0, 0.25, 100.0, 1e4])
def test_certificate_holds_on_shifted_costs(name, shift):
    """With the default certified stop, the value is within ``gap`` (relative) of exact OT on
    costs far from 0 too, and ``converged`` is True."""
    g = gen(3)
    C = torch.rand(7, 9, generator=g, dtype=torch.float64) + shift
    a = torch.rand(7, generator=g, dtype=torch.float64) + 0.2
    b = torch.rand(9, generator=g, dtype=torch.float64) + 0.2
    a, b = a / a.sum(), b / b.sum()
    res = _solve(C, a, b, name)
    exact = float(_solve(C, a, b, "emd").value)
    assert res.converged
    assert abs(float(res.value) - exact) <= get_method(name).params["gap"] * abs(exact) + 1e-9


# --- permutation closed form ----------------------------------------------------------------------


@pytest.mark.parametrize("name", EXACT)
@SETTINGS
@given(
    n=st.integers(1, 12),
    seed=st.integers(0, 2**31 - 1),
    cost=st.sampled_from(["euclidean", "sqeuclidean", "cosine"]),
)
def test_permutation_closed_form(name, n, seed, cost):
    """C = cost(x, x[perm]) for distinct points: OT = 0 and the plan is the permutation / n."""
    C, perm, expected = permutation_problem(n, seed=seed, cost=cost)
    res = _solve(C, None, None, name)
    # the GEMM-based euclidean distance of coinciding points is ~sqrt(round-off), not 0
    assert abs(float(res.value)) <= (1e-7 if cost == "euclidean" else 1e-12)
    assert torch.allclose(res.plan, expected, atol=1e-12)
