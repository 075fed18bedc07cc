"""The steps :func:`harness.training.loop.train` and :mod:`harness.training.batched` (K stacked
models) share, so that a batched member draws its batches, schedule, diagnostics and result
exactly as ``train`` would: the seeded epoch loaders, the learning-rate schedule, evaluation,
the per-epoch statistics (:class:`EpochStats`, a value) and the step budget.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, Subset

from harness.training import distributed
from harness.training.config import TrainConfig, TrainResult
from harness.training.precision import loader_kwargs

__all__ = [
    "DIAG_EPOCHS",
    "EpochStats",
    "StepBudget",
    "base_lr",
    "check_split",
    "cycle",
    "epoch_loader",
    "evaluate",
    "evaluate_sharded",
    "local_ce",
    "log_scalar",
    "make_result",
    "make_scheduler",
    "rank_seed",
    "seed_all",
    "split_sizes",
    "step_budget",
    "term_diagnostics",
]

DIAG_EPOCHS = 10  # epochs (spread over training) on which the term diagnostics are logged


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Return the accuracy and mean cross-entropy of ``model`` on ``dataset``.

    Parameters
    ----------
    model : nn.Module
        Maps a batch of inputs to ``(n, K)`` logits; evaluated in eval mode (its mode is
        restored afterwards).
    dataset : Dataset
        Yields ``(x, y)`` pairs.
    batch_size : int
    device : optional
        Defaults to the device of the model's first parameter.

    Returns
    -------
    dict
        ``{"accuracy": float in [0, 1], "loss": float}``.
    """
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else "cpu"
    was_training = model.training
    model.eval()
    correct, loss_sum, n = 0, 0.0, 0
    try:
        # an explicit generator: the loader then draws its seed from it, not from the global
        # RNG, so evaluating does not change the training run's dropout/shuffle stream
        for x, y in DataLoader(
            dataset, batch_size=batch_size, shuffle=False, generator=torch.Generator()
        ):
            x, y = x.to(device), y.to(device)
            if x.dim() == 5:  # (n, crops, c, h, w): ten-crop test, li2020 A.1
                logits = _multi_crop_logits(model, x)
            else:
                logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(-1) == y).sum())
            n += y.shape[0]
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("evaluate: the dataset is empty")
    return {"accuracy": correct / n, "loss": loss_sum / n}


def _multi_crop_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Log of the crops' mean softmax: li2020 A.1 "average the scores of 10 cropped patches"."""
    n, k = x.shape[:2]
    probs = F.softmax(model(x.flatten(0, 1)), dim=-1).view(n, k, -1).mean(1)
    return probs.clamp_min(1e-12).log()


def log_scalar(v: Any) -> float | None:
    """A stat or loss as a float for logging (``float`` syncs with the GPU; log time only)."""
    if isinstance(v, torch.Tensor):
        return float(v.detach().float().mean()) if v.numel() else None
    if isinstance(v, (bool, int, float, np.floating, np.integer)):
        return float(v)
    return None


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(
            opt, milestones=list(cfg.milestones), gamma=cfg.gamma
        )
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps or cfg.epochs)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)


def base_lr(opt: torch.optim.Optimizer) -> float:
    """The schedule's current rate ``lr`` (a group's rate is ``lr * lr_mult``), for logging."""
    g = opt.param_groups[0]
    mult = g.get("lr_mult", 1.0)
    return g["lr"] if mult == 1.0 else g["lr"] / mult


def cycle(loader: DataLoader):
    """``(slice sizes, batch)`` of ``loader`` forever (same order each pass: the epoch's
    shuffle); the sizes are every rank's share of the global batch (:meth:`RankSlice.split`)."""
    while True:
        for i, batch in enumerate(loader):
            yield loader.batch_sampler.split(i), batch


