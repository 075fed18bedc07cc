"""The one result type every solver returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

__all__ = ["OTResult"]


@dataclass(frozen=True)
class OTResult:
    """Outcome of one optimal-transport solve.

    Attributes
    ----------
    value : torch.Tensor
        ``<P, C>``, a scalar (or a ``(B,)`` vector for batched problems). Differentiable w.r.t. the
        cost (and so the points) and the marginals: the derivative of this value (envelope
        theorem for exact and certified results; see ``solve(grad=...)``). A regularisation
        term, where the solver has one, is *not* included: it is kept in ``extras["reg_value"]``.
    plan : torch.Tensor or None
        ``(n, m)`` or ``(B, n, m)`` transport plan, detached; ``None`` for plan-free solvers.
    potentials : tuple of torch.Tensor or None
        Dual potentials ``(f, g)`` of shapes ``(n,)``, ``(m,)`` (batched: ``(B, n)``, ``(B, m)``),
        detached; ``None`` where the method has none.
    n_iter : int
        Iterations run (0 for closed-form and direct methods).
    converged : bool
        Whether the method's stopping criterion was met. Never hidden: a solve that stops at
        ``max_iter`` says ``False``.
    marginal_error : float
        ``max(|P 1 - a|_1, |P^T 1 - b|_1)`` (max over the batch); ``nan`` for plan-free solvers.
    method : str
        Registry name of the method.
    params : Mapping[str, Any]
        The resolved parameters the method ran with (defaults filled in).
    extras : Mapping[str, Any]
        Method-specific diagnostics (e.g. ``reg_value``, ``eps``, ``gap``, ``support_size``,
        ``reason`` when not converged). Tensors have the batch shape of ``value`` in front;
        lists (batched problems solved one by one) have one entry per problem.
    """

    value: torch.Tensor
    plan: torch.Tensor | None
    potentials: tuple[torch.Tensor, torch.Tensor] | None
    n_iter: int
    converged: bool
    marginal_error: float
    method: str
    params: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # short: tensors can be huge
        shape = None if self.plan is None else tuple(self.plan.shape)
        return (
            f"OTResult(method={self.method!r}, value={self.value.detach().cpu().numpy()!r}, "
            f"plan={shape}, n_iter={self.n_iter}, converged={self.converged}, "
            f"marginal_error={self.marginal_error:.3g})"
        )
