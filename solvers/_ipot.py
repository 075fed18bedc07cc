"""IPOT, the inexact proximal point method (Xie et al. 2019; lohit2020 Alg. 1), on the shared
kernel of the scaling solvers, with the certified stopping rule of ``sinkhorn``.

It iterates under ``torch.no_grad()``; the value's gradient is attached in ``_api.solve`` (the
envelope, or at ``gap = 0`` the derivative of the papers' N steps, :func:`ipot_steps`).
"""

from __future__ import annotations

import functools
import math

import torch

from ._envelope import attach_replay, plan_dot
from ._kernel import Kernel
from ._registry import register
from ._scaling import (
    CERTIFY_BELOW,
    SPARSE_MAX_DENSITY,
    SPARSE_MIN_SIZE,
    VALUE_FLOOR,
    batch_problem,
    check_positive,
    cost_scale,
    ctransform,
    l1_error,
    lp_potentials,
    unbatch_result,
)

__all__ = ["ipot", "ipot_steps"]

#: support of IPOT's truncated kernel: its updates are multiplicative (an entry dropped stays
#: 0), so it keeps more than sinkhorn's
IPOT_TRUNC = 15.0


@register(
    "ipot",
    converges_to_exact=True,
    value_rtol=1e-3,
    potentials=True,
    batched=True,
    warmstart=True,
    params={
        "beta": 0.5,
        "max_iter": 2000,
        "gap": 1e-3,
        "check_every": 10,
        "sparse": True,
        "relative": True,
    },
    description="IPOT proximal point (Xie et al. 2019; lohit2020 Alg. 1), certified gap",
)
def ipot(
    C,
    a,
    b,
    *,
    beta: float,
    max_iter: int,
    gap: float,
    check_every: int,
    sparse: bool,
    relative: bool,
    warmstart=None,
) -> dict:
    """Solve OT with the inexact proximal point method IPOT, one inner Sinkhorn step.

    Parameters
    ----------
    beta : float
        Proximal step ``beta``, *relative to the cost's range* ``max C - min C`` by default
        (``relative=True``: one setting for costs of any scale), or in the cost's own units
        (``relative=False``: ``G = exp(-C / beta)`` exactly as lohit2020 Alg. 1). Step ``t``
        acts like a Sinkhorn step with ``eps = beta / t``: smaller ``beta`` sharpens faster,
        each step less exactly. lohit2020 §4.1 uses the *absolute* ``beta = 20`` with N = 50
        (``beta=20, max_iter=50, gap=0, relative=False``); on cosine costs between post-ReLU
        features (range <= 1, often a few hundredths) that is far from the exact plan, and
        no relative setting reproduces it.
    max_iter : int
        Proximal iterations N at most.
    gap : float
        Stop once the relative duality gap is certified below ``gap`` (rounded plan vs dense
        double c-transform, as for ``sinkhorn``); ``converged`` says whether it was. ``gap = 0``
        runs exactly ``max_iter`` iterations, as the papers do, and ``converged`` then means
        the L1 marginal error of ``T`` is below 1e-3.
    check_every : int
        Iterations between certificate attempts.
    sparse : bool
        Truncate ``T`` to its numerically non-zero support once it concentrates. Ignored when
        ``gap = 0`` (the papers' fixed N steps run on the dense ``T``, as Alg. 1).
    relative : bool
        Whether ``beta`` is relative to the cost's range (default) or absolute.
    warmstart : (F, G), optional
        Potentials of a previous solve: the proximal iterations start from
        ``T^(0) = diag(a) exp((F (+) G - C) / beta) diag(b)`` (the previous plan's shape at the
        proximal step) instead of ``1 1^T``; step ``t`` then acts at ``eps = beta / (t + 1)``.
        Opt-in, never a default: with ``gap = 0`` the N steps are still N (same cost) but end
        elsewhere (another value), and the gradient is the envelope (the replay of
        ``grad="auto"`` starts cold); with ``gap > 0`` the answer is certified as a cold one's.

    Notes
    -----
    Alg. 1 of lohit2020 (Xie et al. 2019): ``Q = G * T``, ``u = mu / (Q v)``,
    ``v = nu / (Q^T u)``, ``T = diag(u) Q diag(v)`` with ``G = exp(-C/beta)``, ``T^(0) = 1 1^T``
    and ``v`` carried over between steps. Unrolled, ``T^(t) = exp((Phi + Psi - t C) / beta)``:
    we keep the log-potentials ``Phi``, ``Psi`` so that ``T`` never underflows (exponents are
    clamped at -80), and write ``Q = diag(a) K diag(b)`` with the shared kernel at
    ``eps = beta / t``. li2020 (Omega_P) relies on IPOT converging to the exact plan.
    """
    check_positive("beta", beta)
    if not gap >= 0:
        raise ValueError(f"gap must be >= 0; got {gap}")
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1; got {max_iter}")
    C, a, b, single = batch_problem(C, a, b)
    with torch.no_grad():
        # T^(0) = 1 1^T makes IPOT's iterates depend on a constant shift of C (exponents of
        # C + 1e4 all clamp): solve on C - min C, which has the same plans (the factor
        # exp(-t shift / beta) of G^t is absorbed by u at each step), and report <P, C>.
        shift = C.amin(dim=(-2, -1), keepdim=True)
        beta_abs = beta * cost_scale(C) if relative else float(beta)
        warm = (
            None
            if warmstart is None
            else (warmstart[0].reshape(a.shape) - shift[:, :, 0], warmstart[1].reshape(b.shape))
        )
        out = _ipot(
            C - shift,
            a,
            b,
            beta_abs,
            int(max_iter),
            gap,
            check_every,
            sparse and gap > 0,
            offset=shift.reshape(-1) * a.sum(-1),
            warm=warm,
        )
    F, G = out["potentials"]
    out["potentials"] = (F + shift[:, :, 0], G)  # potentials of C, not of C - min C
    if gap == 0 and warmstart is None:  # the papers' N steps: their derivative, not the envelope
        steps = functools.partial(ipot_steps, beta=beta, n_steps=out["n_iter"], relative=relative)
        out["value_fn"] = functools.partial(_replayed_value, steps=steps)
    return unbatch_result(out, single)


