"""The one place where gradients are attached to an OT value.

Envelope (Danskin) theorem: for ``OT(C, a, b) = min_{P in Pi(a, b)} <P, C>``
``= max_{f + g <= C} <a, f> + <b, g>``, at an optimum ``dOT/dC = P*``, ``dOT/da = f*`` and
``dOT/db = g*`` (li2020 §3.1, "we instead apply the envelope theorem"). Potentials are defined up
to ``f + c, g - c``; on the balanced problem only mass-preserving perturbations of ``(a, b)`` are
admissible, so we return the *centred* potentials ``f - mean(f)``, ``g - mean(g)``, the
projection of the gradient on ``{sum(da) = 0}``. The gradient holds at convergence and to first
order only; iterative solvers run under ``torch.no_grad()`` and never backpropagate through
their iterations.

Where the returned value is not an optimum of the problem the envelope differentiates, the
envelope is not its gradient, and two other helpers attach the derivative of what is returned:

* :func:`attach_entropic`: ``<P_eps, C>`` of the entropic plan (``sinkhorn`` at ``gap=0``,
  ``pot_sinkhorn``) is not the entropic optimum ``<P, C> + eps KL(P | a b^T)``; its derivative
  comes from implicit differentiation of the Sinkhorn fixed point (one linear solve of the
  size of the smaller side; Luise et al. 2018, "Differential properties of Sinkhorn
  approximation"), including the dependence of ``eps = reg * range(C)`` on ``C``.
* :func:`attach_replay`: a value from a fixed number of steps (``ipot`` at ``gap=0``, the
  papers' N proximal steps) has the derivative of those steps: the forward pass keeps the
  solver's value, the backward pass replays the steps under autograd.
"""

from __future__ import annotations

import math

import torch

__all__ = ["attach", "attach_entropic", "attach_replay"]


def plan_dot(plan: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """``<plan, C>`` per problem, ``()`` or ``(B,)``, without an ``(n, m)`` temporary (a fresh
    large allocation costs more than the product: page faults)."""
    if C.dim() == 2:
        return torch.dot(plan.reshape(-1), C.reshape(-1))
    B = C.shape[0]
    return torch.bmm(plan.reshape(B, 1, -1), C.reshape(B, -1, 1)).reshape(B)


class _Envelope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, C, a, b, plan, f, g):  # noqa: D401 - autograd signature
        ctx.save_for_backward(plan, f, g)
        ctx.has_pot = f is not None
        return plan_dot(plan, C)

    @staticmethod
    def backward(ctx, grad):
        plan, f, g = ctx.saved_tensors
        g_out = grad[..., None, None] * plan
        ga = gb = None
        if ctx.needs_input_grad[1] and f is not None:
            ga = grad[..., None] * (f - f.mean(dim=-1, keepdim=True))
        if ctx.needs_input_grad[2] and g is not None:
            gb = grad[..., None] * (g - g.mean(dim=-1, keepdim=True))
        return g_out, ga, gb, None, None, None