def split_sizes(n: int, world: int) -> list[int]:
    """Sizes of the ranks' contiguous slices of an ``n``-example batch (the first ones larger)."""
    return [n // world + (r < n % world) for r in range(world)]


class RankSlice(Sampler):
    """The global batches of ``batches``, each cut to rank ``rank``'s contiguous slice.

    Every rank draws the same seeded global batch of indices and keeps (loads) only its own
    slice, so that the ranks' slices, in rank order, are the single-process batch.
    """

    def __init__(self, batches: BatchSampler, rank: int = 0, world: int = 1):
        self.batches, self.rank, self.world = batches, rank, world

    def __len__(self) -> int:
        return len(self.batches)

    def split(self, i: int) -> list[int]:
        """Every rank's slice size in global batch ``i`` (only the last one may be short)."""
        size = self.batches.batch_size
        return split_sizes(min(size, len(self.batches.sampler) - i * size), self.world)

    def __iter__(self):
        for batch in self.batches:
            sizes = split_sizes(len(batch), self.world)
            lo = sum(sizes[: self.rank])
            yield batch[lo : lo + sizes[self.rank]]


def epoch_loader(
    dataset: Dataset, cfg: TrainConfig, epoch: int, salt: int = 0, rank: int = 0, world: int = 1
) -> DataLoader:
    # One generator per epoch, seeded by (seed, epoch): a resumed run shuffles epoch e exactly as
    # the uninterrupted run did, without replaying the earlier epochs. The samplers are those
    # DataLoader(shuffle=True, generator=g) builds, so one process draws what it always drew.
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch + 7_919 * salt)
    drop_last = cfg.drop_last and len(dataset) > cfg.batch_size
    batches = BatchSampler(RandomSampler(dataset, generator=g), cfg.batch_size, drop_last)
    from harness.zoo.data import BatchedView, batched_collate

    if callable(getattr(dataset, "batch", None)):  # in-memory tensors: one indexing a batch
        return DataLoader(
            BatchedView(dataset),
            batch_sampler=RankSlice(batches, rank, world),
            generator=g,
            collate_fn=batched_collate,
            **loader_kwargs(cfg),
        )
    return DataLoader(
        dataset, batch_sampler=RankSlice(batches, rank, world), generator=g, **loader_kwargs(cfg)
    )


def check_split(name: str, dataset: Dataset, cfg: TrainConfig, world: int) -> None:
    """Every global batch of ``dataset`` must give each of the ``world`` ranks an example."""
    if world == 1:
        return
    if cfg.batch_size % world:
        raise ValueError(
            f"batch_size {cfg.batch_size} is the global batch size: it must be a "
            f"multiple of the number of processes ({world})"
        )
    n = len(dataset)
    drop_last = cfg.drop_last and n > cfg.batch_size
    short = 0 if drop_last else n % cfg.batch_size
    if 0 < short < world:
        raise ValueError(
            f"the last batch of {name} has {short} example(s), fewer than the "
            f"{world} processes; use drop_last=True or another batch_size"
        )


def local_ce(logits: torch.Tensor, y: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Cross-entropy of this rank's slice, scaled so that its mean over the ranks (DDP's
    gradient averaging) is the global batch's mean: the local mean when the slices are equal."""
    if len(set(sizes)) == 1:
        return F.cross_entropy(logits, y)
    return F.cross_entropy(logits, y, reduction="sum") * (len(sizes) / sum(sizes))


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s own RNG stream (dropout, augmentation), ``rank`` > 0."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


@torch.no_grad()
def evaluate_sharded(model: nn.Module, dataset: Dataset, device: torch.device) -> dict[str, float]:
    """:func:`evaluate` with each rank scoring a contiguous shard, the sums added up over ranks
    (the plain call in a single process)."""
    world = distributed.world_size()
    if world == 1:
        return evaluate(model, dataset, device=device)
    sizes = split_sizes(len(dataset), world)
    lo = sum(sizes[: distributed.rank()])
    n = sizes[distributed.rank()]
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # correct, loss sum, count
    if n:
        ev = evaluate(model, Subset(dataset, range(lo, lo + n)), device=device)
        sums += torch.tensor(
            [round(ev["accuracy"] * n), ev["loss"] * n, n], dtype=torch.float64, device=device
        )
    correct, loss_sum, total = distributed.all_reduce(sums, op="sum").tolist()
    if total == 0:
        raise ValueError("evaluate: the dataset is empty")
    return {"accuracy": correct / total, "loss": loss_sum / total}


