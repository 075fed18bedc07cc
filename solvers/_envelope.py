"""The one place where gradients are attached to an OT value (style.md §5).

Envelope (Danskin) theorem: for ``OT(C, a, b) = min_{P in Pi(a, b)} <P, C>``
``= max_{f + g <= C} <a, f> + <b, g>``, at an optimum ``dOT/dC = P*``, ``dOT/da = f*`` and
``dOT/db = g*`` (li2020 §3.1, "we instead apply the envelope theorem"). Potentials are defined up
to ``f + c, g - c``; on the balanced problem only mass-preserving perturbations of ``(a, b)`` are
admissible, so we return the *centred* potentials ``f - mean(f)``, ``g - mean(g)``, the
projection of the gradient on ``{sum(da) = 0}``. The gradient holds at convergence and to first
order only; iterative solvers run under ``torch.no_grad()`` and never backpropagate through
their iterations.
"""
from __future__ import annotations

import torch

__all__ = ["attach"]


class _Envelope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, C, a, b, plan, f, g):  # noqa: D401 - autograd signature
        ctx.save_for_backward(plan, f, g)
        ctx.has_pot = f is not None
        return (plan * C).sum(dim=(-2, -1))

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


def attach(C: torch.Tensor, a: torch.Tensor, b: torch.Tensor, plan: torch.Tensor,
           potentials: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """Return ``<plan, C>`` whose gradient is ``plan`` w.r.t. ``C`` and the centred potentials
    w.r.t. ``a``, ``b`` (zero when the method has no potentials: the plan is then treated as
    fixed)."""
    assert plan.shape == C.shape, (plan.shape, C.shape)
    plan = plan.detach().to(C.dtype)
    if potentials is None:
        f = g = None
    else:
        f, g = (p.detach().to(C.dtype) for p in potentials)
    return _Envelope.apply(C, a, b, plan, f, g)
