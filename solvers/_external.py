"""Point-cloud methods backed by GeomLoss and KeOps (optional dependencies, imported lazily)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._costs import cost_matrix
from ._envelope import attach
from ._quiet import quiet_keops
from ._registry import register


class _Setup(NamedTuple):
    x: torch.Tensor  # the points of our cost (unit vectors for cosine)
    y: torch.Tensor
    p: int  # GeomLoss's exponent: p=1 is |x-y|, p=2 is |x-y|^2 / 2
    blur: float  # GeomLoss's eps = blur^p, on the points divided by ``scale``
    unit: float  # GeomLoss's cost on the scaled points x unit = our cost
    eps: float  # our eps
    scale: float  # the points are fed to GeomLoss divided by this (their diameter)


def _geomloss_setup(x, y, cost: str, reg: float, scaling: float) -> _Setup:
    """Map our costs onto GeomLoss's ``p`` and feed it clouds of diameter 1.

    ``reg`` is relative to the largest cost, estimated from the bounding box (GeomLoss's own
    ``max_diameter``). GeomLoss clamps its euclidean distance at 1e-4 and takes
    ``log(diameter)``: clouds of diameter 1e-5 lost their geometry, coincident points
    (diameter 0) failed inside it, so the points are divided by their diameter first.
    """
    if not reg > 0:
        raise ValueError(f"reg must be positive; got {reg}")
    if not 0 < scaling < 1:
        raise ValueError(f"scaling must lie in (0, 1); got {scaling}")
    if cost == "cosine":  # 1 - <x^, y^> = |x^ - y^|^2 / 2 for unit vectors
        x = x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).eps)
        y = y / y.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(y.dtype).eps)
    pts = torch.cat([x.detach().reshape(-1, x.shape[-1]), y.detach().reshape(-1, y.shape[-1])])
    diam = float((pts.amax(0) - pts.amin(0)).norm())
    if cost == "cosine":
        p, factor, cmax, scale = 2, 1.0, 2.0, 1.0
    else:
        scale = diam if diam > 0 else 1.0
        p, factor, cmax = (1, 1.0, diam) if cost == "euclidean" else (2, 2.0, diam**2)
    eps = reg * max(cmax, 1e-12)
    unit = factor * scale**p
    return _Setup(x, y, p, (eps / unit) ** (1.0 / p), unit, eps, scale)


def _geomloss_potentials(st: _Setup, a, b, scaling, backend):
    """GeomLoss's potentials, in units of our cost."""
    quiet_keops()
    from geomloss import SamplesLoss

    xs, ys = st.x.detach() / st.scale, st.y.detach() / st.scale
    pts = torch.cat([xs.reshape(-1, xs.shape[-1]), ys.reshape(-1, ys.shape[-1])])
    diameter = max(float((pts.amax(0) - pts.amin(0)).norm()), st.blur)  # > 0: log(diameter)
    loss = SamplesLoss(
        "sinkhorn",
        p=st.p,
        blur=st.blur,
        scaling=scaling,
        debias=False,
        potentials=True,
        backend=backend,
        diameter=diameter,
    )
    with torch.no_grad():
        F, G = loss(a, xs, b, ys)
    return F.reshape(a.shape) * st.unit, G.reshape(b.shape) * st.unit


