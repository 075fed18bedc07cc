"""Solver conformance, second round: the cases found by porting the test suites of
POT, GeomLoss and OTT-JAX to this project's API, and their neighbours.

Every reference is independent of this project's solvers: POT (``ot.emd2``, ``ot.emd``,
``ot.sinkhorn2``), finite differences of the returned value, or the papers' algorithms written
out here.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from _helpers import method_params, problem

from solvers import available, cost_matrix, get_method, solve, solve_sample

ot = pytest.importorskip("ot")
D = torch.float64
COST = method_params(input="cost")
POINTS = method_params(input="points", compiling=True)  # KeOps ones marked slow


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def _emd2(C, a=None, b=None) -> float:
    """POT's exact OT value, in float64 (its network simplex wants C >= 0: shifted, added back)."""
    C = np.asarray(C, dtype=np.float64)
    n, m = C.shape
    a = np.full(n, 1 / n) if a is None else np.asarray(a, dtype=np.float64)
    b = np.full(m, 1 / m) if b is None else np.asarray(b, dtype=np.float64)
    low = min(float(C.min()), 0.0)
    return float(ot.emd2(a, b, C - low)) + low * float(a.sum())


# --- 1. potentials are those of the cost given, not of a shifted one ---------------------------


@pytest.mark.parametrize("name", ["ipot", "sinkhorn", "emd"])
def test_one_by_one_potentials_add_up_to_the_cost(name):
    """ipot solved C - min C and returned its potentials: f + g was 0 instead of C."""
    res = solve(torch.tensor([[2.5]], dtype=D), method=name)
    f, g = res.potentials
    assert float(f[0] + g[0]) == pytest.approx(2.5, abs=1e-12)


@pytest.mark.parametrize("name", ["ipot", "sinkhorn", "emd"])
@pytest.mark.parametrize("shift", [0.0, 3.0, -7.0])
def test_certified_potentials_are_feasible_duals_of_the_original_cost(name, shift):
    """Certified: f_i + g_j <= C_ij and LB = <a, f> + <b, g> <= OT <= value <= LB + gap|value|."""
    C, a, b = problem(7, 9, seed=3)
    C = C + shift
    ref = _emd2(C, a, b)
    res = solve(C, a, b, method=name)
    assert res.converged
    f, g = res.potentials
    assert float((f[:, None] + g[None, :] - C).max()) <= 1e-9
    lb, value = float(a @ f + b @ g), float(res.value)
    assert lb <= ref + 1e-9 <= value + 2e-9
    gap = res.extras.get("gap", 0.0)
    assert value - lb <= gap * abs(value) + 1e-9 and gap <= res.params.get("gap", 0.0) + 1e-12


# --- 2. the gradient is the derivative of what is returned --------------------------------------

GAP0 = [
    ("sinkhorn", {"reg": 0.5, "gap": 0.0, "tol": 1e-13, "max_iter": 100_000}),  # the issue's
    ("sinkhorn", {"reg": 0.05, "gap": 0.0, "tol": 1e-13, "max_iter": 100_000, "relative": False}),
    ("pot_sinkhorn", {"reg": 0.1, "tol": 1e-13}),
    ("ipot", {"gap": 0.0, "max_iter": 50}),
    ("ipot", {"beta": 20.0, "max_iter": 50, "gap": 0.0, "relative": False}),  # lohit2020 Alg. 1
]
GAP0_IDS = [
    f"{n}-{'abs' if p.get('relative') is False else 'rel'}-{p.get('reg', p.get('beta', ''))}"
    for n, p in GAP0
]


def _issue_problem(batch: int | None = None, zero: bool = False):
    """The issue's 5 x 6 problem, non-uniform masses (a zero one with ``zero``)."""
    g = torch.Generator().manual_seed(0)
    shape = (5, 6) if batch is None else (batch, 5, 6)
    C = torch.rand(shape, generator=g, dtype=D)
    a = torch.rand(shape[:-1], generator=g, dtype=D) + 0.1
    b = torch.rand(shape[:-2] + (6,), generator=g, dtype=D) + 0.1
    if zero:
        a[..., 1] = 0.0
    return C, a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)


@pytest.mark.parametrize("name,params", GAP0, ids=GAP0_IDS)
def test_gap0_gradient_wrt_cost_passes_gradcheck(name, params):
    """On the issue's problem the envelope gave -0.016 where finite differences gave +0.038."""
    C, a, b = _issue_problem()
    fn = lambda c: _quiet(solve, c, a, b, method=name, **params).value  # noqa: E731
    assert torch.autograd.gradcheck(
        fn, (C.clone().requires_grad_(),), eps=1e-6, atol=1e-6, rtol=1e-4
    )