def term_diagnostics(
    ce: torch.Tensor, terms: Mapping[str, torch.Tensor], params: list[torch.Tensor]
) -> dict[str, float]:
    """``diag/<term>/value_ratio`` = term / CE and ``diag/<term>/grad_ratio`` =
    ||d term / d w|| / ||d CE / d w|| over the student's trained parameters ``w``, on one batch.

    A term whose ratios are ~0 cannot move the student (too weak a weight), one whose gradient
    dominates the cross-entropy's by orders of magnitude is the other extreme. Computed with
    ``autograd.grad`` on the retained graph: the parameters' ``.grad`` and the training step
    are untouched (bitwise)."""

    def norm(value):
        if not value.requires_grad:
            return 0.0
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        return math.sqrt(sum(float(g.detach().pow(2).sum()) for g in grads if g is not None))

    ce_value, ce_norm = float(ce.detach()), norm(ce)
    out = {}
    for name, term in terms.items():
        value = float(term.detach())
        out[f"diag/{name}/value_ratio"] = value / ce_value if ce_value else math.inf
        g = norm(term)
        out[f"diag/{name}/grad_ratio"] = g / ce_norm if ce_norm else math.inf
    return out


def make_result(
    status: str,
    reason: str,
    history: dict[str, Any],
    best: float | None,
    test: float | None,
    wall: float,
    steps_here: int,
    step: int,
    resumed_from: int = 0,
) -> TrainResult:
    evals = [r["val/accuracy"] for r in history["epochs"] if "val/accuracy" in r]
    return TrainResult(
        status=status,
        reason=reason,
        final_val_accuracy=evals[-1] if evals else None,
        best_val_accuracy=best,
        test_accuracy=test,
        history={"epochs": history["epochs"], "steps": dict(history["steps"])},
        wall_time=wall,
        steps_per_s=steps_here / wall if wall > 0 else 0.0,
        epochs_completed=len(history["epochs"]),
        steps=step,
        resumed_from_epoch=resumed_from,
    )


class StepBudget(NamedTuple):
    """Epochs and steps of a run: a step budget (li2020's iterations) becomes whole epochs, the
    last one cut short; the term diagnostics are taken on ~:data:`DIAG_EPOCHS` of them."""

    n_epochs: int
    total_steps: int
    diag_every: int

    def is_last(self, epoch: int) -> bool:
        return epoch == self.n_epochs - 1

    def diagnoses(self, epoch: int) -> bool:
        """Whether the first batch of ``epoch`` takes the term diagnostics."""
        return epoch % self.diag_every == 0 or self.is_last(epoch)


def step_budget(train_set: Dataset, cfg: TrainConfig) -> StepBudget:
    steps_per_epoch = len(epoch_loader(train_set, cfg, 0))
    n_epochs = -(-cfg.steps // steps_per_epoch) if cfg.steps is not None else cfg.epochs
    total_steps = cfg.steps if cfg.steps is not None else n_epochs * steps_per_epoch
    return StepBudget(n_epochs, total_steps, max(1, n_epochs // DIAG_EPOCHS))


@dataclass
class EpochStats:
    """One epoch's logged step values (summed, for their means) and term diagnostics: made by
    the epoch's steps, turned into the epoch's record at its end."""

    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    diag: dict[str, float] = field(default_factory=dict)

    def log(self, step: int, record: Mapping[str, Any], steps: dict[str, list]) -> None:
        """Append step ``step``'s scalar values of ``record`` to the series ``steps`` and to
        the epoch's sums."""
        steps["step"].append(step)
        for key, value in record.items():
            v = log_scalar(value)
            if v is not None:
                steps[key].append(v)
                self.sums[key] += v
                self.counts[key] += 1

    def record(self, epoch: int, lr: float) -> dict[str, Any]:
        """The epoch's record: its index, the rate, the means of the logged values, the
        diagnostics (validation is added by the caller)."""
        means = {k: self.sums[k] / self.counts[k] for k in self.sums}
        return {"epoch": epoch, "lr": lr, **means, **self.diag}
