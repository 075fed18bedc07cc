"""How a run of :func:`harness.training.loop.train` spans processes: :class:`OneProcess`, or
:class:`ManyProcesses` under ``torchrun`` (DistributedDataParallel, the regularizer's inputs
all-gathered, the ranks agreeing on a failure). The loop calls the same methods on either.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from harness.training import distributed
from harness.transfer.regularizers import RegContext

__all__ = ["OneProcess", "ManyProcesses", "gathered", "agreed"]


class OneProcess:
    """How a run spans processes: one. (:class:`ManyProcesses` is the ``torchrun`` case; the
    training loop calls the same methods on either.)"""

    world = 1
    #: term diagnostics (a backward per term) are taken in one process only
    diagnose = True

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        return model

    def gather(self, ctx: RegContext, sizes: list[int] | None) -> RegContext:
        return ctx

    def reduce_regularizer_grads(self, params: list[torch.Tensor]) -> None:
        pass

    def mean_losses(self, losses: dict[str, torch.Tensor], loss: torch.Tensor):
        return losses, loss


class ManyProcesses(OneProcess):
    """``torchrun`` (``WORLD_SIZE`` > 1): the model under DistributedDataParallel, the
    regularizer's inputs all-gathered when ``reg_batch="global"``, its own parameters' gradients
    averaged by hand, logged losses the ranks' mean."""

    diagnose = False

    def __init__(self, world: int, gather_reg: bool):
        self.world, self.gather_reg = world, gather_reg

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if not any(p.requires_grad for p in model.parameters()):
            return model
        # static_graph: the same parameters get gradients at every step, some of them only
        # through the taps (regularizer), the source forward or l2, which DDP cannot see from
        # the forward's output; some never (a source head without a source task)
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, static_graph=True
        )

    def gather(self, ctx: RegContext, sizes: list[int] | None) -> RegContext:
        return gathered(ctx, sizes) if (self.gather_reg and sizes is not None) else ctx

    def reduce_regularizer_grads(self, params: list[torch.Tensor]) -> None:
        for p in params:  # the regularizer's own parameters are not under DDP
            if p.grad is not None:
                p.grad.copy_(distributed.all_reduce(p.grad))

    def mean_losses(self, losses: dict[str, torch.Tensor], loss: torch.Tensor):
        # global values: the ranks' mean (ce is scaled for it)
        means = distributed.all_reduce(
            torch.stack([v.detach().float().mean() for v in losses.values()])
        )
        return dict(zip(losses, means, strict=True)), means.sum()


def gathered(ctx: RegContext, sizes: list[int]) -> RegContext:
    """``ctx`` with every batch-indexed input all-gathered over the ranks (reg_batch="global").

    The student's features and logits stay differentiable w.r.t. this rank's slice (see
    :func:`harness.training.distributed.gather_batch` for why the gradient is the
    single-process one).
    """

    def gather(t):
        return distributed.gather_batch(t, sizes) if isinstance(t, torch.Tensor) else t

    return dataclasses.replace(
        ctx,
        features={k: gather(v) for k, v in ctx.features.items()},
        teacher_features={k: gather(v) for k, v in ctx.teacher_features.items()},
        logits=gather(ctx.logits),
        teacher_logits=gather(ctx.teacher_logits),
        source_logits=gather(ctx.source_logits),
        labels=gather(ctx.labels),
    )


def agreed(reason: str | None) -> str | None:
    """Under DDP, the first failing rank's reason on every rank, so that all stop together
    (one rank raising alone would leave the others waiting in the next collective)."""
    if distributed.world_size() == 1 or not distributed.any_rank(reason is not None):
        return reason
    reasons = distributed.all_gather_object(reason)
    first = next(r for r, v in enumerate(reasons) if v is not None)
    return f"{reasons[first]} (on rank {first})"
