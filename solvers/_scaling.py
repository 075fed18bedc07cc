"""Scaling solvers: log-stabilised Sinkhorn with eps-scaling, IPOT, and POT's Sinkhorn baseline.

All iterate under ``torch.no_grad()``; the value's gradient is attached by the envelope theorem
in ``_api.solve`` (style.md §5), never by backpropagating through iterations.
"""

from __future__ import annotations

import functools
import math
import os

import torch

from ._envelope import attach_entropic, attach_replay, plan_dot
from ._kernel import Kernel, batched_dot
from ._registry import get_method, register

_DEBUG = bool(os.environ.get("OTRANSFER_DEBUG"))
ABSORB = 30.0  # absorb the scalings into the potentials once |log u| or |log v| exceeds this
# Sinkhorn schedule, tuned on the solver benchmark (otransfer solvers bench); see _sinkhorn.
# Measured (d = 2048 neuron problems, correlated and independent): eps0 = range/64 with trunc = 8
# certifies 1e-3 in 37-91 iterations; range/32 costs 1.5-2x more, range/128 often stalls.
EPS0 = 1 / 64  # first eps, relative to the cost range (c-transformed potentials are the start)
STAGE_TOL = 1e-2  # L1 marginal error that ends an intermediate stage (1e-3 made it 3x slower)
STAGE_MAX_ITER = 200
STALL_RATIO = 0.7  # at the last eps, a chunk of CHECK_EVERY iterations must cut the error by 30%
CHECK_EVERY = 20  # certificate attempts at the last eps
CERTIFY_BELOW = 1 / 8  # certify only once eps <= range / 8
SINKHORN_TRUNC = 8.0  # support: P_ij > exp(-8) a_i b_j (the certificate guards the rest)
SPARSE_MIN_SIZE = 4096  # below n m = 4096 the dense kernel is cheaper
SPARSE_MAX_DENSITY = 0.3
IPOT_TRUNC = 15.0
WARM_STAGES = 0  # stages above eps = reg a warm start begins at (measured: 0 is best)
BIAS_STALL = 0.9  # a certificate chunk at the last eps must cut the gap estimate by 10%...
BIAS_ERR = 1e-3  # ...once the L1 marginal error is below this (before, the gap still moves)  # IPOT's updates are multiplicative: an entry dropped stays 0, so keep more


def _batch(C, a, b):
    if C.dim() == 2:
        return C[None], a[None], b[None], True
    return C, a, b, False


def _unbatch(out: dict, single: bool) -> dict:
    """Drop the batch axis added by :func:`_batch`, from the extras too: every extra follows
    the batch shape of the value."""
    if single:
        out["plan"] = out["plan"][0]
        out["potentials"] = tuple(p[0] for p in out["potentials"])
        out["extras"] = {
            k: v[0] if isinstance(v, torch.Tensor) and v.dim() else v
            for k, v in out.get("extras", {}).items()
        }
    return out


def _scale(C: torch.Tensor) -> float:
    """The cost's range ``max C - min C`` (largest over a batch): the unit of ``reg``/``beta``."""
    r = float((C.amax(dim=(-2, -1)) - C.amin(dim=(-2, -1))).max())
    return r if r > 0 else 1.0


def _lp_potentials(K: Kernel, F, G, a, b):
    """Entropic duals in the ``a (x) b`` convention (``P = a_i b_j exp((F_i + G_j - C_ij)/eps)``)
    tend to the LP duals as ``eps -> 0``; rows/columns of zero weight get their c-transform."""
    if (b == 0).any():
        G = torch.where(b > 0, G, _ctransform(K.C, F, dim=-2))
    if (a == 0).any():
        F = torch.where(a > 0, F, _ctransform(K.C, G, dim=-1))
    return F, G


def _ctransform(C, pot, dim):
    if dim == -1:  # F_i = min_j C_ij - G_j
        return (C - pot[:, None, :]).amin(-1)
    return (C - pot[:, :, None]).amin(-2)


def _l1(x: torch.Tensor) -> float:
    return float(x.abs().sum(-1).max())