@pytest.mark.parametrize("zero", [False, True], ids=["positive", "zero_mass"])
@pytest.mark.parametrize("batch", [None, 3], ids=["single", "batched"])
@pytest.mark.parametrize("name,params", GAP0, ids=GAP0_IDS)
def test_gap0_directional_derivative_matches_finite_differences(name, params, batch, zero):
    """Along (dC, da, db) with mass-preserving da, db: d value = <grad, direction>."""
    C, a, b = _issue_problem(batch, zero)
    g = torch.Generator().manual_seed(1)
    dC = torch.randn(C.shape, generator=g, dtype=D)
    da, db = torch.randn(a.shape, generator=g, dtype=D), torch.randn(b.shape, generator=g, dtype=D)
    if zero:
        da[..., 1] = 0.0  # stay on the non-negative orthant: that mass stays 0
    da, db = (
        da - da.mean(-1, keepdim=True) * (a > 0) * a.shape[-1] / (a > 0).sum(-1, keepdim=True),
        db - db.mean(-1, keepdim=True),
    )
    w = torch.linspace(1.0, 2.0, C.shape[0], dtype=D) if batch else torch.tensor(1.0, dtype=D)
    Cl, al, bl = (t.clone().requires_grad_() for t in (C, a, b))
    (w * _quiet(solve, Cl, al, bl, method=name, **params).value).sum().backward()
    slope = float((Cl.grad * dC).sum() + (al.grad * da).sum() + (bl.grad * db).sum())

    def value(h):
        return float(
            (
                w * _quiet(solve, C + h * dC, a + h * da, b + h * db, method=name, **params).value
            ).sum()
        )

    h = 1e-6
    fd = (value(h) - value(-h)) / (2 * h)
    assert slope == pytest.approx(fd, rel=1e-4, abs=1e-7)


def test_gap0_sinkhorn_value_is_pots_linear_cost_at_that_eps():
    """value = <P_eps, C> (POT's sinkhorn2, which returns the linear cost), not the
    regularised objective: the papers' losses (lu2017 Alg. 1 line 6) are this value."""
    C, a, b = _issue_problem()
    eps = 0.5 * float(C.max() - C.min())
    ref = float(
        ot.sinkhorn2(
            a.numpy(),
            b.numpy(),
            C.numpy(),
            eps,
            method="sinkhorn_log",
            numItermax=100_000,
            stopThr=1e-14,
        )
    )
    res = solve(C, a, b, method="sinkhorn", reg=0.5, gap=0.0, tol=1e-13, max_iter=100_000)
    assert float(res.value) == pytest.approx(ref, rel=1e-9)


def test_envelope_gradient_is_still_available_and_differs_at_gap0():
    C, a, b = _issue_problem()
    grads = {}
    for grad in ("auto", "envelope"):
        Cl = C.clone().requires_grad_()
        res = solve(
            Cl, a, b, method="sinkhorn", reg=0.5, gap=0.0, tol=1e-13, max_iter=100_000, grad=grad
        )
        res.value.backward()
        grads[grad] = Cl.grad
    assert torch.allclose(grads["envelope"], res.plan, atol=1e-15)  # Danskin: the plan
    assert float((grads["auto"] - grads["envelope"]).abs().max()) > 1e-2
    with pytest.raises(ValueError, match="grad='backprop'"):
        solve(C, a, b, method="sinkhorn", grad="backprop")


def _ipot_alg1(C, beta, N):
    """lohit2020 Alg. 1, literally (uniform masses); T^(N)."""
    n, m = C.shape
    mu, nu = torch.full((n,), 1 / n, dtype=D), torch.full((m,), 1 / m, dtype=D)
    v, G, T = torch.full((m,), 1 / m, dtype=D), torch.exp(-C / beta), torch.ones(n, m, dtype=D)
    for _ in range(N):
        Q = G * T
        u = mu / (Q @ v)
        v = nu / (Q.T @ u)
        T = u[:, None] * Q * v[None, :]
    return T


