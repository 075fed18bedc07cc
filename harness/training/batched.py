"""Train K models of one architecture together: one batched forward/backward for K seeds.

The K *members* differ only in their seed (initial weights, data order, data subset) and in
their regularizer's weights (a grid's alpha, KD's tau): their parameters are stacked along a
new leading dimension and run with ``torch.func.functional_call`` under ``torch.vmap``, each
on its own batch (drawn by :func:`harness.training.steps.epoch_loader` for its seed, so each
sees exactly what :func:`harness.training.loop.train` would show it)::

    results = train_batched([Member(model, train_set, val_set, test_set, cfg_seed_s, reg_s,
                                    teacher_s, w0_s) for s in seeds])

Each member's loss is ``CE + sum(its regularizer's terms)`` on its own slice, computed by its
own :class:`~harness.transfer.regularizers.Regularizer` (OT terms of the same plan solved in one
batched call, :func:`solvers.solve_sample` on ``(K, n, d)`` points: IPOT / Sinkhorn / REMD
batched, exact plans one per member); the losses are summed and differentiated once: member
k's parameters only get member k's gradient. ``torch.optim.SGD`` updates element-wise, so one
SGD over the stacked tensors is K independent SGDs (momentum, weight decay, the schedule);
gradient clipping is per member. Each member gets the :class:`TrainResult` that ``train``
returns (history, best validation accuracy, test accuracy), its ``wall_time`` the batched run's
divided by K (the sum of the job times is the CPU time spent). A member whose loss goes
non-finite fails alone, with ``train``'s reason; the others go on.

What cannot be batched exactly raises :class:`NotBatchable` before anything is trained
(:func:`why_not_batchable` says why): batch norm or dropout in the student (running
statistics and random masks under vmap), joint training (a source task), layer-wise rates,
regularizers with learned parameters (embeddings), several processes, resuming a checkpoint.
The caller then trains the members one at a time.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from harness.training import distributed
from harness.training.config import TrainConfig, TrainResult
from harness.training.precision import gpu_options_set
from harness.training.stacked import Stack, batched_ot, distinct, stacked_diagnostics
from harness.training.steps import (
    EpochStats,
    base_lr,
    epoch_loader,
    make_result,
    make_scheduler,
    seed_all,
    step_budget,
)
from harness.transfer import warm as _warm
from harness.transfer.regularizers import RegContext, Regularizer

__all__ = ["Member", "train_batched", "why_not_batchable", "NotBatchable"]

#: config fields that may differ between members (everything else must be equal)
_FREE = {"seed"}


class NotBatchable(ValueError):
    """These members cannot be trained as one batched model (the message says why)."""


@dataclass
class Member:
    """One job of a batched run: what :func:`harness.training.loop.train` would be given."""

    model: nn.Module
    train_set: Any
    val_set: Any
    test_set: Any
    config: TrainConfig
    regularizer: Regularizer | None = None
    teacher: nn.Module | None = None
    initial_weights: Mapping[str, torch.Tensor] | None = None


def _stochastic(model: nn.Module | None) -> str | None:
    if model is None:
        return None
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return f"batch norm ({name}): running statistics under vmap"
        if isinstance(m, nn.modules.dropout._DropoutNd):
            return f"dropout ({name}): random masks differ from one model's stream"
    return None


def _signature(model: nn.Module) -> list:
    return [(n, tuple(p.shape), p.dtype) for n, p in model.named_parameters()] + [
        (n, tuple(b.shape)) for n, b in model.named_buffers()
    ]


def why_not_batchable(members: list[Member]) -> str | None:
    """``None`` when ``members`` train exactly as one batched model, else the reason."""
    if len(members) < 2:
        return "a single model"
    if distributed.world_size() > 1:
        return "several processes (torchrun)"
    first = members[0]
    cfg0 = {k: v for k, v in first.config.to_dict().items() if k not in _FREE}
    if first.config.param_groups:
        return "layer-wise learning rates (param_groups)"
    if gpu := gpu_options_set(first.config):
        return f"GPU options set ({', '.join(gpu)})"
    if first.config.teacher_mode != "eval":
        return "teacher_mode 'train' (the teacher's batch statistics)"
    why = _stochastic(first.model)
    if why:
        return why
    for m in members:
        if {k: v for k, v in m.config.to_dict().items() if k not in _FREE} != cfg0:
            return "the members' train settings differ beyond the seed"
        if _signature(m.model) != _signature(first.model) or type(m.model) is not type(first.model):
            return "the members' architectures differ"
        if (m.teacher is None) != (first.teacher is None) or (
            m.teacher is not None and _signature(m.teacher) != _signature(first.teacher)
        ):
            return "the members' teachers differ in architecture"
        reg, reg0 = m.regularizer, first.regularizer
        if (reg is None) != (reg0 is None) or (
            reg is not None and (reg.names != reg0.names or reg.taps != reg0.taps)
        ):
            return "the members' regularizers differ in their terms or taps"
        if reg is not None and (reg.needs_source_head or list(reg.parameters())):
            return "a regularizer with its own parameters or a source head"
        if reg is not None and any(
            hasattr(t, "building") and any(mode != "none" for mode in t.modes.values())
            for t in reg.terms.values()
        ):
            return "an OT term with learned embeddings (embed is not 'none')"
        if len(m.train_set) != len(first.train_set):
            return "the members' training sets differ in size"
    return None


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def _evaluate(stack: Stack, datasets: list, batch_size: int = 256) -> list[dict | None]:
    """:func:`harness.training.loop.evaluate` of every member on its own dataset (in eval
    mode: the members have no batch norm or dropout); ``None`` where a member has none."""
    from torch.utils.data import DataLoader

    if all(d is None for d in datasets):
        return [None] * len(datasets)
    if any(d is None for d in datasets) or len({len(d) for d in datasets}) > 1:
        raise NotBatchable("the members' evaluation sets differ in size")
    loaders = [
        DataLoader(d, batch_size=batch_size, shuffle=False, generator=torch.Generator())
        for d in datasets
    ]
    K = len(datasets)
    correct, loss_sum, n = torch.zeros(K, dtype=torch.long), [0.0] * K, 0
    device = next(iter(stack.params.values())).device
    for batches in zip(*loaders, strict=False):
        x = torch.stack([b[0] for b in batches]).to(device)
        y = torch.stack([b[1] for b in batches]).to(device)
        if x.dim() == 6:  # (K, n, crops, c, h, w): li2020 A.1's ten crops, mean softmax
            nb, crops = x.shape[1:3]
            probs = F.softmax(stack(x.flatten(1, 2))[0], -1).view(K, nb, crops, -1).mean(2)
            logits = probs.clamp_min(1e-12).log()
        else:
            logits = stack(x)[0]
        for k in range(K):
            loss_sum[k] += float(F.cross_entropy(logits[k], y[k], reduction="sum"))
        correct += (logits.argmax(-1) == y).sum(1).cpu()
        n += y.shape[1]
    if n == 0:
        raise ValueError("evaluate: the dataset is empty")
    return [{"accuracy": int(correct[k]) / n, "loss": loss_sum[k] / n} for k in range(K)]


# --------------------------------------------------------------------------- the run


class _BatchedRun:
    """One call of :func:`train_batched`: the stacked student (and teacher), the optimiser
    over the stacked tensors, and each member's counters and history (its state by value)."""

    def __init__(self, members: list[Member]):
        self.t_start = time.perf_counter()
        self.members = members
        self.K = len(members)
        cfg = self.cfg = members[0].config
        self.device = torch.device(cfg.device)
        seed_all(cfg.seed)  # as train(): nothing below draws from it (no dropout, no embeddings)
        self.regs = [m.regularizer for m in members]
        reg0 = self.regs[0]
        taps = tuple(reg0.taps) if reg0 is not None else ()
        self.needs_teacher = reg0 is not None and reg0.needs_teacher
        for m in members:
            if m.regularizer is not None:
                m.regularizer.to(self.device)
        self.student = Stack([m.model for m in members], taps, self.device, grad=True)
        # one stacked copy per distinct teacher (members of one seed share theirs: a grid's
        # points); self.teacher_of[k] is member k's row in it
        self.teacher, self.teacher_of = None, []
        if self.needs_teacher:
            unique, self.teacher_of = distinct([m.teacher for m in members])
            self.teacher = Stack([t.eval() for t in unique], taps, self.device, grad=False)
        self.w0 = [
            {k: v.detach().to(self.device) for k, v in m.initial_weights.items()}
            if m.initial_weights
            else None
            for m in members
        ]
        self.params = list(self.student.params.values())
        self.opt = torch.optim.SGD(
            self.params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        self.sched = make_scheduler(self.opt, cfg)
        self.budget = step_budget(members[0].train_set, cfg)
        self.step = 0
        self.histories = [{"epochs": [], "steps": defaultdict(list)} for _ in members]
        self.best = [None] * self.K
        self.failed: dict[int, TrainResult] = {}
        # the last step's batched OT potentials by "<term>/<tap>", (K, n), (K, m): one row per
        # member (harness.transfer.warm); reset when a member fails (the stack's shape changes)
        self.warm: dict = {}

    @property
    def active(self) -> list[int]:
        return [k for k in range(self.K) if k not in self.failed]

    def fail(self, k: int, reason: str) -> None:
        """Member k stops here with ``train``'s failed result (its history so far)."""
        h = self.histories[k]
        hist = {"epochs": list(h["epochs"]), "steps": {a: list(b) for a, b in h["steps"].items()}}
        self.failed[k] = make_result(
            "failed",
            reason,
            hist,
            self.best[k],
            None,
            time.perf_counter() - self.t_start,
            self.step,
            self.step,
        )

    # ---- one epoch
    def train_epoch(self, epoch: int) -> list[EpochStats]:
        """The epoch's steps; returns each member's logged values and term diagnostics."""
        stats = [EpochStats() for _ in self.members]
        loaders = [epoch_loader(m.train_set, m.config, epoch) for m in self.members]
        for i, batches in enumerate(zip(*loaders, strict=False)):
            if self.step >= self.budget.total_steps or not self.active:
                break
            x = torch.stack([b[0] for b in batches]).to(self.device)
            y = torch.stack([b[1] for b in batches]).to(self.device)
            self.train_step(epoch, i, x, y, stats)
        return stats

    def train_step(
        self, epoch: int, i: int, x: torch.Tensor, y: torch.Tensor, stats: list[EpochStats]
    ) -> None:
        """Stacked forward (student, teacher) -> per-member CE + terms (NaN guard, one member
        at a time) -> diagnostics -> one backward -> per-member clip -> SGD -> log."""
        logits, feats = self.student(x)
        t_logits, t_feats = (None, {})
        if self.teacher is not None:
            t_logits, t_feats = self.teacher_forward(x)
        K, n = logits.shape[:2]
        ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(K, n).mean(1)
        finite = torch.isfinite(logits).flatten(1).all(1).tolist()
        for k in self.active:
            if not finite[k]:
                self.fail(
                    k,
                    f"non-finite loss at step {self.step} (epoch {epoch}): the "
                    f"student's logits are non-finite (term 'ce' = {float(ce[k])})",
                )
        # each member's slices by unbind, not by [k]: a term that reads K slices [k] of a
        # stacked tensor costs K full-size zero-filled gradients in backward (L2-SP on 24
        # members: 60 % of the torch time of a li2020_table4-cpu step), unbind's backward one stack
        views = self.student.members()
        f_k, t_k = _unbind(feats), _unbind(t_feats)
        lg_k, y_k = logits.unbind(0), y.unbind(0)
        tl_k = t_logits.unbind(0) if t_logits is not None else None
        ctxs = {
            k: RegContext(
                student=views[k],
                teacher=self.members[k].teacher,
                initial_weights=self.w0[k],
                features={t: v[k] for t, v in f_k.items()},
                teacher_features={t: v[k] for t, v in t_k.items()},
                logits=lg_k[k],
                teacher_logits=tl_k[k] if tl_k is not None else None,
                labels=y_k[k],
            )
            for k in self.active
        }
        terms = self.loss_terms(epoch, ctxs, feats, t_feats)
        losses = {k: ce[k] + sum(terms[k].values()) for k in terms}
        for k in list(losses):
            if not torch.isfinite(losses[k]):
                named = {"ce": ce[k], **terms[k]}
                bad = [a for a, v in named.items() if not torch.isfinite(v).all()]
                what = (
                    f"term {bad[0]!r} = {float(named[bad[0]].detach())}"
                    if bad
                    else f"the sum of the terms overflows ({float(losses[k].detach())})"
                )
                self.fail(k, f"non-finite loss at step {self.step} (epoch {epoch}): {what}")
                del losses[k]
        if i == 0 and self.budget.diagnoses(epoch):
            for k, diag in stacked_diagnostics(
                ce, {k: terms[k] for k in losses if terms[k]}, self.params
            ).items():
                stats[k].diag.update(diag)
        self.optimizer_step(losses)
        if self.step % self.cfg.log_every == 0:
            for k in losses:
                self.log_step(k, ce[k], terms[k], losses[k], ctxs[k], stats[k])
        self.step += 1
        if self.cfg.steps:
            self.sched.step()

    @torch.no_grad()
    def teacher_forward(self, x: torch.Tensor):
        """The members' teachers on their batches ``x`` (K, n, ...), each distinct (teacher,
        batch) pair computed once: the points of a grid share their seed's teacher and batches,
        so a grid of G points costs one teacher forward per seed, not G."""
        rows, pick, inv = [], [], []
        for k, u in enumerate(self.teacher_of):
            j = next(
                (
                    i
                    for i, (v, xk) in enumerate(zip(pick, rows, strict=True))
                    if v == u and torch.equal(xk, x[k])
                ),
                None,
            )
            if j is None:
                j = len(pick)
                pick.append(u)
                rows.append(x[k])
            inv.append(j)
        everyone = pick == list(range(len(next(iter(self.teacher.params.values())))))
        logits, feats = self.teacher(torch.stack(rows), rows=None if everyone else pick)
        if len(pick) == len(inv) and inv == list(range(len(inv))):
            return logits, feats
        inv = torch.tensor(inv, device=logits.device)
        return logits[inv], {t: v[inv] for t, v in feats.items()}

    def loss_terms(
        self, epoch: int, ctxs: dict[int, RegContext], feats, t_feats
    ) -> dict[int, dict[str, torch.Tensor]]:
        """Every active member's ``{term: value}``: OT terms in one batched solve where all
        members' terms agree but for alpha, the rest member by member (the single loop's
        error handling: a solver refusing non-finite inputs fails that member)."""
        keys = list(ctxs)
        regs = [self.regs[k] for k in keys]
        if regs[0] is None:
            return {k: {} for k in keys}
        out: dict[int, dict[str, torch.Tensor]] = {k: {} for k in keys}
        for name in regs[0].terms:
            values = None
            if len(keys) == self.K:  # all members still there: the stacked features fit
                try:
                    head = f"{name}/"
                    state = {k[len(head) :]: v for k, v in self.warm.items() if k.startswith(head)}
                    got = batched_ot(regs, name, feats, t_feats, [ctxs[k] for k in keys], state)
                    if got is not None:
                        values, pots = got
                        self.warm = _warm.carry(self.warm, {head + t: p for t, p in pots.items()})
                except (ValueError, RuntimeError, FloatingPointError):
                    values = None  # one member's inputs (non-finite): found below, one by one
            for j, k in enumerate(keys):
                if k in self.failed:
                    continue
                if values is not None:
                    value = values[j]
                    stats = ctxs[k].stats.pop(name, {})
                else:
                    stats = {}
                    try:
                        value = self.regs[k].terms[name](replace(ctxs[k], stats=stats))
                    except (ValueError, RuntimeError, FloatingPointError) as err:
                        if not re.search(r"non-finite|\bnan\b|\binf\b", str(err), re.I):
                            raise
                        self.fail(
                            k,
                            f"non-finite loss at step {self.step} (epoch {epoch}): "
                            f"the regularizer {'+'.join(self.regs[k].names)!r} got "
                            f"non-finite inputs: {err}",
                        )
                        continue
                ctxs[k].stats.update({f"{name}/{a}": v for a, v in stats.items()})
                if value is not None:
                    out[k][name] = value
        return {k: v for k, v in out.items() if k not in self.failed}

    def optimizer_step(self, losses: dict[int, torch.Tensor]) -> None:
        """One backward of the members' summed losses (member k's gradient reaches only its
        slice), each member's gradient clipped by its own norm, one element-wise SGD step."""
        self.opt.zero_grad(set_to_none=True)
        if not losses:
            return
        torch.stack(list(losses.values())).sum().backward()
        for p in self.params:  # a failed member's slice moves no more (its result is kept)
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            elif self.failed:
                p.grad[list(self.failed)] = 0
        if self.cfg.max_grad_norm is not None:
            # nn.utils.clip_grad_norm_ member by member: the norm of the parameters' norms
            norms = torch.stack(
                [torch.linalg.vector_norm(p.grad.flatten(1), dim=1) for p in self.params], 1
            )
            total = torch.linalg.vector_norm(norms, dim=1)
            coef = (self.cfg.max_grad_norm / (total + 1e-6)).clamp(max=1.0)
            for p in self.params:
                p.grad.mul_(coef.view(-1, *([1] * (p.dim() - 1))))
        self.opt.step()

    def log_step(self, k: int, ce, terms, loss, ctx: RegContext, stats: EpochStats) -> None:
        """Member k's step record, as :meth:`harness.training.loop._Run.log_step` writes it."""
        record = {
            "train/loss": loss,
            "train/ce": ce,
            **{f"train/{a}": v for a, v in terms.items()},
            **ctx.stats,
        }
        stats.log(self.step, record, self.histories[k]["steps"])

    def end_epoch(self, epoch: int, stats: list[EpochStats]) -> None:
        """Each member's epoch record (lr, means, diagnostics, validation), the schedule's
        per-epoch step; a member with non-finite weights fails."""
        lr = base_lr(self.opt)
        if not self.cfg.steps:
            self.sched.step()
        last = self.budget.is_last(epoch)
        evaluate_now = (epoch + 1) % self.cfg.eval_every == 0 or last
        evals = (
            _evaluate(self.student, [m.val_set for m in self.members])
            if evaluate_now
            else [None] * self.K
        )
        names = list(self.student.params)
        for k in self.active:
            record = stats[k].record(epoch, lr)
            bad = next(
                (n for n in names if not torch.isfinite(self.student.params[n][k]).all()), None
            )
            if bad is not None:
                self.fail(
                    k,
                    f"non-finite loss gradient: parameter {bad!r} is non-finite "
                    f"after step {self.step - 1} (epoch {epoch})",
                )
                continue
            ev = evals[k]
            if ev is not None:
                record.update({"val/accuracy": ev["accuracy"], "val/loss": ev["loss"]})
                if self.best[k] is None or ev["accuracy"] > self.best[k]:
                    self.best[k] = ev["accuracy"]
            self.histories[k]["epochs"].append(record)

    def results(self) -> list[TrainResult]:
        """Each member's :class:`TrainResult`; its weights written back into its model."""
        tests = _evaluate(self.student, [m.test_set for m in self.members])
        wall = (time.perf_counter() - self.t_start) / self.K
        out = []
        for k, m in enumerate(self.members):
            with torch.no_grad():
                for n, p in m.model.named_parameters():
                    p.copy_(self.student.params[n][k])
            if k in self.failed:
                r = self.failed[k]
                out.append(
                    replace(r, wall_time=wall, steps_per_s=r.steps / wall if wall > 0 else 0.0)
                )
                continue
            out.append(
                make_result(
                    "completed",
                    "",
                    self.histories[k],
                    self.best[k],
                    tests[k]["accuracy"] if tests[k] is not None else None,
                    wall,
                    self.step,
                    self.step,
                )
            )
        return out


def _unbind(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, ...]]:
    return {name: v.unbind(0) for name, v in tensors.items()}


def train_batched(members: list[Member]) -> list[TrainResult]:
    """Train ``members`` as one batched model; one :class:`TrainResult` per member, in order,
    each what :func:`harness.training.loop.train` returns for it (no checkpoint is written).

    Raises :class:`NotBatchable` (nothing trained) when :func:`why_not_batchable` gives a
    reason."""
    why = why_not_batchable(members)
    if why is not None:
        raise NotBatchable(why)
    run = _BatchedRun(members)
    try:
        for epoch in range(run.budget.n_epochs):
            if not run.active:
                break
            stats = run.train_epoch(epoch)
            run.end_epoch(epoch, stats)
        return run.results()
    finally:
        run.student.close()
        if run.teacher is not None:
            run.teacher.close()
