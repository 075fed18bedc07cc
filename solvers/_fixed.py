"""Closed-form plans: the fixed plans of li2020 (Omega_I, Omega_U) and REMD (lohit2020)."""

from __future__ import annotations

import torch

from ._registry import register


@register(
    "identity",
    square_only=True,
    uniform_only=True,
    batched=True,
    params={},
    description="fixed identity plan diag(a) (li2020 Omega_I, Eq. 5); n == m",
)
def identity(C, a, b) -> dict:
    """The identity plan ``diag(a)``: neuron i of the student is matched to neuron i of the
    teacher (li2020 Eq. 5, ``Omega_I = <I_d / d, M>``)."""
    return {"plan": torch.diag_embed(a), "converged": True}


@register(
    "uniform",
    batched=True,
    params={},
    description="fixed uniform plan a b^T (li2020 Omega_U, Eq. 6); any marginals",
)
def uniform(C, a, b) -> dict:
    """The independent coupling ``a b^T / sum(a)`` (li2020 Eq. 6, ``Omega_U = <1/(d d'), M>``:
    the mean of all pairwise distances)."""
    return {
        "plan": a[..., :, None] * b[..., None, :] / a.sum(-1)[..., None, None],
        "converged": True,
    }


@register(
    "remd",
    feasible_plan=False,
    batched=True,
    params={},
    description="relaxed EMD: max of the two one-sided relaxations (lohit2020 Eq. 7-8)",
)
def remd(C, a, b) -> dict:
    """Relaxed Earth Mover's Distance (Kusner et al. 2015; lohit2020 Eq. 5-8).

    Notes
    -----
    Dropping the row constraints, each column ``j`` ships its mass ``b_j`` to its cheapest row:
    ``R1 = sum_j b_j min_i C_ij`` (Eq. 5); dropping the column constraints,
    ``R2 = sum_i a_i min_j C_ij`` (Eq. 6). REMD ``= max(R1, R2)`` (Eq. 7; Eq. 8 with uniform
    ``1/b`` weights), a lower bound on OT. The returned plan is the one-sided plan of the active
    relaxation, so ``<plan, C>`` is the value and its gradient (Danskin again) is that plan;
    it satisfies one marginal only, which ``marginal_error`` reports.
    """
    i_min = C.argmin(dim=-2)  # (..., m): cheapest row for each column
    j_min = C.argmin(dim=-1)  # (..., n): cheapest column for each row
    plan1 = torch.zeros_like(C).scatter_(-2, i_min[..., None, :], b[..., None, :])
    plan2 = torch.zeros_like(C).scatter_(-1, j_min[..., :, None], a[..., :, None])
    r1 = (plan1 * C).sum((-2, -1))
    r2 = (plan2 * C).sum((-2, -1))
    use1 = (r1 >= r2)[..., None, None]
    return {
        "plan": torch.where(use1, plan1, plan2),
        "converged": True,
        "extras": {"r1": r1, "r2": r2},
    }
