"""Semantics of the harness's first layer: taps, representation OT, regularizers.

Every expected value is computed by hand from the papers' equations (li2020 Eq. 3-7,
lohit2020 Eq. 2-3 and 8, lu2017 Eq. 7-14), never by the code under test. Small, seeded, CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.transfer.regularizers import (
    RegContext,
    all_regularizers,
    available_regularizers,
    build_regularizer,
    get_regularizer,
    jtln_loss,
    kd_loss,
    label_cost_mkmmd,
    label_cost_ot,
    register_regularizer,
)
from harness.transfer.representation import (
    matched_fraction,
    representation_ot,
    solve_representation,
)
from harness.transfer.taps import Taps

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def permuted_pair(n=32, d=12, seed=0):
    """Activations ``A`` (n, d) and ``T = A[:, perm]``: the teacher's neurons, shuffled."""
    g = gen(seed)
    A = torch.randn(n, d, generator=g, dtype=F64)
    perm = torch.randperm(d, generator=g)
    assert (perm != torch.arange(d)).any()
    return A, A[:, perm], perm


class SmallCNN(nn.Module):
    """Four conv stages, a pooled penultimate layer, a linear head; names its tap points."""

    def __init__(self, width: int, classes: int = 5):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(2 * w, classes)
        self.tap_points = {
            "stage1": "features.1",
            "stage2": "features.3",
            "stage3": "features.5",
            "stage4": "features.7",
            "penultimate": "features.9",
        }

    def forward(self, x):
        return self.fc(self.features(x))


def nets(seed=0, widths=(4, 8)):
    torch.manual_seed(seed)
    return SmallCNN(widths[0]), SmallCNN(widths[1])


def context(reg, student, teacher, x, **extra) -> RegContext:
    """One training step's context: tapped student (with graph) and teacher (no grad)."""
    with Taps(student, reg.taps) as s_taps:
        logits = student(x)
    t_feats, t_logits = {}, None
    if teacher is not None:
        with Taps(teacher, reg.taps) as t_taps, torch.no_grad():
            t_logits = teacher(x)
        t_feats = t_taps.features
    return RegContext(
        student=student,
        teacher=teacher,
        features=s_taps.features,
        teacher_features=t_feats,
        logits=logits,
        teacher_logits=t_logits,
        **extra,
    )


# --------------------------------------------------------------------------- taps


def test_taps_on_sequential_collect_module_outputs():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(5, 4, generator=gen(1))
    with Taps(net, ["0", "1", "2"]) as taps:
        out = net(x)
    assert {k: tuple(v.shape) for k, v in taps.features.items()} == {
        "0": (5, 8),
        "1": (5, 8),
        "2": (5, 3),
    }
    torch.testing.assert_close(taps.features["1"], torch.relu(net[0](x)))
    torch.testing.assert_close(taps.features["2"], out)
    net(torch.zeros(5, 4))  # hooks are gone after the with block
    torch.testing.assert_close(taps.features["2"], out)


def test_taps_pool_conv_maps_and_resolve_tap_points():
    net = SmallCNN(4)
    x = torch.randn(6, 3, 9, 9, generator=gen(2))
    with (
        Taps(net, ["stage1", "stage3", "penultimate", "fc"]) as taps,
        Taps(net, ["stage1"], pool=False) as raw,
    ):
        net(x)
    assert tuple(raw.features["stage1"].shape) == (6, 4, 9, 9)
    shapes = {k: tuple(v.shape) for k, v in taps.features.items()}
    assert shapes == {"stage1": (6, 4), "stage3": (6, 8), "penultimate": (6, 8), "fc": (6, 5)}
    # global average pooling of the (n, c, h, w) map
    torch.testing.assert_close(taps.features["stage1"], raw.features["stage1"].mean(dim=(2, 3)))
    assert taps.paths["stage3"] == "features.5"


