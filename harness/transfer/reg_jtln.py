"""lu2017's joint transfer learning network (JTLN): the OT loss between the source and target
heads' predictions and the label costs it transports over (MK-MMD or OT between classes)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F

from harness.transfer.reg_core import RegContext, register_regularizer
from harness.transfer.taps import pool_features
from solvers import OTResult, get_method, solve, solve_sample

__all__ = [
    "JTLN_ENTROPIES",
    "jtln_loss",
    "label_cost_mkmmd",
    "label_cost_ot",
    "LABEL_OT_SOLVER",
    "LABEL_COSTS",
    "label_cost_spec",
]


# --------------------------------------------------------------------------- lu2017: JTLN


JTLN_ENTROPIES = ("absolute", "relative")


def _jtln_solve(
    source_logits: torch.Tensor,
    target_logits: torch.Tensor,
    label_cost: torch.Tensor,
    solver: dict[str, Any],
    entropy: str = "absolute",
) -> tuple[torch.Tensor, OTResult]:
    """Per-example OT losses ``(n,)`` between the two heads' softmax outputs, with lu2017's
    gradient, and the solver's result (diagnostics)."""
    if entropy not in JTLN_ENTROPIES:
        raise ValueError(f"jtln entropy must be one of {JTLN_ENTROPIES}; got {entropy!r}")
    if (
        source_logits.dim() != 2
        or target_logits.dim() != 2
        or source_logits.shape[0] != target_logits.shape[0]
    ):
        raise ValueError(
            f"source and target logits must be (n, K_src) and (n, K_tgt); got "
            f"{tuple(source_logits.shape)} and {tuple(target_logits.shape)}"
        )
    n, k_src = source_logits.shape
    k_tgt = target_logits.shape[1]
    M = torch.as_tensor(label_cost).to(target_logits)
    if M.shape != (k_src, k_tgt):
        raise ValueError(
            f"label cost must be (K_src, K_tgt) = ({k_src}, {k_tgt}); got {tuple(M.shape)}"
        )
    # lu2017 Eq. (5): mu = h_s(x), nu = h_t(x), softmax outputs of the two heads
    mu = torch.softmax(source_logits.to(M.dtype), dim=-1)
    nu = torch.softmax(target_logits.to(M.dtype), dim=-1)
    C = M.detach().expand(n, k_src, k_tgt).contiguous()
    # one batched (n, K_src, K_tgt) entropic problem on the detached marginals (Alg. 1)
    res = solve(C, mu.detach(), nu.detach(), method="sinkhorn", **solver)
    f, g = (p.detach() for p in res.potentials)
    if entropy == "absolute":
        # lu2017 Eq. (9)-(11): H(gamma) = sum gamma log gamma, gamma = diag(u) K diag(v) with
        # K = exp(-lambda C - 1), and the gradient alpha = log u / lambda - mean(log u) / lambda.
        # Our potentials are those of KL(gamma | mu (x) nu), gamma_ij = mu_i nu_j
        # exp((f_i + g_j - C_ij) / eps), so log u = log mu + f / eps (+ a constant) and
        # alpha = centred(f + eps log mu), beta = centred(g + eps log nu), eps = 1 / lambda.
        eps = float(res.extras["eps"])
        tiny = torch.finfo(mu.dtype).tiny
        f = f + eps * torch.log(mu.detach().clamp_min(tiny))
        g = g + eps * torch.log(nu.detach().clamp_min(tiny))
    alpha = f - f.mean(-1, keepdim=True)
    beta = g - g.mean(-1, keepdim=True)
    # value <gamma, C> (Alg. 1 line 6); d value / d mu = alpha, d value / d nu = beta (Eq. 11),
    # then back through the softmax by autograd
    value = (
        res.value.detach()
        + (alpha * (mu - mu.detach())).sum(-1)
        + (beta * (nu - nu.detach())).sum(-1)
    )
    return value, res


