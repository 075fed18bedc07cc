"""The papers' losses against literal implementations written from the papers.

Each reference below is a plain loop of the paper's algorithm or equation, sharing no code
with the project: lohit2020 Alg. 1 (IPOT, absolute beta), lu2017 Alg. 1 + Eq. 11 (JTLN value
and gradient), li2020 Eq. 7 / Hinton's KD, lu2017 Eq. 14 (linear MK-MMD), lu2017 Eq. 16
(entropic OT label cost).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness import representation_ot
from harness.transfer.regularizers import (
    RegContext,
    build_regularizer,
    jtln_loss,
    kd_loss,
    label_cost_mkmmd,
    label_cost_ot,
)
from solvers import solve

D = torch.float64


def _cosine(x, y):  # lohit2020 Eq. (3), written out
    C = torch.empty(x.shape[0], y.shape[0], dtype=D)
    for i in range(x.shape[0]):
        for j in range(y.shape[0]):
            C[i, j] = 1 - float(x[i] @ y[j]) / (float(x[i].norm()) * float(y[j].norm()))
    return C


def _ipot_alg1(C, beta, N):
    """lohit2020 Alg. 1, literally: v = 1/b, G = exp(-C/beta), T = 1 1^T; N times
    Q = G * T, u = mu / (Q v), v = nu / (Q^T u), T = diag(u) Q diag(v)."""
    n, m = C.shape
    mu, nu = torch.full((n,), 1 / n, dtype=D), torch.full((m,), 1 / m, dtype=D)
    v = torch.full((m,), 1 / m, dtype=D)
    G = torch.exp(-C / beta)
    T = torch.ones(n, m, dtype=D)
    for _ in range(N):
        Q = G * T
        u = mu / (Q @ v)
        v = nu / (Q.T @ u)
        T = torch.diag(u) @ Q @ torch.diag(v)
    return float((T * C).sum()), T


def _relu_features(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(n, d, generator=g, dtype=D))


@pytest.mark.parametrize("spread", [1.0, 0.05])  # cost ranges ~0.8 and ~0.03, far from 2
def test_ipot_absolute_beta_is_lohit2020_algorithm_1(spread):
    x = _relu_features(64, 32, 0)
    y = x + spread * _relu_features(64, 32, 1)  # correlated: a small-range cosine cost
    C = _cosine(x, y)
    rng = float(C.max() - C.min())
    assert rng < 1.0  # post-ReLU features: cosine costs of range <= 1, not 2
    ref, T = _ipot_alg1(C, 20.0, 50)
    res = solve(C, method="ipot", beta=20, max_iter=50, gap=0, relative=False)
    assert float(res.value) == pytest.approx(ref, rel=1e-6, abs=1e-12)
    assert torch.allclose(res.plan, T, rtol=1e-6, atol=1e-12)
    assert res.n_iter == 50
    # through the representation API and the regularizer's defaults (beta 20, N 50, absolute)
    val = representation_ot(
        y,
        x,
        view="samples",
        cost="cosine",
        plan="ipot",
        beta=20,
        max_iter=50,
        gap=0,
        relative=False,
    )
    assert float(val) == pytest.approx(ref, rel=1e-6, abs=1e-12)
    reg = build_regularizer("ot_samples_ipot", taps="penultimate", alpha=1.0)
    ctx = RegContext(features={"penultimate": y}, teacher_features={"penultimate": x})
    assert float(reg(ctx)["ot_samples_ipot"]) == pytest.approx(ref, rel=1e-6, abs=1e-12)
    # the range-relative beta (the former default, 10 x range) is another point between the
    # exact and the uniform plan: the two differ on these costs
    rel = float(solve(C, method="ipot", beta=10, max_iter=50, gap=0).value)
    assert abs(rel - ref) > 1e-3 * abs(ref)
    assert float(_ipot_alg1(C, 10 * rng, 50)[0]) == pytest.approx(rel, rel=1e-6)


def test_sinkhorn_absolute_reg_is_entropic_ot_at_that_eps():
    C = _cosine(_relu_features(12, 8, 2) + 0.1, _relu_features(10, 8, 3) + 0.1)
    eps = 0.02  # absolute, about a tenth of this cost's range
    a, b = torch.full((12,), 1 / 12, dtype=D), torch.full((10,), 1 / 10, dtype=D)
    K = torch.exp(-C / eps)
    u, v = torch.ones(12, dtype=D), torch.ones(10, dtype=D)
    for _ in range(20000):  # Cuturi 2013, literally
        u = a / (K @ v)
        v = b / (K.T @ u)
    ref = float(((u[:, None] * K * v[None, :]) * C).sum())
    res = solve(C, method="sinkhorn", reg=eps, gap=0, tol=1e-12, max_iter=100000, relative=False)
    assert float(res.value) == pytest.approx(ref, rel=1e-8)


def _jtln_reference(zs, zt, M, lam, iters=20000):
    """lu2017 Alg. 1 (value, line 6) and Eq. 11 (gradient w.r.t. h_s, h_t), chained by hand
    through the softmax Jacobian diag(h) - h h^T; mean over the batch."""
    n, ks = zs.shape
    kt = zt.shape[1]
    K = torch.exp(-lam * M - 1)
    value, gs, gt = 0.0, torch.zeros(n, ks, dtype=D), torch.zeros(n, kt, dtype=D)
    for i in range(n):
        hs, ht = torch.softmax(zs[i], 0), torch.softmax(zt[i], 0)
        u, v = torch.ones(ks, dtype=D) / ks, torch.ones(kt, dtype=D) / kt
        for _ in range(iters):
            v = ht / (K.T @ u)
            u = hs / (K @ v)
        value += float(((torch.diag(u) @ K @ torch.diag(v)) * M).sum()) / n
        alpha = torch.log(u) / lam - torch.log(u).sum() / (lam * ks)
        beta = torch.log(v) / lam - torch.log(v).sum() / (lam * kt)
        gs[i] = (torch.diag(hs) - torch.outer(hs, hs)) @ alpha / n
        gt[i] = (torch.diag(ht) - torch.outer(ht, ht)) @ beta / n
    return value, gs, gt


@pytest.mark.parametrize("lam", [5.0, 20.0])
def test_jtln_value_and_gradient_are_lu2017_alg1_and_eq11(lam):
    g = torch.Generator().manual_seed(4)
    zs = torch.randn(5, 6, generator=g, dtype=D)
    zt = torch.randn(5, 4, generator=g, dtype=D)
    M = torch.rand(6, 4, generator=g, dtype=D)
    ref, gs, gt = _jtln_reference(zs, zt, M, lam)
    s, t = zs.clone().requires_grad_(), zt.clone().requires_grad_()
    loss = jtln_loss(s, t, M, reg=1 / lam, relative=False, tol=1e-12, max_iter=100000)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(ref, rel=1e-6)
    assert float((s.grad - gs).norm() / gs.norm()) < 1e-3
    assert float((t.grad - gt).norm() / gt.norm()) < 1e-3
    # the relative-entropy form is another gradient (same value): an explicit option only
    s2, t2 = zs.clone().requires_grad_(), zt.clone().requires_grad_()
    other = jtln_loss(
        s2, t2, M, reg=1 / lam, relative=False, tol=1e-12, max_iter=100000, entropy="relative"
    )
    other.backward()
    assert float(other.detach()) == pytest.approx(ref, rel=1e-6)
    assert float((s2.grad - gs).norm() / gs.norm()) > 1e-2


def test_jtln_term_default_is_eq11_with_range_relative_lambda():
    g = torch.Generator().manual_seed(5)
    zs, zt = torch.randn(4, 5, generator=g, dtype=D), torch.randn(4, 3, generator=g, dtype=D)
    M = 2 * torch.rand(5, 3, generator=g, dtype=D)
    lam = 1 / (0.05 * float(M.max() - M.min()))  # the term's default reg 0.05 x range
    ref, gs, _ = _jtln_reference(zs, zt, M, lam)
    s = zs.clone().requires_grad_()
    reg = build_regularizer("jtln", label_cost=M, alpha=1.0, tol=1e-12, max_iter=100000)
    out = reg(RegContext(source_logits=s, logits=zt.clone()))["jtln"]
    out.backward()
    assert float(out.detach()) == pytest.approx(ref, rel=1e-5)
    assert float((s.grad - gs).norm() / gs.norm()) < 1e-3


@pytest.mark.parametrize("scale", ["tau2", "none"])
def test_kd_is_eq7_or_hintons_by_scale(scale):
    g = torch.Generator().manual_seed(6)
    s, t = torch.randn(7, 5, generator=g, dtype=D), torch.randn(7, 5, generator=g, dtype=D)
    tau = 5.0
    ref = 0.0
    for i in range(7):  # KL(g^tau || f^tau) = sum_k p_k log(p_k / q_k), mean over the batch
        p = [math.exp(float(t[i, k]) / tau) for k in range(5)]
        q = [math.exp(float(s[i, k]) / tau) for k in range(5)]
        p, q = [x / sum(p) for x in p], [x / sum(q) for x in q]
        ref += sum(pk * math.log(pk / qk) for pk, qk in zip(p, q, strict=True)) / 7
    factor = tau**2 if scale == "tau2" else 1.0
    assert float(kd_loss(s, t, tau, scale)) == pytest.approx(factor * ref, rel=1e-10)
    reg = build_regularizer("kd", tau=tau, scale=scale, alpha=0.3)
    out = reg(RegContext(logits=s, teacher_logits=t))["kd"]
    assert float(out) == pytest.approx(0.3 * factor * ref, rel=1e-10)
    with pytest.raises(ValueError, match="scale"):
        kd_loss(s, t, tau, "tau")


def test_linear_mkmmd_is_lu2017_eq14():
    g = torch.Generator().manual_seed(7)
    xs = torch.randn(20, 3, generator=g, dtype=D)
    ys = torch.tensor([0] * 10 + [1] * 10)
    xt = torch.randn(16, 3, generator=g, dtype=D) + 0.5
    yt = torch.tensor([0] * 8 + [1] * 8)
    sigmas = [0.5, 1.0, 2.0]

    def k(x, y):  # Eq. (13), equal weights beta_u = 1/m
        d2 = float(((x - y) ** 2).sum())
        return sum(math.exp(-d2 / (2 * s**2)) for s in sigmas) / len(sigmas)

    M = label_cost_mkmmd(xs, ys, xt, yt, bandwidths=sigmas, estimator="linear")
    for i in range(2):
        for j in range(2):
            a, b = xs[ys == i], xt[yt == j]
            n = 2 * (min(len(a), len(b)) // 2)
            total = 0.0
            for q in range(1, n // 2 + 1):  # z_q = (s_{2q-1}, s_{2q}, t_{2q-1}, t_{2q}), 1-based
                s1, s2, t1, t2 = a[2 * q - 2], a[2 * q - 1], b[2 * q - 2], b[2 * q - 1]
                total += k(s1, s2) + k(t1, t2) - k(s1, t2) - k(s2, t1)  # g_k(z_q)
            ref = max(2 / n * total, 0.0)  # Eq. (14), clamped at 0 as the cost is
            assert float(M[i, j]) == pytest.approx(ref, rel=1e-10, abs=1e-12)


def test_ot_label_cost_defaults_to_entropic_ot_eq16():
    g = torch.Generator().manual_seed(8)
    xs = torch.randn(12, 2, generator=g, dtype=D)
    ys = torch.tensor([0] * 6 + [1] * 6)
    xt = torch.randn(10, 2, generator=g, dtype=D)
    yt = torch.tensor([0] * 5 + [1] * 5)
    M = label_cost_ot(xs, ys, xt, yt, tol=1e-12)
    exact = label_cost_ot(xs, ys, xt, yt, method="emd")
    for i in range(2):
        for j in range(2):
            a, b = xs[ys == i], xt[yt == j]
            C = torch.tensor([[float(((p - q) ** 2).sum()) for q in b] for p in a], dtype=D)
            eps = 0.05 * float(C.max() - C.min())  # the stated lambda = 1 / eps
            K = torch.exp(-C / eps)
            mu, nu = (
                torch.full((len(a),), 1 / len(a), dtype=D),
                torch.full((len(b),), 1 / len(b), dtype=D),
            )
            u, v = torch.ones(len(a), dtype=D), torch.ones(len(b), dtype=D)
            for _ in range(20000):
                v = nu / (K.T @ u)
                u = mu / (K @ v)
            ref = float(((torch.diag(u) @ K @ torch.diag(v)) * C).sum())
            assert float(M[i, j]) == pytest.approx(ref, rel=1e-6)
            assert float(M[i, j]) >= float(exact[i, j]) - 1e-9  # entropic >= exact


def test_embed_per_tap_conv_maps_at_stages_and_both_at_the_penultimate():
    g = torch.Generator().manual_seed(9)
    s1 = torch.relu(torch.randn(8, 4, 6, 6, generator=g)).requires_grad_()
    t1 = torch.relu(torch.randn(8, 6, 12, 12, generator=g))  # wider, twice the spatial size
    s4 = torch.relu(torch.randn(8, 10, generator=g)).requires_grad_()
    t4 = torch.relu(torch.randn(8, 16, generator=g))
    reg = build_regularizer(
        "ot_samples_remd",
        taps=["stage1", "stage4"],
        embed={"stage1": "conv", "stage4": "both"},
        embed_dim=5,
    )
    ctx = RegContext(
        features={"stage1": s1, "stage4": s4}, teacher_features={"stage1": t1, "stage4": t4}
    )
    reg.materialize(ctx)
    mods = dict(reg.terms["ot_samples_remd"].embeddings.items())
    assert set(mods) == {"stage1__conv", "stage4__student", "stage4__teacher"}
    conv = mods["stage1__conv"].body[0]
    assert isinstance(conv, nn.Conv2d) and conv.stride == (2, 2)
    assert (conv.in_channels, conv.out_channels) == (6, 4)
    assert mods["stage4__student"].out_features == 5 == mods["stage4__teacher"].out_features
    reg(ctx)["ot_samples_remd"].backward()
    assert s1.grad is not None and s4.grad is not None
    assert all(p.grad is not None for p in reg.parameters())
    with pytest.raises(ValueError, match="conv maps"):
        bad = build_regularizer("ot_samples_remd", taps=["stage4"], embed={"stage4": "conv"})
        bad.materialize(RegContext(features={"stage4": s4}, teacher_features={"stage4": t4}))
    with pytest.raises(ValueError, match="does not read"):
        build_regularizer("ot_samples_remd", taps=["stage4"], embed={"stage9": "both"})
    with pytest.raises(ValueError, match="embed must be one of"):
        build_regularizer("ot_samples_remd", taps=["stage4"], embed={"stage4": "linear"})
