"""OT between two representations of the same mini-batch (docs/architecture.md, the
representation contract).

Two views of an ``(n, d)`` activation matrix (n examples, d neurons):

* ``"neurons"`` (li2020, Omega_P): the d neurons are the points, each in R^n (its activations
  over the batch); the student has d neurons, the teacher d', and d != d' is allowed.
* ``"samples"`` (lohit2020): the n examples are the points, each in R^d; needs d == d'.

>>> import torch
>>> A = torch.randn(32, 8, requires_grad=True)
>>> omega = representation_ot(A, A.detach()[:, torch.randperm(8)], plan="assignment")
>>> float(omega) < 1e-2
True
"""

from __future__ import annotations

from typing import Any

import torch

from harness.transfer.taps import pool_features
from solvers import OTResult, get_method, solve_sample

__all__ = ["VIEWS", "representation_ot", "solve_representation", "matched_fraction"]

#: The two views and the ground cost each paper uses with it.
VIEWS: dict[str, str] = {
    "neurons": "euclidean",  # li2020 Eq. (3): M_ij = ||A_i - T_j||_2
    "samples": "cosine",  # lohit2020 Eq. (3): C_ij = 1 - cos(x_i, y_j)
}


def _points(
    student: torch.Tensor, teacher: torch.Tensor, view: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two point clouds of ``view``: rows are the points to transport."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose one of {sorted(VIEWS)}")
    if not isinstance(student, torch.Tensor) or not isinstance(teacher, torch.Tensor):
        raise TypeError("student and teacher activations must be tensors")
    student, teacher = pool_features(student), pool_features(teacher)
    teacher = teacher.to(student.dtype)
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"student and teacher activations must cover the same examples; got batch sizes "
            f"{student.shape[0]} and {teacher.shape[0]}"
        )
    if view == "neurons":
        # li2020 §2.2: A in R^{d x n}, a neuron is a column of the (n, d) activation matrix
        return student.T, teacher.T
    if student.shape[1] != teacher.shape[1]:
        raise ValueError(
            f"view='samples' compares examples as points in R^d and needs equal widths; got "
            f"student d={student.shape[1]}, teacher d'={teacher.shape[1]}. Map them to a common "
            f"width with an embedding layer (lohit2020 appendix C; the `embed` option of the "
            f"ot_samples_* regularizers), or use view='neurons'"
        )
    return student, teacher


def transport(
    student: torch.Tensor,
    teacher: torch.Tensor,
    view: str,
    cost: str | None,
    plan: str,
    solver_params: dict[str, Any],
) -> OTResult:
    """:func:`solve_representation` without detaching the teacher (for embedded teachers)."""
    x, y = _points(student, teacher, view)
    if get_method(plan).square_only and x.shape[0] != y.shape[0]:
        what = "neurons (d != d')" if view == "neurons" else "examples"
        raise ValueError(
            f"plan {plan!r} needs as many student as teacher {what}; got "
            f"{x.shape[0]} and {y.shape[0]} (li2020 Omega_I is defined for d == d' "
            f"only)"
        )
    return solve_sample(x, y, cost=cost or VIEWS[view], method=plan, **solver_params)


def solve_representation(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    view: str = "neurons",
    cost: str | None = None,
    plan: str = "ipot",
    **solver_params: Any,
) -> OTResult:
    """Solve OT between a student's and a teacher's representation of one batch.

    Parameters
    ----------
    student : torch.Tensor
        ``(n, d)`` activations of the trainable network on a batch of n examples, or conv maps
        ``(n, d, h, w)`` (globally average-pooled to ``(n, d)``).
    teacher : torch.Tensor
        ``(n, d')`` (or ``(n, d', h, w)``) activations of the reference network on the same
        examples. Detached: gradients flow to the student only.
    view : {"neurons", "samples"}
        ``"neurons"``: transport the d student neurons onto the d' teacher neurons, each a
        point in R^n, with uniform masses ``1/d``, ``1/d'`` (li2020). ``"samples"``: transport
        the n examples, each a point in R^d (lohit2020); needs ``d == d'``.
    cost : {"euclidean", "sqeuclidean", "cosine"}, optional
        Ground cost; default: the view's paper, ``"euclidean"`` for neurons (li2020 Eq. 3),
        ``"cosine"`` for samples (lohit2020 Eq. 3).
    plan : str
        Any solver method (:func:`solvers.available`): ``"ipot"`` gives Omega_P (li2020 Eq. 4),
        ``"identity"`` Omega_I (Eq. 5, needs ``d == d'``), ``"uniform"`` Omega_U (Eq. 6),
        ``"remd"`` REMD (lohit2020 Eq. 8), ``"emd"``/``"assignment"`` exact OT.
    **solver_params
        Parameters of ``plan`` (``beta``, ``max_iter``, ``gap``, ``reg`` ...; relative to the
        cost's range where the solver says so). Unknown ones raise.

    Returns
    -------
    OTResult
        ``value`` is the OT cost, differentiable w.r.t. ``student`` by the envelope theorem
        (first order, at convergence: check ``converged``); ``plan`` is ``(d, d')`` for neurons,
        ``(n, n)`` for samples, rows indexing the student. See :func:`matched_fraction`.

    Notes
    -----
    Neurons: ``Omega = min_{P in Pi(1/d, 1/d')} <P, M>``, ``M_ij = ||A_i - T_j||_2`` with
    ``A_i``, ``T_j`` the activations of neuron i (student), j (teacher) over the batch
    (li2020 Eq. 3-4). The value grows as ``sqrt(n)`` with the batch size (the norm is not
    averaged over examples, as in the paper).
    Samples: ``L_OT = min_{T in Pi(1/n, 1/n)} <T, C>``, ``C_ij = 1 - cos(y_i, x_j)``
    (lohit2020 Eq. 2-3).

    References
    ----------
    li2020: Li, Grandvalet, Flamary, Courty, Dou. Representation Transfer by Optimal Transport.
    lohit2020: Lohit & Jones. Model Compression Using Optimal Transport.
    """
    return transport(student, teacher.detach(), view, cost, plan, solver_params)


def representation_ot(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    view: str = "neurons",
    cost: str | None = None,
    plan: str = "ipot",
    **solver_params: Any,
) -> torch.Tensor:
    """Return the OT cost between two representations (``solve_representation(...).value``).

    Parameters and gradient contract as :func:`solve_representation`; use that function when
    the iterations, convergence or plan are to be logged.

    Returns
    -------
    torch.Tensor
        Scalar OT cost; gradients flow to ``student`` only.
    """
    return solve_representation(
        student, teacher, view=view, cost=cost, plan=plan, **solver_params
    ).value


def matched_fraction(res: OTResult) -> float | None:
    """Return the share of the mass a square plan keeps on its diagonal, ``tr(P) / sum(P)``.

    For the neurons view with ``d == d'`` (uniform masses ``1/d``, total mass 1) this is
    ``tr(P)``: the fraction of student neurons matched to the teacher neuron of the same index,
    1 for the identity plan (li2020 §5, Fig. 2-3, "ratio of fine-tuned neurons that match their
    initial activation"). Batched plans give the mean over the batch.

    Returns
    -------
    float or None
        ``None`` when the plan is missing (plan-free solvers) or not square.
    """
    P = res.plan
    if P is None or P.shape[-1] != P.shape[-2]:
        return None
    # `float` syncs with the GPU; call it at logging time only
    return float((torch.diagonal(P, dim1=-2, dim2=-1).sum(-1) / P.sum((-2, -1))).mean())


#: the checks and point clouds of one view (harness.training.batched checks one member with it)
view_points = _points