def _replayed_value(C, a, b, plan, potentials, *, steps):
    return attach_replay(steps, plan_dot(plan, C.detach()), C, a, b)


def ipot_steps(C, a, b, *, beta: float, n_steps: int, relative: bool) -> torch.Tensor:
    """``<T^(N), C>`` after N steps of lohit2020 Alg. 1, differentiable (log domain, no
    clamping; each step checkpointed: memory O(n m + N (n + m)) for the backward pass)."""
    from torch.utils.checkpoint import checkpoint

    C3, a3, b3, single = batch_problem(C, a, b)
    Cs = C3 - C3.amin(dim=(-2, -1), keepdim=True)  # as ipot: T^(0) = 1 1^T
    step: float | torch.Tensor = beta  # beta, in the cost's units
    if relative:
        rng = (Cs.amax(dim=(-2, -1)) - Cs.amin(dim=(-2, -1))).max()
        step = beta * (rng if float(rng) > 0 else torch.ones_like(rng))
    la = torch.where(a3 > 0, torch.log(a3.clamp_min(torch.finfo(a3.dtype).tiny)), 0)
    lb = torch.where(b3 > 0, torch.log(b3.clamp_min(torch.finfo(b3.dtype).tiny)), 0)
    # rows/columns of zero weight take no part in the other side's sums (their u, v are 0)
    mask_a = torch.where(a3 > 0, 0.0, -math.inf).to(Cs.dtype)
    mask_b = torch.where(b3 > 0, 0.0, -math.inf).to(Cs.dtype)
    Phi, Psi = torch.zeros_like(a3), torch.zeros_like(b3)
    logv = torch.full_like(b3, -math.log(b3.shape[-1]))  # Alg. 1: v = 1/m

    def one_step(Phi, Psi, logv, t):
        logQ = (Phi[:, :, None] + Psi[:, None, :] - t * Cs) / step
        logu = la - torch.logsumexp(logQ + (logv + mask_b)[:, None, :], dim=-1)
        logv = lb - torch.logsumexp(logQ + (logu + mask_a)[:, :, None], dim=-2)
        return Phi + step * logu, Psi + step * logv, logv

    for t in range(1, n_steps + 1):
        Phi, Psi, logv = checkpoint(one_step, Phi, Psi, logv, t, use_reentrant=False)
    T = torch.exp((Phi[:, :, None] + Psi[:, None, :] - n_steps * Cs) / step)
    T = T * ((a3 > 0)[:, :, None] & (b3 > 0)[:, None, :])
    value = (T * C3).sum(dim=(-2, -1))
    return value[0] if single else value


