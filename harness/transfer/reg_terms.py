"""The regularization terms of li2020 (Omega_P / Omega_I / Omega_U, L2, L2-SP), lohit2020 (OT
between a batch's examples, IPOT / REMD) and KD, each registered where it is defined
(:func:`~harness.transfer.reg_core.register_regularizer`)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from harness.transfer.reg_core import RegContext, register_regularizer
from harness.transfer.representation import matched_fraction, transport
from harness.transfer.taps import pool_features
from solvers import OTResult

__all__ = [
    "STAGES",
    "KD_SCALES",
    "PAPER_GRAD",
    "kd_loss",
    "omega_term",
    "SamplesOTTerm",
    "log_solve",
]

STAGES = ("stage1", "stage2", "stage3", "stage4")


# --------------------------------------------------------------------------- helpers


def _feature_pair(ctx: RegContext, tap: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and (detached) teacher activations of ``tap``, pooled to ``(n, d)``."""
    for what, feats in (("features", ctx.features), ("teacher_features", ctx.teacher_features)):
        if tap not in feats:
            raise ValueError(
                f"ctx.{what} has no tap {tap!r} (has {sorted(feats) or 'none'}); "
                f"collect the regularizer's taps with Taps(model, reg.taps)"
            )
    s = pool_features(ctx.features[tap])
    t = pool_features(ctx.teacher_features[tap]).detach().to(s.dtype)
    return s, t


def _warm_params(ctx: RegContext, tap: str, on: bool, n: int, m: int) -> dict[str, Any]:
    """``{"warmstart": (f, g)}`` from the previous step's solve of ``tap`` when ``on`` and its
    potentials fit this ``n x m`` problem; ``{}`` (a cold start) otherwise."""
    from harness.transfer import warm

    pots = warm.start(ctx.warm, tap, n, m) if on else None
    return {} if pots is None else {"warmstart": pots}


def _keep_potentials(ctx: RegContext, tap: str, on: bool, res: OTResult) -> None:
    from harness.transfer import warm

    pots = warm.potentials_of(res) if on else None
    if pots is not None:
        ctx.potentials[tap] = pots


def _log_solve(stats: dict, tap: str, res: OTResult) -> None:
    stats[f"{tap}/value"] = res.value.detach()
    stats[f"{tap}/n_iter"] = res.n_iter
    stats[f"{tap}/converged"] = res.converged
    matched = matched_fraction(res)
    if matched is not None:
        stats[f"{tap}/matched"] = matched


# --------------------------------------------------------------------------- parameter terms


@register_regularizer(
    "none",
    description="no regularization (plain training / fine-tuning)",
    paper="li2020 Table 1 'none'",
)
def _none(ctx: RegContext) -> None:
    """No term: the baseline."""
    return None


@register_regularizer(
    "l2",
    params={"alpha": 1e-4},
    paper="li2020 §4.2 Omega_L2",
    description="weight decay alpha/2 ||w||^2 on all trainable parameters",
)
def _l2(ctx: RegContext, *, alpha: float) -> torch.Tensor:
    """Return ``alpha/2 * sum ||w||^2`` over the student's trainable parameters.

    Same gradient as SGD's ``weight_decay=alpha``; li2020 A.2 uses 1e-4.
    """
    params = [p for p in _student(ctx).parameters() if p.requires_grad]
    return alpha / 2 * sum(p.pow(2).sum() for p in params)


