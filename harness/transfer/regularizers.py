"""Regularizers of the training objective, by name, with their capabilities as data.

A regularizer is built from a spec, one name or a sum written ``"omega_p+kd"``, and called at
each training step with a :class:`RegContext`; it returns ``{term name: weighted loss}`` so that
each term can be logged, and the loss is ``cross-entropy + sum(terms.values())``
(li2020 Eq. 2; lohit2020 Eq. 9; lu2017 Eq. 4)::

    reg = build_regularizer("omega_p+kd", **{"omega_p.alpha": 0.1, "kd.tau": 4})
    s_taps, t_taps = Taps(student, reg.taps), Taps(teacher, reg.taps)
    ...
    ctx = RegContext(student=student, teacher=teacher, features=s_taps.features,
                     teacher_features=t_taps.features, logits=logits, teacher_logits=t_logits)
    reg.materialize(ctx)        # once, before building the optimiser (learned embeddings)
    opt = torch.optim.SGD([*student.parameters(), *reg.parameters()], lr=0.1)
    terms = reg(ctx)            # {"omega_p": ..., "kd": ...}; ctx.stats holds diagnostics

Each name is registered once, where it is defined (:func:`register_regularizer`); CLI choices,
Optuna categoricals and test parametrisation read :func:`available_regularizers`.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from solvers import OTResult, get_method, solve, solve_sample

from harness.transfer.representation import transport, matched_fraction
from harness.transfer.taps import pool_features
from harness._lazy import load_entry_points

__all__ = [
    "RegContext", "RegularizerInfo", "Regularizer", "register_regularizer", "get_regularizer",
    "all_regularizers", "available_regularizers", "build_regularizer", "kd_loss", "jtln_loss",
    "label_cost_mkmmd", "label_cost_ot", "KD_SCALES", "JTLN_ENTROPIES", "LABEL_COSTS", "label_cost_spec",
]

STAGES = ("stage1", "stage2", "stage3", "stage4")


# --------------------------------------------------------------------------- context


@dataclass
class RegContext:
    """What a regularizer may look at during one training step.

    Attributes
    ----------
    student : nn.Module, optional
        The trainable network (``l2``, ``l2sp``).
    teacher : nn.Module, optional
        The frozen reference network (``None`` when no term needs one).
    initial_weights : Mapping[str, Tensor], optional
        Starting point ``w0`` by parameter name, e.g.
        ``{k: v.detach().clone() for k, v in model.named_parameters()}`` taken *before* the new
        head is attached (``l2sp``: parameters absent from it, or of another shape, form the new
        head).
    features, teacher_features : Mapping[str, Tensor]
        Tapped activations by tap name (:class:`harness.transfer.taps.Taps`), ``(n, d)`` or conv maps.
    logits : Tensor, optional
        ``(n, K)`` student (target-head) logits.
    teacher_logits : Tensor, optional
        ``(n, K)`` teacher logits (``kd``).
    source_logits : Tensor, optional
        ``(n, K_src)`` logits of the student's *source* head on the same target batch
        (``jtln``, lu2017 Eq. 3: ``h_s(x^t)``).
    labels : Tensor, optional
        ``(n,)`` class indices.
    stats : dict
        Filled by the call: ``"<term>/<key>"`` diagnostics (unweighted values, ``n_iter``,
        ``converged``, ``matched``) for logging; not part of the loss.
    warm : Mapping[str, (Tensor, Tensor)]
        The previous step's dual potentials by ``"<term>/<tap>"`` (what the last call left in
        ``potentials``): the solves' ``warmstart`` where the term's ``warm_start`` says so
        (:mod:`harness.transfer.warm`). Empty: every solve starts cold.
    potentials : dict
        Filled by the call: ``"<term>/<tap>"`` -> the potentials of this step's solve, for the
        caller to pass back as ``warm`` next step (``harness.transfer.warm.carry``).
    """

    student: nn.Module | None = None
    teacher: nn.Module | None = None
    initial_weights: Mapping[str, torch.Tensor] | None = None
    features: Mapping[str, torch.Tensor] = field(default_factory=dict)
    teacher_features: Mapping[str, torch.Tensor] = field(default_factory=dict)
    logits: torch.Tensor | None = None
    teacher_logits: torch.Tensor | None = None
    source_logits: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    warm: Mapping[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    potentials: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class RegularizerInfo:
    """Capabilities of one registered regularizer.

    Attributes
    ----------
    name : str
        Registry name, as written in specs (``"omega_p+kd"``).
    factory : callable
        A function ``fn(ctx, **params) -> Tensor | None`` (stateless terms) or an
        ``nn.Module`` subclass built as ``cls(**params)`` whose ``forward(ctx)`` returns the
        weighted term (terms with learned parameters).
    needs_teacher : bool
        Reads ``ctx.teacher_features`` / ``ctx.teacher_logits``: run the teacher on the batch.
    needs_initial_weights : bool
        Reads ``ctx.initial_weights``.
    needs_source_head : bool
        Reads ``ctx.source_logits``: the model has a source head (lu2017).
    taps : tuple of str
        Default taps (hyper-parameter ``taps``), on the student and, if ``needs_teacher``, on the
        teacher.
    params : Mapping[str, Any]
        Hyper-parameters and their defaults.
    plan : str or None
        OT method the term solves with; its solver parameters (``beta``, ``reg``, ``gap``,
        ``max_iter`` ...) are accepted as hyper-parameters too. Configurable when ``"plan"`` is
        in ``params``.
    solver_params : Mapping[str, Any]
        The term's defaults for those solver parameters (the papers' settings).
    trainable : bool
        Has its own parameters (learned embeddings): include ``reg.parameters()`` in the
        optimiser, after :meth:`Regularizer.materialize`.
    aliases : tuple of str
        Other spellings accepted in specs (the papers' names).
    paper, description : str
    """

    name: str
    factory: Callable[..., Any]
    needs_teacher: bool = False
    needs_initial_weights: bool = False
    needs_source_head: bool = False
    taps: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    plan: str | None = None
    solver_params: Mapping[str, Any] = field(default_factory=dict)
    trainable: bool = False
    aliases: tuple[str, ...] = ()
    paper: str = ""
    description: str = ""

    def accepted(self, plan: str | None = None) -> dict[str, Any]:
        """Every accepted hyper-parameter with its default (solver ones for ``plan``)."""
        out = dict(self.params)
        plan = plan or self.plan
        if plan is not None:
            method = get_method(plan)
            out.update(method.params)
            out.update({k: v for k, v in self.solver_params.items() if k in method.params})
        return out


_REGISTRY: dict[str, RegularizerInfo] = {}
_ALIASES: dict[str, str] = {}


def register_regularizer(name: str, **capabilities: Any) -> Callable:
    """Register a term as regularizer ``name`` (decorator), with its capabilities.

    Parameters
    ----------
    name : str
        The name written in specs; it and the aliases must be new (a duplicate raises).
    **capabilities
        The fields of :class:`RegularizerInfo` (``needs_teacher``, ``taps``, ``params``,
        ``plan`` ...).

    Returns
    -------
    callable
        A decorator for ``fn(ctx, **params) -> Tensor | None`` or an ``nn.Module`` class built
        as ``cls(**params)`` (plus ``plan=``, ``solver=`` when ``plan`` is set); it returns the
        object unchanged.
    """

    def deco(obj):
        info = RegularizerInfo(name=name, factory=obj, **capabilities)
        if "taps" in info.params and info.params["taps"] != info.taps:
            raise ValueError(f"regularizer {name!r}: params['taps'] must equal taps")
        for key in (name, *info.aliases):
            if key in _REGISTRY or key in _ALIASES:
                raise ValueError(f"regularizer name {key!r} is already registered")
        _REGISTRY[name] = info
        _ALIASES.update({alias: name for alias in info.aliases})
        return obj

    return deco


def get_regularizer(name: str) -> RegularizerInfo:
    """Look up a regularizer by name or alias; an unknown name raises with the close matches."""
    load_entry_points("otransfer.regularizers")  # plugins: once per process
    key = str(name).strip()
    key = _ALIASES.get(key, key)
    if key in _REGISTRY:
        return _REGISTRY[key]
    known = {k.lower(): k for k in (*_REGISTRY, *_ALIASES)}
    if key.lower() in known:  # the papers' spelling: "REMD", "KD"
        return get_regularizer(known[key.lower()])
    close = [known[c] for c in difflib.get_close_matches(key.lower(), list(known), n=3, cutoff=0.5)]
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"unknown regularizer {name!r}{hint} Known regularizers: "
                     f"{', '.join(sorted(_REGISTRY))}")


def all_regularizers() -> dict[str, RegularizerInfo]:
    """Every registered regularizer, in registration order."""
    load_entry_points("otransfer.regularizers")  # plugins: once per process
    return dict(_REGISTRY)


def available_regularizers(**flags: Any) -> list[str]:
    """Names of the regularizers whose capabilities match ``flags``.

    Examples
    --------
    >>> available_regularizers(needs_teacher=False)
    ['none', 'l2', 'l2sp', 'jtln']
    """
    load_entry_points("otransfer.regularizers")  # plugins: once per process
    return [n for n, info in _REGISTRY.items()
            if all(getattr(info, k) == v for k, v in flags.items())]


# --------------------------------------------------------------------------- building


class _FunctionTerm(nn.Module):
    """A stateless term: ``fn(ctx, **params)``."""

    def __init__(self, fn: Callable, params: dict[str, Any]):
        super().__init__()
        self.fn, self.kwargs = fn, params

    def forward(self, ctx: RegContext):
        return self.fn(ctx, **self.kwargs)


def _as_taps(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", ",").split(",") if v]
    taps = tuple(value)
    if not taps or not all(isinstance(t, str) for t in taps):
        raise ValueError(f"taps must be a non-empty list of tap names; got {value!r}")
    return taps


class Regularizer(nn.Module):
    """A sum of named regularization terms; build it with :func:`build_regularizer`.

    Calling it with a :class:`RegContext` returns ``{name: weighted term}`` (empty for
    ``"none"``); the regularization loss is the sum of the values. Learned parameters
    (embeddings) are ``self.parameters()``.

    Attributes
    ----------
    names : tuple of str
        Canonical term names, in spec order.
    params : dict
        Resolved hyper-parameters per term (defaults filled in, solver ones included).
    taps : tuple of str
        Every tap any term reads (collect them on the student, and on the teacher when
        :attr:`needs_teacher`).
    """

    def __init__(self, infos: list[RegularizerInfo], params: dict[str, dict[str, Any]]):
        super().__init__()
        self.infos = {info.name: info for info in infos}
        self.params = params
        self.terms = nn.ModuleDict()
        for info in infos:
            kwargs = dict(params[info.name])
            if info.plan is not None:
                plan = kwargs.pop("plan", info.plan)
                solver = {k: kwargs.pop(k) for k in get_method(plan).params}
                kwargs.update(plan=plan, solver=solver)
            if isinstance(info.factory, type) and issubclass(info.factory, nn.Module):
                self.terms[info.name] = info.factory(**kwargs)
            else:
                self.terms[info.name] = _FunctionTerm(info.factory, kwargs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.infos)

    @property
    def taps(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for p in self.params.values() for t in p.get("taps", ())))

    @property
    def needs_teacher(self) -> bool:
        return any(i.needs_teacher for i in self.infos.values())

    @property
    def needs_initial_weights(self) -> bool:
        return any(i.needs_initial_weights for i in self.infos.values())

    @property
    def needs_source_head(self) -> bool:
        return any(i.needs_source_head for i in self.infos.values())

    def forward(self, ctx: RegContext) -> dict[str, torch.Tensor]:
        """Return ``{term name: weighted loss}``; write diagnostics to ``ctx.stats``."""
        out: dict[str, torch.Tensor] = {}
        for name, term in self.terms.items():
            stats: dict[str, Any] = {}
            pots: dict[str, Any] = {}
            head = f"{name}/"
            warm = {k[len(head):]: v for k, v in ctx.warm.items() if k.startswith(head)}
            value = term(dataclasses.replace(ctx, stats=stats, warm=warm, potentials=pots))
            ctx.stats.update({f"{name}/{k}": v for k, v in stats.items()})
            ctx.potentials.update({f"{name}/{k}": v for k, v in pots.items()})
            if value is not None:
                out[name] = value
        return out

    def materialize(self, ctx: RegContext) -> None:
        """Create the parameters that depend on the layer widths (embeddings) from one batch.

        Call once before building the optimiser, so that ``self.parameters()`` lists them.
        """
        builders = [t for t in self.terms.values() if hasattr(t, "building")]
        for t in builders:  # only these terms have width-dependent parameters
            t.building = True
            try:
                with torch.no_grad():
                    t(dataclasses.replace(ctx, stats={}))
            finally:
                t.building = False

    def extra_repr(self) -> str:
        def short(v):  # a label-cost matrix is summarised, not printed
            return f"<tensor {tuple(v.shape)}>" if isinstance(v, torch.Tensor) else repr(v)

        return " + ".join(f"{n}({', '.join(f'{k}={short(v)}' for k, v in p.items())})"
                          for n, p in self.params.items())


def build_regularizer(spec: str, **params: Any) -> Regularizer:
    """Build the regularizer ``spec``: a registered name or a sum ``"name+name"``.

    Parameters
    ----------
    spec : str
        E.g. ``"omega_p"``, ``"remd+kd"``, ``"omega_p+kd"``, ``"none"``. Names are those of
        :func:`available_regularizers` or their aliases (``remd``, ``ipot``).
    **params
        Hyper-parameters. ``"kd.tau": 4`` targets one term; an unqualified key (``tau=4``)
        goes to the one term that accepts it and is an error when several do (``alpha`` in
        ``"omega_p+kd"``); ``kd={"tau": 4}`` passes a term's parameters at once. Solver
        parameters of a term's plan (``beta``, ``gap``, ``reg``, ``max_iter`` ...) are accepted
        by that term. Unknown keys raise with the close matches.

    Returns
    -------
    Regularizer
    """
    names = [s.strip() for s in str(spec).split("+")]
    if not all(names):
        raise ValueError(f"malformed regularizer spec {spec!r}: write names joined by '+'")
    infos = [get_regularizer(n) for n in names]
    seen = [i.name for i in infos]
    if len(set(seen)) != len(seen):
        raise ValueError(f"regularizer spec {spec!r} names a term twice ({', '.join(seen)})")
    by_key = {key: i.name for i in infos for key in (i.name, *i.aliases)}
    given: dict[str, dict[str, Any]] = {i.name: {} for i in infos}
    loose: dict[str, Any] = {}
    for key, value in params.items():  # qualified keys first: "kd.tau", kd={"tau": 4}
        head, dot, rest = key.partition(".")
        if key in by_key and isinstance(value, Mapping):
            given[by_key[key]].update(value)
        elif dot and head in by_key:
            given[by_key[head]][rest] = value
        else:
            loose[key] = value
    if "plan" in loose:  # the plan decides which solver parameters a term accepts
        takers = [i for i in infos if "plan" in i.params]
        if len(takers) == 1:
            given[takers[0].name].setdefault("plan", loose.pop("plan"))
    accepted = {i.name: i.accepted(given[i.name].get("plan")) for i in infos}
    for key, value in loose.items():
        takers = [name for name in given if key in accepted[name]]
        if len(takers) > 1:
            raise ValueError(f"parameter {key!r} is accepted by several terms of {spec!r}; write "
                             f"{' or '.join(repr(f'{t}.{key}') for t in takers)}")
        if not takers:
            _unknown(key, accepted, spec)
        given[takers[0]][key] = value
    resolved = {}
    for info in infos:
        for key in given[info.name]:
            if key not in accepted[info.name]:
                _unknown(f"{info.name}.{key}", accepted, spec)
        p = {**accepted[info.name], **given[info.name]}
        if "taps" in p:
            p["taps"] = _as_taps(p["taps"])
        _check_weights(info.name, p)
        if "warm_start" in p:
            from harness.transfer.warm import check_setting
            check_setting(info.name, p["warm_start"])
        resolved[info.name] = p
    return Regularizer(infos, resolved)


#: Parameters that are weights or temperatures, by name: ``(lowest value, whether it may be
#: that value)``; checked for every term when it is built (a suite's load time).
_BOUNDS = {"alpha": (0.0, True), "beta": (0.0, True), "tau": (0.0, False)}


def _check_weights(term: str, params: Mapping[str, Any]) -> None:
    for key, (low, closed) in _BOUNDS.items():
        if key not in params or params[key] is None:
            continue
        v = params[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v < low or (v == low and not closed):
            need = f">= {low:g}" if closed else f"> {low:g}"
            raise ValueError(f"{term}.{key} must be a finite number {need}; got {v!r}")


def _unknown(key: str, accepted: Mapping[str, Mapping[str, Any]], spec: str):
    """Raise for ``key``, suggesting among the parameters each term accepts with its plan."""
    known = sorted({f"{name}.{k}" for name, acc in accepted.items() for k in acc} |
                   {k for acc in accepted.values() for k in acc})
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"unknown parameter {key!r} for regularizer {spec!r}{hint} "
                     f"Accepted: {', '.join(k for k in known if '.' in k)}")


# --------------------------------------------------------------------------- helpers


def _feature_pair(ctx: RegContext, tap: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and (detached) teacher activations of ``tap``, pooled to ``(n, d)``."""
    for what, feats in (("features", ctx.features), ("teacher_features", ctx.teacher_features)):
        if tap not in feats:
            raise ValueError(f"ctx.{what} has no tap {tap!r} (has {sorted(feats) or 'none'}); "
                             f"collect the regularizer's taps with Taps(model, reg.taps)")
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


@register_regularizer("none", description="no regularization (plain training / fine-tuning)",
                      paper="li2020 Table 1 'none'")
def _none(ctx: RegContext) -> None:
    """No term: the baseline."""
    return None


@register_regularizer(
    "l2", params={"alpha": 1e-4}, paper="li2020 §4.2 Omega_L2",
    description="weight decay alpha/2 ||w||^2 on all trainable parameters")
def _l2(ctx: RegContext, *, alpha: float) -> torch.Tensor:
    """Return ``alpha/2 * sum ||w||^2`` over the student's trainable parameters.

    Same gradient as SGD's ``weight_decay=alpha``; li2020 A.2 uses 1e-4.
    """
    params = [p for p in _student(ctx).parameters() if p.requires_grad]
    return alpha / 2 * sum(p.pow(2).sum() for p in params)


@register_regularizer(
    "l2sp", needs_initial_weights=True, params={"alpha": 0.1, "beta": 0.01, "new": ()},
    paper="li2020 §4.2 Omega_L2-SP (Li, Grandvalet & Davoine 2018)",
    description="alpha/2 ||w - w0||^2 on the pre-trained part + beta/2 ||w_new||^2 on the new head")
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
        raise ValueError("l2sp: no student parameter matches ctx.initial_weights by name and "
                         f"shape (e.g. {next(iter(w0))!r}); snapshot model.named_parameters()")
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


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            tau: float = 4.0, scale: str = "tau2") -> torch.Tensor:
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
        raise ValueError(f"student and teacher logits differ in shape: "
                         f"{tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}")
    if scale not in KD_SCALES:
        raise ValueError(f"kd scale must be one of {KD_SCALES}; got {scale!r}")
    if not (isinstance(tau, (int, float)) and not isinstance(tau, bool) and tau > 0):
        raise ValueError(f"kd tau must be a positive number; got {tau!r}")
    log_q = F.log_softmax(student_logits / tau, dim=-1)
    log_p = F.log_softmax(teacher_logits.detach().to(log_q.dtype) / tau, dim=-1)
    factor = tau ** 2 if scale == "tau2" else 1.0
    return factor * F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


