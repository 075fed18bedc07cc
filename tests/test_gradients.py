"""Gradients three ways: the envelope gradient attached by ``solve``, central finite
differences of the exact value, and autodiff through an independent unrolled Sinkhorn.

All with non-uniform marginals (where the method allows them) and an upstream factor, since
the envelope formula for ``a``, ``b`` is the one most often wrong.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from _helpers import DTYPES, method_params, points, problem, shape_for, weights

from solvers import cost_matrix, get_method, solve, solve_sample

FACTOR = 3.7  # upstream scale: loss = FACTOR * value
COST = method_params(input="cost")
ALL = method_params()


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


def _centred(v):
    return v - v.mean(-1, keepdim=True)


# --- (a) envelope: dvalue/dC = plan, dvalue/da = centred potentials -----------------------------
# grad="envelope" asks for Danskin's gradient whatever the solver did (it is the default's too
# for exact and certified results; an entropic plan at gap=0 defaults to the derivative of its
# <P, C>, tested in (c) and in test_solver_conformance2.py)


@pytest.mark.parametrize("name", COST)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_envelope_gradient_is_plan_and_centred_potentials(name, dtype):
    info = get_method(name)
    n, m = shape_for(info, 6, 9)
    C0, a0, b0 = problem(n, m, seed=1, uniform=info.uniform_only, dtype=dtype)
    C, a, b = _leaf(C0), _leaf(a0), _leaf(b0)
    duals = info.potentials or name == "exact"  # exact takes the LP duals from emd then
    if not duals:  # no potentials: masses that ask for a gradient are refused, not ignored
        with pytest.raises(ValueError, match="no gradient with respect to the masses"):
            _quiet(solve, C, a, b, method=name)
        a, b = a0, b0
    res = _quiet(solve, C, a, b, method=name, grad="envelope")
    assert res.value.requires_grad
    (FACTOR * res.value).backward()
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
    assert C.grad.dtype == dtype
    assert torch.allclose(C.grad, FACTOR * res.plan, **tol)
    if duals:
        f, g = res.potentials
        assert torch.allclose(a.grad, FACTOR * _centred(f), **tol)
        assert torch.allclose(b.grad, FACTOR * _centred(g), **tol)
        # centred: the projection on mass-preserving directions
        assert abs(float(a.grad.sum())) <= 1e-4 and abs(float(b.grad.sum())) <= 1e-4


@pytest.mark.parametrize("name", COST)
def test_envelope_gradient_batched(name):
    """(B, n, m): each problem's cost gets its own plan, scaled by its own upstream weight."""
    info = get_method(name)
    n, m = shape_for(info, 5, 7)
    probs = [problem(n, m, seed=30 + i, uniform=info.uniform_only) for i in range(3)]
    C = _leaf(torch.stack([p[0] for p in probs]))
    a = torch.stack([p[1] for p in probs])
    if info.potentials:  # a method without duals refuses masses that want a gradient
        a = _leaf(a)
    b = torch.stack([p[2] for p in probs])
    res = _quiet(solve, C, a, b, method=name, grad="envelope")
    w = torch.tensor([1.0, -2.0, FACTOR], dtype=C.dtype)
    (w * res.value).sum().backward()
    assert torch.allclose(C.grad, w[:, None, None] * res.plan, rtol=1e-12, atol=1e-14)
    if info.potentials:
        assert torch.allclose(
            a.grad, w[:, None] * _centred(res.potentials[0]), rtol=1e-12, atol=1e-14
        )


@pytest.mark.parametrize("name", method_params(returns_plan=True))
def test_gradient_wrt_points_is_plan_chain_rule(name):
    """solve_sample: dvalue/dx = d<P, cost(x, y)>/dx with P held fixed (envelope + chain rule)."""
    info = get_method(name)
    n, m = shape_for(info, 6, 8)
    x0, y0 = points(n, m, seed=2)
    a = weights(n, seed=3, uniform=info.uniform_only)
    b = weights(m, seed=4, uniform=info.uniform_only)
    x, y = _leaf(x0), _leaf(y0)
    res = _quiet(solve_sample, x, y, a, b, cost="euclidean", method=name, grad="envelope")
    (FACTOR * res.value).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    xr, yr = _leaf(x0), _leaf(y0)
    gx, gy = torch.autograd.grad(FACTOR * (res.plan * cost_matrix(xr, yr)).sum(), (xr, yr))
    assert torch.allclose(x.grad, gx, rtol=1e-10, atol=1e-12)
    assert torch.allclose(y.grad, gy, rtol=1e-10, atol=1e-12)


# --- (b) finite differences of the exact value (emd) ----------------------------------------------

H = 1e-6  # the LP value is piecewise linear: central differences are exact while the basis holds