@register(
    "sinkhorn",
    converges_to_exact=True,
    value_rtol=1e-3,
    potentials=True,
    batched=True,
    warmstart=True,
    params={
        "reg": 1e-3,
        "gap": 1e-3,
        "max_iter": 5000,
        "tol": 1e-5,
        "scaling": 0.5,
        "sparse": True,
        "relative": True,
        "exact_finish": True,
    },
    description="Sinkhorn, log-stabilised, eps-scaling, sparse kernel, certified duality gap; "
    "where the entropic bias at reg keeps the gap open (an OT value far below the "
    "cost's range, e.g. uniform random costs) it finishes exactly (network simplex)",
)
def sinkhorn(
    C,
    a,
    b,
    *,
    reg: float,
    gap: float,
    max_iter: int,
    tol: float,
    scaling: float,
    sparse: bool,
    relative: bool,
    exact_finish: bool,
    warmstart=None,
) -> dict:
    """Solve OT by Sinkhorn scaling with absorption, eps-scaling, kernel truncation and a
    certified stopping rule.

    Parameters
    ----------
    reg : float
        Smallest entropic regularisation ``eps``, *relative to the cost's range*
        ``max C - min C`` (``relative=True``), or in the cost's own units (``relative=False``:
        ``eps = reg``, a paper's ``1 / lambda``). ``<P, C>`` overestimates OT by O(eps).
    gap : float
        Stop as soon as the relative duality gap ``(UB - LB) / UB`` is at most ``gap``:
        ``UB = <P, C>`` of the rounded (exactly feasible) plan, ``LB`` the dual value of the
        double c-transform of the potentials on the dense cost. The returned value is then
        *certified* within ``gap`` of exact OT, and ``converged`` is True. ``gap = 0`` disables
        the rule: iterate at ``eps = reg`` until the marginals meet ``tol`` (plain entropic OT).
    max_iter : int
        Total Sinkhorn iterations over all stages; reaching it gives ``converged=False``.
    tol : float
        L1 marginal error that ends each stage (``max(tol, 1e-3)`` for intermediate stages).
    scaling : float in (0, 1)
        eps-scaling factor: eps goes from the range (``range / 64`` on the sparse path) down
        to ``reg * range`` by this factor.
    sparse : bool
        Truncate the kernel to its numerically non-zero support once it concentrates
        (Schmitzer 2019). The certificate is computed on the dense cost, so truncation can
        slow convergence but never hide an error; a support that stalls the marginals or
        fails the dense certificate is grown. Ignored when ``gap = 0``.
    relative : bool
        Whether ``reg`` is relative to the cost's range (default) or absolute.
    exact_finish : bool
        When, at ``eps = reg``, the gap stops shrinking above ``gap`` with the marginals
        nearly met, the entropic bias of that eps (``<P_eps, C> - OT`` grows with
        ``eps log n``) is larger than ``gap * value``: the OT value is far below the cost's
        range (uniform random costs: value ~ range / n). Smaller eps would take thousands of
        iterations; instead finish with the network simplex (POT ``ot.emd``, the ``emd``
        method), whose plan and LP duals certify a gap of 0 (``extras["finish"] = "emd"``).
        ``False``: return the rounded entropic plan, uncertified, with its gap and the reason.
    warmstart : (F, G), optional
        Potentials of a previous solve (its ``.potentials``, ``a (x) b`` convention): the
        iterations start at ``eps = reg`` (no eps-scaling) from ``G`` and ``F`` = its
        c-transform ``min_j C_ij - G_j`` (so ``F + G <= C``: no exponent overflows, and ``F``
        is what the first ``u`` update recomputes anyway). POT's ``warmstart`` is
        ``(log u, log v) = (log a + F / eps, log b + G / eps)``. Stopping rule, certificate
        and ``exact_finish`` are unchanged: a certified result is certified either way.

    Notes
    -----
    ``min_{P in Pi(a,b)} <P, C> + eps KL(P | a b^T)`` (Cuturi 2013), iterations
    ``u = a / K v``, ``v = b / K^T u`` on ``K = exp((f + g - C)/eps)`` with ``(f, g)`` absorbed
    (Schmitzer 2019, Alg. 2). With ``gap > 0`` the plan returned is the rounded plan
    (Altschuler, Weed & Rigollet 2017, Alg. 2), feasible up to float round-off.
    ``extras``: ``eps`` reached, ``gap`` certified, ``lower_bound``, ``reg_value``
    (``eps KL``, not part of ``value``), ``stages``, ``support_size``.
    """
    if not 0 < scaling < 1:
        raise ValueError(f"scaling must lie in (0, 1); got {scaling}")
    _check_positive("reg", reg)
    if not gap >= 0:
        raise ValueError(f"gap must be >= 0; got {gap}")
    C, a, b, single = _batch(C, a, b)
    with torch.no_grad():
        warm = None if warmstart is None else tuple(p.reshape(C.shape[0], -1) for p in warmstart)
        out = _sinkhorn(C, a, b, reg, gap, max_iter, tol, scaling, sparse, relative, warm)
        if out["extras"].pop("bias_limited") and exact_finish and get_method("emd").is_available:
            _exact_finish(C, a, b, out)
    if gap == 0:  # the entropic plan at eps: its <P, C> is no optimum, so no envelope
        out["value_fn"] = functools.partial(_entropic_value, reg=reg, relative=relative)
    return _unbatch(out, single)


