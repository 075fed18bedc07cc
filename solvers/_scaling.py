"""Scaling solvers: log-stabilised Sinkhorn with eps-scaling, and the helpers it shares with
IPOT (``_ipot``) and POT's Sinkhorn baseline (``_pot_sinkhorn``).

They iterate under ``torch.no_grad()``; the value's gradient is attached by the envelope theorem
in ``_api.solve``, never by backpropagating through iterations.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ._envelope import attach_entropic
from ._kernel import Kernel, batched_dot
from ._registry import get_method, register

__all__ = [
    "CERTIFY_BELOW",
    "SPARSE_MAX_DENSITY",
    "SPARSE_MIN_SIZE",
    "VALUE_FLOOR",
    "batch_problem",
    "check_positive",
    "cost_scale",
    "ctransform",
    "entropic_value",
    "l1_error",
    "lp_potentials",
    "sinkhorn",
    "unbatch_result",
]

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
WARM_STAGES = 0  # stages above eps = reg a warm start begins at (measured: 0 is best)
BIAS_STALL = 0.9  # a certificate chunk at the last eps must cut the gap estimate by 10%...
BIAS_ERR = 1e-3  # ...once the L1 marginal error is below this (before, the gap still moves)


def batch_problem(C, a, b):
    if C.dim() == 2:
        return C[None], a[None], b[None], True
    return C, a, b, False


def unbatch_result(out: dict, single: bool) -> dict:
    """Drop the batch axis added by :func:`batch_problem`, from the extras too: every extra follows
    the batch shape of the value."""
    if single:
        out["plan"] = out["plan"][0]
        out["potentials"] = tuple(p[0] for p in out["potentials"])
        out["extras"] = {
            k: v[0] if isinstance(v, torch.Tensor) and v.dim() else v
            for k, v in out.get("extras", {}).items()
        }
    return out


def cost_scale(C: torch.Tensor) -> float:
    """The cost's range ``max C - min C`` (largest over a batch): the unit of ``reg``/``beta``."""
    r = float((C.amax(dim=(-2, -1)) - C.amin(dim=(-2, -1))).max())
    return r if r > 0 else 1.0


def lp_potentials(K: Kernel, F, G, a, b):
    """Entropic duals in the ``a (x) b`` convention (``P = a_i b_j exp((F_i + G_j - C_ij)/eps)``)
    tend to the LP duals as ``eps -> 0``; rows/columns of zero weight get their c-transform."""
    if (b == 0).any():
        G = torch.where(b > 0, G, ctransform(K.C, F, dim=-2))
    if (a == 0).any():
        F = torch.where(a > 0, F, ctransform(K.C, G, dim=-1))
    return F, G


def ctransform(C, pot, dim):
    if dim == -1:  # F_i = min_j C_ij - G_j
        return (C - pot[:, None, :]).amin(-1)
    return (C - pot[:, :, None]).amin(-2)


def l1_error(x: torch.Tensor) -> float:
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
    check_positive("reg", reg)
    if not gap >= 0:
        raise ValueError(f"gap must be >= 0; got {gap}")
    C, a, b, single = batch_problem(C, a, b)
    with torch.no_grad():
        warm = None if warmstart is None else tuple(p.reshape(C.shape[0], -1) for p in warmstart)
        out = _sinkhorn(C, a, b, reg, gap, max_iter, tol, scaling, sparse, relative, warm)
        if out["extras"].pop("bias_limited") and exact_finish and get_method("emd").is_available:
            _exact_finish(C, a, b, out)
    if gap == 0:  # the entropic plan at eps: its <P, C> is no optimum, so no envelope
        out["value_fn"] = functools.partial(entropic_value, reg=reg, relative=relative)
    return unbatch_result(out, single)


def _exact_finish(C, a, b, out: dict) -> None:
    """Replace a bias-limited entropic result by the network simplex's (per problem), keeping
    the iterations' diagnostics; the gap is that of its plan and LP duals (0 up to round-off)."""
    from ._exact import emd

    res = [emd(C[i], a[i], b[i], max_iter=10_000_000, num_threads=1) for i in range(C.shape[0])]
    plan = torch.stack([r["plan"] for r in res])
    f, g = (torch.stack([r["potentials"][k] for r in res]) for k in (0, 1))
    ub, lb = batched_dot(plan, C), (a * f).sum(-1) + (b * g).sum(-1)
    floor = VALUE_FLOOR * cost_scale(C)
    gap = float(((ub - lb).clamp_min(0) / ub.abs().clamp_min(floor)).max())
    converged = all(r["converged"] for r in res)
    out.update(plan=plan, potentials=(f, g), converged=converged)
    out["extras"].update(
        gap=gap,
        lower_bound=lb,
        finish="emd",
        reason="" if converged else "the network simplex finish hit its iteration limit",
    )


