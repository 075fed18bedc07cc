"""POT's log-domain Sinkhorn as shipped (``ot.bregman.sinkhorn_log``): the solver benchmark's
baseline, with ``reg`` relative to the cost's range as for ``sinkhorn``."""

from __future__ import annotations

import functools
import math

import torch

from ._quiet import quiet_keops
from ._registry import register
from ._scaling import cost_scale, entropic_value

__all__ = ["pot_sinkhorn"]


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
    quiet_keops()
    import ot

    if reg <= 0:
        raise ValueError(f"reg must be positive; got {reg}")
    eps = reg * cost_scale(C)
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
        "value_fn": functools.partial(entropic_value, reg=reg, relative=True),
    }
