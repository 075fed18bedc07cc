"""What :func:`harness.training.loop.train` sets up before its first step: the inputs the
regularizer needs (:func:`check_inputs`), the optimiser with its layer-wise rates
(:func:`build_optimizer`) and joint training's source task (:class:`JointSource`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.data import Dataset

from harness.training.config import REGULARIZER_PREFIX, TrainConfig, assign_param_groups
from harness.training.steps import cycle, epoch_loader, local_ce, make_scheduler
from harness.transfer.taps import Taps

__all__ = [
    "SOURCE_HEAD_TAP",
    "JointSource",
    "Optimiser",
    "batch_stat_norms",
    "build_optimizer",
    "check_inputs",
]

SOURCE_HEAD_TAP = "source_head"


def check_inputs(reg, teacher, initial_weights, label_cost) -> None:
    """What the regularizer needs is there; a ``label_cost`` goes to its ``jtln`` term."""
    if reg is not None and reg.needs_teacher and teacher is None:
        raise ValueError(f"regularizer {'+'.join(reg.names)} needs a teacher; pass teacher=")
    if reg is not None and reg.needs_initial_weights and not initial_weights:
        raise ValueError(
            f"regularizer {'+'.join(reg.names)} needs initial_weights= (w0 by "
            f"parameter name, taken before the new head was attached)"
        )
    if label_cost is not None:
        if reg is None or "jtln" not in reg.names:
            raise ValueError("label_cost= is only used by a 'jtln' regularizer term")
        kwargs = reg.terms["jtln"].kwargs  # a stateless term's resolved parameters
        if kwargs.get("label_cost") is None:
            kwargs["label_cost"] = torch.as_tensor(label_cost)


def batch_stat_norms(teacher: nn.Module | None, teacher_mode: str) -> list[nn.Module]:
    """With ``teacher_mode="train"`` (li2020 §3, T = A^(0)), the teacher's batch norms switched
    to normalise with the batch's statistics as the training student's do; returned so that the
    caller can switch them back. ``track_running_stats=False`` makes a training-mode batch norm
    neither read nor update its running buffers, so the teacher comes back as it went in."""
    norms = (
        [
            m
            for m in teacher.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        ]
        if (teacher is not None and teacher_mode == "train")
        else []
    )
    for m in norms:
        m.train()
        m.track_running_stats = False
    return norms


class Optimiser(NamedTuple):
    """A run's SGD and schedule, and the parameters it trains (the regularizer's own ones
    apart: under DDP their gradients are averaged by hand)."""

    params: list[torch.Tensor]
    reg_params: list[torch.Tensor]
    student_params: list[torch.Tensor]
    opt: torch.optim.Optimizer
    sched: Any


def build_optimizer(
    model: nn.Module, reg, cfg: TrainConfig
) -> tuple[Optimiser, list[nn.Parameter]]:
    """One SGD group per ``param_groups`` entry at ``lr * lr_mult`` (lu2017 §4; the schedules
    scale each group's rate alike), and the parameters frozen by ``lr_mult`` 0, whose
    ``requires_grad`` this turns off (no gradient, update, momentum or weight decay)."""
    named = list(model.named_parameters()) + (
        [(REGULARIZER_PREFIX + n, p) for n, p in reg.named_parameters()] if reg is not None else []
    )
    try:
        which = assign_param_groups([n for n, _ in named], cfg.param_groups)
    except ValueError as err:
        raise ValueError(f"train.{err}") from None
    mults = [cfg.param_groups[g].lr_mult if g is not None else 1.0 for g in which]
    frozen = []
    for (_, p), mult in zip(named, mults, strict=True):
        if mult == 0 and p.requires_grad:
            p.requires_grad_(False)
            frozen.append(p)
    reg_ids = {id(p) for p in reg.parameters()} if reg is not None else set()
    opt_groups: dict[int, dict[str, Any]] = {}  # unmatched (-1) first, then config order
    for (_, p), g, mult in zip(named, which, mults, strict=True):
        if p.requires_grad:
            opt_groups.setdefault(
                -1 if g is None else g, {"params": [], "lr": cfg.lr * mult, "lr_mult": mult}
            )["params"].append(p)
    opt_groups = dict(sorted(opt_groups.items()))
    params = [p for grp in opt_groups.values() for p in grp["params"]]
    opt = torch.optim.SGD(
        list(opt_groups.values()) or [{"params": []}],
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    optimiser = Optimiser(
        params,
        [p for p in params if id(p) in reg_ids],
        [p for p in params if id(p) not in reg_ids],
        opt,
        make_scheduler(opt, cfg),
    )
    return optimiser, frozen


class JointSource:
    """Joint training (lu2017 §3.1): each step first draws a batch of the source task and
    scores it through the model's source classifier (tap point ``"source_head"``); the loop adds
    ``source_weight * CE(h_s(x^s), y^s)`` (lu2017 Eq. 2 and 4, ``lambda_s``) to the loss as the
    term ``source_ce``. Without a source task the loop holds ``None`` instead."""

    def __init__(
        self, source_set: Dataset, weight: float, src_tap: Taps, hooks: list, device: torch.device
    ):
        self.source_set, self.weight = source_set, weight
        self.src_tap, self.hooks, self.device = src_tap, hooks, device
        self.batches = None

    def start_epoch(self, cfg: TrainConfig, epoch: int, rank: int, world: int) -> None:
        self.batches = cycle(epoch_loader(self.source_set, cfg, epoch, 1, rank, world))

    def term(self, model: nn.Module) -> torch.Tensor:
        """``source_weight * CE`` of the next source batch, forwarded before the target's."""
        src_sizes, (xs, ys) = next(self.batches)
        model(xs.to(self.device))  # the module itself: DDP sees one forward a step
        ce = local_ce(self.src_tap.features[SOURCE_HEAD_TAP], ys.to(self.device), src_sizes)
        for t in self.hooks:
            t.clear()  # the taps now record the target batch only
        return self.weight * ce