def entropic_value(C, a, b, plan, potentials, *, reg, relative):
    return attach_entropic(C, a, b, plan, potentials, reg, relative)


#: The certificate's gap is relative to the value, or to this fraction of the cost's range when
#: the value is smaller (a value of 0, equal distributions, has no relative gap).
VALUE_FLOOR = 1e-6


def _absorb(F, G, u, v, eps, tiny):
    return F + eps * torch.log(u.clamp_min(tiny)), G + eps * torch.log(v.clamp_min(tiny))


def check_positive(name: str, value: float) -> None:
    try:
        ok = math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok or isinstance(value, bool):
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")


class _Problem(NamedTuple):
    """What one Sinkhorn solve holds fixed: the (batched) problem, its kernel and schedule."""

    C: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    K: Kernel
    tiny: float
    rng: float  # the cost's range, the unit of eps
    eps_end: float
    gap_tol: float
    max_iter: int
    tol: float
    scaling: float
    sparse: bool  # whether the kernel may be truncated


@dataclass
class _State:
    """The iterates: absorbed potentials ``(F, G)``, scalings ``(u, v)`` and their bookkeeping."""

    F: torch.Tensor
    G: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    eps: float
    n_iter: int = 0
    k: int = 0  # iterations of the current chunk
    stages: int = 0
    grown: int = 0
    err: float = math.inf  # L1 column-marginal error of the last iteration
    prev_err: float = math.inf
    stage_tol: float = math.inf
    may_grow: bool = True
    last_eps: float | None = None
    prev_est: float = math.inf
    certified: bool = False
    gap: float = math.inf
    lb: torch.Tensor | None = None
    rounding: tuple | None = None
    cpot: tuple[torch.Tensor, torch.Tensor] | None = None
    bias_limited: str | bool = False


def _sinkhorn(C, a, b, reg, gap_tol, max_iter, tol, scaling, sparse, relative=True, warm=None):
    """Chunks of iterations at decreasing eps, each followed by a certificate attempt (once
    eps <= range * CERTIFY_BELOW) and a step of the schedule, until certified, bias-limited,
    converged at ``eps = reg`` or out of iterations."""
    p, s = _start(C, a, b, reg, gap_tol, max_iter, tol, scaling, sparse, relative, warm)
    while True:
        _begin_chunk(p, s)
        _iterate(p, s)
        if p.gap_tol > 0 and s.eps <= p.rng * CERTIFY_BELOW and _certify(p, s):
            continue  # the dense certificate failed on a truncated support: it was grown
        if _DEBUG:
            print(
                f"stage {s.stages} eps/rng {s.eps / p.rng:.2e} iters {s.k} err {s.err:.2e} "
                f"sparse {p.K.sparse} nnz {p.K.nnz}"
            )
        if s.certified or s.n_iter >= p.max_iter or s.bias_limited or not _advance(p, s):
            break
    return _sinkhorn_result(p, s)


def _start(C, a, b, reg, gap_tol, max_iter, tol, scaling, sparse, relative, warm):
    """The fixed problem and the first iterate: dual-feasible potentials, unit scalings."""
    n, m = C.shape[-2:]
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
    # range as in classic eps-scaling. A warm start needs no annealing (nor has POT's).
    eps = (
        max(eps_end / scaling**WARM_STAGES, eps_end)
        if warm is not None
        else max((EPS0 if sparse else 1.0) * rng, eps_end)
    )
    if sparse:
        # support test on the reduced cost already in the workspace: C - F - G < trunc eps
        K.sparsify(F, G, eps, mask=R < K.trunc * eps, max_density=SPARSE_MAX_DENSITY)
    tiny = torch.finfo(C.dtype).tiny
    p = _Problem(C, a, b, K, tiny, rng, eps_end, gap_tol, max_iter, tol, scaling, sparse)
    return p, _State(F, G, torch.ones_like(a), torch.ones_like(b), eps)


def _final(p: _Problem, s: _State) -> bool:
    return s.eps <= p.eps_end * (1 + 1e-9)


def _begin_chunk(p: _Problem, s: _State) -> None:
    """Set the kernel; a new eps starts a stage (its tolerance, its stall bookkeeping)."""
    p.K.set(s.F, s.G, s.eps)
    if s.eps != s.last_eps:
        s.stages += 1
        s.stage_tol = p.tol if _final(p, s) else max(p.tol, STAGE_TOL)
        s.prev_err, s.may_grow = math.inf, True
    s.last_eps = s.eps