def _exact_finish(C, a, b, out: dict) -> None:
    """Replace a bias-limited entropic result by the network simplex's (per problem), keeping
    the iterations' diagnostics; the gap is that of its plan and LP duals (0 up to round-off)."""
    from ._exact import emd

    res = [emd(C[i], a[i], b[i], max_iter=10_000_000, num_threads=1) for i in range(C.shape[0])]
    plan = torch.stack([r["plan"] for r in res])
    f, g = (torch.stack([r["potentials"][k] for r in res]) for k in (0, 1))
    ub, lb = batched_dot(plan, C), (a * f).sum(-1) + (b * g).sum(-1)
    floor = VALUE_FLOOR * _scale(C)
    gap = float(((ub - lb).clamp_min(0) / ub.abs().clamp_min(floor)).max())
    converged = all(r["converged"] for r in res)
    out.update(plan=plan, potentials=(f, g), converged=converged)
    out["extras"].update(
        gap=gap,
        lower_bound=lb,
        finish="emd",
        reason="" if converged else "the network simplex finish hit its iteration limit",
    )


def _entropic_value(C, a, b, plan, potentials, *, reg, relative):
    return attach_entropic(C, a, b, plan, potentials, reg, relative)


#: The certificate's gap is relative to the value, or to this fraction of the cost's range when
#: the value is smaller (a value of 0, equal distributions, has no relative gap).
VALUE_FLOOR = 1e-6


def _absorb(F, G, u, v, eps, tiny):
    return F + eps * torch.log(u.clamp_min(tiny)), G + eps * torch.log(v.clamp_min(tiny))


def _check_positive(name: str, value: float) -> None:
    try:
        ok = math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok or isinstance(value, bool):
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")


