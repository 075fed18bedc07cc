"""``solve`` and ``solve_sample``: one contract in front of every registered method."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch

from ._costs import COSTS, cost_matrix
from ._envelope import attach
from ._params import check_params, check_warmstart
from ._registry import MethodInfo, get_method
from ._result import OTResult

__all__ = ["solve", "solve_sample"]


def _as_tensor(v: Any, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """A tensor as given; anything else (NumPy arrays, nested lists) converted as POT does:
    integer and boolean data to float64 (``16777217`` survives; float32 would round it), floats
    in their own precision. ``like`` (weights) sets dtype and device."""
    if isinstance(v, torch.Tensor):
        t = v
    else:
        try:
            arr = np.asarray(v)
            if arr.dtype.kind in "biu":
                arr = arr.astype(np.float64)
            t = torch.as_tensor(arr)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(
                f"{name} must be a tensor or an array of numbers; got "
                f"{type(v).__name__} ({str(exc).splitlines()[0][:80]})"
            ) from None
    if like is not None:
        if t.is_complex():
            raise ValueError(f"{name} is complex ({t.dtype}): OT needs real numbers")
        return t.to(dtype=like.dtype, device=like.device)
    return t


def _check_float(name: str, t: torch.Tensor) -> None:
    if t.is_complex():
        raise ValueError(f"{name} is complex ({t.dtype}): OT needs real numbers")
    if not t.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor; got {t.dtype}: convert it "
            f"first (.double() or .float())"
        )


#: Total masses outside [MASS_LOW, MASS_HIGH] are rescaled to 1 for the solve (see solve).
MASS_LOW, MASS_HIGH = 1e-3, 1e3
#: Costs whose largest magnitude lies outside [COST_LOW, COST_HIGH] are solved divided by it
#: (scale-free methods only: exact, or reg / beta relative to the cost's range).
COST_LOW, COST_HIGH = 1e-20, 1e20


def _check_weights(
    w: torch.Tensor | None, size: int, batch: tuple[int, ...], name: str, like: torch.Tensor
) -> torch.Tensor:
    if w is None:
        return torch.full((*batch, size), 1.0 / size, dtype=like.dtype, device=like.device)
    w = _as_tensor(w, f"weights {name}", like)
    if w.shape != (*batch, size) and w.shape != (size,):
        raise ValueError(
            f"weights {name} have shape {tuple(w.shape)}; expected ({size},)"
            + (f" or {(*batch, size)}" if batch else "")
        )
    if not torch.isfinite(w).all():
        raise ValueError(f"weights {name} contain non-finite values")
    if (w < 0).any():
        raise ValueError(f"weights {name} contain negative values (min {w.min().item():.3g})")
    if (w.sum(-1) <= 0).any():
        raise ValueError(f"weights {name} have zero total mass")
    return w.expand(*batch, size)


def _check_problem(info: MethodInfo, C: torch.Tensor, a, b):
    """Validate the problem; return the weights (uniform when omitted) and ``(min C, max C)``."""
    shape, device = C.shape, C.device.type  # read once: each tensor attribute costs ~0.5 us
    if len(shape) not in (2, 3):
        raise ValueError(f"cost must have shape (n, m) or (B, n, m); got {tuple(shape)}")
    if device == "meta":
        raise ValueError("cost is a meta tensor (a shape without data): nothing to solve")
    if not C.is_floating_point():  # complex is not floating point either
        _check_float("cost", C)
    n, m = shape[-2:]
    if n == 0 or m == 0 or (len(shape) == 3 and shape[0] == 0):
        raise ValueError(f"empty OT problem: cost has shape {tuple(shape)}")
    # one pass for both: NaN and inf propagate into min and max (the largest magnitude then
    # sets the cost's scale, see _prepare)
    lo_t, hi_t = torch.aminmax(C.detach() if C.requires_grad else C)
    lo, hi = float(lo_t), float(hi_t)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = (~torch.isfinite(C)).sum().item()
        raise ValueError(f"cost matrix has {bad} non-finite entries (NaN or inf)")
    if info.square_only and n != m:
        raise ValueError(f"method {info.name!r} needs a square problem (n == m); got {n} x {m}")
    if device not in info.devices:
        raise ValueError(f"method {info.name!r} does not run on {device}")
    batch = tuple(shape[:-2])
    if a is None and b is None and n == m:  # uniform, unit mass: one tensor for both (read only)
        a = b = _check_weights(None, n, batch, "a", C)
        return a, b, (lo, hi)
    given = a is not None or b is not None
    a = _check_weights(a, n, batch, "a", C)
    b = _check_weights(b, m, batch, "b", C)
    if given:  # the default weights are uniform with unit mass: nothing to check
        _check_masses(info, a, b)
    return a, b, (lo, hi)


def _check_masses(info: MethodInfo, a: torch.Tensor, b: torch.Tensor) -> None:
    ma, mb = a.sum(-1), b.sum(-1)
    if not torch.allclose(ma, mb, rtol=1e-5, atol=1e-7):
        raise ValueError(
            f"unequal total mass on a balanced problem: sum(a)={ma.max().item():.6g}, "
            f"sum(b)={mb.max().item():.6g}"
        )
    if info.uniform_only:
        if not (
            torch.allclose(a, a[..., :1].expand_as(a))
            and torch.allclose(b, b[..., :1].expand_as(b))
        ):
            raise ValueError(f"method {info.name!r} needs uniform marginals")


def _resolve_params(info: MethodInfo, params: dict[str, Any]) -> dict[str, Any]:
    unknown = set(params) - set(info.params)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {sorted(unknown)} for method {info.name!r}; it accepts "
            f"{sorted(info.params) or 'none'}"
        )
    if not info.is_available:
        raise ValueError(
            f"method {info.name!r} needs the optional package(s) "
            f"{', '.join(info.requires)}: pip install 'otransfer[full]'"
        )
    if not params:  # the registered defaults: valid by construction, nothing to check
        return dict(info.params)
    return {**info.params, **check_params(info.name, dict(info.params), params)}


def _marginal_error(plan: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    ea = (plan.sum(-1) - a).abs().sum(-1)
    eb = (plan.sum(-2) - b).abs().sum(-1)
    return float(torch.maximum(ea, eb).max())


def _finish(info: MethodInfo, out: dict, value: torch.Tensor, a, b, params) -> OTResult:
    plan = out.get("plan")
    err = out.get("marginal_error")
    if err is None:  # in the precision the method solved in (float32 for half input)
        err = (
            math.nan
            if plan is None
            else _marginal_error(
                plan.detach(), a.detach().to(plan.dtype), b.detach().to(plan.dtype)
            )
        )
    if plan is not None:
        plan = _plain(plan, value.dtype)
    pots = out.get("potentials")
    if pots is not None:
        pots = tuple(p.detach().to(value.dtype) for p in pots)
    v = value.detach()  # float() of a tensor that requires grad warns in torch >= 2.14
    if not (math.isfinite(float(v)) if v.dim() == 0 else bool(torch.isfinite(v).all())):
        # Never a silent NaN: report it as a non-converged solve.
        out["converged"] = False
    return OTResult(
        value=value,
        plan=plan,
        potentials=pots,
        n_iter=int(out.get("n_iter", 0)),
        converged=bool(out.get("converged", True)),
        marginal_error=float(err),
        method=info.name,
        params=params,
        extras=out.get("extras", {}),
    )


#: ``grad=`` of solve / solve_sample: the derivative of the returned value, or Danskin's.
GRADS = ("auto", "envelope")


def _check_grad(grad: Any) -> None:
    if grad not in GRADS:
        raise ValueError(f"grad={grad!r}: choose one of {GRADS}")


def solve(
    C, a=None, b=None, *, method: str = "ipot", grad: str = "auto", warmstart=None, **params: Any
) -> OTResult:
    """Solve the optimal-transport problem with cost ``C`` and marginals ``a``, ``b``.

    Parameters
    ----------
    C : torch.Tensor
        Cost of shape ``(n, m)``, or ``(B, n, m)`` for B independent problems (one per layer,
        say). Must be finite.
    a, b : torch.Tensor, optional
        Non-negative weights of shapes ``(n,)``, ``(m,)`` (or batched); uniform when omitted.
        Total masses must agree (balanced OT).
    method : str
        A registered method, see :func:`solvers.available`.
    grad : {"auto", "envelope"}
        ``"auto"``: the derivative of the returned value. For exact and certified results
        that is the envelope (``dvalue/dC = plan``, ``dvalue/da``, ``dvalue/db`` = centred
        potentials: the gradient of exact OT, first order); for an entropic plan at ``gap=0``
        (``sinkhorn``, ``pot_sinkhorn``) implicit differentiation of ``<P_eps, C>``; for
        ``ipot`` at ``gap=0`` the derivative of its N steps. ``"envelope"``: Danskin's
        gradient whatever the solver did, plan and potentials held fixed (li2020 §3.1).
    warmstart : (f, g), optional
        Initial dual potentials, shapes ``(n,)``, ``(m,)`` (batched: ``(B, n)``, ``(B, m)``), in
        the convention of the returned ``.potentials`` (pass a previous result's): the methods
        with ``warmstart=True`` in the registry (``sinkhorn``, ``pot_sinkhorn``, ``ipot``) start
        from them instead of a cold start, as POT's ``warmstart`` and OTT's ``init`` do.
        Tolerance-stopped solves return the same answer to their tolerance (certified as a cold
        one); see each method for what it does with them.
    **params
        The method's parameters (``reg``, ``max_iter``, ``tol``, ...); unknown ones raise.

    Returns
    -------
    OTResult
        ``value = <P, C>``, differentiable as ``grad`` says.

    Notes
    -----
    ``min_{P >= 0, P 1 = a, P^T 1 = b} <P, C>`` (li2020 Eq. 4; lohit2020 Eq. 2).
    """
    info = get_method(method)
    if info.input != "cost":
        raise ValueError(
            f"method {method!r} works on points, not on a cost matrix; "
            f"use solve_sample(x, y, method={method!r})"
        )
    _check_grad(grad)
    problem = _problem(info, C, a, b, _resolve_params(info, params), warmstart)
    out = _run(problem)
    _scale_back(out, problem.mass, problem.c_scale)
    if (problem.a.requires_grad or problem.b.requires_grad) and out.get("potentials") is None:
        return _mass_gradient_fallback(problem, grad)
    return _wrap(problem, out, grad)


class Problem(NamedTuple):
    """A checked problem, made once by :func:`_problem`: the caller's tensors (the value's
    gradient flows to them) and the detached ones the method solves."""

    info: MethodInfo
    params: dict[str, Any]
    C: torch.Tensor  # as given (a tensor), checked
    a: torch.Tensor  # weights, uniform where omitted, with the batch shape
    b: torch.Tensor
    batch: tuple[int, ...]
    cost_range: tuple[float, float]  # (min C, max C)
    C_in: torch.Tensor  # detached, in the working dtype, at unit scale where needed
    a_in: torch.Tensor  # detached, at unit mass where needed
    b_in: torch.Tensor
    mass: torch.Tensor | None  # the masses a_in, b_in were divided by
    c_scale: float | None  # the scale C_in was divided by
    warm: tuple[torch.Tensor, ...] | None  # the warm start in C_in's units


def _problem(info: MethodInfo, C, a, b, params: dict[str, Any], warmstart) -> Problem:
    """Validate the problem and bring it to the form the method solves (see :func:`_prepare`)."""
    C = _as_tensor(C, "cost")
    default_mass = a is None and b is None
    a, b, (lo, hi) = _check_problem(info, C, a, b)
    C_in, a_in, b_in, mass, c_scale = _prepare(C, a, b, params, max(abs(lo), abs(hi)), default_mass)
    warm = _warm(info, warmstart, C_in, c_scale)
    batch = tuple(C.shape[:-2])
    return Problem(info, params, C, a, b, batch, (lo, hi), C_in, a_in, b_in, mass, c_scale, warm)


def _run(p: Problem) -> dict:
    """The method's output on the prepared problem; one call per problem where the method
    takes no batch."""
    info, params, warm = p.info, p.params, p.warm
    if p.batch and not info.batched:
        return _stack(
            [
                info.fn(
                    p.C_in[i],
                    p.a_in[i],
                    p.b_in[i],
                    **params,
                    **({"warmstart": (warm[0][i], warm[1][i])} if warm else {}),
                )
                for i in range(p.batch[0])
            ]
        )
    if info.cost_range and p.c_scale is None and not p.batch and not warm:
        # C_in holds C's values (a wider dtype at most): its range is the one checked
        return info.fn(p.C_in, p.a_in, p.b_in, cost_range=p.cost_range, **params)
    return info.fn(p.C_in, p.a_in, p.b_in, **params, **({"warmstart": warm} if warm else {}))


def _mass_gradient_fallback(p: Problem, grad: str) -> OTResult:
    """A gradient with respect to the masses needs dual potentials: ``exact`` gets them from
    the network simplex (the same optimum); any other method without them raises."""
    if p.info.name == "exact":
        return solve(p.C, p.a, p.b, method="emd", grad=grad)
    raise ValueError(
        f"method {p.info.name!r} returns no dual potentials, so no gradient with "
        f"respect to the masses a, b: use 'emd' or 'exact' (the LP duals) or a "
        f"scaling method (sinkhorn, ipot), or pass a, b without requires_grad"
    )


def _wrap(p: Problem, out: dict, grad: str) -> OTResult:
    """The result: the value differentiable as ``grad`` says."""
    if grad == "envelope":
        out.pop("value_fn", None)
    return _finish(p.info, out, _value(out, p.C, p.a, p.b), p.a, p.b, p.params)


def _warm(info: MethodInfo, warmstart, C_in: torch.Tensor, c_scale: float | None):
    """The checked ``warmstart`` in the units and dtype the method solves in (``None``: cold)."""
    if warmstart is None:
        return None
    if not info.warmstart:
        raise ValueError(
            f"method {info.name!r} takes no warmstart; drop it, or use a method "
            f"that does: sinkhorn, pot_sinkhorn, ipot"
        )
    f, g = check_warmstart(info.name, warmstart, tuple(C_in.shape[:-2]), *C_in.shape[-2:])
    scale = 1.0 if c_scale is None else 1.0 / c_scale  # potentials scale with the cost
    return tuple(p.to(device=C_in.device, dtype=C_in.dtype) * scale for p in (f, g))


#: Half precision is solved in float32 (no sparse matvec, and exp(-17) already underflows
#: float16), its results cast back: the value keeps the caller's dtype.
HALF = (torch.float16, torch.bfloat16)


def _prepare(
    C: torch.Tensor, a: torch.Tensor, b: torch.Tensor, params, cmax: float, default_mass: bool
):
    """The detached problem the method solves: unit mass, unit cost scale where needed."""
    work = torch.float32 if C.dtype in HALF else C.dtype
    # masses far from 1 (1e-30: underflow in the scaling iterations) are solved at unit mass:
    # OT(m a, m b) = m OT(a, b), and the plan scales by m (the Sinkhorn fixed point too)
    mass = None
    if not default_mass:
        mass = a.detach().sum(-1)
        mass = mass if bool(((mass < MASS_LOW) | (mass > MASS_HIGH)).any()) else None
    a_in = _plain(a, work)
    b_in = a_in if b is a else _plain(b, work)
    if mass is not None:
        a_in, b_in = a_in / mass[..., None].to(work), b_in / mass[..., None].to(work)
    # costs of subnormal or huge magnitude (1e-310, 1e35) are solved at unit scale: the plan of
    # a scale-free method (exact, or reg/beta relative to the range) does not change with it
    C_in, c_scale = _plain(C, work), None
    scale_free = params.get("relative") is True or not any(
        k in params for k in ("reg", "beta", "blur", "eps")
    )
    if 0 < cmax and not COST_LOW <= cmax <= COST_HIGH and scale_free:
        c_scale = cmax
        C_in = C_in / cmax
    return C_in, a_in, b_in, mass, c_scale


def _plain(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t.detach().to(dtype)``, without the calls that would change nothing (each costs
    microseconds of the wrapper's overhead)."""
    if t.requires_grad:
        t = t.detach()
    return t if t.dtype == dtype else t.to(dtype)


