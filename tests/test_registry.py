"""The registry is the source of truth: its data must be complete and consistent,
and it must behave as a plugin registry (duplicate names raise, new methods are picked up)."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Mapping, get_args

import pytest
import torch
from _helpers import method_params, solved

import solvers
from solvers import MethodInfo, all_methods, available, get_method, register, solve
from solvers._registry import Gradient, Input

NAMES = list(all_methods())
ALL = method_params()


def test_registry_is_not_empty_and_names_match():
    methods = all_methods()
    assert len(methods) >= 2
    for name, info in methods.items():
        assert isinstance(info, MethodInfo) and info.name == name


@pytest.mark.parametrize("name", NAMES)
def test_method_info_is_complete(name):
    info = get_method(name)
    assert isinstance(info.description, str) and len(info.description.strip()) >= 10
    assert isinstance(info.params, Mapping)
    assert all(isinstance(k, str) and k.isidentifier() for k in info.params)
    assert info.input in get_args(Input)
    assert info.gradient in get_args(Gradient)
    assert isinstance(info.requires, tuple) and all(isinstance(r, str) for r in info.requires)
    assert isinstance(info.devices, tuple) and "cpu" in info.devices
    for flag in (
        "exact",
        "converges_to_exact",
        "returns_plan",
        "potentials",
        "feasible_plan",
        "batched",
        "square_only",
        "uniform_only",
    ):
        assert isinstance(getattr(info, flag), bool), flag
    assert callable(info.fn)
    assert info.fn.__doc__, "the implementation carries the math in its docstring"


@pytest.mark.parametrize("name", NAMES)
def test_capability_flags_are_consistent(name):
    info = get_method(name)
    assert not (info.exact and info.converges_to_exact), "exact methods do not 'converge to' exact"
    if info.exact or info.converges_to_exact:
        assert info.value_rtol is not None and 0 < info.value_rtol < 1
        assert info.approximates_ot
    else:
        assert info.value_rtol is None, "value_rtol is only meaningful for methods approximating OT"
        assert not info.approximates_ot
    if info.exact:
        assert info.returns_plan and info.feasible_plan and info.value_rtol <= 1e-6
    if not info.returns_plan:
        assert not info.feasible_plan, "a feasible plan needs a plan"
    if info.gradient == "envelope":
        assert info.returns_plan or info.input == "points", (
            "the envelope gradient of a cost method is attached from its plan"
        )


@pytest.mark.parametrize("name", NAMES)
def test_params_match_the_implementation_signature(name):
    """Every registered parameter is a keyword of ``fn`` (and nothing else is), so the registry
    defaults are what actually runs."""
    info = get_method(name)
    sig = inspect.signature(info.fn)
    kw = {p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    expected = (
        set(info.params)
        | ({"cost"} if info.input == "points" else set())
        | ({"cost_range"} if info.cost_range else set())
        | ({"warmstart"} if info.warmstart else set())
    )  # solve's hint / initial value
    assert kw == expected
    positional = [
        p.name
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    assert positional == (["C", "a", "b"] if info.input == "cost" else ["x", "y", "a", "b"])


@pytest.mark.parametrize("name", ALL)
def test_results_match_declared_capabilities(name):
    """returns_plan False => no plan; potentials False => none; and vice versa."""
    info = get_method(name)
    _, res = solved(name, "float64")
    assert (res.plan is not None) == info.returns_plan
    assert (res.potentials is not None) == info.potentials
    assert res.method == name


def test_method_info_is_frozen():
    info = get_method(NAMES[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.exact = not info.exact


def test_all_methods_returns_a_copy():
    m = all_methods()
    m.pop(NAMES[0])
    assert NAMES[0] in all_methods()


def test_available_exact_contains_emd_and_assignment():
    exact = available(exact=True)
    assert "emd" in exact and "assignment" in exact


@pytest.mark.parametrize(
    "flag,value",
    [
        ("exact", True),
        ("input", "points"),
        ("input", "cost"),
        ("batched", True),
        ("square_only", False),
        ("potentials", True),
    ],
)
def test_available_filters_on_flags(flag, value):
    names = available(**{flag: value})
    assert names == [
        n for n, i in all_methods().items() if i.is_available and getattr(i, flag) == value
    ]
    assert set(names) <= set(available())


def test_available_lists_only_installed():
    assert set(available()) == {n for n, i in all_methods().items() if i.is_available}
    assert list(all_methods()) == NAMES  # registration order is stable


def test_duplicate_registration_raises():
    name = NAMES[0]
    before = get_method(name)
    with pytest.raises(ValueError, match=f"{name!r} is already registered"):
        register(name, description="again")(lambda C, a, b: {})
    assert get_method(name) is before  # the original is untouched


@pytest.fixture
def restore_methods():
    """The solver registry as it was before the test (its registrations undone)."""
    from solvers._registry import METHODS

    with METHODS.restoring():
        yield


def test_registering_a_method_makes_it_usable(restore_methods):
    """A plugin registered with its capabilities is listed, filtered and solvable, with its
    parameters validated and the envelope gradient attached — no other edit needed."""

    @register(
        "test_north_west",
        batched=False,
        params={"shift": 0.0},
        description="north-west corner rule (test plugin)",
    )
    def north_west(C, a, b, *, shift):
        """North-west corner rule: a feasible (not optimal) plan."""
        a, b = a.clone(), b.clone()
        P = torch.zeros_like(C)
        i = j = 0
        while i < len(a) and j < len(b):
            t = torch.minimum(a[i], b[j])
            P[i, j] = t
            a[i] -= t
            b[j] -= t
            if a[i] <= 1e-15:
                i += 1
            else:
                j += 1
        return {"plan": P, "converged": True}

    assert "test_north_west" in available()
    assert "test_north_west" in available(exact=False, input="cost")
    assert "test_north_west" not in available(exact=True)
    C = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    res = solve(C, method="test_north_west")
    assert res.method == "test_north_west" and res.params == {"shift": 0.0}
    assert torch.allclose(res.plan.sum(1), torch.full((3,), 1 / 3, dtype=torch.float64))
    res.value.backward()
    assert torch.equal(C.grad, res.plan)
    with pytest.raises(ValueError, match="unknown parameter"):
        solve(C, method="test_north_west", reg=1.0)
    with pytest.raises(ValueError, match="did you mean 'test_north_west'"):
        get_method("test_north_wset")


def test_public_surface():
    for name in (
        "solve",
        "solve_sample",
        "available",
        "all_methods",
        "get_method",
        "OTResult",
        "cost_matrix",
    ):
        assert name in solvers.__all__ and hasattr(solvers, name)
