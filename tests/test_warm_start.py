"""Warm-started OT across training steps: POT reference, certification,
per-tap / per-member state, shape-change reset, bad input, the loop carrying the state."""

from __future__ import annotations

import ot
import pytest
import torch

from harness.training.loop import TrainConfig, train
from harness.transfer import warm
from harness.transfer.regularizers import build_regularizer
from solvers import solve


def _problem(n=30, m=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    C = torch.rand(n, m, generator=g, dtype=torch.float64)
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
    b = torch.rand(m, generator=g, dtype=torch.float64) + 0.1
    return C, a / a.sum(), b / b.sum()


def test_warm_sinkhorn_equals_pot_and_converges_at_once():
    C, a, b = _problem()
    reg = 0.05
    kw = dict(method="sinkhorn", reg=reg, gap=0.0, relative=False, tol=1e-10)
    cold = solve(C, a, b, **kw)
    warm_res = solve(C, a, b, warmstart=cold.potentials, **kw)
    ref = ot.sinkhorn(a, b, C, reg, method="sinkhorn_log", stopThr=1e-13, numItermax=100000)
    torch.testing.assert_close(cold.plan, ref, atol=1e-9, rtol=0)
    torch.testing.assert_close(warm_res.plan, ref, atol=1e-9, rtol=0)
    assert warm_res.n_iter <= 2 < cold.n_iter
    # POT's own warm start from the same potentials (log-scalings) lands on the same plan
    f, g = cold.potentials
    ref_w = ot.bregman.sinkhorn_log(
        a, b, C, reg, warmstart=(torch.log(a) + f / reg, torch.log(b) + g / reg), stopThr=1e-13
    )
    torch.testing.assert_close(warm_res.plan, ref_w, atol=1e-9, rtol=0)
    # pot_sinkhorn forwards it to POT
    p_cold = solve(C, a, b, method="pot_sinkhorn", reg=0.05, tol=1e-9)
    p_warm = solve(C, a, b, method="pot_sinkhorn", reg=0.05, tol=1e-9, warmstart=p_cold.potentials)
    assert p_warm.n_iter < p_cold.n_iter
    torch.testing.assert_close(p_warm.plan, p_cold.plan, atol=1e-8, rtol=0)


@pytest.mark.parametrize("reg", [1e-3, 1e-2])
def test_warm_certified_where_cold_is(reg):
    C, a, b = _problem(40, 40, seed=1)
    prev = solve(C, a, b, method="sinkhorn", reg=reg)
    C2 = C + 0.01 * torch.rand(
        40, 40, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    cold = solve(C2, a, b, method="sinkhorn", reg=reg)
    w = solve(
        C2,
        a,
        b,
        method="sinkhorn",
        reg=reg,
        warmstart=(prev.extras["warm_f"], prev.extras["warm_g"]),
    )
    assert cold.converged and w.converged
    assert w.extras["gap"] <= 1e-3
    exact = ot.emd2(a, b, C2)
    assert float(w.value) == pytest.approx(float(exact), rel=1e-3)


def test_batched_warmstart_per_member():
    C = torch.stack([_problem(20, 25, seed=s)[0] for s in range(3)])
    kw = dict(method="sinkhorn", reg=0.05, gap=0.0, tol=1e-9)
    cold = solve(C, **kw)
    assert cold.potentials[0].shape == (3, 20)
    w = solve(C, warmstart=cold.potentials, **kw)
    assert w.n_iter <= 2
    torch.testing.assert_close(w.plan, cold.plan, atol=1e-8, rtol=0)
    # swapping two members' potentials is not their own: more iterations
    f, g = cold.potentials
    swapped = solve(C, warmstart=(f[[1, 0, 2]], g[[1, 0, 2]]), **kw)
    assert swapped.n_iter > w.n_iter


@pytest.mark.parametrize(
    "bad, match",
    [
        ((torch.zeros(5), torch.zeros(40)), r"warmstart f .* has shape \(5,\)"),
        ((torch.zeros(30), torch.full((40,), float("nan"))), "warmstart g .* non-finite"),
        (torch.zeros(30), "must be a pair"),
    ],
)
def test_bad_warmstart_one_line(bad, match):
    C, a, b = _problem()
    with pytest.raises(ValueError, match=match) as err:
        solve(C, a, b, method="sinkhorn", warmstart=bad)
    assert "\n" not in str(err.value)


def test_method_without_warmstart_refuses():
    C, a, b = _problem()
    with pytest.raises(ValueError, match="takes no warmstart"):
        solve(C, a, b, method="emd", warmstart=(torch.zeros(30), torch.zeros(40)))


def test_state_helpers_reset_on_shape_change():
    f, g = torch.zeros(4), torch.zeros(5)
    state = warm.carry({}, {"omega_p/penultimate": (f, g)})
    assert warm.start(state, "omega_p/penultimate", 4, 5) is not None
    assert warm.start(state, "omega_p/penultimate", 3, 5) is None  # smaller last batch
    assert warm.start(state, "omega_p/stage1", 4, 5) is None
    kf, kg = torch.zeros(2, 4), torch.zeros(2, 5)
    state = warm.carry(state, {"omega_p/stage1": (kf, kg)})
    assert warm.start(state, "omega_p/stage1", 4, 5, (2,)) is not None
    assert warm.start(state, "omega_p/stage1", 4, 5, (1,)) is None  # a member dropped
    assert warm.enabled("auto", "sinkhorn", {"gap": 0.0})
    assert not warm.enabled("auto", "ipot", {"gap": 0.0})  # fixed N: opt-in only
    assert warm.enabled(True, "ipot", {})
    with pytest.raises(ValueError, match="warm_start must be"):
        build_regularizer("omega_p", plan="sinkhorn", warm_start="yes")


def test_loop_carries_state_iterations_drop():
    from torch.utils.data import TensorDataset

    from harness.zoo.models import MLP

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=g)
    ds = TensorDataset(x, y)
    iters = {}
    for ws in (False, "auto"):
        torch.manual_seed(0)
        model, teacher = (
            MLP(3, in_features=10, widths=(16, 16)).double(),
            MLP(3, in_features=10, widths=(16, 16)).double().eval(),
        )
        reg = build_regularizer(
            "omega_p",
            plan="sinkhorn",
            reg=0.05,
            gap=0.0,
            tol=1e-9,
            taps=["penultimate"],
            warm_start=ws,
        )
        # one full batch: the cost changes only by the SGD step (new batches change it more)
        cfg = TrainConfig(epochs=4, batch_size=64, lr=1e-4, eval_every=4, seed=0)
        res = train(model, ds, ds, config=cfg, regularizer=reg, teacher=teacher, progress=False)
        iters[ws] = res.history["steps"]["omega_p/penultimate/n_iter"]
    assert iters["auto"][0] == iters[False][0]  # step 1: no previous potentials
    assert max(iters["auto"][1:]) < min(iters[False][1:])