def test_taps_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"penultimate.*module paths: .*features\.9"):
        Taps(SmallCNN(4), ["penultimat"])
    with pytest.raises(ValueError, match=r"'features\.3'"):
        Taps(SmallCNN(4), ["features.33"])


# --------------------------------------------------------------------------- representation OT


@pytest.mark.parametrize("plan", ["assignment", "ipot"])
def test_omega_p_of_neuron_permuted_copy_is_zero(plan):
    A, T, perm = permuted_pair()
    res = solve_representation(A, T, plan=plan)
    omega_i = representation_ot(A, T, plan="identity")
    assert res.converged
    assert float(omega_i) > 1.0  # the identity matches different neurons
    assert float(res.value) < 1e-6 * float(omega_i)
    # the plan is the permutation: student neuron perm[j] sent to teacher neuron j
    expected = torch.zeros(12, 12, dtype=F64)
    expected[perm, torch.arange(12)] = 1 / 12
    torch.testing.assert_close(res.plan, expected, atol=1e-4, rtol=0)
    fixed = float((perm == torch.arange(12)).double().mean())
    assert matched_fraction(res) == pytest.approx(fixed, abs=1e-4)


def test_omega_i_is_mean_distance_between_same_index_neurons():
    A = torch.randn(20, 7, generator=gen(3), dtype=F64)
    T = torch.randn(20, 7, generator=gen(4), dtype=F64)
    # li2020 Eq. (5): <I_d / d, M>, M_ii = ||A_i - T_i||_2 over the batch (columns)
    expected = (A - T).norm(dim=0).mean()
    res = solve_representation(A, T, plan="identity")
    torch.testing.assert_close(res.value, expected)
    assert matched_fraction(res) == pytest.approx(1.0)


def test_omega_u_is_mean_of_all_pairwise_neuron_distances():
    A = torch.randn(20, 5, generator=gen(5), dtype=F64)
    T = torch.randn(20, 9, generator=gen(6), dtype=F64)  # d != d'
    # li2020 Eq. (6): <1 / (d d'), M> with M = cdist between the neurons (columns)
    expected = torch.cdist(A.T, T.T).mean()
    torch.testing.assert_close(representation_ot(A, T, plan="uniform"), expected)


def test_remd_on_samples_matches_eq8():
    n, d = 10, 6
    X = torch.randn(n, d, generator=gen(7), dtype=F64)  # teacher
    Y = torch.randn(n, d, generator=gen(8), dtype=F64)  # student
    C = 1 - (Y / Y.norm(dim=1, keepdim=True)) @ (X / X.norm(dim=1, keepdim=True)).T  # Eq. (3)
    expected = max(C.min(1).values.sum(), C.min(0).values.sum()) / n  # Eq. (8)
    value = representation_ot(Y, X, view="samples", plan="remd")
    torch.testing.assert_close(value, expected)
    # the regularizer: alpha * sum over taps (lohit2020 Eq. 1)
    reg = build_regularizer("remd", taps=["a", "b"], alpha=0.5)
    ctx = RegContext(features={"a": Y, "b": 2 * Y}, teacher_features={"a": X, "b": X})
    # cosine cost: the tap "b" (2 Y) costs as much as "a"
    torch.testing.assert_close(reg(ctx)["ot_samples_remd"], 0.5 * 2 * expected)


def test_conv_maps_are_pooled_before_transport():
    S = torch.randn(8, 3, 4, 4, generator=gen(9), dtype=F64)
    T = torch.randn(8, 5, 2, 2, generator=gen(10), dtype=F64)
    expected = torch.cdist(S.mean((2, 3)).T, T.mean((2, 3)).T).mean()
    torch.testing.assert_close(representation_ot(S, T, plan="uniform"), expected)