def _scale_back(out: dict, mass: torch.Tensor | None, c_scale: float | None) -> None:
    if c_scale is not None:
        if out.get("potentials") is not None:
            out["potentials"] = tuple(p * c_scale for p in out["potentials"])
        for key in ("warm_f", "warm_g"):  # potentials too (sinkhorn's warm-start duals)
            if key in out.get("extras", {}):
                out["extras"][key] = out["extras"][key] * c_scale
        if out.get("plan") is None and out.get("value") is not None:
            out["value"] = out["value"] * c_scale
    if mass is not None:
        if out.get("plan") is not None:
            out["plan"] = out["plan"] * mass[..., None, None].to(out["plan"].dtype)
        elif out.get("value") is not None:
            out["value"] = out["value"] * mass.to(torch.as_tensor(out["value"]).dtype)


def _value(out: dict, C: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The differentiable value: ``<P, C>`` with the envelope gradient, or the method's own
    ``value_fn`` where the envelope is not the gradient of what is returned."""
    plan = out.get("plan")
    if plan is None:
        return out["value"]
    plan = _plain(plan, C.dtype)
    pots = out.get("potentials")
    if pots is not None:
        pots = tuple(p.to(C.dtype) for p in pots)
    if out.get("value_fn") is not None:
        return out["value_fn"](C, a, b, plan, pots)
    return attach(C, a, b, plan, pots)


def _stack(outs: list[dict]) -> dict:
    """One batched output from per-problem ones: every extra follows the batch shape of the
    value, ``(B, ...)`` (numbers and tensors stacked, anything else a list of B)."""
    out: dict = {
        "plan": torch.stack([o["plan"] for o in outs]) if outs[0].get("plan") is not None else None,
        "n_iter": max(int(o.get("n_iter", 0)) for o in outs),
        "converged": all(o.get("converged", True) for o in outs),
        "extras": _stack_extras([o.get("extras", {}) for o in outs]),
    }
    if outs[0].get("potentials") is not None:
        out["potentials"] = tuple(torch.stack([o["potentials"][k] for o in outs]) for k in (0, 1))
    fns = [o.get("value_fn") for o in outs]
    if fns[0] is not None:

        def value_fn(C, a, b, plan, pots):
            return torch.stack(
                [
                    fn(C[i], a[i], b[i], plan[i], (pots[0][i], pots[1][i]))
                    for i, fn in enumerate(fns)
                ]
            )

        out["value_fn"] = value_fn
    return out


def _stack_extras(extras: list[dict]) -> dict:
    merged: dict = {}
    for key in extras[0]:
        vals = [e.get(key) for e in extras]
        tensors = [v for v in vals if isinstance(v, torch.Tensor)]
        if len(tensors) == len(vals) and len({t.shape for t in tensors}) == 1:
            merged[key] = torch.stack(tensors)
        elif all(isinstance(v, (int, float)) for v in vals):  # bool too
            merged[key] = torch.tensor(vals)
        else:
            merged[key] = vals
    return merged


def solve_sample(
    x,
    y,
    a=None,
    b=None,
    *,
    cost: str = "euclidean",
    method: str = "ipot",
    grad: str = "auto",
    warmstart=None,
    **params: Any,
) -> OTResult:
    """Solve OT between the point clouds ``x`` (n, k) and ``y`` (m, k).

    Cost methods build ``C = cost(x, y)`` and call :func:`solve`, so gradients flow to ``x`` and
    ``y`` through ``C`` (as ``grad`` says); point methods (``geomloss``, ``keops``) never
    materialise ``C``.

    Parameters
    ----------
    x, y : torch.Tensor
        Points of shapes ``(n, k)``, ``(m, k)`` (or ``(B, n, k)``, ``(B, m, k)``).
    a, b : torch.Tensor, optional
        Weights, uniform when omitted.
    cost : {"euclidean", "sqeuclidean", "cosine"}
    method : str
        A registered method.
    grad : {"auto", "envelope"}
        As for :func:`solve`.
    warmstart : (f, g), optional
        As for :func:`solve` (cost methods only).
    """
    if cost not in COSTS:
        raise ValueError(f"unknown cost {cost!r}; choose one of {sorted(COSTS)}")
    _check_grad(grad)
    x, y = _as_tensor(x, "points x"), _as_tensor(y, "points y")
    if (
        x.dim() not in (2, 3)
        or y.dim() != x.dim()
        or x.shape[-1] != y.shape[-1]
        or x.shape[:-2] != y.shape[:-2]
    ):
        raise ValueError(
            f"points must have shapes (n, k) and (m, k) with the same k; got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.shape[-2] == 0 or y.shape[-2] == 0 or x.shape[-1] == 0:
        raise ValueError(f"empty point cloud: {tuple(x.shape)} vs {tuple(y.shape)}")
    # integer (and boolean) coordinates are cast to float64, exactly (< 2**53), as POT casts
    # integer arrays; GeomLoss and KeOps fail deep inside on them
    x, y = (
        p.to(torch.float64) if not (p.is_floating_point() or p.is_complex()) else p for p in (x, y)
    )
    for name, p in (("x", x), ("y", y)):
        _check_float(f"points {name}", p)
        if not torch.isfinite(p).all():
            raise ValueError(f"points {name} contain non-finite values")
    info = get_method(method)
    y = y.to(x.dtype)  # as for the weights: x sets the dtype (cost methods too, not only points)
    if info.input == "cost":
        C = cost_matrix(x, y, cost)
        if not torch.isfinite(C.detach().sum()) and not bool(torch.isfinite(C).all()):
            big = float(torch.maximum(x.detach().abs().amax(), y.detach().abs().amax()))
            raise ValueError(
                f"the {cost} cost between finite points overflowed {x.dtype} "
                f"to non-finite entries (|coordinates| up to {big:.3g}): rescale "
                f"the points or use float64"
            )
        return solve(C, a, b, method=method, grad=grad, warmstart=warmstart, **params)
    if warmstart is not None:
        raise ValueError(
            f"method {method!r} takes no warmstart; drop it, or use a method "
            f"that does: sinkhorn, pot_sinkhorn, ipot"
        )
    params = _resolve_params(info, params)
    a, b = _point_weights(info, x, y, a, b)
    if x.dtype in HALF:  # solved in float32, the value cast back (differentiably)
        out = info.fn(x.float(), y.float(), a.float(), b.float(), cost=cost, **params)
        return _finish(info, out, out["value"].to(x.dtype), a, b, params)
    out = info.fn(x, y, a, b, cost=cost, **params)
    return _finish(info, out, out["value"], a, b, params)


def _point_weights(info: MethodInfo, x, y, a, b):
    n, m = x.shape[-2], y.shape[-2]
    batch = tuple(x.shape[:-2])
    a = _check_weights(a, n, batch, "a", x)
    b = _check_weights(b, m, batch, "b", x)
    if not torch.allclose(a.sum(-1), b.sum(-1), rtol=1e-5, atol=1e-7):
        raise ValueError(
            "unequal total mass on a balanced problem: "
            f"sum(a)={a.sum(-1).max().item():.6g}, sum(b)={b.sum(-1).max().item():.6g}"
        )
    if x.device.type not in info.devices:
        raise ValueError(f"method {info.name!r} does not run on {x.device.type}")
    return a, b