def attach(
    C: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    plan: torch.Tensor,
    potentials: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    """Return ``<plan, C>`` whose gradient is ``plan`` w.r.t. ``C`` and the centred potentials
    w.r.t. ``a``, ``b`` (zero when the method has no potentials: the plan is then treated as
    fixed)."""
    assert plan.shape == C.shape, (plan.shape, C.shape)
    if plan.requires_grad or plan.dtype != C.dtype:
        plan = plan.detach().to(C.dtype)
    if not _needs_grad(C, a, b):
        return plan_dot(plan, C)  # no graph to attach to: skip the Function
    if potentials is None:
        f = g = None
    else:
        f, g = (p.detach().to(C.dtype) for p in potentials)
    return _Envelope.apply(C, a, b, plan, f, g)


class _Entropic(torch.autograd.Function):
    @staticmethod
    def forward(ctx, C, a, b, plan, f, g, reg, relative):  # noqa: D401 - autograd signature
        ctx.save_for_backward(C, a, b, plan, f, g)
        ctx.reg, ctx.relative = reg, relative
        return (plan * C).sum(dim=(-2, -1))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        C, a, b, plan, f, g = ctx.saved_tensors
        single = C.dim() == 2
        D = torch.float64  # the linear solve is ill-conditioned at small eps: solve in float64
        C3, a3, b3, P, f3, g3 = (
            t.to(D)[None] if single else t.to(D) for t in (C, a, b, plan, f, g)
        )
        gC, ga, gb, sens, deps = _entropic_grads(C3, a3, b3, P, f3, g3, ctx.reg, ctx.relative)
        w = grad.to(D).reshape(-1)
        gC, ga, gb = w[:, None, None] * gC, w[:, None] * ga, w[:, None] * gb
        if deps is not None:  # one eps for the whole batch: every problem moves it
            gC = gC + (w * sens).sum() * deps
        if single:
            gC, ga, gb = gC[0], ga[0], gb[0]
        return (
            gC.to(C.dtype),
            ga.to(a.dtype) if ctx.needs_input_grad[1] else None,
            gb.to(b.dtype) if ctx.needs_input_grad[2] else None,
            None,
            None,
            None,
            None,
            None,
        )


def _range_eps(C: torch.Tensor, reg: float, relative: bool):
    """``eps`` as the scaling solvers set it: ``reg * max_b (max C_b - min C_b)`` (1 for a
    constant cost), or ``reg``; and its derivative w.r.t. ``C`` (None where constant)."""
    if not relative:
        return reg, None
    rng = C.amax(dim=(-2, -1)) - C.amin(dim=(-2, -1))
    k = int(rng.argmax())
    if float(rng[k]) <= 0:
        return reg, None
    d = torch.zeros_like(C)
    d[k].view(-1)[int(C[k].argmax())] += reg
    d[k].view(-1)[int(C[k].argmin())] -= reg
    return reg * float(rng[k]), d


def _schur_solve(P, al, be, r, c):
    """Solve ``[[diag(al), P], [P^T, diag(be)]] [wf; wg] = [r; c]`` (B batched), singular along
    ``(1, -1)``: eliminate ``wf``, then the ``m x m`` Schur complement with its null vector fixed.
    Zero-mass rows and columns get ``w = 0``."""
    m = P.shape[-1]
    ia = torch.where(al > 0, 1 / al.clamp_min(torch.finfo(al.dtype).tiny), 0)
    PtA = P.transpose(-1, -2) * ia[:, None, :]
    S = torch.diag_embed(be) - PtA @ P
    rhs = c - (PtA @ r[:, :, None])[:, :, 0]
    live = (be > 0).to(S.dtype)
    S = (
        S
        + torch.diag_embed(1 - live)
        + live[:, :, None] * live[:, None, :] * (be.sum(-1) / m)[:, None, None]
    )
    wg = torch.linalg.solve(S, rhs)
    wf = ia * (r - (P @ wg[:, :, None])[:, :, 0])
    return wf, wg


def _entropic_grads(C, a, b, P, f, g, reg, relative):
    """Derivatives of ``<P, C>`` w.r.t. ``C``, ``a``, ``b`` for ``P = a_i b_j exp((f_i + g_j -
    C_ij)/eps)`` on ``Pi(a, b)`` (all ``(B, ...)`` float64), and ``d<P_b, C_b>/deps`` (B,) with
    ``deps/dC`` where eps follows the range."""
    eps, deps = _range_eps(C, reg, relative)
    al, be = P.sum(-1), P.sum(-2)
    PC = P * C
    r, c = PC.sum(-1), PC.sum(-2)
    if P.shape[-2] >= P.shape[-1]:
        wf, wg = _schur_solve(P, al, be, r, c)
    else:
        wg, wf = _schur_solve(P.transpose(-1, -2), be, al, c, r)
    # exponent part: d<P, C> through P when the exponent (f + g - C)/eps moves
    G = P * (wf[:, :, None] + wg[:, None, :] - C) / eps
    # eps enters the exponent as C does, scaled by S = (f + g - C)/eps: d<P, C>/deps = <G, S>
    sens = None
    if deps is not None:
        sens = (G * torch.where(P > 0, (f[:, :, None] + g[:, None, :] - C) / eps, 0)).sum((-2, -1))
    ga = _mass_grad(P, C, wg, b, g, eps, al)
    gb = _mass_grad(P.transpose(-1, -2), C.transpose(-1, -2), wf, a, f, eps, be)
    return P + G, ga - ga.mean(-1, keepdim=True), gb - gb.mean(-1, keepdim=True), sens, deps


def _mass_grad(P, C, w_other, other, pot_other, eps, mass):
    """``d<P, C>/da_i = sum_j Q_ij (C_ij - w_j)``, ``Q`` the row-normalised plan; a row of zero
    mass gets the row it would have (the soft-min of ``g_j - C_ij`` weighted by ``b``)."""
    tiny = torch.finfo(P.dtype).tiny
    Q = P / mass.clamp_min(tiny)[:, :, None]
    if bool((mass <= 0).any()):
        logits = torch.where(
            other[:, None, :] > 0,
            torch.log(other.clamp_min(tiny))[:, None, :] + (pot_other[:, None, :] - C) / eps,
            -math.inf,
        )
        Q = torch.where((mass > 0)[:, :, None], Q, torch.softmax(logits, dim=-1))
    return (Q * (C - w_other[:, None, :])).sum(-1)


def attach_entropic(
    C: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    plan: torch.Tensor,
    potentials: tuple[torch.Tensor, torch.Tensor],
    reg: float,
    relative: bool,
) -> torch.Tensor:
    """Return ``<plan, C>`` of an entropic plan at ``eps = reg * range(C)`` (``relative``) or
    ``eps = reg``, with its exact derivative (implicit differentiation of the fixed point)."""
    plan = plan.detach().to(C.dtype)
    if not _needs_grad(C, a, b):
        return plan_dot(plan, C)
    f, g = (p.detach().to(C.dtype) for p in potentials)
    return _Entropic.apply(C, a, b, plan, f, g, float(reg), bool(relative))


class _Replay(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fn, value, C, a, b):  # noqa: D401 - autograd signature
        ctx.fn = fn
        ctx.save_for_backward(C, a, b)
        return value.detach().to(C.dtype).clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        C, a, b = ctx.saved_tensors
        need = ctx.needs_input_grad[2:]
        work = torch.float32 if C.dtype in (torch.float16, torch.bfloat16) else C.dtype
        with torch.enable_grad():  # half precision replayed in float32, as it was solved
            ins = [
                t.detach().to(work).requires_grad_(n) for t, n in zip((C, a, b), need, strict=True)
            ]
            out = ctx.fn(*ins)
            wrt = [t for t, n in zip(ins, need, strict=True) if n]
            grads = iter(torch.autograd.grad(out, wrt, grad, allow_unused=True))
        res = []
        for n, centre in zip(need, (False, True, True), strict=True):
            gr = next(grads) if n else None
            if gr is not None and centre:  # mass-preserving directions only, as attach
                gr = gr - gr.mean(-1, keepdim=True)
            res.append(None if gr is None else gr.to(C.dtype))
        return (None, None, *res)


def attach_replay(
    fn, value: torch.Tensor, C: torch.Tensor, a: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """Return ``value`` (computed without a graph) whose gradient is that of ``fn(C, a, b)``,
    the same computation replayed under autograd in the backward pass."""
    if not _needs_grad(C, a, b):
        return value.detach().to(C.dtype)
    return _Replay.apply(fn, value, C, a, b)


def _needs_grad(C: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (C.requires_grad or a.requires_grad or b.requires_grad)