def _sinkhorn(C, a, b, reg, gap_tol, max_iter, tol, scaling, sparse, relative=True, warm=None):
    B, n, m = C.shape
    tiny = torch.finfo(C.dtype).tiny
    K = Kernel(C, trunc=SINKHORN_TRUNC)
    if warm is None:
        # c-transform start: F_i = min_j C_ij, G_j = min_i C_ij - F_i, so C - F - G >= 0 with
        # a zero in every row and column; the potentials are already dual-feasible.
        F = C.amin(-1)
        R = torch.sub(C, F[:, :, None], out=K.buf)
        G = R.amin(-2)
        R.sub_(G[:, None, :])
    else:  # warm start: the given G and its c-transform F_i = min_j C_ij - G_j (C - F - G >= 0)
        G = warm[1].clone()
        R = torch.sub(C, G[:, None, :], out=K.buf)
        F = R.amin(-1)
        R.sub_(F[:, :, None])
    rng = float((C.amax(dim=(-2, -1)) - C.amin(dim=(-2, -1))).max())
    rng = rng if rng > 0 else 1.0
    eps_end = reg * rng if relative else float(reg)
    # gap = 0 asks for entropic OT at reg itself: truncation would change that problem
    sparse = sparse and gap_tol > 0 and n * m >= SPARSE_MIN_SIZE
    # The late start (range/64) pays on large sparse problems; small dense ones, where an
    # iteration is cheap but a start far from the optimum can take thousands, anneal from the
    # range as in classic eps-scaling.
    # warm: potentials near the optimum need no annealing (POT's warmstart has none either)
    eps = (
        max(eps_end / scaling**WARM_STAGES, eps_end)
        if warm is not None
        else max((EPS0 if sparse else 1.0) * rng, eps_end)
    )
    if sparse:
        # support test on the reduced cost already in the workspace: C - F - G < trunc eps
        K.sparsify(F, G, eps, mask=R < K.trunc * eps, max_density=SPARSE_MAX_DENSITY)
    u, v = torch.ones_like(a), torch.ones_like(b)
    n_iter, stages, grown, err = 0, 0, 0, math.inf
    certified, gap, lb, rounding, cpot = False, math.inf, None, None, None
    last_eps, prev_est, bias_limited = None, math.inf, False
    while True:
        final = eps <= eps_end * (1 + 1e-9)
        K.set(F, G, eps)
        if eps != last_eps:
            stages += 1
            stage_tol = tol if final else max(tol, STAGE_TOL)
            prev_err, may_grow = math.inf, True
        last_eps = eps
        k = 0
        while n_iter < max_iter:
            # a (x) b convention: P = diag(a u) K diag(b v), so F, G tend to the LP duals
            u = 1.0 / K.mv(b * v).clamp_min(tiny)
            Ktu = K.rmv(a * u)
            err = _l1(b * v * Ktu - b)  # column marginal of the current plan (rows are exact)
            v = 1.0 / Ktu.clamp_min(tiny)
            n_iter += 1
            k += 1
            if err < stage_tol or (not final and k >= STAGE_MAX_ITER):
                break
            if final and gap_tol > 0 and k % CHECK_EVERY == 0:
                break  # go and try the certificate
            if float(torch.maximum(u.amax(), v.amax())) > math.exp(ABSORB) or float(
                torch.minimum(u.amin(), v.amin())
            ) < math.exp(-ABSORB):
                F, G = _absorb(F, G, u, v, eps, tiny)
                u, v = torch.ones_like(u), torch.ones_like(v)
                K.set(F, G, eps)
        if gap_tol > 0 and eps <= rng * CERTIFY_BELOW:
            # certificate: UB from the rounded plan, LB from the dense double c-transform;
            # the support-only LB (>= the dense one) first tells whether the dense pass can pass
            rounding = K.rounded(a * u, b * v, a, b)
            ub = rounding[-1]
            Fa = _absorb(F, G, u, v, eps, tiny)[0]
            # relative to the value; to VALUE_FLOOR x the range when the value is ~0 (two equal
            # distributions: no relative gap can be certified around 0)
            scale_ub = ub.abs().clamp_min(max(tiny, VALUE_FLOOR * rng))
            lb_est = K.support_lower_bound(Fa, a, b)
            est = float(((ub - lb_est) / scale_ub).max())
            # at the last eps the gap no longer shrinking (by BIAS_STALL per CHECK_EVERY
            # iterations), while the marginals nearly hold (the entropic bias of this eps keeps
            # it open) or no longer improve either (Sinkhorn's own stall): more iterations at
            # this eps will not certify
            if final and est > gap_tol and est > BIAS_STALL * prev_est:
                # (a truncated support that stalls is grown below before anything else)
                bias_limited = (
                    "bias"
                    if err < BIAS_ERR
                    else "stall"
                    if err > BIAS_STALL * prev_err and not (K.sparse and may_grow)
                    else False
                )
            prev_est = est if final else math.inf
            if est <= gap_tol:
                cpot = K.ctransform(Fa)  # feasible: the potentials of a certified result
                lb = (a * cpot[0]).sum(-1) + (b * cpot[1]).sum(-1)
                gap = float(((ub - lb) / scale_ub).max())
                certified = gap <= gap_tol
                if not certified and K.sparse:
                    # the support's bound passed, the dense one did not: entries outside the
                    # support violate the dual constraints. Add them and go on at this eps.
                    F, G = _absorb(F, G, u, v, eps, tiny)
                    u, v = torch.ones_like(u), torch.ones_like(v)
                    grown += K.grow(F, G, eps) > 0
                    prev_err = math.inf
                    if _DEBUG:
                        print(f"  grown to {K.nnz}")
                    continue
            if _DEBUG:
                print(f"  gap est {est:.2e} certified {gap:.2e}")
        if _DEBUG:
            print(
                f"stage {stages} eps/rng {eps / rng:.2e} iters {k} err {err:.2e} "
                f"sparse {K.sparse} nnz {K.nnz}"
            )
        if certified or n_iter >= max_iter or bias_limited:
            break
        # A truncated support can make the marginals unreachable: the error then stalls. Grow
        # the support with every entry active at this eps (one dense pass) and go on.
        stalled = (err >= stage_tol) and (
            k >= STAGE_MAX_ITER if not final else err > STALL_RATIO * prev_err
        )
        prev_err = err
        if stalled and K.sparse and may_grow:
            F, G = _absorb(F, G, u, v, eps, tiny)
            u, v = torch.ones_like(u), torch.ones_like(v)
            added = K.grow(F, G, eps)
            grown += added > 0
            may_grow = added > 0  # nothing to add: the stall is Sinkhorn's own, stop trying
            prev_err = math.inf
            continue
        if final:
            if gap_tol == 0 or err >= tol:
                if gap_tol == 0:
                    break
                continue  # keep iterating at eps_end, certifying every CHECK_EVERY iterations
            # converged marginals at the smallest eps but no certificate: the support is
            # missing entries (or reg is too large for gap): grow it once more, else give up
            F, G = _absorb(F, G, u, v, eps, tiny)
            u, v = torch.ones_like(u), torch.ones_like(v)
            if K.sparse and K.grow(F, G, eps) > 0:
                grown += 1
                continue
            K.set(F, G, eps)  # the plan below is built from the absorbed potentials
            break
        F, G = _absorb(F, G, u, v, eps, tiny)
        u, v = torch.ones_like(u), torch.ones_like(v)
        eps = max(eps * scaling, eps_end)
        if K.sparse:
            K.shrink(F, G, eps)
        elif sparse:
            K.sparsify(F, G, eps, max_density=SPARSE_MAX_DENSITY)
    Fa, Ga = _absorb(F, G, u, v, eps, tiny)
    if gap_tol > 0 and not certified:
        # round the last iterate onto Pi(a, b) (Altschuler et al. 2017, Alg. 2): a feasible
        # plan, so an upper bound, and the gap it leaves is reported even when too large
        rounding = K.rounded(a * u, b * v, a, b)
        lb = K.lower_bound(Fa, a, b)
        ub = rounding[-1]
        gap = float(((ub - lb) / ub.abs().clamp_min(max(tiny, VALUE_FLOOR * rng))).max())
    if rounding is not None and gap_tol > 0:
        ur, vr, err_a, err_b, _ = rounding
        plan = K.plan(ur, vr, err_a, err_b)
    else:
        plan = K.plan(a * u, b * v)
    Fe, Ge = _lp_potentials(K, Fa, Ga, a, b)  # the entropic duals
    value = batched_dot(plan, C)
    dual = (a * torch.where(a > 0, Fe, 0)).sum(-1) + (b * torch.where(b > 0, Ge, 0)).sum(-1)
    converged = certified if gap_tol > 0 else err < tol
    reason = (
        ""
        if converged or gap_tol == 0
        else _sinkhorn_reason(gap_tol, gap, n_iter, max_iter, eps, bias_limited)
    )
    return {
        # certified: the feasible potentials whose dual value is the certificate's lower bound
        "plan": plan,
        "potentials": cpot if certified else (Fe, Ge),
        "n_iter": n_iter,
        "converged": bool(converged),
        "extras": {
            "eps": eps,
            "gap": gap,
            "lower_bound": lb,
            "reg_value": dual - value,
            # the entropic duals at eps: the best warm start for the next solve (a
            # certified result's potentials are their c-transform, O(eps) away)
            "warm_f": Fe,
            "warm_g": Ge,
            "stages": stages,
            "sparse": K.sparse,
            "support_size": K.nnz,
            "support_grown": grown,
            "reason": reason,
            "bias_limited": bias_limited,
        },
    }