def test_samples_view_needs_equal_widths():
    S, T = torch.randn(8, 4), torch.randn(8, 6)
    with pytest.raises(ValueError, match=r"d=4.*d'=6.*embedding"):
        representation_ot(S, T, view="samples", plan="remd")
    with pytest.raises(ValueError, match="same examples"):
        representation_ot(S, T[:7], plan="uniform")
    with pytest.raises(ValueError, match="d != d'"):
        representation_ot(S, T, plan="identity")


def test_gradients_flow_to_the_student_only():
    A, T, _ = permuted_pair(seed=11)
    A = (A + 0.3 * torch.randn(A.shape, generator=gen(12), dtype=F64)).requires_grad_()
    T = T.clone().requires_grad_()
    for view in ("neurons", "samples"):
        A.grad = None
        representation_ot(A, T, view=view, plan="ipot").backward()
        assert T.grad is None
        assert A.grad is not None and torch.isfinite(A.grad).all() and A.grad.abs().sum() > 0
    # through a regularizer: teacher activations that carry a graph are detached too
    for spec in ("omega_p", "remd"):
        A.grad = None
        ctx = RegContext(features={"x": A}, teacher_features={"x": T})
        build_regularizer(spec, taps="x")(ctx)[get_regularizer(spec).name].backward()
        assert T.grad is None and A.grad.abs().sum() > 0
    # through models: the teacher network receives no gradient, the student does
    student, teacher = nets(seed=13)
    reg = build_regularizer("omega_p+kd", taps=["penultimate", "stage2"])
    x = torch.randn(16, 3, 8, 8, generator=gen(14))
    terms = reg(context(reg, student, teacher, x))
    sum(terms.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.features.parameters())


# --------------------------------------------------------------------------- parameter terms


def _two_layer(seed=15):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()


def test_l2sp_is_zero_at_start_and_its_gradient_is_alpha_w_minus_w0():
    net = _two_layer()
    w0 = {k: v.detach().clone() for k, v in net.named_parameters() if k.startswith("0.")}
    head = sum(p.pow(2).sum() for p in net[2].parameters())
    reg = build_regularizer("l2sp", alpha=0.3, beta=0.05)
    ctx = RegContext(student=net, initial_weights=w0)
    # at the starting point only the new head's decay is left: beta / 2 ||w_new||^2
    torch.testing.assert_close(reg(ctx)["l2sp"], 0.05 / 2 * head)
    assert float(build_regularizer("l2sp", beta=0.0)(ctx)["l2sp"].detach()) == 0.0
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen(16), dtype=F64))
    reg(ctx)["l2sp"].backward()
    for name, p in net.named_parameters():
        expected = 0.3 * (p - w0[name]) if name in w0 else 0.05 * p
        torch.testing.assert_close(p.grad, expected.detach())
    # the head named by prefix when the snapshot holds every parameter: same value
    full = {k: v.detach().clone() for k, v in net.named_parameters()}
    full.update(w0)
    by_prefix = build_regularizer("l2sp", alpha=0.3, beta=0.05, new=["2."])
    torch.testing.assert_close(
        by_prefix(RegContext(student=net, initial_weights=full))["l2sp"], reg(ctx)["l2sp"]
    )


def test_l2_is_weight_decay():
    net = _two_layer()
    value = build_regularizer("l2", alpha=0.1)(RegContext(student=net))["l2"]
    value.backward()
    for p in net.parameters():
        torch.testing.assert_close(p.grad, 0.1 * p.detach())


def test_kd_equals_hand_computed_tau2_kl():
    s = torch.randn(6, 5, generator=gen(17), dtype=F64, requires_grad=True)
    t = torch.randn(6, 5, generator=gen(18), dtype=F64, requires_grad=True)
    tau = 3.0
    p = torch.softmax(t / tau, 1)
    q = torch.softmax(s / tau, 1)
    expected = tau**2 * (p * (p.log() - q.log())).sum(1).mean()  # li2020 Eq. (7)
    torch.testing.assert_close(kd_loss(s, t, tau), expected)
    reg = build_regularizer("kd", tau=tau, alpha=2.0)
    value = reg(RegContext(logits=s, teacher_logits=t))["kd"]
    torch.testing.assert_close(value, 2 * expected)
    value.backward()
    assert t.grad is None and s.grad.abs().sum() > 0