def test_papers_ipot_term_keeps_its_envelope_gradient():
    """ot_samples_ipot (lohit2020): <T, C> with T from N = 50 steps of Alg. 1, the plan held
    fixed in the gradient, as before; only solve()'s default changed."""
    from harness.transfer.regularizers import RegContext, build_regularizer

    g = torch.Generator().manual_seed(4)
    x = torch.relu(torch.randn(12, 8, generator=g, dtype=D))
    y0 = x + 0.3 * torch.relu(torch.randn(12, 8, generator=g, dtype=D))
    y = y0.clone().requires_grad_()
    reg = build_regularizer("ot_samples_ipot", taps="penultimate", alpha=1.0)
    out = reg(RegContext(features={"penultimate": y}, teacher_features={"penultimate": x}))
    out["ot_samples_ipot"].backward()
    yr = y0.clone().requires_grad_()
    C = cost_matrix(yr, x, "cosine")
    T = _ipot_alg1(C.detach(), 20.0, 50)
    (T * C).sum().backward()
    assert torch.allclose(y.grad, yr.grad, rtol=1e-6, atol=1e-10)


# --- 3. GeomLoss on coincident points ------------------------------------------------------------


@pytest.mark.parametrize("cost", ["euclidean", "sqeuclidean", "cosine"])
@pytest.mark.parametrize("shape", [(1, 1), (3, 4)], ids=["1x1", "3x4"])
@pytest.mark.parametrize("name", POINTS)
def test_point_methods_on_coincident_points(name, cost, shape):
    """Every point at one place (diameter 0): GeomLoss took log(0) and failed with "Maximum
    allowed size exceeded"; the value is 0 (POT's emd2 on the same cost)."""
    n, m = shape
    x, y = torch.full((n, 2), 0.5), torch.full((m, 2), 0.5)
    res = _quiet(solve_sample, x, y, cost=cost, method=name)
    ref = _emd2(cost_matrix(x.double(), y.double(), cost))
    assert ref == pytest.approx(0.0, abs=1e-12)
    assert math.isfinite(float(res.value)) and abs(float(res.value)) <= 1e-6
    assert res.marginal_error <= 1e-5


def test_geomloss_zero_vectors_under_cosine_match_the_cost_matrix():
    """A zero vector is at cosine distance 1 from everything (cost_matrix); GeomLoss's
    |x^ - y^|^2 / 2 says 0 between two of them: the plan and value follow our cost."""
    x = torch.zeros(2, 3)
    res = _quiet(solve_sample, x, x, cost="cosine", method="geomloss")
    assert float(res.value) == pytest.approx(_emd2(cost_matrix(x, x, "cosine")), abs=1e-6)
    assert res.marginal_error <= 1e-5


# --- 4. NumPy and list input in float64, as POT -------------------------------------------------


@pytest.mark.parametrize("name", ["emd", "exact", "assignment"])
@pytest.mark.parametrize("kind", ["numpy", "list"])
def test_integer_costs_are_solved_in_float64(name, kind):
    """16,777,217 = 2**24 + 1 is not a float32: it was solved as 16,777,216."""
    C = np.array([[16777217, 16777219], [16777221, 16777218]])
    res = solve(C if kind == "numpy" else C.tolist(), method=name)
    assert res.value.dtype == D
    assert float(res.value) == _emd2(C) == 16777217.5


def test_float32_numpy_stays_float32_and_mass_lists_are_accepted():
    C = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    res = solve(C, [0.2, 0.3, 0.5], [0.25] * 4, method="emd")
    assert res.value.dtype == torch.float32
    assert float(res.value) == pytest.approx(_emd2(C, [0.2, 0.3, 0.5], [0.25] * 4), rel=1e-6)


# --- 5. extras follow the batch shape of the value -----------------------------------------------


def _extras_follow(res, batch: int | None) -> None:
    for key, v in res.extras.items():
        if isinstance(v, torch.Tensor):
            assert v.shape[: res.value.dim()] == res.value.shape, key
            if key in ("warm_f", "warm_g"):  # the entropic duals: one per point, as .potentials
                assert v.dim() == res.value.dim() + 1, (key, tuple(v.shape))
            elif batch is None:
                assert v.dim() == 0, (key, tuple(v.shape))
        elif isinstance(v, list):
            assert batch is not None and len(v) == batch, key


@pytest.mark.parametrize("name", COST)
def test_extras_of_cost_methods_follow_the_value(name):
    info = get_method(name)
    n = 6
    C, a, b = problem(n, n, seed=5, uniform=info.uniform_only)
    res = _quiet(solve, C, a, b, method=name)
    assert res.value.shape == ()
    _extras_follow(res, None)
    Cb = torch.stack([C, C.flip(0), C.flip(1)])
    res = _quiet(solve, Cb, a, b, method=name)
    assert res.value.shape == (3,)
    _extras_follow(res, 3)