def _sinkhorn_reason(gap_tol, gap, n_iter, max_iter, eps, bias_limited) -> str:
    head = f"no certificate within gap={gap_tol:g}: the rounded plan is within {gap:.3g}"
    if bias_limited == "stall":
        return (
            f"{head} after {n_iter} iterations at eps={eps:.3g}, where the gap and the "
            f"marginals stopped improving (a slow, near-degenerate problem at this eps); "
            f"let exact_finish=True solve it exactly, or raise reg"
        )
    if bias_limited:
        return (
            f"{head} after {n_iter} iterations at eps={eps:.3g}, and the gap stopped "
            f"shrinking: the entropic bias of eps is larger than gap x value (an OT value "
            f"far below the cost's range, e.g. uniform random costs); lower reg, or let "
            f"exact_finish=True solve it exactly"
        )
    if n_iter >= max_iter:
        return f"{head} when max_iter={max_iter} was reached: raise max_iter"
    return f"{head} once the marginals met tol at eps={eps:.3g}: lower reg or tol"


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
    _check_positive("beta", beta)
    if not gap >= 0:
        raise ValueError(f"gap must be >= 0; got {gap}")
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1; got {max_iter}")
    C, a, b, single = _batch(C, a, b)
    with torch.no_grad():
        # T^(0) = 1 1^T makes IPOT's iterates depend on a constant shift of C (exponents of
        # C + 1e4 all clamp): solve on C - min C, which has the same plans (the factor
        # exp(-t shift / beta) of G^t is absorbed by u at each step), and report <P, C>.
        shift = C.amin(dim=(-2, -1), keepdim=True)
        beta_abs = beta * _scale(C) if relative else float(beta)
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
    return _unbatch(out, single)