@register_regularizer(
    "l2sp",
    needs_initial_weights=True,
    params={"alpha": 0.1, "beta": 0.01, "new": ()},
    paper="li2020 §4.2 Omega_L2-SP (Li, Grandvalet & Davoine 2018)",
    description="alpha/2 ||w - w0||^2 on the pre-trained part + beta/2 ||w_new||^2 on the new head",
)
def _l2sp(ctx: RegContext, *, alpha: float, beta: float, new: Iterable[str]) -> torch.Tensor:
    """Return ``alpha/2 ||w_S - w0_S||^2 + beta/2 ||w_new||^2`` (L2-SP).

    Parameters
    ----------
    alpha : float
        Pull of the pre-trained parameters towards their starting point ``w0``.
    beta : float
        Weight decay of the new head.
    new : sequence of str
        Parameter-name prefixes forced into the new head; parameters missing from
        ``ctx.initial_weights`` (or of another shape) are new anyway.
    """
    w0 = ctx.initial_weights
    if not w0:
        raise ValueError("l2sp needs ctx.initial_weights (the starting point w0 by parameter name)")
    new = tuple([new] if isinstance(new, str) else new)
    sp, fresh = [], []
    for name, p in _student(ctx).named_parameters():
        if not p.requires_grad:
            continue
        ref = w0.get(name)
        if ref is None or ref.shape != p.shape or (new and name.startswith(new)):
            fresh.append(p)
        else:
            sp.append((p, ref))
    if not sp:
        raise ValueError(
            "l2sp: no student parameter matches ctx.initial_weights by name and "
            f"shape (e.g. {next(iter(w0))!r}); snapshot model.named_parameters()"
        )
    value = alpha / 2 * sum((p - r.detach().to(p)).pow(2).sum() for p, r in sp)
    if fresh:
        value = value + beta / 2 * sum(p.pow(2).sum() for p in fresh)
    return value


def _student(ctx: RegContext) -> nn.Module:
    if ctx.student is None:
        raise ValueError("this regularizer needs ctx.student (the trainable model)")
    return ctx.student


# --------------------------------------------------------------------------- KD


