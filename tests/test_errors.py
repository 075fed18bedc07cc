"""Bad input gets a ValueError that names the problem (docs/architecture.md, solver contract).

Input validation is common to all methods, so it is checked for every available cost method
(it must fire before any solving starts, so these tests are fast).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from _helpers import method_params, problem

from solvers import available, cost_matrix, get_method, solve, solve_sample

COST = method_params(input="cost")
POINTS = method_params(input="points", compiling=True)  # validation only: nothing compiles
ALL = method_params(compiling=True)


def _square(name, n=4):
    """A valid square uniform problem (acceptable to every method, square_only / uniform_only
    included), so each test breaks exactly one thing."""
    return problem(n, n, seed=0, uniform=True)


@pytest.mark.parametrize("name", COST)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_cost(name, bad):
    C, a, b = _square(name)
    C[1, 2] = bad
    with pytest.raises(ValueError, match="non-finite"):
        solve(C, a, b, method=name)


@pytest.mark.parametrize("name", COST)
def test_non_finite_cost_batched_and_overflowing_sum(name):
    """Finite entries whose sum overflows pass validation (and a non-finite value would have to
    be reported as not converged); one NaN in one problem of a batch is rejected."""
    C, a, b = _square(name)
    big = 1e307 * (1 + C)  # every entry finite, the sum overflows to inf
    assert not torch.isfinite(big.sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = solve(big, a, b, method=name)
    assert torch.isfinite(res.value).all() or not res.converged, "never a silent non-finite value"
    Cb = torch.stack([C, C.clone()])
    Cb[1, 0, 0] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        solve(Cb, method=name)


@pytest.mark.parametrize("name", COST)
@pytest.mark.parametrize("which", ["a", "b"])
def test_negative_weights(name, which):
    C, a, b = _square(name)
    w = (a if which == "a" else b).clone()
    w[0], w[1] = -0.1, w[1] + 0.1
    args = (w, b) if which == "a" else (a, w)
    with pytest.raises(ValueError, match=f"weights {which}.*negative"):
        solve(C, *args, method=name)


@pytest.mark.parametrize("name", COST)
@pytest.mark.parametrize("bad", [math.nan, math.inf], ids=["nan", "inf"])
def test_non_finite_weights(name, bad):
    C, a, b = _square(name)
    a = a.clone()
    a[0] = bad
    with pytest.raises(ValueError, match="weights a.*non-finite"):
        solve(C, a, b, method=name)


@pytest.mark.parametrize("name", COST)
def test_zero_total_mass(name):
    C, a, b = _square(name)
    with pytest.raises(ValueError, match="zero total mass"):
        solve(C, torch.zeros_like(a), torch.zeros_like(b), method=name)


@pytest.mark.parametrize("name", COST)
def test_unequal_total_mass(name):
    C, a, b = _square(name)
    with pytest.raises(ValueError, match="unequal total mass") as exc:
        solve(C, a, 2 * b, method=name)
    assert "sum(a)=1" in str(exc.value) and "sum(b)=2" in str(exc.value)


@pytest.mark.parametrize("name", COST)
@pytest.mark.parametrize("which", ["a", "b"])
def test_weight_shape_mismatch(name, which):
    C, a, b = _square(name)
    w = torch.full((5,), 0.2, dtype=C.dtype)
    args = (w, b) if which == "a" else (a, w)
    with pytest.raises(ValueError, match=rf"weights {which} have shape \(5,\); expected \(4,\)"):
        solve(C, *args, method=name)


@pytest.mark.parametrize("name", COST)
def test_batched_weight_shape_mismatch(name):
    C, a, b = _square(name)
    Cb = torch.stack([C, C, C])
    with pytest.raises(ValueError, match="weights a have shape"):
        solve(Cb, torch.stack([a, a]), None, method=name)


@pytest.mark.parametrize("name", COST)
@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0, 0), (0, 3, 3)])
def test_empty_cost(name, shape):
    with pytest.raises(ValueError, match="empty"):
        solve(torch.zeros(shape, dtype=torch.float64), method=name)


@pytest.mark.parametrize("name", COST)
@pytest.mark.parametrize("shape", [(3,), (2, 2, 2, 2), ()])
def test_cost_of_wrong_rank(name, shape):
    with pytest.raises(ValueError, match=r"shape \(n, m\)"):
        solve(torch.zeros(shape, dtype=torch.float64), method=name)


@pytest.mark.parametrize("name", COST)
def test_integer_cost(name):
    with pytest.raises(ValueError, match="floating-point"):
        solve(torch.ones(3, 3, dtype=torch.int64), method=name)


@pytest.mark.parametrize(
    "typo,expected",
    [("sinkhorm", "sinkhorn"), ("emdd", "emd"), ("IPOT", "ipot"), ("assignement", "assignment")],
)
def test_unknown_method_suggests_close_match(typo, expected):
    if expected not in available():
        pytest.skip(f"{expected} not available")
    C, a, b = _square(expected)
    for call in (
        lambda: solve(C, method=typo),
        lambda: get_method(typo),
        lambda: solve_sample(torch.rand(3, 2), torch.rand(3, 2), method=typo),
    ):
        with pytest.raises(ValueError, match=f"unknown OT method '{typo}'") as exc:
            call()
        assert f"did you mean '{expected}'" in str(exc.value)


def test_unknown_method_without_close_match_lists_known():
    with pytest.raises(ValueError, match="unknown OT method") as exc:
        get_method("xyzzy")
    assert "did you mean" not in str(exc.value)
    assert all(name in str(exc.value) for name in available())


@pytest.mark.parametrize("name", ALL)
def test_unknown_parameter(name):
    info = get_method(name)
    C, a, b = _square(name)
    x = torch.rand(4, 2, dtype=torch.float64)
    call = (
        (lambda: solve(C, a, b, method=name, numItermax=10))
        if info.input == "cost"
        else (lambda: solve_sample(x, x, method=name, numItermax=10))
    )
    with pytest.raises(ValueError, match="unknown parameter") as exc:
        call()
    msg = str(exc.value)
    assert "numItermax" in msg and repr(name) in msg
    assert all(p in msg for p in info.params)  # lists what it accepts


@pytest.mark.parametrize(
    "name", [p for p in ALL if {"reg", "beta"} & set(get_method(p.values[0]).params)]
)
@pytest.mark.parametrize("bad_value", [0.0, -1.0])
def test_non_positive_accuracy_parameter(name, bad_value):
    """``reg`` and ``beta`` must be positive: a clear ValueError, not a crash deep inside."""
    info = get_method(name)
    keys = [k for k in ("reg", "beta") if k in info.params]
    C, a, b = _square(name)
    x, y = torch.rand(4, 3, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64)
    extra = {"max_iter": 10} if "max_iter" in info.params else {}  # fail fast if not validated
    for key in keys:
        with pytest.raises(ValueError, match=key):
            if info.input == "cost":
                solve(C, a, b, method=name, **{key: bad_value}, **extra)
            else:
                solve_sample(x, y, method=name, **{key: bad_value}, **extra)


@pytest.mark.parametrize("name", [p for p in ALL if "scaling" in get_method(p.values[0]).params])
@pytest.mark.parametrize("bad_value", [0.0, 1.0, 1.5])
def test_scaling_outside_unit_interval(name, bad_value):
    info = get_method(name)
    C, a, b = _square(name)
    x = torch.rand(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="scaling"):
        if info.input == "cost":
            solve(C, a, b, method=name, scaling=bad_value)
        else:
            solve_sample(x, x + 1, method=name, scaling=bad_value)


@pytest.mark.parametrize("name", method_params(input="cost"))
def test_unknown_cost_name(name):
    x = torch.rand(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown cost 'manhattan'") as exc:
        solve_sample(x, x, cost="manhattan", method=name)
    assert "euclidean" in str(exc.value)


def test_unknown_cost_name_in_cost_matrix():
    x = torch.rand(4, 3)
    with pytest.raises(ValueError, match="unknown cost 'cosinus'"):
        cost_matrix(x, x, "cosinus")


@pytest.mark.parametrize("name", method_params(square_only=True))
def test_square_only_methods_reject_rectangular(name):
    """``assignment`` and ``identity`` (and any square_only method) on n != m."""
    C, _, _ = problem(4, 6, seed=1, uniform=True)
    with pytest.raises(ValueError, match=rf"'{name}' needs a square problem \(n == m\); got 4 x 6"):
        solve(C, method=name)


@pytest.mark.parametrize("name", method_params(uniform_only=True))
def test_uniform_only_methods_reject_nonuniform(name):
    C, a, b = problem(5, 5, seed=1, uniform=False)
    with pytest.raises(ValueError, match=f"'{name}' needs uniform marginals"):
        solve(C, a, b, method=name)


@pytest.mark.parametrize("name", POINTS)
def test_point_method_given_a_cost_matrix(name):
    C, a, b = _square(name)
    with pytest.raises(ValueError, match="works on points") as exc:
        solve(C, a, b, method=name)
    assert "solve_sample" in str(exc.value)


@pytest.mark.parametrize("name", ALL)
def test_mismatched_point_dimensions(name):
    with pytest.raises(ValueError, match="same k"):
        solve_sample(torch.rand(5, 3), torch.rand(4, 2), method=name)
    with pytest.raises(ValueError, match="same k"):
        solve_sample(torch.rand(5, 3), torch.rand(2, 4, 3), method=name)


@pytest.mark.parametrize("name", ALL)
def test_bad_points(name):
    with pytest.raises(ValueError, match="empty point cloud"):
        solve_sample(torch.rand(0, 3), torch.rand(4, 3), method=name)
    x = torch.rand(5, 3)
    x[0, 0] = math.nan
    with pytest.raises(ValueError, match="points x contain non-finite"):
        solve_sample(x, torch.rand(4, 3), method=name)


@pytest.mark.parametrize("name", POINTS)
def test_point_method_weight_errors(name):
    """Point methods validate their weights like cost methods."""
    x, y = torch.rand(5, 3, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="unequal total mass"):
        solve_sample(
            x,
            y,
            torch.full((5,), 0.2, dtype=torch.float64),
            torch.full((4,), 0.5, dtype=torch.float64),
            method=name,
        )
    with pytest.raises(ValueError, match="negative"):
        solve_sample(
            x, y, torch.tensor([-0.2, 0.4, 0.4, 0.2, 0.2], dtype=torch.float64), None, method=name
        )
    with pytest.raises(ValueError, match=r"weights b have shape"):
        solve_sample(x, y, None, torch.full((3,), 1 / 3, dtype=torch.float64), method=name)


def test_unavailable_method_names_its_dependency():
    """A registered method whose optional package is missing raises a ValueError naming it."""
    from solvers._registry import METHODS

    info = get_method("emd")
    with METHODS.restoring():  # the registration is undone after the block
        METHODS.register(
            "emd_missing_dep",
            info.fn,
            exact=True,
            params=info.params,
            requires=("no_such_module_xyz",),
        )
        assert "emd_missing_dep" not in available()
        with pytest.raises(ValueError, match="no_such_module_xyz"):
            solve(torch.rand(3, 3, dtype=torch.float64), method="emd_missing_dep")