@register(
    "geomloss",
    input="points",
    converges_to_exact=False,
    value_rtol=None,
    returns_plan=True,
    potentials=True,
    feasible_plan=False,
    batched=True,
    requires=("geomloss",),
    params={"reg": 1e-3, "scaling": 0.7},
    description="GeomLoss SamplesLoss('sinkhorn', tensorized): eps-annealing on points",
)
def geomloss_solve(x, y, a, b, *, cost: str, reg: float, scaling: float) -> dict:
    """Entropic OT between point clouds with GeomLoss's tensorized backend (Feydy et al. 2019).

    Parameters
    ----------
    reg : float
        eps relative to the largest cost (estimated from the bounding box).
    scaling : float
        GeomLoss's eps-annealing ratio: closer to 1 is more accurate and slower.

    Notes
    -----
    GeomLoss runs one symmetric Sinkhorn step per eps and extrapolates; its marginals are
    therefore loose, and the registry claims no tolerance to exact OT: measured here, 0.01-15%
    relative error depending on ``reg`` and the cloud size (``otransfer solvers bench`` reports
    it per problem). Use ``sinkhorn`` when the value must be accurate. We rebuild
    ``P = a b^T exp((F + G - C)/eps)`` from its potentials and report ``<P, C>`` with the
    envelope gradient, as every other method.
    """
    st = _geomloss_setup(x, y, cost, reg, scaling)
    F, G = _geomloss_potentials(st, a, b, scaling, "tensorized")
    eps = st.eps
    C = cost_matrix(x, y, cost)
    with torch.no_grad():
        # the plan of GeomLoss's potentials on the cost GeomLoss used: its euclidean distance
        # is sqrt(max(d^2, 1e-8)), 1e-4 where ours is 0 (coincident points; at eps ~ 1e-15
        # that made exp overflow to inf), and a zero vector's cosine differs
        d2 = cost_matrix(st.x.detach() / st.scale, st.y.detach() / st.scale, "sqeuclidean")
        c_geo = st.unit * (d2.clamp_min(1e-8).sqrt() if st.p == 1 else d2 / 2)
        plan = (
            a[..., :, None]
            * b[..., None, :]
            * torch.exp((F[..., :, None] + G[..., None, :] - c_geo) / eps)
        )
    value = attach(C, a, b, plan, (F, G))
    return {
        "value": value,
        "plan": plan,
        "potentials": (F, G),
        "n_iter": 0,
        "converged": True,
        "extras": {"eps": eps, "backend": "tensorized"},
    }


@register(
    "keops",
    input="points",
    converges_to_exact=False,
    value_rtol=None,
    returns_plan=False,
    potentials=True,
    feasible_plan=False,
    requires=("pykeops", "geomloss"),
    params={"reg": 1e-3, "scaling": 0.7},
    description="KeOps online kernels (GeomLoss backend='online'): O(n+m) memory, GPU if present",
)
def keops_solve(x, y, a, b, *, cost: str, reg: float, scaling: float) -> dict:
    """Entropic OT between large point clouds without materialising the cost matrix.

    Potentials from GeomLoss's ``online`` backend (KeOps log-sum-exp reductions, compiled on
    first use and cached); the value ``<P, C>`` is a KeOps sum reduction whose gradient w.r.t.
    the points treats ``P`` as fixed (envelope theorem), like the dense methods.

    Parameters
    ----------
    reg, scaling : float
        As for ``geomloss``.
    """
    quiet_keops()
    from pykeops.torch import LazyTensor

    if x.dim() != 2:
        raise ValueError("method 'keops' takes unbatched point clouds (n, k) and (m, k)")
    st = _geomloss_setup(x, y, cost, reg, scaling)
    F, G = _geomloss_potentials(st, a, b, scaling, "online")
    xs, ys, eps = st.x, st.y, st.eps
    x_i, y_j = LazyTensor(xs[:, None, :].contiguous()), LazyTensor(ys[None, :, :].contiguous())
    xd, yd = xs.detach(), ys.detach()
    xd_i, yd_j = LazyTensor(xd[:, None, :].contiguous()), LazyTensor(yd[None, :, :].contiguous())

    def lazy_cost(xi, yj, ours: bool):
        if cost == "cosine" and ours:  # 1 - <x^, y^>: a zero vector is at distance 1, as
            return -(xi * yj).sum(-1) + 1  # cost_matrix says (GeomLoss's |x^ - y^|^2/2 gives 0)
        d2 = ((xi - yj) ** 2).sum(-1)
        if cost == "euclidean":
            return d2.sqrt()
        if cost == "cosine":
            return d2 / 2
        return d2

    logw = LazyTensor((torch.log(a) + F / eps)[:, None, None].contiguous()) + LazyTensor(
        (torch.log(b) + G / eps)[None, :, None].contiguous()
    )
    # fixed plan: built from the detached points, on the cost GeomLoss's potentials are for
    P_ij = (logw - lazy_cost(xd_i, yd_j, ours=False) / eps).exp()
    value = (P_ij * lazy_cost(x_i, y_j, ours=True)).sum(dim=1).sum()
    mass = (P_ij.sum(dim=1)).reshape(-1)
    err = float((mass - a).abs().sum())
    return {
        "value": value,
        "plan": None,
        "potentials": (F, G),
        "n_iter": 0,
        "converged": bool(math.isfinite(err)),
        "marginal_error": err,
        "extras": {"eps": eps, "backend": "keops-online"},
    }