@pytest.mark.parametrize("name", [p for p in POINTS if get_method(p.values[0]).batched])
def test_extras_of_point_methods_follow_the_value(name):
    x = torch.rand(2, 5, 3, generator=torch.Generator().manual_seed(6), dtype=D)
    _extras_follow(_quiet(solve_sample, x[0], x[1], method=name), None)
    _extras_follow(_quiet(solve_sample, x, x.flip(1) + 1, method=name), 2)


# --- 6. an uncertified ipot says why --------------------------------------------------------------


def test_uncertified_ipot_says_why_and_a_certified_one_says_nothing():
    C = torch.rand(30, 30, generator=torch.Generator().manual_seed(7), dtype=D)
    r = solve(C, method="ipot", max_iter=10)
    assert not r.converged and "max_iter=10" in r.extras["reason"]
    assert 0 < r.extras["gap"] < math.inf  # the gap its rounding would leave, computed
    r = solve(C, method="ipot", gap=0.0, max_iter=2)  # the papers' N steps, too few
    assert not r.converged and "marginal error" in r.extras["reason"]
    r = solve(C, method="ipot")
    assert r.converged and r.extras["reason"] == ""


# --- 7. sinkhorn certifies at its defaults where the OT value is far below the range --------------


@pytest.mark.parametrize("n", [200, 500])
def test_sinkhorn_defaults_certify_uniform_random_costs(n):
    """+2.1 % (200) and +8.5 % (500) above exact, uncertified, before; the gap stalls at
    eps = reg * range (entropic bias ~ eps log n, value ~ range / n): finished exactly now."""
    C = torch.rand(n, n, generator=torch.Generator().manual_seed(0))
    ref = _emd2(C.double())
    res = solve(C, method="sinkhorn")
    assert res.converged and res.extras["reason"] == ""
    assert res.extras["gap"] <= 1e-3 and res.extras["finish"] == "emd"
    assert float(res.value) == pytest.approx(ref, rel=1e-3)
    assert res.marginal_error <= 1e-5
    raw = solve(C, method="sinkhorn", exact_finish=False)  # the entropic result says why
    assert not raw.converged and "entropic bias" in raw.extras["reason"]
    assert 1e-3 < raw.extras["gap"] < 1 and raw.marginal_error <= 1e-5  # rounded: feasible
    assert float(raw.value) >= ref * (1 - 1e-6)  # a feasible plan: an upper bound


def test_sinkhorn_keeps_its_own_certificate_where_it_can():
    """The li2020 neuron-like problem certifies in tens of iterations: no exact finish."""
    g = torch.Generator().manual_seed(8)
    z = torch.randn(256, 64, generator=g)
    w = 0.7 * z[torch.randperm(256, generator=g)] + 0.71 * torch.randn(256, 64, generator=g)
    C = cost_matrix(z.relu(), w.relu())
    res = solve(C, method="sinkhorn")
    assert res.converged and "finish" not in res.extras
    assert float(res.value) == pytest.approx(_emd2(C.double()), rel=1e-3)


# --- 8. bad parameters and inputs: one line, ValueError -------------------------------------------

BAD = [
    ("max_iter", -5),
    ("max_iter", 0),
    ("max_iter", 2.5),
    ("max_iter", True),
    ("max_iter", "100"),
    ("reg", "0.1"),
    ("reg", math.nan),
    ("reg", math.inf),
    ("reg", -1.0),
    ("reg", None),
    ("beta", "1"),
    ("beta", -0.5),
    ("gap", -1e-3),
    ("gap", math.nan),
    ("gap", "0"),
    ("tol", -1.0),
    ("scaling", 1.0),
    ("sparse", "yes"),
    ("relative", 1),
    ("check_every", 0),
    ("num_threads", 0),
    ("backend", 3),
    ("exact_finish", "no"),
]


@pytest.mark.parametrize("key,bad", BAD, ids=[f"{k}={v!r}" for k, v in BAD])
def test_bad_parameter_is_a_one_line_value_error(key, bad):
    methods = [m for m in available() if key in get_method(m).params]
    assert methods, key
    C = torch.rand(4, 4, dtype=D)
    x = torch.rand(4, 2, dtype=D)
    for name in methods:
        call = (
            (lambda name=name: solve(C, method=name, **{key: bad}))
            if get_method(name).input == "cost"
            else (lambda name=name: solve_sample(x, x + 1, method=name, **{key: bad}))
        )
        with pytest.raises(ValueError, match=key) as exc:
            _quiet(call)
        assert "\n" not in str(exc.value), (name, str(exc.value))