def _emd_value(C, a, b) -> float:
    return float(solve(C, a, b, method="emd").value)


@pytest.fixture
def emd_problem():
    if not get_method("emd").is_available:
        pytest.skip("emd not available")
    C, a, b = problem(5, 7, seed=12)  # generic: unique primal and dual solutions
    C, a, b = _leaf(C), _leaf(a), _leaf(b)
    res = solve(C, a, b, method="emd")
    (FACTOR * res.value).backward()
    return C, a, b, res


def test_emd_finite_differences_wrt_cost(emd_problem):
    C, a, b, res = emd_problem
    C0, a0, b0 = C.detach(), a.detach(), b.detach()
    fd = torch.zeros_like(C0)
    for i in range(C0.shape[0]):
        for j in range(C0.shape[1]):
            E = torch.zeros_like(C0)
            E[i, j] = H
            fd[i, j] = FACTOR * (_emd_value(C0 + E, a0, b0) - _emd_value(C0 - E, a0, b0)) / (2 * H)
    assert torch.allclose(C.grad, fd, atol=1e-7), (C.grad - fd).abs().max()
    assert torch.allclose(fd, FACTOR * res.plan, atol=1e-7)


@pytest.mark.parametrize("which", ["a", "b"])
def test_emd_finite_differences_wrt_weights(emd_problem, which):
    """Mass-preserving perturbations w + h (e_i - e_k): the FD slope is g_i - g_k where g is the
    returned (centred potential) gradient."""
    C, a, b, res = emd_problem
    C0, a0, b0 = C.detach(), a.detach(), b.detach()
    w0, grad = (a0, a.grad) if which == "a" else (b0, b.grad)
    assert abs(float(grad.sum())) <= 1e-10  # centred
    checked = 0
    for i in range(len(w0)):
        for k in range(len(w0)):
            if i == k:
                continue
            d = torch.zeros_like(w0)
            d[i], d[k] = H, -H
            args_p = (a0 + d, b0) if which == "a" else (a0, b0 + d)
            args_m = (a0 - d, b0) if which == "a" else (a0, b0 - d)
            fd = FACTOR * (_emd_value(C0, *args_p) - _emd_value(C0, *args_m)) / (2 * H)
            assert fd == pytest.approx(float(grad[i] - grad[k]), abs=1e-6), (i, k)
            checked += 1
    assert checked == len(w0) * (len(w0) - 1)


def test_emd_finite_differences_wrt_points():
    """Through the euclidean cost: the envelope gradient w.r.t. x matches FD of the exact value."""
    x0, y0 = points(6, 5, seed=13, k=2)
    a, b = weights(6, seed=14), weights(5, seed=15)
    x = _leaf(x0)
    (FACTOR * solve_sample(x, y0, a, b, method="emd").value).backward()
    fd = _fd_points(lambda xx: float(solve_sample(xx, y0, a, b, method="emd").value), x0)
    assert torch.allclose(x.grad, FACTOR * fd, atol=1e-6)


def _fd_points(value_fn, x0, h=H):
    fd = torch.zeros_like(x0)
    for idx in range(x0.numel()):
        e = torch.zeros_like(x0).view(-1)
        e[idx] = h
        e = e.view_as(x0)
        fd.view(-1)[idx] = (value_fn(x0 + e) - value_fn(x0 - e)) / (2 * h)
    return fd


# --- (c) sinkhorn: FD of the exact value, and autodiff of an independent Sinkhorn -----------------


def _log_sinkhorn(C, a, b, eps, n_iter=3000, scaling=0.5, stage_iter=30):
    """An independent log-domain Sinkhorn, unrolled and differentiable (no envelope trick).

    eps-scaling from the cost range down to ``eps`` (warm starts), then ``n_iter`` iterations at
    ``eps`` (a float, or a tensor to differentiate through). Returns the entropic OT value
    ``<a, f> + <b, g>`` (the dual, exact at the fixed point once the column marginal is met)
    and the plan ``a_i b_j exp((f_i + g_j - C_ij)/eps)``.
    """
    f, g = torch.zeros_like(a), torch.zeros_like(b)
    loga, logb = a.log(), b.log()
    e = float(C.detach().max() - C.detach().min())
    while True:
        final = e <= float(eps)
        e = eps if final else e
        for _ in range(n_iter if final else stage_iter):
            f = -e * torch.logsumexp(logb[None, :] + (g[None, :] - C) / e, dim=1)
            g = -e * torch.logsumexp(loga[:, None] + (f[:, None] - C) / e, dim=0)
        if final:
            break
        e = max(e * scaling, float(eps))
    P = a[:, None] * b[None, :] * torch.exp((f[:, None] + g[None, :] - C) / eps)
    assert float((P.sum(1) - a).detach().abs().sum()) < 1e-8, "reference Sinkhorn did not converge"
    return (a * f).sum() + (b * g).sum(), P