def _iterate(p: _Problem, s: _State) -> None:
    """Sinkhorn iterations until the stage's tolerance, its iteration cap, a certificate
    attempt (every CHECK_EVERY at the last eps) or max_iter; absorbing large scalings."""
    s.k = 0
    final = _final(p, s)
    while s.n_iter < p.max_iter:
        _update(p, s)
        if s.err < s.stage_tol or (not final and s.k >= STAGE_MAX_ITER):
            break
        if final and p.gap_tol > 0 and s.k % CHECK_EVERY == 0:
            break  # go and try the certificate
        if _overflowing(s):
            _absorb_state(p, s)
            p.K.set(s.F, s.G, s.eps)


def _update(p: _Problem, s: _State) -> None:
    """One iteration: ``u = 1 / K (b v)``, ``v = 1 / K^T (a u)`` (``a (x) b`` convention:
    ``P = diag(a u) K diag(b v)``, so F, G tend to the LP duals)."""
    K, a, b, tiny = p.K, p.a, p.b, p.tiny
    s.u = 1.0 / K.mv(b * s.v).clamp_min(tiny)
    Ktu = K.rmv(a * s.u)
    s.err = l1_error(b * s.v * Ktu - b)  # column marginal of the current plan (rows are exact)
    s.v = 1.0 / Ktu.clamp_min(tiny)
    s.n_iter += 1
    s.k += 1


def _overflowing(s: _State) -> bool:
    return float(torch.maximum(s.u.amax(), s.v.amax())) > math.exp(ABSORB) or float(
        torch.minimum(s.u.amin(), s.v.amin())
    ) < math.exp(-ABSORB)


def _absorb_state(p: _Problem, s: _State) -> None:
    """Move the scalings into the potentials: ``(F, G) += eps log (u, v)``, ``u = v = 1``."""
    s.F, s.G = _absorb(s.F, s.G, s.u, s.v, s.eps, p.tiny)
    s.u, s.v = torch.ones_like(s.u), torch.ones_like(s.v)


def _certify(p: _Problem, s: _State) -> bool:
    """Try the certificate: UB from the rounded plan, LB from the dense double c-transform
    (the support-only LB, >= the dense one, first tells whether the dense pass can pass).
    Return whether the support was grown instead (the chunk is then repeated)."""
    K, a, b, final = p.K, p.a, p.b, _final(p, s)
    s.rounding = K.rounded(a * s.u, b * s.v, a, b)
    ub = s.rounding[-1]
    Fa = _absorb(s.F, s.G, s.u, s.v, s.eps, p.tiny)[0]
    # relative to the value; to VALUE_FLOOR x the range when the value is ~0 (two equal
    # distributions: no relative gap can be certified around 0)
    scale_ub = ub.abs().clamp_min(max(p.tiny, VALUE_FLOOR * p.rng))
    lb_est = K.support_lower_bound(Fa, a, b)
    est = float(((ub - lb_est) / scale_ub).max())
    if final and est > p.gap_tol and est > BIAS_STALL * s.prev_est:
        s.bias_limited = _bias_limited(p, s)
    s.prev_est = est if final else math.inf
    if est <= p.gap_tol:
        s.cpot = K.ctransform(Fa)  # feasible: the potentials of a certified result
        s.lb = (a * s.cpot[0]).sum(-1) + (b * s.cpot[1]).sum(-1)
        s.gap = float(((ub - s.lb) / scale_ub).max())
        s.certified = s.gap <= p.gap_tol
        if not s.certified and K.sparse:
            # the support's bound passed, the dense one did not: entries outside the
            # support violate the dual constraints. Add them and go on at this eps.
            _absorb_state(p, s)
            s.grown += K.grow(s.F, s.G, s.eps) > 0
            s.prev_err = math.inf
            if _DEBUG:
                print(f"  grown to {K.nnz}")
            return True
    if _DEBUG:
        print(f"  gap est {est:.2e} certified {s.gap:.2e}")
    return False


def _bias_limited(p: _Problem, s: _State) -> str | bool:
    """At the last eps the gap no longer shrinks (by BIAS_STALL per CHECK_EVERY iterations):
    ``"bias"`` while the marginals nearly hold (the entropic bias of this eps keeps it open),
    ``"stall"`` when they no longer improve either (Sinkhorn's own stall; a truncated support
    that stalls is grown first), else False: more iterations at this eps may still certify."""
    if s.err < BIAS_ERR:
        return "bias"
    if s.err > BIAS_STALL * s.prev_err and not (p.K.sparse and s.may_grow):
        return "stall"
    return False