def test_integral_floats_and_numpy_numbers_are_accepted():
    C = torch.rand(5, 5, dtype=D)
    res = solve(C, method="sinkhorn", max_iter=1e4, reg=np.float64(1e-3))
    assert res.params["max_iter"] == 10_000 and isinstance(res.params["max_iter"], int)


@pytest.mark.parametrize("name", [p for p in POINTS] + ["sinkhorn", "emd"])
def test_integer_points_are_cast_to_float64(name):
    """GeomLoss and KeOps failed deep inside on integer points (RuntimeError)."""
    x = torch.tensor([[0, 1], [2, 3], [5, 1]])
    y = torch.tensor([[0, 2], [2, 4], [4, 4]])
    res = _quiet(solve_sample, x, y, method=name, cost="sqeuclidean")
    ref = _quiet(solve_sample, x.double(), y.double(), method=name, cost="sqeuclidean")
    assert res.value.dtype == D and float(res.value) == pytest.approx(float(ref.value), rel=1e-12)
    if get_method(name).exact:
        assert float(res.value) == pytest.approx(
            _emd2(cost_matrix(x.double(), y.double(), "sqeuclidean"))
        )


# --- neighbours -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["sinkhorn", "ipot", "pot_sinkhorn", "emd", "remd"])
def test_half_precision_costs_are_solved_in_float32(name, dtype):
    """sinkhorn and ipot raised NotImplementedError (no half sparse matvec)."""
    C = torch.rand(70, 70, generator=torch.Generator().manual_seed(9)).to(dtype)  # sparse path
    res = _quiet(solve, C, method=name)
    assert res.value.dtype == dtype and res.plan.dtype == dtype
    if get_method(name).approximates_ot and name != "pot_sinkhorn":
        assert float(res.value) == pytest.approx(_emd2(C.double()), rel=2e-2)


@pytest.mark.parametrize(
    "name",
    [p for p in POINTS if not get_method(p.values[0]).batched]
    + [p for p in POINTS if get_method(p.values[0]).batched],
)
def test_half_precision_points(name):
    x = torch.rand(6, 2, generator=torch.Generator().manual_seed(10))
    res = _quiet(solve_sample, x.half(), x.flip(0).half(), method=name)
    assert res.value.dtype == torch.float16 and math.isfinite(float(res.value))


def test_complex_input_is_refused():
    C = torch.rand(3, 3, dtype=torch.complex64)
    for call in (
        lambda: solve(C, method="emd"),
        lambda: solve(C.numpy(), method="emd"),
        lambda: solve_sample(C, C, method="sinkhorn"),
        lambda: solve(torch.rand(3, 3), np.ones(3, dtype=complex) / 3, method="emd"),
    ):
        with pytest.raises(ValueError, match="complex"):
            call()


def test_ragged_or_text_input_is_a_value_error():
    for bad in ([[0.0, 1.0], [1.0]], [["a", "b"], ["c", "d"]], object()):
        with pytest.raises(ValueError, match="cost must be a tensor or an array of numbers"):
            solve(bad, method="emd")


@pytest.mark.parametrize("name", ["sinkhorn", "ipot", "emd"])
def test_non_contiguous_cost_gives_the_contiguous_result(name):
    C = torch.rand(9, 7, generator=torch.Generator().manual_seed(11), dtype=D).T  # a view
    assert not C.is_contiguous()
    assert float(solve(C, method=name).value) == pytest.approx(
        float(solve(C.contiguous(), method=name).value), rel=1e-12
    )
    assert float(solve(C, method=name).value) == pytest.approx(_emd2(C), rel=1e-3)


def test_weights_given_as_integer_counts():
    """Counts [1, 3] are masses (like POT's integer arrays): solved as 0.25, 0.75 x 4."""
    C = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=D)
    res = solve(C, [1, 3], np.array([2, 2]), method="emd")
    assert float(res.value) == pytest.approx(float(ot.emd2([1.0, 3.0], [2.0, 2.0], C.numpy())))