def jtln_loss(
    source_logits: torch.Tensor,
    target_logits: torch.Tensor,
    label_cost: torch.Tensor,
    *,
    reg: float = 0.05,
    entropy: str = "absolute",
    **solver_params: Any,
) -> torch.Tensor:
    """Return lu2017's OT loss between the source and target heads' predictions.

    Parameters
    ----------
    source_logits : torch.Tensor
        ``(n, K_src)`` logits of the source head on the target batch.
    target_logits : torch.Tensor
        ``(n, K_tgt)`` logits of the target head on the same batch.
    label_cost : torch.Tensor
        ``(K_src, K_tgt)`` cost of moving prediction mass from a source label to a target
        label (:func:`label_cost_mkmmd`, :func:`label_cost_ot`).
    reg : float
        Entropic regularisation ``1/lambda``, *relative to the range of the label cost*
        (``lambda = 1 / (reg * (max M - min M))``), or absolute with ``relative=False``
        (``lambda = 1 / reg``). lu2017 gives no lambda. Smaller is closer to exact OT and
        slower.
    entropy : {"absolute", "relative"}
        Which entropy the gradient is that of. ``"absolute"`` (lu2017 Eq. 9,
        ``H = sum gamma log gamma``): the gradient w.r.t. ``h_s(x)``, ``h_t(x)`` is Eq. (11),
        the centred ``log u / lambda``, ``log v / lambda`` of Alg. 1. ``"relative"``:
        ``KL(gamma | h_s (x) h_t)``, whose gradient is the centred dual potentials, i.e.
        Eq. (11) minus ``(1/lambda) (log h_s - mean log h_s)``. The plan and the value are the
        same for both (the two entropies differ by a constant on the transport polytope).
    **solver_params
        Further ``sinkhorn`` parameters (``max_iter``, ``tol``, ``relative``; ``gap``
        defaults to 0: fixed lambda, plain entropic OT, as in the paper).

    Returns
    -------
    torch.Tensor
        Scalar: the mean over the batch of ``<gamma_i, M>`` (lu2017 Eq. 3, Alg. 1 line 6).

    Notes
    -----
    ``l_ot(h_s(x), h_t(x)) = <gamma, M>`` with ``gamma`` the entropic plan between the two
    softmax outputs (lu2017 Eq. 7, 9, Alg. 1); the gradient is the dual one (Eq. 10-11), never
    back-propagated through the iterations.
    """
    solver = {"reg": reg, "gap": 0.0, **solver_params}
    return _jtln_solve(source_logits, target_logits, label_cost, solver, entropy)[0].mean()


@register_regularizer(
    "jtln",
    needs_source_head=True,
    plan="sinkhorn",
    params={"alpha": 1.0, "label_cost": None, "entropy": "absolute"},
    solver_params={"reg": 0.05, "gap": 0.0},
    paper="lu2017 Eq. 3-11",
    description="lu2017 JTLN: OT loss between the source and target heads' softmax outputs",
)
def _jtln(
    ctx: RegContext, *, alpha: float, label_cost, entropy: str, plan: str, solver: dict[str, Any]
) -> torch.Tensor:
    """``alpha * mean_i l_ot(h_s(x_i), h_t(x_i))`` (lu2017 Eq. 4, weight lambda_ot)."""
    if entropy not in JTLN_ENTROPIES:
        raise ValueError(f"jtln entropy must be one of {JTLN_ENTROPIES}; got {entropy!r}")
    if label_cost is None:
        raise ValueError(
            "jtln needs label_cost=M of shape (K_src, K_tgt); build it with "
            "label_cost_mkmmd(...) or label_cost_ot(...)"
        )
    if ctx.source_logits is None or ctx.logits is None:
        raise ValueError(
            "jtln needs ctx.source_logits (source head on the target batch) and "
            "ctx.logits (target head)"
        )
    value, res = _jtln_solve(ctx.source_logits, ctx.logits, label_cost, solver, entropy)
    ctx.stats["value"] = value.detach().mean()
    ctx.stats["n_iter"] = res.n_iter
    ctx.stats["converged"] = res.converged
    return alpha * value.mean()


# --------------------------------------------------------------------------- label costs


def _class_sets(features: torch.Tensor, labels: torch.Tensor, n_classes: int | None, side: str):
    features = pool_features(torch.as_tensor(features)).detach()
    labels = torch.as_tensor(labels, device=features.device).long()
    if labels.shape != features.shape[:1]:
        raise ValueError(
            f"{side} labels have shape {tuple(labels.shape)}; expected ({features.shape[0]},)"
        )
    k = int(labels.max()) + 1 if n_classes is None else n_classes
    sets = [features[labels == c] for c in range(k)]
    empty = [c for c, s in enumerate(sets) if s.shape[0] == 0]
    if empty:
        raise ValueError(f"{side} classes {empty} have no examples")
    return features, labels, sets


def _median_sqdist(x: torch.Tensor, max_points: int = 1000) -> float:
    if x.shape[0] > max_points:  # the median heuristic needs no more; fixed stride, no RNG
        x = x[torch.linspace(0, x.shape[0] - 1, max_points).long()]
    d = torch.cdist(x, x).pow(2)
    off = d[~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)]
    med = float(off.median()) if off.numel() else 1.0
    return med if med > 0 else 1.0


