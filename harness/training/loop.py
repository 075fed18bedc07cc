"""Train a network with cross-entropy plus a regularizer, one readable loop.

The objective at each step is ``CE(student(x), y) + sum(regularizer(ctx).values())``
(li2020 Eq. 2; lohit2020 Eq. 9; lu2017 Eq. 4), optimised by SGD with momentum and a
per-epoch learning-rate schedule (the papers' "divide by 10 at epochs ...", or cosine)::

    cfg = TrainConfig(epochs=30, batch_size=64, lr=0.01, schedule="step", milestones=(20,))
    reg = build_regularizer("omega_p+kd", **{"omega_p.alpha": 0.1})
    result = train(student, train_set, val_set, config=cfg, regularizer=reg, teacher=teacher,
                   checkpoint_path="runs/abc123/ckpt.pt")
    result.status, result.best_val_accuracy, result.history["epochs"][-1]

Runs are reproducible: the same config (seed included) gives the same final weights, and a run
resumed from its checkpoint ends where the uninterrupted run does. A non-finite loss stops the
run with ``status="failed"`` and a reason naming the step and the term; it never raises. So does
a run whose loss exploded while staying finite (:mod:`harness.training.divergence`).

The teacher runs under ``torch.no_grad()`` with dropout off and never enters the optimiser; its
batch norm uses its running statistics (``teacher_mode="eval"``) or the batch's
(``"train"``, li2020 §3: T = A^(0)), its running statistics left untouched. The settings are
:class:`~harness.training.config.TrainConfig`'s (docs/train-options.md); the steps shared with
:mod:`harness.training.batched` are in :mod:`harness.training.steps`, multi-process training
(``torchrun``) in :mod:`harness.training.processes`, checkpoint contents in
:mod:`harness.training.checkpoints`.
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from harness.training import distributed
from harness.training.checkpoints import (
    CheckpointError,
    checkpoint_payload,
    checkpoint_problem,
    load_checkpoint,
    read_resumable,
    rng_state,
    set_rng_state,
)
from harness.training.checkpoints import save_atomic as _save_atomic  # (tests replace it)
from harness.training.config import (
    REGULARIZER_PREFIX,
    ParamGroup,
    TrainConfig,
    TrainResult,
    assign_param_groups,
)
from harness.training.divergence import diverged
from harness.training.precision import autocast, channels_last, f32, to_float32
from harness.training.processes import ManyProcesses, OneProcess, agreed
from harness.training.processes import gathered as _gathered  # noqa: F401 (tests)
from harness.training.setup import (
    SOURCE_HEAD_TAP,
    JointSource,
    batch_stat_norms,
    build_optimizer,
    check_inputs,
)
from harness.training.steps import (
    EpochStats,
    StepBudget,
    base_lr,
    evaluate,
    evaluate_sharded,
    make_result,
    rank_seed,
    seed_all,
    step_budget,
    term_diagnostics,
)

# the tests import these from here
from harness.training.steps import check_split as _check_split
from harness.training.steps import epoch_loader as _epoch_loader
from harness.training.steps import local_ce as _local_ce  # noqa: F401
from harness.transfer import warm as _warm
from harness.transfer.regularizers import RegContext, Regularizer
from harness.transfer.taps import Taps, needs_maps

__all__ = [
    "TrainConfig",
    "ParamGroup",
    "TrainResult",
    "train",
    "evaluate",
    "assign_param_groups",
    "checkpoint_problem",
    "CheckpointError",
    "load_checkpoint",
    "SOURCE_HEAD_TAP",
    "REGULARIZER_PREFIX",
]


class _Failure(Exception):
    """Internal: a non-finite loss; turned into a failed TrainResult by :func:`train`."""


def train(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None = None,
    *,
    config: TrainConfig,
    regularizer: Regularizer | None = None,
    teacher: nn.Module | None = None,
    initial_weights: Mapping[str, torch.Tensor] | None = None,
    label_cost: torch.Tensor | None = None,
    test_set: Dataset | None = None,
    source_set: Dataset | None = None,
    source_weight: float = 1.0,
    checkpoint_path: str | os.PathLike | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place with cross-entropy plus ``regularizer`` (SGD with momentum,
    ``config``'s schedule); return its :class:`TrainResult`, ``status="failed"`` with a reason
    when the loss became non-finite or diverged (never raises for that).

    ``teacher``, ``initial_weights`` (w0 by parameter name) and ``label_cost`` (a ``jtln``
    term's) are what the regularizer needs. ``source_set`` turns on joint training (lu2017
    §3.1): each step adds ``source_weight * CE`` of a source batch through the model's tap
    point ``"source_head"``. ``test_set`` is scored once at the end. ``checkpoint_path`` is
    saved every ``config.checkpoint_every`` epochs and resumed from when it exists (the final
    weights are those of the uninterrupted run). ``on_epoch(epoch, record)`` runs after each
    epoch (what it raises propagates). Under ``torchrun`` every rank calls this with the same
    arguments, ``config.batch_size`` being the global batch.
    """
    run = _Run(
        model,
        train_set,
        val_set,
        config,
        regularizer,
        teacher,
        initial_weights,
        label_cost,
        source_set,
        source_weight,
    )
    try:
        run.materialize_regularizer()
        run.build_optimizer()
        run.resume(checkpoint_path)
        run.wrap_ddp()
        run.count_steps()
        run.open_bar(progress)
        try:
            for epoch in range(run.start_epoch, run.budget.n_epochs):
                stats = run.train_epoch(epoch)
                record = run.end_epoch(epoch, stats)
                run.save_checkpoint(epoch, checkpoint_path)
                if on_epoch is not None:
                    on_epoch(epoch, record)
        finally:
            run.close_bar()
        run.check_diverged()  # a finite loss may have exploded all the same
    except _Failure as failure:
        return run.result("failed", str(failure))
    finally:
        run.restore()
    return run.result("completed", "", test_set)