@pytest.mark.parametrize("offset,spread", [(1e7, 1.0), (0.0, 1e7), (1e9, 1e3)])
def test_assignment_of_large_costs_is_optimal(offset, spread):
    """lap.lapjv misassigned 16-27 % of such 15 x 15 problems (large offset or spread)."""
    rng = np.random.default_rng(12)
    for _ in range(20):
        C = rng.random((15, 15)) * spread + offset
        for name in ("assignment", "exact"):
            assert float(solve(C, method=name).value) == pytest.approx(_emd2(C), rel=1e-13)


@pytest.mark.parametrize("name", [m for m in available() if "max_iter" in get_method(m).params])
def test_every_unconverged_result_says_why(name):
    """ipot gave no reason; neither did emd (POT's warning only) nor pot_sinkhorn."""
    C = torch.rand(30, 30, generator=torch.Generator().manual_seed(13), dtype=D)
    res = _quiet(solve, C, method=name, max_iter=3)
    assert not res.converged
    assert isinstance(res.extras["reason"], str) and "max_iter" in res.extras["reason"]


def test_sinkhorn_certifies_a_problem_whose_marginals_stall():
    """6 x 7, non-uniform: the marginal error stalled at 1.06e-3 at eps = reg * range and the
    gap at 1.7e-3, for all 5000 iterations; both stalling now ends in the exact finish."""
    g = torch.Generator().manual_seed(0)
    C = torch.rand(6, 7, generator=g, dtype=D)
    a = torch.rand(6, dtype=D, generator=g) + 0.1
    b = torch.rand(7, dtype=D, generator=g) + 0.1
    a, b = a / a.sum(), b / b.sum()
    res = solve(C, a, b, method="sinkhorn")
    assert res.converged and res.n_iter < 1000
    assert float(res.value) == pytest.approx(_emd2(C, a, b), rel=1e-3)
    raw = solve(C, a, b, method="sinkhorn", exact_finish=False)
    assert not raw.converged and "stopped improving" in raw.extras["reason"]


@pytest.mark.parametrize("cost", ["euclidean", "sqeuclidean"])
def test_geomloss_is_scale_invariant(cost):
    """GeomLoss clamps distances at 1e-4: a cloud of diameter 1e-5 came out +101 % off the
    same cloud at scale 1 (reg is relative: the two problems are the same up to scale)."""
    g = torch.Generator().manual_seed(14)
    x, y = torch.rand(8, 2, generator=g, dtype=D), torch.rand(9, 2, generator=g, dtype=D)
    p = 1 if cost == "euclidean" else 2
    ref = float(_quiet(solve_sample, x, y, cost=cost, method="geomloss").value)
    for s in (1e-5, 1e4):
        val = float(_quiet(solve_sample, x * s, y * s, cost=cost, method="geomloss").value)
        assert val / s**p == pytest.approx(ref, rel=1e-6)


def test_solvers_bench_reports_the_wrapper_overhead(tmp_path, capsys):
    """solve() against the routine it calls (lap.lapjv, ot.emd), d = 16..512."""
    pd = pytest.importorskip("pandas")
    from harness.cli import main

    assert (
        main(
            [
                "solvers",
                "bench",
                "--sizes",
                "16",
                "--methods",
                "emd,assignment",
                "--views",
                "neurons",
                "--repeat",
                "1",
                "--no-progress",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    df = pd.read_csv(tmp_path / "overhead.csv")
    assert set(df["method"]) == {"emd", "assignment"} and set(df["size"]) == {16, 64, 256, 512}
    assert (df["ratio"] > 0).all() and (df["routine_ms"] > 0).all()
    assert "lap.lapjv" in (tmp_path / "overhead.md").read_text()
    assert "wrapper overhead" in capsys.readouterr().out


@pytest.mark.parametrize("name,params", GAP0, ids=GAP0_IDS)
def test_half_precision_gap0_gradient_follows_float64(name, params):
    """ipot's replayed steps ran in float16 and overflowed to inf: replayed in float32 now."""
    C = torch.rand(8, 8, generator=torch.Generator().manual_seed(15)).half()
    params = {**params, **({"tol": 1e-6} if "tol" in params else {})}  # float32 reaches this
    grads = []
    for dtype in (torch.float16, D):
        Cl = C.detach().to(dtype).requires_grad_()
        _quiet(solve, Cl, method=name, **params).value.backward()
        grads.append(Cl.grad.double())
    assert torch.isfinite(grads[0]).all()
    assert float((grads[0] - grads[1]).norm() / grads[1].norm()) < 2e-2