def _replayed_value(C, a, b, plan, potentials, *, steps):
    return attach_replay(steps, plan_dot(plan, C.detach()), C, a, b)


def ipot_steps(C, a, b, *, beta: float, n_steps: int, relative: bool) -> torch.Tensor:
    """``<T^(N), C>`` after N steps of lohit2020 Alg. 1, differentiable (log domain, no
    clamping; each step checkpointed: memory O(n m + N (n + m)) for the backward pass)."""
    from torch.utils.checkpoint import checkpoint

    C3, a3, b3, single = _batch(C, a, b)
    Cs = C3 - C3.amin(dim=(-2, -1), keepdim=True)  # as ipot: T^(0) = 1 1^T
    if relative:
        rng = (Cs.amax(dim=(-2, -1)) - Cs.amin(dim=(-2, -1))).max()
        beta = beta * (rng if float(rng) > 0 else torch.ones_like(rng))
    la = torch.where(a3 > 0, torch.log(a3.clamp_min(torch.finfo(a3.dtype).tiny)), 0)
    lb = torch.where(b3 > 0, torch.log(b3.clamp_min(torch.finfo(b3.dtype).tiny)), 0)
    # rows/columns of zero weight take no part in the other side's sums (their u, v are 0)
    mask_a = torch.where(a3 > 0, 0.0, -math.inf).to(Cs.dtype)
    mask_b = torch.where(b3 > 0, 0.0, -math.inf).to(Cs.dtype)
    Phi, Psi = torch.zeros_like(a3), torch.zeros_like(b3)
    logv = torch.full_like(b3, -math.log(b3.shape[-1]))  # Alg. 1: v = 1/m

    def step(Phi, Psi, logv, t):
        logQ = (Phi[:, :, None] + Psi[:, None, :] - t * Cs) / beta
        logu = la - torch.logsumexp(logQ + (logv + mask_b)[:, None, :], dim=-1)
        logv = lb - torch.logsumexp(logQ + (logu + mask_a)[:, :, None], dim=-2)
        return Phi + beta * logu, Psi + beta * logv, logv

    for t in range(1, n_steps + 1):
        Phi, Psi, logv = checkpoint(step, Phi, Psi, logv, t, use_reentrant=False)
    T = torch.exp((Phi[:, :, None] + Psi[:, None, :] - n_steps * Cs) / beta)
    T = T * ((a3 > 0)[:, :, None] & (b3 > 0)[:, None, :])
    value = (T * C3).sum(dim=(-2, -1))
    return value[0] if single else value