def label_cost_mkmmd(
    source_features: torch.Tensor,
    source_labels: torch.Tensor,
    target_features: torch.Tensor,
    target_labels: torch.Tensor,
    *,
    bandwidths: Iterable[float] | None = None,
    estimator: str = "quadratic",
    n_source_classes: int | None = None,
    n_target_classes: int | None = None,
) -> torch.Tensor:
    """Return the ``(K_src, K_tgt)`` label cost ``M_ij = MK-MMD^2(class i, class j)``.

    Parameters
    ----------
    source_features, target_features : torch.Tensor
        ``(N_s, k)``, ``(N_t, k)`` features of a fixed extractor (lu2017: AlexNet fc7 before
        training); conv maps are pooled.
    source_labels, target_labels : torch.Tensor
        ``(N_s,)``, ``(N_t,)`` class indices; every class needs 2 examples or more.
    bandwidths : iterable of float, optional
        Gaussian kernel widths ``sigma_u``; default ``sqrt(m * 2^j)``, ``j = -2..2``, around the
        median squared distance ``m`` of the pooled features (one set for every pair, so that
        the costs are comparable).
    estimator : {"quadratic", "linear"}
        ``"quadratic"``: the unbiased U-statistic over all pairs; ``"linear"``: lu2017 Eq. (14),
        the linear-time estimate over consecutive quad-tuples (in the order given), noisier.
    n_source_classes, n_target_classes : int, optional
        Number of classes (default: largest label + 1).

    Returns
    -------
    torch.Tensor
        ``(K_src, K_tgt)``, float64, clamped at 0 (the unbiased estimate can be negative).

    Notes
    -----
    ``d_k^2 = E k(x^s, x^s') + E k(x^t, x^t') - 2 E k(x^s, x^t)`` with the multi-kernel
    ``k = (1/m) sum_u exp(-||x - y||^2 / (2 sigma_u^2))`` (lu2017 Eq. 12-13, equal weights
    ``beta_u``; Gretton et al. 2012).
    """
    if estimator not in ("quadratic", "linear"):
        raise ValueError(f"estimator must be 'quadratic' or 'linear'; got {estimator!r}")
    xs, ys, s_sets = _class_sets(source_features, source_labels, n_source_classes, "source")
    xt, yt, t_sets = _class_sets(target_features, target_labels, n_target_classes, "target")
    xs, xt = xs.double(), xt.to(device=xs.device, dtype=torch.float64)
    for side, sets in (("source", s_sets), ("target", t_sets)):
        small = [c for c, s in enumerate(sets) if s.shape[0] < 2]
        if small:
            raise ValueError(
                f"MMD needs 2 examples per class or more; {side} classes {small} have one"
            )
    if bandwidths is None:
        med = _median_sqdist(torch.cat([xs, xt]))
        sig2 = torch.tensor([med * 2.0**j for j in range(-2, 3)], dtype=torch.float64)
    else:
        sig2 = torch.tensor([float(b) ** 2 for b in bandwidths], dtype=torch.float64)
        if sig2.numel() == 0 or (sig2 <= 0).any():
            raise ValueError("bandwidths must be positive")
    sig2 = sig2.to(xs.device)

    def kernel(x, y):  # mean over the bandwidths of the Gaussian kernels (Eq. 13)
        d2 = torch.cdist(x, y).pow(2)
        return torch.exp(-d2[..., None] / (2 * sig2)).mean(-1)

    def paired(x, y):  # k(x_i, y_i) row by row
        return torch.exp(-(x - y).pow(2).sum(-1)[:, None] / (2 * sig2)).mean(-1)

    ks, kt = len(s_sets), len(t_sets)
    if estimator == "linear":
        M = torch.zeros(ks, kt, dtype=torch.float64)
        for i, a in enumerate(s_sets):
            for j, b in enumerate(t_sets):
                h = min(a.shape[0], b.shape[0]) // 2
                a1, a2, b1, b2 = (
                    a[0 : 2 * h : 2].double(),
                    a[1 : 2 * h : 2].double(),
                    b[0 : 2 * h : 2].double(),
                    b[1 : 2 * h : 2].double(),
                )
                # lu2017 Eq. (14): g(z) = k(s1, s2) + k(t1, t2) - k(s1, t2) - k(s2, t1)
                M[i, j] = (paired(a1, a2) + paired(b1, b2) - paired(a1, b2) - paired(a2, b1)).mean()
        return M.clamp_min(0)
    # quadratic: class sums of the kernel through one-hot matrices, one kernel per block
    Ss = F.one_hot(ys, ks).double()
    St = F.one_hot(yt, kt).double()
    ns, nt = Ss.sum(0), St.sum(0)

    def within(x, S, n):  # (1 / (n (n - 1))) sum_{i != j} k(x_i, x_j) per class
        K = kernel(x, x)
        tot = ((S.T @ K) * S.T).sum(-1) - (S.T @ torch.diagonal(K))
        return tot / (n * (n - 1))

    cross = (Ss.T @ kernel(xs, xt) @ St) / (ns[:, None] * nt[None, :])
    M = within(xs, Ss, ns)[:, None] + within(xt, St, nt)[None, :] - 2 * cross
    return M.clamp_min(0).cpu()