KD_SCALES = ("tau2", "none")


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    tau: float = 4.0,
    scale: str = "tau2",
) -> torch.Tensor:
    """Return the distillation loss ``s KL(softmax(t/tau) || softmax(s/tau))``.

    Parameters
    ----------
    student_logits, teacher_logits : torch.Tensor
        ``(n, K)``; the teacher's are detached.
    tau : float
        Temperature (> 0); li2020 picks it in {4, 5, 10}.
    scale : {"tau2", "none"}
        ``"tau2"``: ``s = tau^2``, Hinton et al. (2015), which keeps the gradient's scale
        independent of ``tau`` (lohit2020 Eq. 9 uses this KD, from CRD). ``"none"``:
        ``s = 1``, li2020 Eq. (7) as printed, ``Omega_KD = KL(g^tau(x), f^tau(x; w))``, whose
        weight grid (1e-3 ... 10) absorbs the factor.

    Returns
    -------
    torch.Tensor
        Scalar, mean over the batch.

    Notes
    -----
    ``g``, ``f`` are the teacher's and the student's softmax at temperature ``tau``.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits differ in shape: "
            f"{tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}"
        )
    if scale not in KD_SCALES:
        raise ValueError(f"kd scale must be one of {KD_SCALES}; got {scale!r}")
    if not (isinstance(tau, (int, float)) and not isinstance(tau, bool) and tau > 0):
        raise ValueError(f"kd tau must be a positive number; got {tau!r}")
    log_q = F.log_softmax(student_logits / tau, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach().to(log_q.dtype) / tau, dim=-1)
    factor = tau**2 if scale == "tau2" else 1.0
    return factor * F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


@register_regularizer(
    "kd",
    needs_teacher=True,
    params={"alpha": 1.0, "tau": 4.0, "scale": "tau2"},
    paper="li2020 Eq. 7 (scale: none); Hinton et al. 2015, lohit2020 Eq. 9 (scale: tau2)",
    description="knowledge distillation: alpha s KL(teacher || student) at temperature tau, "
    "s = tau^2 (Hinton) or 1 (li2020 Eq. 7)",
)
def _kd(ctx: RegContext, *, alpha: float, tau: float, scale: str) -> torch.Tensor:
    if ctx.logits is None or ctx.teacher_logits is None:
        raise ValueError("kd needs ctx.logits and ctx.teacher_logits")
    return alpha * kd_loss(ctx.logits, ctx.teacher_logits, tau, scale)


# --------------------------------------------------------------------------- li2020: neurons


#: The papers' gradient of their OT terms: the plan held fixed (li2020 §3.1, "we instead apply
#: the envelope theorem"; lohit2020's IPOT term likewise), whatever the solver did; solvers'
#: own default at gap=0 is the derivative of the returned value (README, Solvers).
PAPER_GRAD = "envelope"


def _omega(
    ctx: RegContext,
    *,
    alpha: float,
    taps: tuple[str, ...],
    cost: str,
    plan: str,
    solver: dict[str, Any],
    warm_start: Any = "auto",
) -> torch.Tensor:
    """``alpha * sum_taps Omega(A, T)`` over the taps, neurons view (li2020 Eq. 3-6); solves
    warm-started from ``ctx.warm`` as ``warm_start`` says (harness.transfer.warm)."""
    from harness.transfer.warm import check_setting, enabled

    check_setting("omega", warm_start)
    on = enabled(warm_start, plan, solver)
    total = 0
    for tap in taps:
        s, t = _feature_pair(ctx, tap)  # the neurons are the points: d x d' problems
        warm = _warm_params(ctx, tap, on, s.shape[1], t.shape[1])
        res = transport(s, t, "neurons", cost, plan, {"grad": PAPER_GRAD, **solver, **warm})
        _log_solve(ctx.stats, tap, res)
        _keep_potentials(ctx, tap, on, res)
        total = total + res.value
    return alpha * total


_OMEGA = dict(needs_teacher=True, taps=("penultimate",), paper="li2020")
register_regularizer(
    "omega_p",
    **_OMEGA,
    plan="exact",
    params={
        "alpha": 0.1,
        "taps": ("penultimate",),
        "cost": "euclidean",
        "plan": "exact",
        "warm_start": "auto",
    },
    description="li2020 Omega_P: OT between neurons (Eq. 3-4), exact plan, summed over taps",
)(_omega)
# li2020 computes Omega_P's plan with IPOT, "converging to the exact solution of Problem (1)";
# the default plan "exact" is that solution, computed directly (LAPJV when d == d', else the
# network simplex): a training step costs 1.26x an L2-SP step instead of 3.7x with IPOT on the
# digits CNN (results/regularizers/step_time.md). plan="ipot" is the paper's solver.
register_regularizer(
    "omega_i",
    **_OMEGA,
    plan="identity",
    params={"alpha": 0.1, "taps": ("penultimate",), "cost": "euclidean"},
    description="li2020 Omega_I: identity plan, mean ||A_i - T_i|| (Eq. 5); d == d'",
)(_omega)
register_regularizer(
    "omega_u",
    **_OMEGA,
    plan="uniform",
    params={"alpha": 0.1, "taps": ("penultimate",), "cost": "euclidean"},
    description="li2020 Omega_U: uniform plan, mean of all ||A_i - T_j|| (Eq. 6)",
)(_omega)


# --------------------------------------------------------------------------- lohit2020: samples

_EMBED = ("teacher", "student", "both", "conv", "none")


class _ConvEmbed(nn.Module):
    """lohit2020 App. C at intermediate stages: a convolution mapping the teacher's conv map
    to the student's channels and spatial shape (FitNets' / CRD's ``ConvReg``: conv, batch
    norm, ReLU), trained with the student; the result is pooled like any tapped map."""

    def __init__(self, t_shape: tuple[int, ...], s_shape: tuple[int, ...]):
        super().__init__()
        (c_t, h_t, w_t), (c_s, h_s, w_s) = t_shape, s_shape
        self.shapes = (tuple(t_shape), tuple(s_shape))
        if h_t == 2 * h_s and w_t == 2 * w_s:  # CRD: stride 2 when the teacher map is larger
            conv = nn.Conv2d(c_t, c_s, kernel_size=3, stride=2, padding=1)
        elif h_t == h_s and w_t == w_s:
            conv = nn.Conv2d(c_t, c_s, kernel_size=3, padding=1)
        else:  # any other ratio: a 1x1 conv, then pooling to the student's spatial shape
            conv = nn.Sequential(
                nn.Conv2d(c_t, c_s, kernel_size=1), nn.AdaptiveAvgPool2d((h_s, w_s))
            )
        self.body = nn.Sequential(conv, nn.BatchNorm2d(c_s), nn.ReLU())

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.body(t)


class _SamplesOT(nn.Module):
    """``alpha * sum_taps L_OT(X, Y)``: OT between the examples of a batch (lohit2020 Eq. 1-3).

    Parameters
    ----------
    alpha : float
        Weight of the OT loss (lohit2020 Eq. 1; 0.9 or 1.0 in the paper).
    taps : tuple of str
        Layers compared; the paper sums over the outputs of the 4 stages (Table 3 ablates them).
    cost : str
        Ground cost, cosine in the paper (Eq. 3).
    embed : str or mapping {tap: str}
        Where widths differ, learned maps to a common width (lohit2020 §4.1 and appendix C,
        following FitNets and CRD), one setting for every tap or one per tap
        (``{stage1: conv, stage2: conv, stage3: conv, stage4: both}``, appendix C; a tap
        missing from the mapping gets ``"teacher"``): ``"teacher"`` maps the teacher's
        pooled features linearly to the student's width (the paper's main text),
        ``"student"`` the student's to the teacher's, ``"both"`` both to ``embed_dim``
        (appendix C, penultimate layer), ``"conv"`` maps the teacher's conv *map* to the
        student's channels and spatial shape by a convolution + batch norm + ReLU before
        pooling (appendix C, intermediate stages; needs conv maps), ``"none"`` raises. The
        teacher's features are detached before its embedding, which is trained (its
        parameters are the regularizer's). Where the widths (and, for ``conv``, the shapes)
        agree, no embedding is used.
    embed_dim : int
        Common width for ``embed="both"`` (128 in appendix C).
    warm_start : "auto", bool
        Start each solve from the previous step's potentials of its tap
        (:mod:`harness.transfer.warm`): ``"auto"`` only for tolerance-stopped methods (not the
        paper's fixed-N IPOT, whose value a warm start would change), ``True`` for IPOT too.
    plan, solver
        OT method and its parameters: IPOT as lohit2020 Alg. 1 with the paper's *absolute*
        ``beta = 20`` (``relative=False``: ``G = exp(-C / 20)``), N = 50 proximal iterations,
        one inner step (§4.1), or REMD (Eq. 8). On cosine costs between post-ReLU features
        (range <= 1, measured 0.03-0.8) beta = 20 keeps the plan near the uniform one; a
        range-relative ``beta`` (``relative=True``) is the other, sharper choice.
    """

    def __init__(
        self,
        *,
        alpha: float,
        taps: tuple[str, ...],
        cost: str,
        embed,
        embed_dim: int,
        plan: str,
        solver: dict[str, Any],
        warm_start: Any = "auto",
    ):
        super().__init__()
        from harness.transfer.warm import check_setting

        check_setting("ot_samples", warm_start)
        self.warm_start = warm_start
        if isinstance(embed, Mapping):
            unknown = sorted(set(embed) - set(taps))
            if unknown:
                raise ValueError(
                    f"embed names taps {unknown} that the term does not read (taps: {list(taps)})"
                )
            modes = {tap: embed.get(tap, "teacher") for tap in taps}
        else:
            modes = {tap: embed for tap in taps}
        for tap, mode in modes.items():
            if mode not in _EMBED:
                raise ValueError(
                    f"embed must be one of {_EMBED} (or a mapping tap -> one of "
                    f"them); got {mode!r} for tap {tap!r}"
                )
        if not (isinstance(embed_dim, int) and embed_dim > 0):
            raise ValueError(f"embed_dim must be a positive integer; got {embed_dim!r}")
        self.alpha, self.taps, self.cost = alpha, taps, cost
        self.modes, self.embed_dim = modes, embed_dim
        self.plan, self.solver = plan, solver
        self.embeddings = nn.ModuleDict()
        self.building = False  # set by Regularizer.materialize

    def _module(self, key: str, make: Callable[[], nn.Module], like: torch.Tensor) -> nn.Module:
        key = key.replace(".", "__")  # ModuleDict keys cannot hold dots ("layer3.5")
        if key not in self.embeddings:
            if not self.building:
                raise RuntimeError(
                    f"the embedding {key!r} does not exist yet: call reg.materialize(ctx) on one "
                    f"batch before building the optimiser, so that it trains"
                )
            self.embeddings[key] = make().to(device=like.device, dtype=like.dtype)
        return self.embeddings[key]

    def _linear(self, key: str, d_in: int, d_out: int, like: torch.Tensor) -> nn.Linear:
        lin = self._module(key, lambda: nn.Linear(d_in, d_out), like)
        if (lin.in_features, lin.out_features) != (d_in, d_out):
            raise ValueError(
                f"embedding {key!r} maps {lin.in_features} -> {lin.out_features} "
                f"features; got {d_in} -> {d_out}"
            )
        return lin

    def _pair(self, ctx: RegContext, tap: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The tap's pooled student and teacher features, embedded as ``self.modes`` says."""
        mode = self.modes[tap]
        if mode == "conv":
            _feature_pair(ctx, tap)  # the missing-tap errors
            s_map, t_map = ctx.features[tap], ctx.teacher_features[tap].detach()
            if s_map.dim() != 4 or t_map.dim() != 4:
                raise ValueError(
                    f"embed 'conv' at tap {tap!r} needs conv maps (n, c, h, w); "
                    f"got {tuple(s_map.shape)} and {tuple(t_map.shape)}"
                )
            if s_map.shape[1:] != t_map.shape[1:]:
                t_shape, s_shape = tuple(t_map.shape[1:]), tuple(s_map.shape[1:])
                conv = self._module(f"{tap}.conv", lambda: _ConvEmbed(t_shape, s_shape), s_map)
                if conv.shapes != (t_shape, s_shape):
                    raise ValueError(
                        f"embedding {tap!r} maps {conv.shapes[0]} -> "
                        f"{conv.shapes[1]}; got {t_shape} -> {s_shape}"
                    )
                t_map = conv(t_map.to(s_map.dtype))
            return pool_features(s_map), pool_features(t_map)
        s, t = _feature_pair(ctx, tap)
        d, d_t = s.shape[1], t.shape[1]
        if d == d_t or mode == "none":
            return s, t  # "none": transport raises the view's width error
        if mode == "teacher":
            return s, self._linear(f"{tap}.teacher", d_t, d, t)(t)
        if mode == "student":
            return self._linear(f"{tap}.student", d, d_t, s)(s), t
        k = self.embed_dim
        return (
            self._linear(f"{tap}.student", d, k, s)(s),
            self._linear(f"{tap}.teacher", d_t, k, t)(t),
        )

    def forward(self, ctx: RegContext) -> torch.Tensor:
        from harness.transfer.warm import enabled

        on = enabled(self.warm_start, self.plan, self.solver)
        total = 0
        for tap in self.taps:
            # t is detached before its embedding: the teacher network never gets a gradient
            s, t = self._pair(ctx, tap)
            warm = _warm_params(ctx, tap, on, s.shape[0], t.shape[0])  # the examples: n x n
            res = transport(
                s, t, "samples", self.cost, self.plan, {"grad": PAPER_GRAD, **self.solver, **warm}
            )
            _log_solve(ctx.stats, tap, res)
            _keep_potentials(ctx, tap, on, res)
            total = total + res.value
        return self.alpha * total


_SAMPLES = dict(needs_teacher=True, taps=STAGES, trainable=True, paper="lohit2020")
register_regularizer(
    "ot_samples_ipot",
    **_SAMPLES,
    aliases=("ipot",),
    plan="ipot",
    # lohit2020 §4.1: "beta = 20 ... N = 50", Alg. 1 with G = exp(-C / beta): absolute beta
    solver_params={"beta": 20.0, "max_iter": 50, "gap": 0.0, "relative": False},
    params={
        "alpha": 0.9,
        "taps": STAGES,
        "cost": "cosine",
        "embed": "teacher",
        "embed_dim": 128,
        "warm_start": "auto",
    },
    description="lohit2020 IPOT loss: OT between the batch's examples, cosine cost, 4 stages",
)(_SamplesOT)
register_regularizer(
    "ot_samples_remd",
    **_SAMPLES,
    aliases=("remd",),
    plan="remd",
    params={
        "alpha": 0.9,
        "taps": STAGES,
        "cost": "cosine",
        "embed": "teacher",
        "embed_dim": 128,
        "warm_start": "auto",
    },
    description="lohit2020 REMD loss (Eq. 8): relaxed EMD between the batch's examples, 4 stages",
)(_SamplesOT)


# --------------------------------------------------------------------------- shared with batching
# harness.training.batched solves the OT terms of K stacked members in one batched call: it
# recognises these terms and logs their solves as a single member's call does.
omega_term = _omega
SamplesOTTerm = _SamplesOT
log_solve = _log_solve