class _Run:
    """One call of :func:`train`: its modules, optimiser and counters, and its steps as methods
    in the order ``train`` calls them (prepare -> materialise the regularizer -> optimiser ->
    resume -> DDP -> per epoch: steps, end of epoch, checkpoint -> result)."""

    def __init__(
        self,
        model,
        train_set,
        val_set,
        cfg: TrainConfig,
        reg,
        teacher,
        initial_weights,
        label_cost,
        source_set,
        source_weight,
    ):
        self.t_start = time.perf_counter()
        self.cfg, self.model, self.reg, self.teacher = cfg, model, reg, teacher
        self.train_set, self.val_set = train_set, val_set
        self.rank, self.world = distributed.init_from_env(cfg.device)
        # "cuda" -> this process's GPU under torchrun
        self.device = device = distributed.local_device(cfg.device)
        self.procs = (
            ManyProcesses(self.world, cfg.reg_batch == "global" and reg is not None)
            if self.world > 1
            else OneProcess()
        )
        taps_names = tuple(reg.taps) if reg is not None else ()
        self.needs_teacher = needs_teacher = reg is not None and reg.needs_teacher
        needs_source = reg is not None and reg.needs_source_head
        check_inputs(reg, teacher, initial_weights, label_cost)
        _check_split("train_set", train_set, cfg, self.world)
        if source_set is not None:
            _check_split("source_set", source_set, cfg, self.world)

        # ---- seeds, modules
        seed_all(cfg.seed)  # the same on every rank: the regularizer's embeddings start equal
        channels_last(cfg, model.to(device))
        if teacher is not None:
            channels_last(cfg, teacher.to(device)).eval()  # frozen: dropout off, BN running stats
        if reg is not None:
            reg.to(device)
        self.initial_weights = (
            {k: v.detach().to(device) for k, v in initial_weights.items()}
            if initial_weights
            else None
        )

        # the hooks go on the model itself: DistributedDataParallel (below) calls its forward
        self.s_taps = Taps(model, taps_names, pool=not needs_maps(reg)) if taps_names else None
        self.t_taps = (
            Taps(teacher, taps_names, pool=not needs_maps(reg))
            if (needs_teacher and taps_names)
            else None
        )
        if source_set is not None and SOURCE_HEAD_TAP not in getattr(model, "tap_points", {}):
            raise ValueError(
                "source_set= needs a model with a source classifier (tap point "
                f"{SOURCE_HEAD_TAP!r}); wrap it with "
                "harness.zoo.models.with_source_head"
            )
        if source_weight < 0:
            raise ValueError(f"source_weight must be >= 0; got {source_weight}")
        self.src_tap = (
            Taps(model, [SOURCE_HEAD_TAP], pool=False)
            if (needs_source or source_set is not None)
            else None
        )
        self.hooks = [t for t in (self.s_taps, self.t_taps, self.src_tap) if t is not None]
        self.joint = (
            JointSource(source_set, source_weight, self.src_tap, self.hooks, device)
            if source_set is not None
            else None
        )
        self.batch_stat_norms = batch_stat_norms(teacher, cfg.teacher_mode)  # undone in restore()
        self.frozen: list[nn.Parameter] = []  # lr_mult 0 parameters, restored on return
        self.start_epoch, self.step, self.steps_here = 0, 0, 0
        self.history: dict[str, Any] = {"epochs": [], "steps": defaultdict(list)}
        self.best_acc: float | None = None
        self.num_classes: int | None = None  # the logits' width, read at the first step
        self.bar = None
        self.net: nn.Module = model
        self.warm: dict = {}  # the last step's OT potentials by "<term>/<tap>" (transfer.warm)

    # ---- the regularizer's view of a batch
    def context(
        self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, sizes: list[int] | None = None
    ) -> RegContext:
        """Run the teacher on ``x`` if needed and gather what the regularizer may read (over
        the ranks too, given the ranks' slice ``sizes``, when ``reg_batch="global"``)."""
        t_logits = None
        if self.needs_teacher:
            # no_grad, not inference_mode: teacher features meet student tensors that need
            # grad in the regularizer's ops, and inference tensors cannot be saved for backward
            with torch.no_grad(), autocast(self.cfg):
                t_logits = self.teacher(x)  # on this rank's slice; gathered with the rest
        s_taps, t_taps, src_tap = self.s_taps, self.t_taps, self.src_tap
        ctx = RegContext(
            student=self.model,
            teacher=self.teacher,
            initial_weights=self.initial_weights,
            features=dict(s_taps.features) if s_taps else {},
            teacher_features=dict(t_taps.features) if t_taps else {},
            logits=logits,
            teacher_logits=t_logits,
            source_logits=src_tap.features.get(SOURCE_HEAD_TAP) if src_tap else None,
            labels=y,
            warm=self.warm,
        )
        if self.cfg.precision == "bf16":  # OT never solved in bf16 (fp32: nothing to copy)
            ctx = to_float32(ctx)
        return self.procs.gather(ctx, sizes)

    # ---- before the loop
    def materialize_regularizer(self) -> None:
        """Width-dependent regularizer parameters (lohit2020's embeddings) are built on the
        first training examples, before the optimiser, so that they are optimised."""
        reg, model, cfg = self.reg, self.model, self.cfg
        if reg is None:
            return
        n0 = min(max(cfg.batch_size // self.world, 1), len(self.train_set))
        x0, y0 = next(
            iter(
                DataLoader(
                    self.train_set, batch_size=n0, shuffle=False, generator=torch.Generator()
                )
            )
        )
        x0, y0 = x0.to(self.device), y0.to(self.device)
        was_training = model.training
        model.eval()  # shapes only: leave batch-norm statistics untouched
        with torch.no_grad():
            reg.materialize(self.context(x0, y0, model(x0)))
        model.train(was_training)
        distributed.broadcast_([*reg.parameters(), *reg.buffers()])  # rank 0's, to be sure

    def build_optimizer(self) -> None:
        self.optim, self.frozen = build_optimizer(self.model, self.reg, self.cfg)
        if self.rank > 0:  # its own dropout / augmentation stream; rank 0 goes on as one process
            seed_all(rank_seed(self.cfg.seed, self.rank))

    def resume(self, checkpoint_path) -> None:
        """Model, regularizer, optimiser, scheduler, counters, history and RNG states from
        ``checkpoint_path`` when it exists (an unreadable one is moved aside with a warning)."""
        rank, cfg, (_, _, _, opt, sched) = self.rank, self.cfg, self.optim
        ckpt = read_resumable(checkpoint_path, self.device, cfg, rank)
        if ckpt is None:
            return
        self.model.load_state_dict(ckpt["model"])
        if self.reg is not None and ckpt.get("regularizer") is not None:
            self.reg.load_state_dict(ckpt["regularizer"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        self.start_epoch, self.step = ckpt["epoch"], ckpt["step"]
        self.best_acc = ckpt["best_val_accuracy"]
        self.history = {
            "epochs": list(ckpt["history"]["epochs"]),
            "steps": defaultdict(list, {k: list(v) for k, v in ckpt["history"]["steps"].items()}),
        }
        rng_ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
        if rank < len(rng_ranks):
            set_rng_state(rng_ranks[rank])
        else:  # more processes than when it was written: a fresh stream for this rank
            seed_all(rank_seed(cfg.seed * 1_000_003 + self.start_epoch, rank))

    def wrap_ddp(self) -> None:
        """Multi-process: the model under DDP, which averages the gradients over the ranks."""
        self.net = self.procs.wrap(self.model, self.device)

    def count_steps(self) -> None:
        self.budget: StepBudget = step_budget(self.train_set, self.cfg)

    def open_bar(self, progress: bool) -> None:
        if progress and self.rank == 0:
            from tqdm.auto import tqdm  # lazy: only when shown

            # beneath the suite's bar (harness.experiments.progress), cleared when the job ends
            self.bar = tqdm(
                total=self.budget.total_steps,
                initial=min(self.step, self.budget.total_steps),
                desc="train",
                dynamic_ncols=True,
                leave=False,
                position=1,
                disable=None,
            )  # None: no bar when stderr is not a terminal

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()

    # ---- one epoch
    def train_epoch(self, epoch: int) -> EpochStats:
        """The epoch's steps; returns their logged values and term diagnostics."""
        cfg, rank, world = self.cfg, self.rank, self.world
        self.model.train()
        stats = EpochStats()
        if self.joint is not None:
            self.joint.start_epoch(cfg, epoch, rank, world)
        loader = _epoch_loader(self.train_set, cfg, epoch, 0, rank, world)
        for i, (x, y) in enumerate(loader):
            if self.step >= self.budget.total_steps:
                break
            sizes = loader.batch_sampler.split(i)  # every rank's share of the batch
            x = channels_last(self.cfg, x)  # no-op unless channels_last and 4-D
            self.train_step(
                epoch,
                i,
                x.to(self.device, non_blocking=True),
                y.to(self.device, non_blocking=True),
                sizes,
                stats,
            )
        return stats

    def train_step(
        self,
        epoch: int,
        i: int,
        x: torch.Tensor,
        y: torch.Tensor,
        sizes: list[int],
        stats: EpochStats,
    ) -> None:
        """source batch (joint training) -> student forward (taps) -> teacher forward ->
        ce + terms (NaN guard) -> diagnostics -> backward -> clip -> step -> log."""
        source_term = self.joint.term(self.model) if self.joint is not None else None
        # forward the student (taps record its features), then the frozen teacher
        with autocast(self.cfg):  # precision: bf16; the CE and the regularizer in float32
            logits = f32(self.net(x))
        self.num_classes = self.num_classes or int(logits.shape[-1])
        ce = _local_ce(logits, y, sizes)
        reason = None
        if not torch.isfinite(logits).all():  # diverged weights: skip the solvers
            reason = (
                f"non-finite loss at step {self.step} (epoch {epoch}): the student's "
                f"logits are non-finite (term 'ce' = {float(ce.detach())})"
            )
        reason = agreed(reason)
        if reason is not None:
            raise _Failure(reason)
        ctx = self.context(x, y, logits, sizes)
        terms, loss = self.loss_terms(epoch, ctx, ce, source_term)
        if i == 0 and self.procs.diagnose and terms and self.budget.diagnoses(epoch):
            # is a term too weak or wrong? On the first batch of ~10 epochs spread over
            # training (a backward per term: every epoch would cost up to +50 % on runs of a
            # few steps an epoch), each term's value and student-gradient norm against the CE's
            stats.diag.update(term_diagnostics(ce, terms, self.optim.student_params))
        self.optimizer_step(loss)
        if self.step % self.cfg.log_every == 0:
            self.log_step(epoch, ce, terms, loss, ctx, stats)
        self.step += 1
        self.steps_here += 1
        if self.cfg.steps:
            self.optim.sched.step()  # milestones count steps (li2020's iterations)
        for t in self.hooks:
            t.clear()  # free the batch's graphs
        if self.bar is not None:
            self.bar.update(1)

    def loss_terms(
        self, epoch: int, ctx: RegContext, ce: torch.Tensor, source_term: torch.Tensor | None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The regularizer's terms (and joint training's ``source_ce``) and the loss
        ``ce + sum(terms)``;
        a non-finite one raises :class:`_Failure` naming the first bad term, before any update."""
        reg, step = self.reg, self.step
        cause: BaseException | None = None
        reason = None
        terms: dict[str, torch.Tensor] = {}
        try:
            terms = reg(ctx) if reg is not None else {}
            self.warm = _warm.carry(self.warm, ctx.potentials)
        except (ValueError, RuntimeError, FloatingPointError) as err:
            # the solvers refuse non-finite costs (features overflowing after a divergent
            # step): that is the same failure, one term earlier
            if not re.search(r"non-finite|\bnan\b|\binf\b", str(err), re.I):
                raise
            cause = err
            reason = (
                f"non-finite loss at step {step} (epoch {epoch}): the regularizer "
                f"{'+'.join(reg.names)!r} got non-finite inputs: {err}"
            )
        if source_term is not None:
            terms = {"source_ce": source_term, **terms}
        loss = ce + sum(terms.values())
        # NaN guard: name the first non-finite term, before any update
        if reason is None and not torch.isfinite(loss):
            named = {"ce": ce, **terms}
            bad = [n for n, v in named.items() if not torch.isfinite(v).all()]
            what = (
                f"term {bad[0]!r} = {float(named[bad[0]].detach())}"
                if bad
                else f"the sum of the terms overflows ({float(loss.detach())})"
            )
            reason = f"non-finite loss at step {step} (epoch {epoch}): {what}"
        reason = agreed(reason)
        if reason is not None:
            raise _Failure(reason) from cause
        return terms, loss

    def optimizer_step(self, loss: torch.Tensor) -> None:
        params, reg_params, _, opt, _ = self.optim
        opt.zero_grad(set_to_none=True)
        loss.backward()  # under DDP: the model's gradients averaged over the ranks
        self.procs.reduce_regularizer_grads(reg_params)
        if self.cfg.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
        opt.step()

    def log_step(self, epoch: int, ce, terms, loss, ctx: RegContext, stats: EpochStats) -> None:
        """Every term and the solvers' stats (n_iter, converged, matched = tr(P))."""
        losses = {"train/ce": ce, **{f"train/{k}": v for k, v in terms.items()}}
        losses, loss = self.procs.mean_losses(losses, loss)
        # solver stats are this rank's (the same on every rank when gathered)
        steps = self.history["steps"]
        stats.log(self.step, {"train/loss": loss, **losses, **ctx.stats}, steps)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{steps['train/loss'][-1]:.3f}", epoch=epoch, refresh=False)

    def end_epoch(self, epoch: int, stats: EpochStats) -> dict[str, Any]:
        """The epoch's record (lr, means, diagnostics, validation); the per-epoch schedule
        steps; non-finite weights raise :class:`_Failure`."""
        record = stats.record(epoch, base_lr(self.optim.opt))
        if not self.cfg.steps:
            self.optim.sched.step()  # per-epoch schedule (the papers decay at epochs)
        # a finite loss with non-finite gradients leaves NaN weights: never save those
        # (the same weights on every rank: they all stop here together)
        bad = next(
            (n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()), None
        )
        if bad is not None:
            raise _Failure(
                f"non-finite loss gradient: parameter {bad!r} is non-finite "
                f"after step {self.step - 1} (epoch {epoch})"
            )
        last = self.budget.is_last(epoch)
        if self.val_set is not None and ((epoch + 1) % self.cfg.eval_every == 0 or last):
            ev = evaluate_sharded(self.model, self.val_set, self.device)
            record.update({"val/accuracy": ev["accuracy"], "val/loss": ev["loss"]})
            if self.best_acc is None or ev["accuracy"] > self.best_acc:
                self.best_acc = ev["accuracy"]
        self.history["epochs"].append(record)
        return record

    def save_checkpoint(self, epoch: int, checkpoint_path) -> None:
        """Every ``checkpoint_every`` epochs and after the last: rank 0 writes, all wait."""
        last = self.budget.is_last(epoch)
        if checkpoint_path is None or not ((epoch + 1) % self.cfg.checkpoint_every == 0 or last):
            return
        rng_ranks = distributed.all_gather_object(rng_state())
        if self.rank == 0:  # one writer; the others wait for the file below
            state = checkpoint_payload(
                model=self.model,
                reg=self.reg,
                opt=self.optim.opt,
                sched=self.optim.sched,
                epoch=epoch,
                step=self.step,
                best=self.best_acc,
                rng_ranks=rng_ranks,
                cfg=self.cfg,
                history=self.history,
            )
            _save_atomic(state, checkpoint_path)
        distributed.barrier()

    # ---- after the loop
    def check_diverged(self) -> None:
        """Raise :class:`_Failure` when the run diverged with a finite loss
        (:func:`harness.training.divergence.diverged`: the loss exploded, or the accuracy
        fell to chance with a loss worse than a uniform guess)."""
        k = self.num_classes or len(getattr(self.train_set, "classes", None) or ()) or None
        reason = diverged(self.history, k, self.cfg.lr)
        if reason is not None:
            raise _Failure(reason)

    def restore(self) -> None:
        """Hooks off, the teacher's batch norms and the frozen parameters as they were."""
        for t in self.hooks:
            t.remove()
        for m in self.batch_stat_norms:
            m.track_running_stats = True
            m.eval()
        for p in self.frozen:
            p.requires_grad_(True)

    def result(self, status: str, reason: str, test_set: Dataset | None = None) -> TrainResult:
        test_acc = (
            evaluate_sharded(self.model, test_set, self.device)["accuracy"]
            if test_set is not None
            else None
        )
        wall = time.perf_counter() - self.t_start
        return make_result(
            status,
            reason,
            self.history,
            self.best_acc,
            test_acc,
            wall,
            self.steps_here,
            self.step,
            self.start_epoch,
        )