@register_regularizer(
    "kd", needs_teacher=True, params={"alpha": 1.0, "tau": 4.0, "scale": "tau2"},
    paper="li2020 Eq. 7 (scale: none); Hinton et al. 2015, lohit2020 Eq. 9 (scale: tau2)",
    description="knowledge distillation: alpha s KL(teacher || student) at temperature tau, "
                "s = tau^2 (Hinton) or 1 (li2020 Eq. 7)")
def _kd(ctx: RegContext, *, alpha: float, tau: float, scale: str) -> torch.Tensor:
    if ctx.logits is None or ctx.teacher_logits is None:
        raise ValueError("kd needs ctx.logits and ctx.teacher_logits")
    return alpha * kd_loss(ctx.logits, ctx.teacher_logits, tau, scale)


# --------------------------------------------------------------------------- li2020: neurons


#: The papers' gradient of their OT terms: the plan held fixed (li2020 §3.1, "we instead apply
#: the envelope theorem"; lohit2020's IPOT term likewise), whatever the solver did; solvers'
#: own default at gap=0 is the derivative of the returned value (README, Solvers).
PAPER_GRAD = "envelope"


def _omega(ctx: RegContext, *, alpha: float, taps: tuple[str, ...], cost: str, plan: str,
           solver: dict[str, Any], warm_start: Any = "auto") -> torch.Tensor:
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
    "omega_p", **_OMEGA, plan="exact",
    params={"alpha": 0.1, "taps": ("penultimate",), "cost": "euclidean", "plan": "exact",
            "warm_start": "auto"},
    description="li2020 Omega_P: OT between neurons (Eq. 3-4), exact plan, summed over taps",
)(_omega)
# li2020 computes Omega_P's plan with IPOT, "converging to the exact solution of Problem (1)";
# the default plan "exact" is that solution, computed directly (LAPJV when d == d', else the
# network simplex): a training step costs 1.26x an L2-SP step instead of 3.7x with IPOT on the
# digits CNN (results/regularizers/step_time.md). plan="ipot" is the paper's solver.
register_regularizer(
    "omega_i", **_OMEGA, plan="identity",
    params={"alpha": 0.1, "taps": ("penultimate",), "cost": "euclidean"},
    description="li2020 Omega_I: identity plan, mean ||A_i - T_i|| (Eq. 5); d == d'",
)(_omega)
register_regularizer(
    "omega_u", **_OMEGA, plan="uniform",
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
            conv = nn.Sequential(nn.Conv2d(c_t, c_s, kernel_size=1),
                                 nn.AdaptiveAvgPool2d((h_s, w_s)))
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

    def __init__(self, *, alpha: float, taps: tuple[str, ...], cost: str, embed,
                 embed_dim: int, plan: str, solver: dict[str, Any], warm_start: Any = "auto"):
        super().__init__()
        from harness.transfer.warm import check_setting

        check_setting("ot_samples", warm_start)
        self.warm_start = warm_start
        if isinstance(embed, Mapping):
            unknown = sorted(set(embed) - set(taps))
            if unknown:
                raise ValueError(f"embed names taps {unknown} that the term does not read "
                                 f"(taps: {list(taps)})")
            modes = {tap: embed.get(tap, "teacher") for tap in taps}
        else:
            modes = {tap: embed for tap in taps}
        for tap, mode in modes.items():
            if mode not in _EMBED:
                raise ValueError(f"embed must be one of {_EMBED} (or a mapping tap -> one of "
                                 f"them); got {mode!r} for tap {tap!r}")
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
                    f"batch before building the optimiser, so that it trains")
            self.embeddings[key] = make().to(device=like.device, dtype=like.dtype)
        return self.embeddings[key]

    def _linear(self, key: str, d_in: int, d_out: int, like: torch.Tensor) -> nn.Linear:
        lin = self._module(key, lambda: nn.Linear(d_in, d_out), like)
        if (lin.in_features, lin.out_features) != (d_in, d_out):
            raise ValueError(f"embedding {key!r} maps {lin.in_features} -> {lin.out_features} "
                             f"features; got {d_in} -> {d_out}")
        return lin

    def _pair(self, ctx: RegContext, tap: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The tap's pooled student and teacher features, embedded as ``self.modes`` says."""
        mode = self.modes[tap]
        if mode == "conv":
            _feature_pair(ctx, tap)  # the missing-tap errors
            s_map, t_map = ctx.features[tap], ctx.teacher_features[tap].detach()
            if s_map.dim() != 4 or t_map.dim() != 4:
                raise ValueError(f"embed 'conv' at tap {tap!r} needs conv maps (n, c, h, w); "
                                 f"got {tuple(s_map.shape)} and {tuple(t_map.shape)}")
            if s_map.shape[1:] != t_map.shape[1:]:
                t_shape, s_shape = tuple(t_map.shape[1:]), tuple(s_map.shape[1:])
                conv = self._module(f"{tap}.conv", lambda: _ConvEmbed(t_shape, s_shape), s_map)
                if conv.shapes != (t_shape, s_shape):
                    raise ValueError(f"embedding {tap!r} maps {conv.shapes[0]} -> "
                                     f"{conv.shapes[1]}; got {t_shape} -> {s_shape}")
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
        return (self._linear(f"{tap}.student", d, k, s)(s),
                self._linear(f"{tap}.teacher", d_t, k, t)(t))

    def forward(self, ctx: RegContext) -> torch.Tensor:
        from harness.transfer.warm import enabled

        on = enabled(self.warm_start, self.plan, self.solver)
        total = 0
        for tap in self.taps:
            # t is detached before its embedding: the teacher network never gets a gradient
            s, t = self._pair(ctx, tap)
            warm = _warm_params(ctx, tap, on, s.shape[0], t.shape[0])  # the examples: n x n
            res = transport(s, t, "samples", self.cost, self.plan,
                            {"grad": PAPER_GRAD, **self.solver, **warm})
            _log_solve(ctx.stats, tap, res)
            _keep_potentials(ctx, tap, on, res)
            total = total + res.value
        return self.alpha * total


_SAMPLES = dict(needs_teacher=True, taps=STAGES, trainable=True, paper="lohit2020")
register_regularizer(
    "ot_samples_ipot", **_SAMPLES, aliases=("ipot",), plan="ipot",
    # lohit2020 §4.1: "beta = 20 ... N = 50", Alg. 1 with G = exp(-C / beta): absolute beta
    solver_params={"beta": 20.0, "max_iter": 50, "gap": 0.0, "relative": False},
    params={"alpha": 0.9, "taps": STAGES, "cost": "cosine", "embed": "teacher", "embed_dim": 128,
            "warm_start": "auto"},
    description="lohit2020 IPOT loss: OT between the batch's examples, cosine cost, 4 stages",
)(_SamplesOT)
register_regularizer(
    "ot_samples_remd", **_SAMPLES, aliases=("remd",), plan="remd",
    params={"alpha": 0.9, "taps": STAGES, "cost": "cosine", "embed": "teacher", "embed_dim": 128,
            "warm_start": "auto"},
    description="lohit2020 REMD loss (Eq. 8): relaxed EMD between the batch's examples, 4 stages",
)(_SamplesOT)


# --------------------------------------------------------------------------- lu2017: JTLN


JTLN_ENTROPIES = ("absolute", "relative")


def _jtln_solve(source_logits: torch.Tensor, target_logits: torch.Tensor, label_cost: torch.Tensor,
                solver: dict[str, Any], entropy: str = "absolute") -> tuple[torch.Tensor, OTResult]:
    """Per-example OT losses ``(n,)`` between the two heads' softmax outputs, with lu2017's
    gradient, and the solver's result (diagnostics)."""
    if entropy not in JTLN_ENTROPIES:
        raise ValueError(f"jtln entropy must be one of {JTLN_ENTROPIES}; got {entropy!r}")
    if source_logits.dim() != 2 or target_logits.dim() != 2 or \
            source_logits.shape[0] != target_logits.shape[0]:
        raise ValueError(f"source and target logits must be (n, K_src) and (n, K_tgt); got "
                         f"{tuple(source_logits.shape)} and {tuple(target_logits.shape)}")
    n, k_src = source_logits.shape
    k_tgt = target_logits.shape[1]
    M = torch.as_tensor(label_cost).to(target_logits)
    if M.shape != (k_src, k_tgt):
        raise ValueError(f"label cost must be (K_src, K_tgt) = ({k_src}, {k_tgt}); got "
                         f"{tuple(M.shape)}")
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
    value = res.value.detach() + (alpha * (mu - mu.detach())).sum(-1) + \
        (beta * (nu - nu.detach())).sum(-1)
    return value, res


def jtln_loss(source_logits: torch.Tensor, target_logits: torch.Tensor, label_cost: torch.Tensor,
              *, reg: float = 0.05, entropy: str = "absolute",
              **solver_params: Any) -> torch.Tensor:
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
    "jtln", needs_source_head=True, plan="sinkhorn",
    params={"alpha": 1.0, "label_cost": None, "entropy": "absolute"},
    solver_params={"reg": 0.05, "gap": 0.0},
    paper="lu2017 Eq. 3-11",
    description="lu2017 JTLN: OT loss between the source and target heads' softmax outputs")