# --------------------------------------------------------------------------- lu2017: JTLN


def _label_cost(k=4, seed=19):
    M = 0.5 + 0.5 * torch.rand(k, k, generator=gen(seed), dtype=F64)
    M.fill_diagonal_(0)
    return M


def test_jtln_is_zero_when_source_and_target_outputs_coincide():
    M = _label_cost()
    z = torch.randn(5, 4, generator=gen(20), dtype=F64)
    assert float(jtln_loss(z, z, M)) < 1e-4
    # a different target prediction costs at least the off-diagonal cost of the moved mass
    other = jtln_loss(z, z.roll(1, dims=1), M)
    assert float(other) > 0.1


def test_jtln_gradient_matches_finite_differences():
    M = torch.rand(3, 4, generator=gen(21), dtype=F64)
    s = torch.randn(2, 3, generator=gen(22), dtype=F64, requires_grad=True)
    t = torch.randn(2, 4, generator=gen(23), dtype=F64, requires_grad=True)
    kw = dict(reg=1e-3, tol=1e-12, max_iter=20_000)  # the dual gradient is exact as reg -> 0
    jtln_loss(s, t, M, **kw).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    h = 1e-5
    fd = torch.zeros_like(t)
    for idx in [(i, j) for i in range(2) for j in range(4)]:
        e = torch.zeros_like(t)
        e[idx] = h
        with torch.no_grad():
            fd[idx] = (jtln_loss(s, t + e, M, **kw) - jtln_loss(s, t - e, M, **kw)) / (2 * h)
    torch.testing.assert_close(t.grad, fd, atol=2e-2 * float(fd.abs().max()), rtol=0)
    # the registered term is alpha times the loss, read from the context
    reg = build_regularizer("jtln", label_cost=M, alpha=0.5, reg=1e-3, tol=1e-12)
    ctx = RegContext(source_logits=s, logits=t)
    torch.testing.assert_close(reg(ctx)["jtln"], 0.5 * jtln_loss(s, t, M, **kw), rtol=1e-6, atol=0)
    assert ctx.stats["jtln/converged"]


def _class_clouds(centers, per_class, seed, shift=0.0):
    g = gen(seed)
    feats = torch.cat(
        [c + shift + 0.3 * torch.randn(per_class, 2, generator=g, dtype=F64) for c in centers]
    )
    labels = torch.arange(len(centers)).repeat_interleave(per_class)
    return feats, labels


def test_label_costs_pair_matching_classes():
    centers = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]], dtype=F64)
    xs, ys = _class_clouds(centers, 12, seed=24)
    perm = torch.tensor([2, 0, 1])
    xt, yt = _class_clouds(centers[perm], 9, seed=25, shift=0.1)  # target class j ~ source perm[j]
    for M in (
        label_cost_mkmmd(xs, ys, xt, yt),
        label_cost_mkmmd(xs, ys, xt, yt, estimator="linear"),
        label_cost_ot(xs, ys, xt, yt),
    ):
        assert M.shape == (3, 3) and (M >= 0).all()
        assert torch.equal(M.argmin(0), perm)
    # the quadratic estimate is the unbiased U-statistic (lu2017 Eq. 12) with the mean kernel
    sig = [0.5, 2.0]
    a, b = xs[ys == 1], xt[yt == 2]

    def k(x, y):
        d2 = torch.cdist(x, y) ** 2
        return sum(torch.exp(-d2 / (2 * s**2)) for s in sig) / len(sig)

    def u(K):
        n = K.shape[0]
        return (K.sum() - K.diagonal().sum()) / (n * (n - 1))

    mmd2 = u(k(a, a)) + u(k(b, b)) - 2 * k(a, b).mean()
    M = label_cost_mkmmd(xs, ys, xt, yt, bandwidths=sig)
    torch.testing.assert_close(M[1, 2], mmd2.clamp_min(0))