def _advance(p: _Problem, s: _State) -> bool:
    """After an uncertified chunk: grow a stalled support, go on at the last eps, or move to
    the next eps. Return whether to iterate on."""
    final = _final(p, s)
    # A truncated support can make the marginals unreachable: the error then stalls. Grow
    # the support with every entry active at this eps (one dense pass) and go on.
    stalled = (s.err >= s.stage_tol) and (
        s.k >= STAGE_MAX_ITER if not final else s.err > STALL_RATIO * s.prev_err
    )
    s.prev_err = s.err
    if stalled and p.K.sparse and s.may_grow:
        _absorb_state(p, s)
        added = p.K.grow(s.F, s.G, s.eps)
        s.grown += added > 0
        s.may_grow = added > 0  # nothing to add: the stall is Sinkhorn's own, stop trying
        s.prev_err = math.inf
        return True
    if final:
        return _at_last_eps(p, s)
    _absorb_state(p, s)
    s.eps = max(s.eps * p.scaling, p.eps_end)
    if p.K.sparse:
        p.K.shrink(s.F, s.G, s.eps)
    elif p.sparse:
        p.K.sparsify(s.F, s.G, s.eps, max_density=SPARSE_MAX_DENSITY)
    return True


def _at_last_eps(p: _Problem, s: _State) -> bool:
    """At ``eps = reg``: plain entropic OT stops; otherwise iterate on, certifying every
    CHECK_EVERY iterations, until the marginals converge. Converged marginals without a
    certificate: the support is missing entries (or reg is too large for gap): grow it once
    more, else give up."""
    if p.gap_tol == 0:
        return False
    if s.err >= p.tol:
        return True
    _absorb_state(p, s)
    if p.K.sparse and p.K.grow(s.F, s.G, s.eps) > 0:
        s.grown += 1
        return True
    p.K.set(s.F, s.G, s.eps)  # the plan is built from the absorbed potentials
    return False


def _sinkhorn_result(p: _Problem, s: _State) -> dict:
    """The plan (rounded onto Pi(a, b) where a gap is asked), potentials and diagnostics."""
    K, C, a, b, gap_tol = p.K, p.C, p.a, p.b, p.gap_tol
    Fa, Ga = _absorb(s.F, s.G, s.u, s.v, s.eps, p.tiny)
    if gap_tol > 0 and not s.certified:
        # round the last iterate onto Pi(a, b) (Altschuler et al. 2017, Alg. 2): a feasible
        # plan, so an upper bound, and the gap it leaves is reported even when too large
        s.rounding = K.rounded(a * s.u, b * s.v, a, b)
        s.lb = K.lower_bound(Fa, a, b)
        ub = s.rounding[-1]
        s.gap = float(((ub - s.lb) / ub.abs().clamp_min(max(p.tiny, VALUE_FLOOR * p.rng))).max())
    if s.rounding is not None and gap_tol > 0:
        ur, vr, err_a, err_b, _ = s.rounding
        plan = K.plan(ur, vr, err_a, err_b)
    else:
        plan = K.plan(a * s.u, b * s.v)
    Fe, Ge = lp_potentials(K, Fa, Ga, a, b)  # the entropic duals
    value = batched_dot(plan, C)
    dual = (a * torch.where(a > 0, Fe, 0)).sum(-1) + (b * torch.where(b > 0, Ge, 0)).sum(-1)
    converged = s.certified if gap_tol > 0 else s.err < p.tol
    reason = (
        ""
        if converged or gap_tol == 0
        else _sinkhorn_reason(gap_tol, s.gap, s.n_iter, p.max_iter, s.eps, s.bias_limited)
    )
    return {
        # certified: the feasible potentials whose dual value is the certificate's lower bound
        "plan": plan,
        "potentials": s.cpot if s.certified else (Fe, Ge),
        "n_iter": s.n_iter,
        "converged": bool(converged),
        "extras": {
            "eps": s.eps,
            "gap": s.gap,
            "lower_bound": s.lb,
            "reg_value": dual - value,
            # the entropic duals at eps: the best warm start for the next solve (a
            # certified result's potentials are their c-transform, O(eps) away)
            "warm_f": Fe,
            "warm_g": Ge,
            "stages": s.stages,
            "sparse": K.sparse,
            "support_size": K.nnz,
            "support_grown": s.grown,
            "reason": reason,
            "bias_limited": s.bias_limited,
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
