"""Conformance: every registered method honours the solver contract (docs/architecture.md).

Parametrised over the registry; a method's flags decide which checks apply to it.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from _helpers import (
    DTYPES,
    assert_plan_marginals,
    compiling_method_params,
    conformance_problem,
    method_params,
    problem,
    run_method,
    shape_for,
    solved,
    weights,
)

from solvers import OTResult, get_method, solve, solve_sample

ALL = method_params()
COST = method_params(input="cost")


def _by_dtype(params):
    """(method, dtype) pairs."""
    return [
        pytest.param(p.values[0], dt, marks=p.marks, id=f"{p.values[0]}-{str(dt)[6:]}")
        for p in params
        for dt in DTYPES
    ]


ALL_DT = _by_dtype(ALL)
PLAN_DT = _by_dtype(method_params(returns_plan=True))
FEASIBLE_DT = _by_dtype(method_params(feasible_plan=True))
WITH_PARAMS = [p for p in ALL if get_method(p.values[0]).params]


def _marginal_atol(res, dtype) -> float:
    """The tolerance a feasible plan must meet when the method says it converged: its own
    ``tol`` where it has one, else round-off. A solve that did not converge only has to say so:
    a loose bound then."""
    floor = max(1e-9, 50 * torch.finfo(dtype).eps)
    if not res.converged:
        return max(1e-2, floor)
    return max(10 * res.params.get("tol", 0.0), floor)


@pytest.mark.parametrize("name,dtype", ALL_DT)
def test_result_type_shapes_dtypes(name, dtype):
    info = get_method(name)
    (x, y, C, a, b), res = solved(name, str(dtype)[6:])
    n, m = C.shape
    assert isinstance(res, OTResult)
    assert res.method == name
    assert isinstance(res.value, torch.Tensor)
    assert res.value.shape == () and res.value.dtype == dtype
    if info.returns_plan:
        assert res.plan is not None
        assert res.plan.shape == (n, m) and res.plan.dtype == dtype
        assert not res.plan.requires_grad
    else:
        assert res.plan is None
        assert math.isnan(res.marginal_error) or res.marginal_error >= 0
    if info.potentials:
        f, g = res.potentials
        assert f.shape == (n,) and g.shape == (m,)
        assert f.dtype == dtype and g.dtype == dtype
        assert torch.isfinite(f).all() and torch.isfinite(g).all()
    else:
        assert res.potentials is None
    assert isinstance(res.n_iter, int) and res.n_iter >= 0
    assert isinstance(res.marginal_error, float)
    # the resolved parameters are the registry defaults (nothing was overridden)
    assert dict(res.params) == dict(info.params)


@pytest.mark.parametrize("name,dtype", ALL_DT)
def test_converged_is_bool(name, dtype):
    _, res = solved(name, str(dtype)[6:])
    assert type(res.converged) is bool


@pytest.mark.parametrize("name,dtype", ALL_DT)
def test_value_finite(name, dtype):
    (x, y, C, a, b), res = solved(name, str(dtype)[6:])
    assert torch.isfinite(res.value).all(), res
    # a transport value on a non-negative cost with unit mass lies in [min C, max C]
    slack = 1e-4 * float(C.max())
    assert float(C.min()) - slack <= float(res.value) <= float(C.max()) + slack


@pytest.mark.parametrize("name,dtype", PLAN_DT)
def test_plan_nonnegative_and_value_is_plan_dot_cost(name, dtype):
    (x, y, C, a, b), res = solved(name, str(dtype)[6:])
    assert torch.isfinite(res.plan).all()
    assert (res.plan >= 0).all(), float(res.plan.min())
    # value = <P, C> (the regularisation term, if any, is kept apart in extras)
    rtol = 1e-5 if dtype == torch.float32 else 1e-10
    assert torch.allclose(res.value.detach(), (res.plan * C.detach()).sum(), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("name,dtype", FEASIBLE_DT)
def test_feasible_plan_meets_marginals(name, dtype):
    info = get_method(name)
    (x, y, C, a, b), res = solved(name, str(dtype)[6:])
    assert info.returns_plan, "a feasible plan needs a plan"
    atol = _marginal_atol(res, dtype)
    assert_plan_marginals(res.plan, a, b, atol)
    # the reported error is the one of the returned plan
    assert res.marginal_error <= atol


@pytest.mark.parametrize("name,dtype", ALL_DT)
def test_marginal_error_is_reported_honestly(name, dtype):
    """``marginal_error`` = max(|P 1 - a|_1, |P^T 1 - b|_1) of the returned plan."""
    info = get_method(name)
    (x, y, C, a, b), res = solved(name, str(dtype)[6:])
    if not info.returns_plan:
        assert math.isnan(res.marginal_error) or res.marginal_error >= 0
        return
    P = res.plan.double()
    expected = max(
        float((P.sum(1) - a.double()).abs().sum()), float((P.sum(0) - b.double()).abs().sum())
    )
    assert res.marginal_error == pytest.approx(expected, rel=1e-3, abs=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_unknown_parameter_raises(name):
    info = get_method(name)
    x, y, C, a, b = conformance_problem(name)
    with pytest.raises(ValueError, match="unknown parameter") as exc:
        run_method(name, x, y, C, a, b, definitely_not_a_param=1)
    assert "definitely_not_a_param" in str(exc.value)
    # a misspelt real parameter is rejected too, and the message lists what is accepted
    for p in info.params:
        with pytest.raises(ValueError, match="unknown parameter"):
            run_method(name, x, y, C, a, b, **{p + "_": info.params[p]})
        break


@pytest.mark.parametrize("name", WITH_PARAMS)
def test_defaults_can_be_passed_explicitly(name):
    """Passing the registry defaults by name is accepted and changes nothing."""
    info = get_method(name)
    (x, y, C, a, b), res0 = solved(name, "float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_method(name, x, y, C, a, b, **dict(info.params))
    assert dict(res.params) == dict(info.params)
    assert torch.allclose(res.value.detach(), res0.value.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_inputs_are_not_modified(name):
    x, y, C, a, b = conformance_problem(name, seed=3)
    copies = [t.clone() for t in (x, y, C, a, b)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_method(name, x, y, C, a, b)
    for t, c in zip((x, y, C, a, b), copies, strict=True):
        assert torch.equal(t, c)


@pytest.mark.parametrize("name", COST)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_batched_equals_separate(name, dtype):
    """(B, n, m) works for every cost method (``solve`` loops where the method is not batched)
    and equals solving each problem separately."""
    info = get_method(name)
    n, m = shape_for(info, 6, 9)
    B = 3
    probs = [problem(n, m, seed=10 + i, uniform=info.uniform_only, dtype=dtype) for i in range(B)]
    C = torch.stack([p[0] for p in probs])
    a = torch.stack([p[1] for p in probs])
    b = torch.stack([p[2] for p in probs])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rb = solve(C, a, b, method=name)
        rs = [solve(C[i], a[i], b[i], method=name) for i in range(B)]
    assert rb.value.shape == (B,)
    assert type(rb.converged) is bool
    if not info.batched:  # solve loops: converged only if every problem did
        assert rb.converged == all(r.converged for r in rs)
    if info.returns_plan:
        assert rb.plan.shape == (B, n, m)
    if info.potentials:
        assert rb.potentials[0].shape == (B, n) and rb.potentials[1].shape == (B, m)
    sep = torch.stack([r.value for r in rs]).detach()
    if info.exact or info.value_rtol is None:  # direct methods: identical up to round-off
        rtol = 1e-5 if dtype == torch.float32 else 1e-12
    else:  # iterative: both stop within their tolerance of the same answer
        rtol = info.value_rtol
    assert torch.allclose(rb.value.detach(), sep, rtol=rtol, atol=rtol * float(C.abs().max())), (
        rb.value,
        sep,
    )
    if info.returns_plan and (info.exact or info.value_rtol is None):
        for i in range(B):
            assert torch.allclose(
                rb.plan[i], rs[i].plan, atol=1e-5 if dtype == torch.float32 else 1e-12
            )


@pytest.mark.parametrize("name", COST)
def test_shared_weights_broadcast_over_batch(name):
    """Weights of shape (n,) apply to every problem of a (B, n, m) batch."""
    info = get_method(name)
    n, m = shape_for(info, 5, 8)
    C0, a, b = problem(n, m, seed=4, uniform=info.uniform_only)
    C = torch.stack([C0, 2 * C0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = solve(C, a, b, method=name)
        r0 = solve(C0, a, b, method=name)
    rtol = 1e-10 if (info.exact or info.value_rtol is None) else info.value_rtol
    # the second problem is the first with its cost doubled
    assert torch.allclose(
        res.value.detach(), torch.stack([r0.value, 2 * r0.value]).detach(), rtol=rtol
    )


@pytest.mark.parametrize("name", method_params(input="points", batched=False, compiling=True))
def test_unbatched_point_methods_reject_batches(name):
    x, y = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="unbatched|batch"):
        solve_sample(x, y, method=name)


@pytest.mark.parametrize("name", method_params(input="points", batched=True))
def test_batched_point_methods_give_batched_results(name):
    info = get_method(name)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 6, 3, generator=g, dtype=torch.float64)
    y = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = solve_sample(x, y, method=name)
    assert res.value.shape == (2,) and torch.isfinite(res.value).all()
    if info.returns_plan:
        assert res.plan.shape == (2, 6, 4)


@pytest.mark.parametrize("name", COST)
def test_accepts_numpy_and_default_weights(name):
    """Array-likes are accepted; omitted weights are uniform."""
    info = get_method(name)
    n, m = shape_for(info, 5, 8)
    C, _, _ = problem(n, m, seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r_np = solve(C.numpy(), method=name)
        r_t = solve(
            C,
            torch.full((n,), 1 / n, dtype=C.dtype),
            torch.full((m,), 1 / m, dtype=C.dtype),
            method=name,
        )
    assert r_np.value.dtype == torch.float64
    assert torch.allclose(r_np.value, r_t.value.detach(), rtol=1e-12)


@pytest.mark.parametrize("name", method_params(input="cost", uniform_only=False))
def test_zero_weights(name):
    """Zero-weight rows and columns are allowed (non-negative weights): their plan entries are 0,
    and value, potentials and gradients stay finite."""
    info = get_method(name)
    n, m = shape_for(info, 6, 8)
    C, a, b = problem(n, m, seed=8)
    a = a.clone()
    a[2] = 0
    a = a / a.sum()
    b = b.clone()
    b[5] = 0
    b = b / b.sum()
    C = C.clone().requires_grad_(True)
    a.requires_grad_(True)
    b.requires_grad_(True)
    if not info.potentials and name != "exact":  # no duals: no silent a.grad = None
        with pytest.raises(ValueError, match="no gradient with respect to the masses"):
            solve(C, a, b, method=name)
        a, b = a.detach(), b.detach()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = solve(C, a, b, method=name)
    res.value.backward()
    assert torch.isfinite(res.value)
    if info.returns_plan:
        assert float(res.plan[2].abs().sum()) <= 1e-8
        if info.feasible_plan:
            assert float(res.plan[:, 5].abs().sum()) <= 1e-8
    if info.potentials:
        assert all(torch.isfinite(p).all() for p in res.potentials)
    for t in (C, a, b):
        assert t.grad is None or torch.isfinite(t.grad).all()
    if info.approximates_ot:
        ref = solve(C.detach(), a.detach(), b.detach(), method="emd").value
        assert abs(float(res.value.detach()) - float(ref)) <= info.value_rtol * float(ref) + 1e-12


@pytest.mark.parametrize("name", method_params(input="cost", square_only=False))
def test_single_row_or_column(name):
    """n = 1 (or m = 1): the only feasible plan is a (resp. b) spread over the one row."""
    info = get_method(name)
    C = torch.rand(1, 5, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    b = weights(5, seed=9, uniform=info.uniform_only)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = solve(C, None, b, method=name)
        res_t = solve(C.T, b, None, method=name)
    if info.feasible_plan:
        assert torch.allclose(res.plan, b[None, :], atol=1e-6)
        assert torch.allclose(res.value, (C * b).sum(), rtol=1e-6)
        assert torch.allclose(res_t.value, (C * b).sum(), rtol=1e-6)
    else:
        assert torch.isfinite(res.value) and torch.isfinite(res_t.value)


@pytest.mark.parametrize("name", ALL)
def test_solve_sample_mixed_dtypes_follow_x(name):
    """float64 x with float32 y: every method (cost or points) computes in x's dtype."""
    info = get_method(name)
    n, m = shape_for(info, 6, 8)
    x, y = conformance_problem(name, n=n, m=m, seed=4)[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = solve_sample(x, y.float(), method=name)
        ref = solve_sample(x, y.float().double(), method=name)
    assert res.value.dtype == torch.float64
    assert torch.allclose(res.value.detach(), ref.value.detach(), rtol=1e-12)


@pytest.mark.parametrize("name", compiling_method_params())
def test_compiling_method_end_to_end(name):
    """Everything that solves with a method that compiles on first use (KeOps), in one test so
    that one worker compiles its formulas (float64, euclidean, k = 3 only): the conformance
    checks above, the envelope gradient w.r.t. the points, no NaN where points coincide, and
    agreement with a plan-returning point method running the same algorithm and parameters."""
    from solvers import all_methods

    info = get_method(name)
    x0, y0, C, a, b = conformance_problem(name)
    n, m = C.shape
    x = x0.clone().requires_grad_(True)
    copies = [t.clone() for t in (y0, a, b)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = solve_sample(x, y0, a, b, cost="euclidean", method=name)
    # result type, shapes, dtypes, declared capabilities
    assert isinstance(res, OTResult) and res.method == name
    assert res.value.shape == () and res.value.dtype == torch.float64
    assert torch.isfinite(res.value)
    assert float(C.min()) <= float(res.value.detach()) <= float(C.max())
    assert (res.plan is not None) == info.returns_plan
    assert (res.potentials is not None) == info.potentials
    if info.returns_plan:
        assert res.plan.shape == (n, m) and (res.plan >= 0).all()
    if info.potentials:
        assert res.potentials[0].shape == (n,) and res.potentials[1].shape == (m,)
    assert type(res.converged) is bool and isinstance(res.marginal_error, float)
    assert isinstance(res.n_iter, int) and dict(res.params) == dict(info.params)
    assert all(torch.equal(t, c) for t, c in zip((y0, a, b), copies, strict=True))
    # envelope gradient w.r.t. the points: finite
    (3.7 * res.value).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # same algorithm, same parameters, a backend that returns the plan: same value and gradient
    twins = [
        t
        for t, i in all_methods().items()
        if t != name
        and i.is_available
        and i.input == "points"
        and i.returns_plan
        and dict(i.params) == dict(info.params)
    ]
    if twins:
        xt = x0.clone().requires_grad_(True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rt = solve_sample(xt, y0, a, b, cost="euclidean", method=twins[0])
        (3.7 * rt.value).backward()
        # KeOps' exact |x - y| vs a GEMM-based distance: round-off amplified by 1/eps
        assert float(res.value.detach()) == pytest.approx(float(rt.value.detach()), rel=1e-4)
        assert torch.allclose(x.grad, xt.grad, rtol=1e-3, atol=1e-6)
    # coinciding points (euclidean cost is not differentiable there): no NaN
    xs = x0.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rs = solve_sample(xs, x0.clone(), cost="euclidean", method=name)
    rs.value.backward()
    assert torch.isfinite(rs.value) and torch.isfinite(xs.grad).all()
    assert abs(float(rs.value.detach())) <= 1e-2 * float(C.mean())