# --------------------------------------------------------------------------- registry, sums


def test_sum_returns_each_named_term():
    student, teacher = nets(seed=26)
    x = torch.randn(12, 3, 8, 8, generator=gen(27))
    reg = build_regularizer("remd+kd", **{"kd.tau": 2.0, "ot_samples_remd.taps": "stage4"})
    assert reg.names == ("ot_samples_remd", "kd") and reg.taps == ("stage4",)
    ctx = context(reg, student, teacher, x)
    reg.materialize(ctx)  # stage4 widths differ (8 vs 16): a learned embedding
    terms = reg(ctx)
    assert set(terms) == {"ot_samples_remd", "kd"}
    torch.testing.assert_close(terms["kd"], kd_loss(ctx.logits, ctx.teacher_logits, 2.0))
    assert ctx.stats["ot_samples_remd/stage4/n_iter"] == 0
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in reg.parameters())  # the embedding trains
    assert [tuple(p.shape) for p in reg.parameters()] == [(8, 16), (8,)]  # teacher -> student


def test_embedding_must_be_materialized_before_training():
    student, teacher = nets(seed=28)
    reg = build_regularizer("ipot", taps="penultimate")
    ctx = context(reg, student, teacher, torch.randn(8, 3, 8, 8, generator=gen(29)))
    with pytest.raises(RuntimeError, match="materialize"):
        reg(ctx)
    with pytest.raises(ValueError, match="embedding"):
        build_regularizer("ipot", taps="penultimate", embed="none")(ctx)


def test_unknown_names_and_parameters_raise_with_suggestions():
    with pytest.raises(ValueError, match=r"did you mean 'omega_p'"):
        build_regularizer("omega_pp")
    with pytest.raises(ValueError, match=r"did you mean .*'kd'"):
        build_regularizer("remd+kdd")
    with pytest.raises(ValueError, match="twice"):
        build_regularizer("kd+kd")
    with pytest.raises(ValueError, match=r"'omega_p\.alpha' or 'kd\.alpha'"):
        build_regularizer("omega_p+kd", alpha=0.1)
    with pytest.raises(ValueError, match=r"did you mean 'beta'"):
        build_regularizer("omega_p", plan="ipot", bta=0.1)
    with pytest.raises(ValueError, match="already registered"):
        register_regularizer("kd")(lambda ctx: None)
    assert get_regularizer("REMD").name == "ot_samples_remd"
    assert build_regularizer("omega_p", plan="emd").params["omega_p"]["plan"] == "emd"


@pytest.mark.parametrize("name", list(all_regularizers()))
def test_every_regularizer_honours_its_capabilities(name):
    """Conformance: built with defaults, given only what its flags ask for, each term returns
    finite scalars that backpropagate to the student and never to the teacher."""
    info = get_regularizer(name)
    student, teacher = nets(seed=30, widths=(4, 4))
    params = {"label_cost": _label_cost(5).float()} if info.needs_source_head else {}
    reg = build_regularizer(name, **params)
    assert reg.taps == tuple(info.taps)
    x = torch.randn(8, 3, 8, 8, generator=gen(31))
    extra = {}
    if info.needs_initial_weights:
        extra["initial_weights"] = {k: v.detach() + 0.1 for k, v in student.named_parameters()}
    if info.needs_source_head:
        extra["source_logits"] = torch.randn(8, 5, generator=gen(32))
    ctx = context(reg, student, teacher if info.needs_teacher else None, x, **extra)
    terms = reg(ctx)
    assert set(terms) <= {name}
    if name == "none":
        assert terms == {}
        return
    assert terms[name].dim() == 0 and torch.isfinite(terms[name])
    terms[name].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert name in available_regularizers(needs_teacher=info.needs_teacher)