def _ipot(C, a, b, beta, max_iter, gap_tol, check_every, sparse, offset, warm=None):
    """IPOT on ``C`` (already shifted to min 0) with the absolute proximal step ``beta``;
    ``offset`` (B,) = shift * mass turns values of the shifted problem into values of the
    caller's, so the gap is relative to the latter. ``warm`` (F, G) of the shifted problem:
    ``T^(0) = diag(a) exp((F + G - C) / beta) diag(b)``, i.e. one step already taken (t0 = 1)."""
    B, n, m = C.shape
    rng = cost_scale(C)
    K = Kernel(C, trunc=IPOT_TRUNC)
    tiny = torch.finfo(C.dtype).tiny
    # zero-weight rows/columns: their row of T is 0 whatever the kernel (P = diag(a) K diag(b))
    la = torch.where(a > 0, torch.log(a.clamp_min(tiny)), 0)
    lb = torch.where(b > 0, torch.log(b.clamp_min(tiny)), 0)
    if warm is None:
        t0, Phi, Psi = 0, torch.zeros_like(a), torch.zeros_like(b)  # T^(0) = 1 1^T
    else:  # exp((Phi + Psi - C) / beta) = diag(a) exp((F + G - C) / beta) diag(b)
        # (F: the c-transform of G, so F + G <= C and no exponent is clamped from above)
        F0 = ctransform(C, warm[1], dim=-1)
        t0, Phi, Psi = 1, F0 + beta * la, warm[1] + beta * lb
    v = torch.full_like(b, 1.0 / m)  # Alg. 1: v <- 1/b (b = batch size there)
    certified, gap, grown, t, rounding = False, math.inf, 0, 0, None
    while t < max_iter:
        t += 1
        s = t + t0  # proximal steps taken so far, the warm start's included
        eps = beta / s
        # Q = G * T^(t-1) = exp((Phi + Psi - t C) / beta) = diag(a) K diag(b)
        K.set(Phi / s - eps * la, Psi / s - eps * lb, eps)
        u = 1.0 / K.mv(b * v).clamp_min(tiny)  # = mu / (Q v)
        v = 1.0 / K.rmv(a * u).clamp_min(tiny)  # = nu / (Q^T u)
        Phi = Phi + beta * torch.log(u)
        Psi = Psi + beta * torch.log(v)
        if t % check_every and t < max_iter:
            continue
        Fa, Gb = Phi / s - eps * la, Psi / s - eps * lb  # T^(t) = diag(a) K diag(b)
        if sparse and not K.sparse and n * m >= SPARSE_MIN_SIZE:
            K.sparsify(Fa, Gb, eps, max_density=SPARSE_MAX_DENSITY)
        if gap_tol > 0 and eps <= rng * CERTIFY_BELOW:
            K.set(Fa, Gb, eps)
            rounding = K.rounded(a, b, a, b)
            ub = rounding[-1]
            scale_ub = (ub + offset).abs().clamp_min(max(tiny, VALUE_FLOOR * float(rng)))
            est = float(((ub - K.support_lower_bound(Fa, a, b)) / scale_ub).max())
            if est <= gap_tol:
                gap = float(((ub - K.lower_bound(Fa, a, b)) / scale_ub).max())
                certified = gap <= gap_tol
                if not certified and K.sparse and K.grow(Fa, Gb, eps) > 0:
                    grown += 1  # T^(t) has mass outside the support: go on with the larger one
            if certified:
                break
    eps = beta / (t + t0)
    Fa, Gb = Phi / (t + t0) - eps * la, Psi / (t + t0) - eps * lb
    K.set(Fa, Gb, eps)
    reason = ""
    if gap_tol > 0 and not certified:
        # the gap that rounding T onto Pi(a, b) (Altschuler et al. 2017) would leave
        rounding = K.rounded(a, b, a, b)
        ub = rounding[-1]
        scale_ub = (ub + offset).abs().clamp_min(max(tiny, VALUE_FLOOR * float(rng)))
        gap = float(((ub - K.lower_bound(Fa, a, b)) / scale_ub).max())
        reason = (
            f"no certificate within gap={gap_tol:g} after max_iter={t} proximal steps: "
            f"the rounded plan is within {gap:.3g} (eps = beta/t = {eps:.3g}); raise "
            f"max_iter, or use sinkhorn or emd"
        )
    if certified:
        ur, vr, err_a, err_b, _ = rounding
        plan = K.plan(ur, vr, err_a, err_b)
        converged = True
    elif gap_tol > 0:  # T^(N) as it is (closer to OT than its rounding), its gap reported
        plan, converged = K.plan(a, b), False
    else:  # gap = 0: T^(N) of Alg. 1 as it is
        plan = K.plan(a, b)
        err = max(l1_error(plan.sum(-1) - a), l1_error(plan.sum(-2) - b))
        converged = err < 1e-3
        if not converged:
            reason = (
                f"gap=0 runs exactly max_iter={t} proximal steps (the papers' N): the "
                f"plan's L1 marginal error {err:.3g} is above 1e-3; raise max_iter"
            )
    F, G = K.ctransform(Fa) if certified else lp_potentials(K, Fa, Gb, a, b)
    return {
        "plan": plan,
        "potentials": (F, G),
        "n_iter": t,
        "converged": bool(converged),
        "extras": {
            "eps": eps,
            "gap": gap,
            "sparse": K.sparse,
            "support_size": K.nnz,
            "support_grown": grown,
            "reason": reason,
        },
    }
