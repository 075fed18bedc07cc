"""The stacked pieces of :mod:`harness.training.batched`: K modules of one architecture as
stacked tensors run under ``torch.vmap`` (:class:`Stack`), the OT terms of K members solved in
one batched call (:func:`batched_ot`), and the members' term diagnostics from one backward per
term (:func:`stacked_diagnostics`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Any, Mapping

import torch
from torch import nn
from torch.func import functional_call

from harness.transfer import warm as _warm
from harness.transfer.regularizers import Regularizer
from harness.transfer.taps import Taps

__all__ = [
    "Stack",
    "MemberView",
    "distinct",
    "batched_ot",
    "transport_batched",
    "stacked_diagnostics",
]


class Stack:
    """K modules of one architecture as stacked tensors, run under vmap; the hooks of ``taps``
    go on a template copy (its forward is the modules' forward)."""

    def __init__(self, modules: list[nn.Module], taps: tuple[str, ...], device, grad: bool):
        self.template = copy.deepcopy(modules[0]).to(device)
        self.params = {
            n: torch.stack(
                [dict(m.named_parameters())[n].detach().to(device) for m in modules]
            ).requires_grad_(grad)
            for n, _ in modules[0].named_parameters()
        }
        self.buffers = {
            n: torch.stack([dict(m.named_buffers())[n].to(device) for m in modules])
            for n, _ in modules[0].named_buffers()
        }
        self.taps = Taps(self.template, taps) if taps else None

    def _one(self, params, buffers, x):
        if self.taps is not None:
            self.taps.clear()
        out = functional_call(self.template, (params, buffers), (x,))
        feats = dict(self.taps.features) if self.taps is not None else {}
        return out, feats

    def __call__(self, x: torch.Tensor, params=None, rows: list[int] | None = None):
        """``(K, n, classes)`` logits and ``{tap: (K, n, d)}`` features of the stacked ``x``
        (``rows``: the stacked modules to run, one per row of ``x``; default all, in order)."""
        params = self.params if params is None else params
        buffers = self.buffers
        if rows is not None:
            params = {n: p[rows] for n, p in params.items()}
            buffers = {n: b[rows] for n, b in buffers.items()}
        out = torch.vmap(self._one)(params, buffers, x)
        if self.taps is not None:
            self.taps.clear()
        return out

    def members(self) -> list["MemberView"]:
        """Every member's view of the stacked parameters, sliced by one ``unbind`` per
        parameter (whose backward is one stack, where K ``[k]`` slices cost K zero-filled
        full-size gradients)."""
        rows = {n: p.unbind(0) for n, p in self.params.items()}
        K = len(next(iter(self.params.values())))
        return [MemberView(self.template, {n: r[k] for n, r in rows.items()}) for k in range(K)]

    def close(self):
        if self.taps is not None:
            self.taps.remove()


class MemberView:
    """Member k's parameters (slices of the stacked tensors, in the graph) as the regularizer
    reads them: ``parameters()`` and ``named_parameters()`` (``l2``, ``l2sp``)."""

    def __init__(self, template: nn.Module, params: dict[str, torch.Tensor]):
        self.template, self.params = template, params

    def named_parameters(self):
        return iter(self.params.items())

    def parameters(self):
        return iter(self.params.values())


def distinct(modules: list[nn.Module]) -> tuple[list[nn.Module], list[int]]:
    """The modules with distinct weights (bitwise; buffers too) and each module's index among
    them."""
    unique, index, fingerprints = [], [], []
    for m in modules:
        state = [t.detach() for t in (*m.parameters(), *m.buffers())]
        j = next(
            (
                i
                for i, f in enumerate(fingerprints)
                if len(f) == len(state)
                and all(
                    a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
                    for a, b in zip(f, state, strict=True)
                )
            ),
            None,
        )
        if j is None:
            j = len(unique)
            unique.append(m)
            fingerprints.append(state)
        index.append(j)
    return unique, index


def batched_ot(
    regs: list[Regularizer], name: str, feats, t_feats, ctxs, warm_state: Mapping | None = None
) -> tuple[list, dict] | None:
    """Term ``name`` of every member as one batched solve per tap (``None``: not a term this
    knows, computed member by member instead). Members share the term's plan, cost and taps;
    only alpha differs. Returns the members' values and the solves' potentials by tap,
    ``(K, n)``, ``(K, m)``: one row per member, passed back as ``warm_state`` next step."""
    from harness.transfer.regularizers import SamplesOTTerm, log_solve, omega_term

    terms = [r.terms[name] for r in regs]
    first = terms[0]
    if isinstance(first, SamplesOTTerm):
        keys = [(t.taps, t.cost, t.plan, t.solver, t.warm_start) for t in terms]
        view, (taps, cost, plan, solver, warm_start) = "samples", keys[0]
        alphas = [t.alpha for t in terms]
    elif getattr(first, "fn", None) is omega_term:
        kw = [t.kwargs for t in terms]
        keys = [
            (k["taps"], k["cost"], k["plan"], k["solver"], k.get("warm_start", "auto")) for k in kw
        ]
        view, (taps, cost, plan, solver, warm_start) = "neurons", keys[0]
        alphas = [k["alpha"] for k in kw]
    else:
        return None
    if any(k != keys[0] for k in keys):
        return None
    on = _warm.enabled(warm_start, plan, solver)
    total, new = 0, {}
    for tap in taps:
        s, t = feats[tap], t_feats[tap].detach().to(feats[tap].dtype)
        if view == "neurons":  # li2020 §2.2: a neuron's activations over the batch
            s, t = s.transpose(-1, -2), t.transpose(-1, -2)
        pots = (
            _warm.start(warm_state or {}, tap, s.shape[1], t.shape[1], (s.shape[0],))
            if on
            else None
        )
        res = transport_batched(
            s, t, view, cost, plan, {**solver, **({"warmstart": pots} if pots else {})}
        )
        for k, ctx in enumerate(ctxs):
            log_solve(ctx.stats.setdefault(name, {}), tap, _slice_result(res, k))
        total = total + res.value
        if on and _warm.potentials_of(res) is not None:
            new[tap] = _warm.potentials_of(res)
    return [alphas[k] * total[k] for k in range(len(regs))], new


def transport_batched(s, t, view: str, cost, plan: str, solver) -> Any:
    """:func:`harness.transfer.representation.transport` on ``(K, points, dim)`` clouds (the
    points of the view: neurons or examples), with one member's checks."""
    from harness.transfer.regularizers import PAPER_GRAD
    from harness.transfer.representation import VIEWS, view_points
    from solvers import get_method, solve_sample

    if view == "neurons":  # one member's checks, on its (n, d) activations
        view_points(s[0].transpose(0, 1), t[0].transpose(0, 1), view)
    else:
        view_points(s[0], t[0], view)
    if get_method(plan).square_only and s.shape[1] != t.shape[1]:
        raise ValueError(
            f"plan {plan!r} needs as many student as teacher points; got "
            f"{s.shape[1]} and {t.shape[1]}"
        )
    # the papers' gradient, as the one-model terms ask for it (regularizers.PAPER_GRAD)
    return solve_sample(
        s, t, cost=cost or VIEWS[view], method=plan, **{"grad": PAPER_GRAD, **solver}
    )


def _slice_result(res, k: int):
    plan = res.plan[k] if res.plan is not None else None
    return replace(res, value=res.value[k], plan=plan)


def stacked_diagnostics(
    ce: torch.Tensor, terms: dict[int, dict[str, torch.Tensor]], params: list[torch.Tensor]
) -> dict[int, dict[str, float]]:
    """:func:`harness.training.loop.term_diagnostics` of every member in ``terms`` from one
    backward per term (and one for the CE) of the members' summed values: member k's value
    reaches only its slice ``[k]`` of the stacked parameters, so the slice is its gradient. A
    backward per member and term (K x (1 + terms) backwards of the K-model graph) was 18 % of
    a batched li2020_table4-cpu job."""
    keys = list(terms)
    if not keys:
        return {}

    def norms(values: list[torch.Tensor]) -> list[float]:
        value = torch.stack(values)
        if not value.requires_grad:
            return [0.0] * len(keys)
        grads = [
            g
            for g in torch.autograd.grad(value.sum(), params, retain_graph=True, allow_unused=True)
            if g is not None
        ]
        return [math.sqrt(sum(float(g[k].detach().pow(2).sum()) for g in grads)) for k in keys]

    ce_norm = norms([ce[k] for k in keys])
    out: dict[int, dict[str, float]] = {}
    for k in keys:
        ce_value = float(ce[k].detach())
        out[k] = {
            f"diag/{a}/value_ratio": (float(v.detach()) / ce_value if ce_value else math.inf)
            for a, v in terms[k].items()
        }
    for name in terms[keys[0]]:
        for j, g in enumerate(norms([terms[k][name] for k in keys])):
            out[keys[j]][f"diag/{name}/grad_ratio"] = g / ce_norm[j] if ce_norm[j] else math.inf
    return out