def _plain_entropic(info, reg):
    """Parameters that make the method solve the entropic problem at ``reg`` to high accuracy."""
    p = {"reg": reg}
    if "tol" in info.params:
        p["tol"] = 1e-10
    if "max_iter" in info.params:
        p["max_iter"] = 100_000
    if "gap" in info.params:
        p["gap"] = 0.0  # documented: disables the duality-gap stop, plain entropic OT
    return p


SINKHORN = [
    p
    for p in method_params(input="cost", converges_to_exact=True)
    if "reg" in get_method(p.values[0]).params
]


@pytest.fixture
def sinkhorn_points():
    x0, y0 = points(6, 5, seed=16, k=2)
    return x0, y0, weights(6, seed=17), weights(5, seed=18)


@pytest.mark.parametrize("name", SINKHORN)
@pytest.mark.parametrize("reg", [1e-2, 3e-3])
def test_sinkhorn_envelope_matches_unrolled_autodiff(name, reg, sinkhorn_points):
    """Same eps = reg * (max C - min C). The returned value <P, C> has the derivative autodiff
    gives through an unrolled Sinkhorn (eps following the range, as it does); its envelope
    (grad="envelope") is the gradient of the entropic value <a, f> + <b, g> instead."""
    info = get_method(name)
    x0, y0, a0, b0 = sinkhorn_points
    grads = {}
    for grad in ("auto", "envelope"):
        x, a = _leaf(x0), _leaf(a0)
        res = _quiet(
            solve_sample,
            x,
            y0,
            a,
            b0,
            cost="euclidean",
            method=name,
            grad=grad,
            **_plain_entropic(info, reg),
        )
        (FACTOR * res.value).backward()
        grads[grad] = x.grad, a.grad

    for grad in ("auto", "envelope"):
        xr, ar = _leaf(x0), _leaf(a0)
        C = cost_matrix(xr, y0, "euclidean")
        rng = C.max() - C.min()
        # auto: <P, C> with eps = reg * range(C) moving with C; envelope: W at a fixed eps
        W, P = _log_sinkhorn(C, ar, b0, reg * (rng if grad == "auto" else float(rng)))
        assert torch.allclose(res.plan, P.detach(), atol=1e-7)
        gx, ga = torch.autograd.grad(FACTOR * ((P * C).sum() if grad == "auto" else W), (xr, ar))
        x_grad, a_grad = grads[grad]
        assert torch.allclose(x_grad, gx, rtol=1e-5, atol=1e-8), (grad, (x_grad - gx).abs().max())
        assert torch.allclose(a_grad, _centred(ga), rtol=1e-5, atol=1e-8), (
            grad,
            (a_grad - _centred(ga)).abs().max(),
        )


@pytest.mark.parametrize("name", SINKHORN)
def test_sinkhorn_small_reg_gradient_matches_exact_fd(name, sinkhorn_points):
    """At small reg the entropic plan is near the (unique) LP plan, so the envelope gradient
    w.r.t. x is near the FD gradient of the exact (emd) value; loose tolerance."""
    x0, y0, a, b = sinkhorn_points
    fd = _fd_points(lambda xx: float(solve_sample(xx, y0, a, b, method="emd").value), x0)
    for params in ({"reg": 1e-3}, {}):  # explicit small reg, and the defaults
        x = _leaf(x0)
        res = _quiet(solve_sample, x, y0, a, b, cost="euclidean", method=name, **params)
        (FACTOR * res.value).backward()
        rel = float((x.grad - FACTOR * fd).norm() / (FACTOR * fd).norm())
        assert rel <= 2e-2, (params, rel)


# --- non-differentiable points: coinciding x == y ------------------------------------------------


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("same_tensor", [True, False], ids=["y_is_x", "y_equals_x"])
def test_no_nan_gradient_when_points_coincide(name, same_tensor):
    """li2020 §3.1: the euclidean cost is not differentiable at M_ij = 0; no NaN may come out."""
    info = get_method(name)
    for dtype in DTYPES:
        x = _leaf(points(8, 8, seed=19, dtype=dtype)[0])
        y = x if same_tensor else _leaf(x.detach())
        res = _quiet(solve_sample, x, y, cost="euclidean", method=name)
        assert torch.isfinite(res.value)
        (FACTOR * res.value).backward()
        assert torch.isfinite(x.grad).all(), (name, dtype)
        if not same_tensor:
            assert torch.isfinite(y.grad).all()
        if info.exact:  # the optimum is the identity matching: value 0 (up to the round-off
            # of the GEMM-based distance, ~sqrt(eps) where points coincide)
            assert abs(float(res.value.detach())) <= 10 * torch.finfo(dtype).eps ** 0.5