def _ipot(C, a, b, beta, max_iter, gap_tol, check_every, sparse, offset, warm=None):
    """IPOT on ``C`` (already shifted to min 0) with the absolute proximal step ``beta``;
    ``offset`` (B,) = shift * mass turns values of the shifted problem into values of the
    caller's, so the gap is relative to the latter. ``warm`` (F, G) of the shifted problem:
    ``T^(0) = diag(a) exp((F + G - C) / beta) diag(b)``, i.e. one step already taken (t0 = 1)."""
    B, n, m = C.shape
    rng = _scale(C)
    K = Kernel(C, trunc=IPOT_TRUNC)
    tiny = torch.finfo(C.dtype).tiny
    # zero-weight rows/columns: their row of T is 0 whatever the kernel (P = diag(a) K diag(b))
    la = torch.where(a > 0, torch.log(a.clamp_min(tiny)), 0)
    lb = torch.where(b > 0, torch.log(b.clamp_min(tiny)), 0)
    if warm is None:
        t0, Phi, Psi = 0, torch.zeros_like(a), torch.zeros_like(b)  # T^(0) = 1 1^T
    else:  # exp((Phi + Psi - C) / beta) = diag(a) exp((F + G - C) / beta) diag(b)
        # (F: the c-transform of G, so F + G <= C and no exponent is clamped from above)
        F0 = _ctransform(C, warm[1], dim=-1)
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
        err = max(_l1(plan.sum(-1) - a), _l1(plan.sum(-2) - b))
        converged = err < 1e-3
        if not converged:
            reason = (
                f"gap=0 runs exactly max_iter={t} proximal steps (the papers' N): the "
                f"plan's L1 marginal error {err:.3g} is above 1e-3; raise max_iter"
            )
    F, G = K.ctransform(Fa) if certified else _lp_potentials(K, Fa, Gb, a, b)
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


@register(
    "pot_sinkhorn",
    converges_to_exact=True,
    value_rtol=1e-1,
    potentials=True,
    requires=("ot",),
    warmstart=True,
    params={"reg": 1e-2, "max_iter": 100_000, "tol": 1e-6},
    description="baseline: POT's ot.bregman.sinkhorn_log (no eps-scaling), for comparisons",
)
def pot_sinkhorn(C, a, b, *, reg: float, max_iter: int, tol: float, warmstart=None) -> dict:
    """POT's log-domain Sinkhorn, as shipped, with ``reg`` relative to the cost's range.

    A baseline for the solver benchmark: same problem, same ``reg`` meaning as ``sinkhorn``.
    ``warmstart=(F, G)`` (``a (x) b`` potentials, as returned) goes to POT's own ``warmstart``
    as the log-scalings ``(log a + F / eps, log b + G / eps)``.
    """
    import ot

    if reg <= 0:
        raise ValueError(f"reg must be positive; got {reg}")
    eps = reg * _scale(C)
    warm = (
        None
        if warmstart is None
        else (torch.log(a) + warmstart[0] / eps, torch.log(b) + warmstart[1] / eps)
    )
    plan, log = ot.bregman.sinkhorn_log(
        a, b, C, eps, numItermax=int(max_iter), stopThr=tol, log=True, warn=False, warmstart=warm
    )
    n_iter = int(log.get("niter", max_iter))
    err = float(log["err"][-1]) if len(log.get("err", [])) else math.inf
    # a (x) b convention, as the other solvers; zero weights get their c-transform
    F = eps * (log["log_u"] - torch.log(a))
    G = eps * (log["log_v"] - torch.log(b))
    G = torch.where(b > 0, G, (C - F.where(a > 0, 0)[:, None]).amin(0))
    F = torch.where(a > 0, F, (C - G[None, :]).amin(1))
    reason = (
        ""
        if err < tol
        else (
            f"L1 marginal error {err:.3g} above tol={tol:g} after "
            f"{n_iter} iterations (no eps-scaling): raise max_iter or reg"
        )
    )
    return {
        "plan": plan.detach(),
        "potentials": (F, G),
        "n_iter": n_iter,
        "converged": bool(err < tol),
        "extras": {"eps": eps, "reason": reason},
        "value_fn": functools.partial(_entropic_value, reg=reg, relative=True),
    }