# lu2017 Eq. (16): entropic OT at a fixed lambda; the paper gives none (see label_cost_ot)
LABEL_OT_SOLVER = {"reg": 0.05, "gap": 0.0, "max_iter": 20000, "tol": 1e-6}


def label_cost_ot(
    source_features: torch.Tensor,
    source_labels: torch.Tensor,
    target_features: torch.Tensor,
    target_labels: torch.Tensor,
    *,
    cost: str = "sqeuclidean",
    method: str = "sinkhorn",
    n_source_classes: int | None = None,
    n_target_classes: int | None = None,
    **solver_params: Any,
) -> torch.Tensor:
    """Return the ``(K_src, K_tgt)`` label cost ``M_ij = OT(class i features, class j features)``.

    Parameters
    ----------
    source_features, target_features, source_labels, target_labels
        As :func:`label_cost_mkmmd`; every class needs an example.
    cost : str
        Ground cost between features, squared Euclidean in lu2017 (§3.4.2).
    method : str
        OT solver. Default ``"sinkhorn"``: lu2017 Eq. (16) is entropic OT, "computed using
        the same matrix scaling procedure as in Algorithm 1", at a lambda the paper does not
        give; ours is ``reg = 0.05`` relative to the range of the cost (``LABEL_OT_SOLVER``),
        the same relative weight as the JTLN loss, at fixed lambda (``gap = 0``). ``"emd"``
        gives the exact OT distance instead.
    **solver_params
        Parameters of ``method`` (for ``sinkhorn`` they default to ``LABEL_OT_SOLVER``).

    Returns
    -------
    torch.Tensor
        ``(K_src, K_tgt)``, float64.

    Notes
    -----
    lu2017 Eq. (15)-(16): uniform empirical measures on the two classes' features,
    ``d(mu_s, mu_t) = <gamma_0, C>`` with ``C_ij = ||x_i^s - x_j^t||^2``.
    """
    _, _, s_sets = _class_sets(source_features, source_labels, n_source_classes, "source")
    _, _, t_sets = _class_sets(target_features, target_labels, n_target_classes, "target")
    if method == "sinkhorn":
        solver_params = {**LABEL_OT_SOLVER, **solver_params}
    M = torch.zeros(len(s_sets), len(t_sets), dtype=torch.float64)
    for i, a in enumerate(s_sets):
        for j, b in enumerate(t_sets):
            res = solve_sample(a.double(), b.double(), cost=cost, method=method, **solver_params)
            if not res.converged:
                raise RuntimeError(f"label cost: {method} did not converge on classes ({i}, {j})")
            M[i, j] = float(res.value)
    return M


LABEL_COSTS = ("mkmmd", "ot")


def label_cost_spec(spec) -> tuple[str, dict]:
    """``(kind, options)`` of a suite's ``label_cost``: ``"mkmmd"`` / ``"ot"``, or a mapping
    ``{kind: mkmmd, estimator: linear, bandwidths: [...]}`` / ``{kind: ot, method: sinkhorn,
    reg: 0.05, cost: sqeuclidean}`` whose other keys go to :func:`label_cost_mkmmd` /
    :func:`label_cost_ot`. Raises ``ValueError`` naming what is wrong."""
    import inspect

    if isinstance(spec, str):
        kind, options = spec, {}
    elif isinstance(spec, Mapping):
        options = dict(spec)
        kind = options.pop("kind", None)
    else:
        raise ValueError(f"label_cost must be 'mkmmd', 'ot' or a mapping with 'kind'; got {spec!r}")
    if kind not in LABEL_COSTS:
        raise ValueError(f"label_cost kind {kind!r}: expected one of {LABEL_COSTS}")
    fn = label_cost_mkmmd if kind == "mkmmd" else label_cost_ot
    named = {k for k, p in inspect.signature(fn).parameters.items() if p.kind == p.KEYWORD_ONLY} - {
        "n_source_classes",
        "n_target_classes",
    }
    if kind == "mkmmd":
        bad = sorted(set(options) - named)
        if bad:
            raise ValueError(f"label_cost mkmmd takes no {bad}; it takes {sorted(named)}")
        if options.get("estimator", "quadratic") not in ("quadratic", "linear"):
            raise ValueError(
                f"label_cost estimator must be 'quadratic' or 'linear' (lu2017 "
                f"Eq. 14); got {options['estimator']!r}"
            )
    else:
        method = get_method(options.get("method", "sinkhorn"))
        bad = sorted(set(options) - named - set(method.params))
        if bad:
            raise ValueError(
                f"label_cost ot ({method.name}) takes no {bad}; it takes "
                f"{sorted(named | set(method.params))}"
            )
    return kind, options
