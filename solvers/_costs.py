"""Ground costs between point clouds, differentiable everywhere they are used."""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["COSTS", "cost_matrix"]


class _SafeSqrt(torch.autograd.Function):
    """``sqrt`` whose gradient at 0 is 0 instead of inf.

    li2020 §3.1: "standard computation tricks are required for the numerical stability of
    gradients through M_ij at M_ij = 0". At coinciding points the Euclidean distance is not
    differentiable; 0 is a valid subgradient and keeps NaN out of training.
    """

    @staticmethod
    def forward(ctx, s):
        r = s.clamp_min(0).sqrt()
        ctx.save_for_backward(r)
        return r

    @staticmethod
    def backward(ctx, grad):
        (r,) = ctx.saved_tensors
        return torch.where(r > 0, grad / (2 * r).clamp_min(torch.finfo(r.dtype).tiny), 0.0)


def _sqeuclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # ||x||^2 + ||y||^2 - 2 x.y as one GEMM; clamp the round-off below 0.
    xx = (x * x).sum(-1)[..., :, None]
    yy = (y * y).sum(-1)[..., None, :]
    return (xx + yy - 2 * x @ y.transpose(-1, -2)).clamp_min(0)


def _euclidean(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # li2020 Eq. (3): M_ij = ||A_i - T_j||_2.
    return _SafeSqrt.apply(_sqeuclidean(x, y))


def _cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # lohit2020 Eq. (3): C_ij = 1 - x_i.y_j / (||x_i|| ||y_j||); a zero vector has distance 1.
    eps = torch.finfo(x.dtype).eps
    xn = x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
    yn = y / y.norm(dim=-1, keepdim=True).clamp_min(eps)
    return 1 - xn @ yn.transpose(-1, -2)


COSTS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "euclidean": _euclidean,
    "sqeuclidean": _sqeuclidean,
    "cosine": _cosine,
}


def cost_matrix(x: torch.Tensor, y: torch.Tensor, cost: str = "euclidean") -> torch.Tensor:
    """Return the ``(n, m)`` (or ``(B, n, m)``) cost between points ``x`` (n, k) and ``y`` (m, k).

    Parameters
    ----------
    x, y : torch.Tensor
        Point clouds of shapes ``(..., n, k)`` and ``(..., m, k)``.
    cost : {"euclidean", "sqeuclidean", "cosine"}
        ``euclidean`` has gradient 0 (not NaN) where two points coincide.
    """
    try:
        fn = COSTS[cost]
    except KeyError:
        raise ValueError(f"unknown cost {cost!r}; choose one of {sorted(COSTS)}") from None
    return fn(x, y)
