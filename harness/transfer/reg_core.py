"""The regularizer registry, the step context and the builder: :func:`build_regularizer` turns a
spec (``"omega_p+kd"``) and its hyper-parameters into a :class:`Regularizer`. The terms live in
:mod:`harness.transfer.reg_terms` (li2020, lohit2020, KD, L2-SP) and
:mod:`harness.transfer.reg_jtln` (lu2017); :mod:`harness.transfer.regularizers` imports all three.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from solvers import get_method
from solvers.registry import Registry, did_you_mean

__all__ = [
    "RegContext",
    "RegularizerInfo",
    "Regularizer",
    "REGULARIZERS",
    "register_regularizer",
    "get_regularizer",
    "all_regularizers",
    "available_regularizers",
    "build_regularizer",
]


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
        Tapped activations by tap name (:class:`harness.transfer.taps.Taps`), ``(n, d)`` or conv
        maps.
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


def _info(name: str, factory: Callable[..., Any], **capabilities: Any) -> RegularizerInfo:
    info = RegularizerInfo(name=name, factory=factory, **capabilities)
    if "taps" in info.params and info.params["taps"] != info.taps:
        raise ValueError(f"regularizer {name!r}: params['taps'] must equal taps")
    return info


#: The regularizers, by name and alias (installed plugins: entry point group
#: ``otransfer.regularizers``). Import names from :mod:`harness.transfer.regularizers`, whose
#: import registers the built-in terms.
REGULARIZERS: Registry[RegularizerInfo] = Registry(
    "regularizer", make=_info, entry_points="otransfer.regularizers"
)


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
    return REGULARIZERS.register(name, **capabilities)


def get_regularizer(name: str) -> RegularizerInfo:
    """Look up a regularizer by name or alias (case and surrounding blanks forgiven: the
    papers' "REMD", "KD"); an unknown name raises with the close matches."""
    return REGULARIZERS.get(name)


def all_regularizers() -> dict[str, RegularizerInfo]:
    """Every registered regularizer, in registration order."""
    return dict(REGULARIZERS.items())


def available_regularizers(**flags: Any) -> list[str]:
    """Names of the regularizers whose capabilities match ``flags``.

    Examples
    --------
    >>> from harness.transfer.regularizers import available_regularizers
    >>> available_regularizers(needs_teacher=False)
    ['none', 'l2', 'l2sp', 'jtln']
    """
    return REGULARIZERS.names(**flags)


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
            warm = {k[len(head) :]: v for k, v in ctx.warm.items() if k.startswith(head)}
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

        return " + ".join(
            f"{n}({', '.join(f'{k}={short(v)}' for k, v in p.items())})"
            for n, p in self.params.items()
        )


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
            raise ValueError(
                f"parameter {key!r} is accepted by several terms of {spec!r}; write "
                f"{' or '.join(repr(f'{t}.{key}') for t in takers)}"
            )
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
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or not math.isfinite(v)
            or v < low
            or (v == low and not closed)
        ):
            need = f">= {low:g}" if closed else f"> {low:g}"
            raise ValueError(f"{term}.{key} must be a finite number {need}; got {v!r}")


def _unknown(key: str, accepted: Mapping[str, Mapping[str, Any]], spec: str):
    """Raise for ``key``, suggesting among the parameters each term accepts with its plan."""
    known = sorted(
        {f"{name}.{k}" for name, acc in accepted.items() for k in acc}
        | {k for acc in accepted.values() for k in acc}
    )
    hint = did_you_mean(key, known)
    raise ValueError(
        f"unknown parameter {key!r} for regularizer {spec!r}{hint} "
        f"Accepted: {', '.join(k for k in known if '.' in k)}"
    )