def _jtln(ctx: RegContext, *, alpha: float, label_cost, entropy: str, plan: str,
          solver: dict[str, Any]) -> torch.Tensor:
    """``alpha * mean_i l_ot(h_s(x_i), h_t(x_i))`` (lu2017 Eq. 4, weight lambda_ot)."""
    if entropy not in JTLN_ENTROPIES:
        raise ValueError(f"jtln entropy must be one of {JTLN_ENTROPIES}; got {entropy!r}")
    if label_cost is None:
        raise ValueError("jtln needs label_cost=M of shape (K_src, K_tgt); build it with "
                         "label_cost_mkmmd(...) or label_cost_ot(...)")
    if ctx.source_logits is None or ctx.logits is None:
        raise ValueError("jtln needs ctx.source_logits (source head on the target batch) and "
                         "ctx.logits (target head)")
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
        raise ValueError(f"{side} labels have shape {tuple(labels.shape)}; expected "
                         f"({features.shape[0]},)")
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


def label_cost_mkmmd(source_features: torch.Tensor, source_labels: torch.Tensor,
                     target_features: torch.Tensor, target_labels: torch.Tensor, *,
                     bandwidths: Iterable[float] | None = None, estimator: str = "quadratic",
                     n_source_classes: int | None = None,
                     n_target_classes: int | None = None) -> torch.Tensor:
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
            raise ValueError(f"MMD needs 2 examples per class or more; {side} classes "
                             f"{small} have one")
    if bandwidths is None:
        med = _median_sqdist(torch.cat([xs, xt]))
        sig2 = torch.tensor([med * 2.0 ** j for j in range(-2, 3)], dtype=torch.float64)
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
                a1, a2, b1, b2 = a[0:2 * h:2].double(), a[1:2 * h:2].double(), \
                    b[0:2 * h:2].double(), b[1:2 * h:2].double()
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


def label_cost_ot(source_features: torch.Tensor, source_labels: torch.Tensor,
                  target_features: torch.Tensor, target_labels: torch.Tensor, *,
                  cost: str = "sqeuclidean", method: str = "sinkhorn",
                  n_source_classes: int | None = None, n_target_classes: int | None = None,
                  **solver_params: Any) -> torch.Tensor:
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
        raise ValueError(f"label_cost must be 'mkmmd', 'ot' or a mapping with 'kind'; got "
                         f"{spec!r}")
    if kind not in LABEL_COSTS:
        raise ValueError(f"label_cost kind {kind!r}: expected one of {LABEL_COSTS}")
    fn = label_cost_mkmmd if kind == "mkmmd" else label_cost_ot
    named = {k for k, p in inspect.signature(fn).parameters.items()
             if p.kind == p.KEYWORD_ONLY} - {"n_source_classes", "n_target_classes"}
    if kind == "mkmmd":
        bad = sorted(set(options) - named)
        if bad:
            raise ValueError(f"label_cost mkmmd takes no {bad}; it takes {sorted(named)}")
        if options.get("estimator", "quadratic") not in ("quadratic", "linear"):
            raise ValueError(f"label_cost estimator must be 'quadratic' or 'linear' (lu2017 "
                             f"Eq. 14); got {options['estimator']!r}")
    else:
        method = get_method(options.get("method", "sinkhorn"))
        bad = sorted(set(options) - named - set(method.params))
        if bad:
            raise ValueError(f"label_cost ot ({method.name}) takes no {bad}; it takes "
                             f"{sorted(named | set(method.params))}")
    return kind, options


# --------------------------------------------------------------------------- shared with batching
# harness.training.batched solves the OT terms of K stacked members in one batched call: it
# recognises these terms and logs their solves as a single member's call does.
omega_term = _omega
SamplesOTTerm = _SamplesOT
log_solve = _log_solve
