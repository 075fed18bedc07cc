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

Conventions this module relies on (design.md, Representation contract):

* the teacher is run under ``torch.no_grad()`` with dropout off; its parameters never enter the
  optimiser, so no gradient reaches it. Its batch norm uses its running statistics
  (``teacher_mode="eval"``) or, with ``teacher_mode="train"``, the batch's statistics as the
  student's does (li2020 §3: the reference T is the initial network A^(0)), its running
  statistics left untouched;
* ``param_groups`` scale the learning rate of parameters matched by name (lu2017 §4: conv1-3
  frozen, conv4-5 at a small rate, fc6-7 at a larger one); a group at ``lr_mult: 0`` is frozen
  (``requires_grad`` off during the run, out of the optimiser and its weight decay);
* a regularizer that ``needs_source_head`` (lu2017) reads the source head's logits from the
  tap point ``"source_head"`` of ``model.tap_points`` (recorded unpooled).

Multi-process training: under ``torchrun`` (``WORLD_SIZE`` > 1) :func:`train` joins the process
group (:mod:`harness.training.distributed`; gloo on the CPU, NCCL on GPUs), wraps the model in
``DistributedDataParallel`` and gives each rank a contiguous slice of the seeded global batch,
so that ``batch_size`` stays the *global* batch size and the union of the ranks' slices is the
single-process batch. ``TrainConfig.reg_batch`` says whether the regularizer sees that global
batch (its inputs all-gathered across ranks) or each rank's own slice.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
import random
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, Subset

from harness.training import distributed
from harness.training.checkpoints import CheckpointError, load_checkpoint, move_aside
from harness.training.checkpoints import save_atomic as _save_atomic  # (tests replace it)
from harness.training.divergence import diverged
from harness.training.precision import (
    GPU_DEFAULTS,
    autocast,
    channels_last,
    check_gpu_options,
    f32,
    loader_kwargs,
    to_float32,
)
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
    "SOURCE_HEAD_TAP",
    "REGULARIZER_PREFIX",
]

SOURCE_HEAD_TAP = "source_head"
SCHEDULES = ("step", "cosine", "constant")
REG_BATCHES = ("global", "local")
TEACHER_MODES = ("eval", "train")
#: name prefix of the regularizer's own parameters (learned embeddings) in ``param_groups``
REGULARIZER_PREFIX = "regularizer."
_GLOB_CHARS = frozenset("*?[")


# --------------------------------------------------------------------------- config / result


@dataclass(frozen=True)
class ParamGroup:
    """Parameters matched by name that train at ``lr_mult`` times the run's learning rate.

    Attributes
    ----------
    match : tuple of str
        Patterns on parameter names (``model.named_parameters()``; the regularizer's own
        parameters as ``"regularizer." + name``). A pattern without ``*``, ``?`` or ``[`` is a
        module path or parameter name, matched at dotted boundaries: ``"features.0"`` matches
        ``features.0.weight`` and ``features.0.bias``, not ``features.01.weight``. Otherwise it
        is an ``fnmatch`` glob on the whole name (``"*.bn*.weight"``; ``*`` crosses dots).
        A single string is accepted for one pattern.
    lr_mult : float
        Multiplier of ``lr`` (and so of the schedule's rate at every step), ``>= 0``. ``0``
        freezes the parameters: ``requires_grad`` is off during the run (restored afterwards),
        they are left out of the optimiser, so neither the gradient nor weight decay nor
        momentum moves them.
    """

    match: tuple[str, ...]
    lr_mult: float = 1.0

    def __post_init__(self):
        match = (self.match,) if isinstance(self.match, str) else self.match
        if (
            not isinstance(match, (tuple, list))
            or not match
            or not all(isinstance(m, str) and m for m in match)
        ):
            raise ValueError(
                f"param_groups: 'match' must be a non-empty string or a non-empty "
                f"list of them; got {self.match!r}"
            )
        object.__setattr__(self, "match", tuple(match))
        if (
            isinstance(self.lr_mult, bool)
            or not isinstance(self.lr_mult, (int, float))
            or not math.isfinite(self.lr_mult)
            or self.lr_mult < 0
        ):
            raise ValueError(
                f"param_groups: 'lr_mult' must be a finite number >= 0 (0 freezes); "
                f"got {self.lr_mult!r}"
            )
        object.__setattr__(self, "lr_mult", float(self.lr_mult))

    @classmethod
    def parse(cls, entry: Any) -> "ParamGroup":
        """A group from a suite's ``{match: ..., lr_mult: ...}`` mapping (or a group)."""
        if isinstance(entry, cls):
            return entry
        if not isinstance(entry, Mapping):
            raise ValueError(
                f"param_groups: an entry is a mapping {{match: PATTERN(S), "
                f"lr_mult: NUMBER}}; got {entry!r}"
            )
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in entry if k not in known]
        if unknown:
            raise ValueError(
                f"param_groups: unknown key {unknown[0]!r}; expected {', '.join(known)}"
            )
        if "match" not in entry:
            raise ValueError("param_groups: an entry needs 'match' (parameter-name patterns)")
        return cls(**entry)

    def matches(self, name: str) -> bool:
        """Whether parameter ``name`` is one of this group's."""
        return any(_matches(p, name) for p in self.match)


def _matches(pattern: str, name: str) -> bool:
    if _GLOB_CHARS & set(pattern):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern or name.startswith(pattern + ".")


def assign_param_groups(names: list[str], groups: tuple[ParamGroup, ...]) -> list[int | None]:
    """Return, for each parameter name, the index of its group (``None``: no group, lr_mult 1).

    The first group with a matching pattern wins. Raises ``ValueError`` naming the pattern when
    a pattern matches no parameter at all, and naming the group when every parameter it
    matches went to earlier groups (a group that would change nothing is a typo).

    Parameters
    ----------
    names : list of str
        Parameter names (``model.named_parameters()``, regularizer ones prefixed with
        :data:`REGULARIZER_PREFIX`).
    groups : tuple of ParamGroup
    """
    for i, g in enumerate(groups):
        for p in g.match:
            if not any(_matches(p, n) for n in names):
                raise ValueError(
                    f"param_groups[{i}]: pattern {p!r} matches no parameter "
                    f"(names look like {', '.join(names[:4])}, ...)"
                )
    out = [next((i for i, g in enumerate(groups) if g.matches(n)), None) for n in names]
    for i, g in enumerate(groups):
        if i not in out:
            raise ValueError(
                f"param_groups[{i}] ({list(g.match)}): every parameter it matches "
                f"belongs to an earlier group (the first match wins)"
            )
    return out


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (typed data, style.md §11).

    Attributes
    ----------
    epochs : int
        Passes over the training set.
    batch_size : int
        Examples per step; the last, incomplete batch is dropped when ``drop_last`` (OT terms and
        batch norm want full batches).
    lr, momentum, weight_decay : float
        SGD with (heavy-ball) momentum; ``weight_decay`` is SGD's, on every trained parameter.
    schedule : {"step", "cosine", "constant"}
        Per-epoch learning rate: ``"step"`` multiplies it by ``gamma`` at each epoch of
        ``milestones`` (li2020 A.2: "divided by 10 at ..."), ``"cosine"`` anneals it to 0 over
        ``epochs``, ``"constant"`` keeps it.
    milestones : tuple of int
        Epochs (0-based count of finished epochs) where ``"step"`` decays the rate.
    gamma : float
        Decay factor of ``"step"``.
    seed : int
        Seeds the parameters' RNG, the shuffling and dropout.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
    eval_every : int
        Evaluate on the validation set every this many epochs (and after the last).
    checkpoint_every : int
        Save a checkpoint every this many epochs (and after the last), when a path is given.
    max_grad_norm : float, optional
        Clip the global gradient norm to this value.
    log_every : int
        Record the per-step trace every this many steps.
    drop_last : bool
        Drop the last incomplete batch of each epoch.
    steps : int, optional
        Train exactly this many SGD steps instead of ``epochs`` epochs (li2020 A.2: "9000
        iterations, divide the learning rate by 10 after 6000"); ``milestones`` then count
        steps, and the schedule advances every step. Evaluation and checkpoints stay per epoch
        (and after the last step). ``steps=0`` trains nothing: the model is only evaluated
        (a pre-trained network used as it is, e.g. a teacher from a weights file).
    reg_batch : {"global", "local"}
        Under multi-process training, the batch the regularizer sees: ``"global"`` all-gathers
        its inputs (tapped student and teacher features, logits, labels) over the ranks, so it
        is computed on the same batch as in one process, with the same gradient
        (:func:`harness.training.distributed.gather_batch`); ``"local"`` computes it on each rank's slice
        of ``batch_size / world_size`` examples (the loss is then the ranks' mean). No effect
        in a single process. Written into :meth:`to_dict` only when not ``"global"``.
    param_groups : tuple of ParamGroup
        Layer-wise learning rates: each group's parameters train at ``lr * lr_mult`` (every
        schedule scales each group's rate alike), the first matching group wins, parameters of
        no group keep ``lr``; ``lr_mult: 0`` freezes (see :class:`ParamGroup`). In a suite,
        ``train: {param_groups: [{match: [features.0, features.3], lr_mult: 0}, ...]}``
        (lu2017 §4's frozen conv1-3, small-rate conv4-5, larger-rate fc6-7). A pattern matching
        no parameter is an error naming it. Written into :meth:`to_dict` only when set.
    teacher_mode : {"eval", "train"}
        The batch norm of the frozen teacher: ``"eval"`` normalises with its running statistics;
        ``"train"`` with each batch's statistics, as the training student's batch norm does, so
        that a teacher copied from the student at initialisation gives the student's very
        features at step 0 (li2020 §3: T = A^(0)). Either way dropout is off, no gradient
        reaches the teacher and its running statistics are left as they were (``"train"``
        neither reads nor updates them). Choose ``"train"`` when the teacher *is* the initial
        student (fine-tuning with ``teacher: pretrained`` / the ``init`` stage), ``"eval"`` for
        a separately trained teacher (compression). Written into :meth:`to_dict` only when not
        ``"eval"``.
    precision : {"fp32", "bf16"}
        GPU option (:mod:`harness.training.precision`); keyed only when set, like the two below.
    channels_last : bool
        GPU option: conv models and their inputs in ``torch.channels_last`` memory format.
    loader_workers : int
        GPU option: DataLoader worker processes (>= 0); the batch order does not depend on it.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "step"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    seed: int = 0
    device: str = "cpu"
    eval_every: int = 1
    checkpoint_every: int = 1
    max_grad_norm: float | None = None
    log_every: int = 1
    drop_last: bool = True
    steps: int | None = None
    # The OT terms depend on the batch they see: in the neurons view the batch size n is the
    # dimension of each neuron (li2020 §2.2), and li2020 Table 4 (batch-size ablation on
    # Aircraft100) shows accuracy changing with it, dropping at n = 16 for every regularizer.
    # A per-device slice of a large global batch is such a small batch: "global" keeps the
    # regularizer's batch the configured one whatever the number of processes.
    reg_batch: str = "global"
    # lu2017 §4: conv1-3 fixed, conv4-5 at a small rate, fc6-7 at a larger one
    param_groups: tuple[ParamGroup, ...] = ()
    # li2020 §3 defines the reference as the initial network A^(0): its batch norm must then
    # normalise as the student's does, on the batch ("train"); "eval" was the only behaviour
    # before this field existed, so it is the default (job keys unchanged)
    teacher_mode: str = "eval"
    # GPU runs (docstring "GPU options"); defaults leave job keys unchanged
    precision: str = "fp32"
    channels_last: bool = False
    loader_workers: int = 0

    def __post_init__(self):
        ms = self.milestones
        if (
            isinstance(ms, (str, bytes))
            or not isinstance(ms, (list, tuple))
            or not all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in ms)
        ):
            raise ValueError(
                f"milestones must be a list of non-negative integers (epochs, or "
                f"steps with 'steps'); got {ms!r}"
            )
        object.__setattr__(self, "milestones", tuple(int(m) for m in ms))
        groups = self.param_groups
        if not isinstance(groups, (tuple, list)):
            raise ValueError(
                f"param_groups must be a list of {{match, lr_mult}} entries; got {groups!r}"
            )
        object.__setattr__(self, "param_groups", tuple(ParamGroup.parse(g) for g in groups))
        if self.teacher_mode not in TEACHER_MODES:
            raise ValueError(
                f"teacher_mode must be one of {TEACHER_MODES}; got {self.teacher_mode!r}"
            )
        check_gpu_options(self)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}; got {self.schedule!r}")
        if self.reg_batch not in REG_BATCHES:
            raise ValueError(f"reg_batch must be one of {REG_BATCHES}; got {self.reg_batch!r}")
        for name in (
            "epochs",
            "batch_size",
            "eval_every",
            "checkpoint_every",
            "log_every",
            "steps",
        ):
            v = getattr(self, name)
            if v is None and name == "steps":
                continue
            if isinstance(v, bool) or not isinstance(v, int):  # 2.5, true, "10"
                raise ValueError(f"{name} must be an integer; got {v!r}" + _yaml_number_hint(v))
        for name in ("lr", "momentum", "weight_decay", "gamma", "max_grad_norm"):
            v = getattr(self, name)
            if v is None and name == "max_grad_norm":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(
                    f"{name} must be a finite number; got {v!r}" + _yaml_number_hint(v)
                )
        for name in ("epochs", "batch_size", "eval_every", "checkpoint_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)!r}")
        for name, low, closed in (
            ("lr", 0, False),
            ("momentum", 0, True),
            ("weight_decay", 0, True),
            ("gamma", 0, False),
        ):
            v = getattr(self, name)
            if v < low or (v == low and not closed):
                raise ValueError(f"{name} must be {'>=' if closed else '>'} {low}; got {v!r}")
        if not isinstance(self.drop_last, bool):
            raise ValueError(f"drop_last must be true or false; got {self.drop_last!r}")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(
                f"device must be a torch device such as cpu, cuda or cuda:1; got {self.device!r}"
            ) from None
        if self.steps is not None and int(self.steps) < 0:
            raise ValueError(f"steps must be >= 0 when given; got {self.steps!r}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be positive; got {self.max_grad_norm}")

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-safe dict (tuples as lists).

        Fields added after suites were first keyed (:data:`_KEYED_WHEN_SET`) appear only when
        set to something else than their default: a suite's job keys are hashes of this dict,
        and must not change for jobs that do not use the new setting.
        """
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        d["param_groups"] = [
            {"match": list(g.match), "lr_mult": g.lr_mult} for g in self.param_groups
        ]
        for name, default in _KEYED_WHEN_SET.items():
            if d[name] == default:
                del d[name]
        return d


#: fields left out of :meth:`TrainConfig.to_dict` at their default (name -> default)
_KEYED_WHEN_SET: dict[str, Any] = {
    "reg_batch": "global",
    "param_groups": [],
    "teacher_mode": "eval",
    **GPU_DEFAULTS,
}


@dataclass
class TrainResult:
    """Outcome of :func:`train` (one result type, whatever happened).

    Attributes
    ----------
    status : {"completed", "failed"}
    reason : str
        Why a run failed (``""`` when it completed).
    final_val_accuracy, best_val_accuracy : float or None
        Validation accuracy at the last evaluation, and the best over the evaluations.
    test_accuracy : float or None
        Accuracy on ``test_set`` after training, when one is given.
    history : dict
        ``{"epochs": [per-epoch records], "steps": {series: [values]}}``. An epoch record holds
        ``epoch``, ``lr``, the means of the step series over the epoch (``train/loss``,
        ``train/ce``, one ``train/<term>`` per regularizer term, the solvers' stats such as
        ``omega_p/penultimate/n_iter`` and ``.../matched``) and ``val/accuracy``, ``val/loss``
        when evaluated. ``steps`` holds those series step by step (every ``log_every`` steps),
        with the global ``step`` index.
    wall_time : float
        Seconds spent in this call (not counting a resumed run's earlier part).
    steps_per_s : float
        Optimisation steps per second in this call.
    epochs_completed, steps : int
    resumed_from_epoch : int
        Epochs already done in the checkpoint this call resumed from (0: a fresh run).
    """

    status: str
    reason: str = ""
    final_val_accuracy: float | None = None
    best_val_accuracy: float | None = None
    test_accuracy: float | None = None
    history: dict[str, Any] = field(default_factory=dict)
    wall_time: float = 0.0
    steps_per_s: float = 0.0
    epochs_completed: int = 0
    steps: int = 0
    resumed_from_epoch: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- evaluation


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


# --------------------------------------------------------------------------- helpers


def _multi_crop_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Log of the crops' mean softmax: li2020 A.1 "average the scores of 10 cropped patches"."""
    n, k = x.shape[:2]
    probs = F.softmax(model(x.flatten(0, 1)), dim=-1).view(n, k, -1).mean(1)
    return probs.clamp_min(1e-12).log()


def _scalar(v: Any) -> float | None:
    """A stat or loss as a float for logging (``float`` syncs with the GPU; log time only)."""
    if isinstance(v, torch.Tensor):
        return float(v.detach().float().mean()) if v.numel() else None
    if isinstance(v, (bool, int, float, np.floating, np.integer)):
        return float(v)
    return None


def _make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(
            opt, milestones=list(cfg.milestones), gamma=cfg.gamma
        )
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps or cfg.epochs)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0)


def _base_lr(opt: torch.optim.Optimizer) -> float:
    """The schedule's current rate ``lr`` (a group's rate is ``lr * lr_mult``), for logging."""
    g = opt.param_groups[0]
    mult = g.get("lr_mult", 1.0)
    return g["lr"] if mult == 1.0 else g["lr"] / mult


def _cycle(loader: DataLoader):
    """``(slice sizes, batch)`` of ``loader`` forever (same order each pass: the epoch's
    shuffle); the sizes are every rank's share of the global batch (:meth:`_RankSlice.split`)."""
    while True:
        for i, batch in enumerate(loader):
            yield loader.batch_sampler.split(i), batch


def _split_sizes(n: int, world: int) -> list[int]:
    """Sizes of the ranks' contiguous slices of an ``n``-example batch (the first ones larger)."""
    return [n // world + (r < n % world) for r in range(world)]


class _RankSlice(Sampler):
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
        return _split_sizes(min(size, len(self.batches.sampler) - i * size), self.world)

    def __iter__(self):
        for batch in self.batches:
            sizes = _split_sizes(len(batch), self.world)
            lo = sum(sizes[: self.rank])
            yield batch[lo : lo + sizes[self.rank]]


def _epoch_loader(
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
            batch_sampler=_RankSlice(batches, rank, world),
            generator=g,
            collate_fn=batched_collate,
            **loader_kwargs(cfg),
        )
    return DataLoader(
        dataset, batch_sampler=_RankSlice(batches, rank, world), generator=g, **loader_kwargs(cfg)
    )


def _check_split(name: str, dataset: Dataset, cfg: TrainConfig, world: int) -> None:
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


def _local_ce(logits: torch.Tensor, y: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Cross-entropy of this rank's slice, scaled so that its mean over the ranks (DDP's
    gradient averaging) is the global batch's mean: the local mean when the slices are equal."""
    if len(set(sizes)) == 1:
        return F.cross_entropy(logits, y)
    return F.cross_entropy(logits, y, reduction="sum") * (len(sizes) / sum(sizes))


def _gathered(ctx: RegContext, sizes: list[int]) -> RegContext:
    """``ctx`` with every batch-indexed input all-gathered over the ranks (reg_batch="global").

    The student's features and logits stay differentiable w.r.t. this rank's slice (see
    :func:`harness.training.distributed.gather_batch` for why the gradient is the single-process one).
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


def _agreed(reason: str | None) -> str | None:
    """Under DDP, the first failing rank's reason on every rank, so that all stop together
    (one rank raising alone would leave the others waiting in the next collective)."""
    if distributed.world_size() == 1 or not distributed.any_rank(reason is not None):
        return reason
    reasons = distributed.all_gather_object(reason)
    first = next(r for r, v in enumerate(reasons) if v is not None)
    return f"{reasons[first]} (on rank {first})"


def _rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s own RNG stream (dropout, augmentation), ``rank`` > 0."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


@torch.no_grad()
def _evaluate_sharded(model: nn.Module, dataset: Dataset, device: torch.device) -> dict[str, float]:
    """:func:`evaluate` with each rank scoring a contiguous shard, the sums added up over ranks
    (the plain call in a single process)."""
    world = distributed.world_size()
    if world == 1:
        return evaluate(model, dataset, device=device)
    sizes = _split_sizes(len(dataset), world)
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


def _rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain data, so that a checkpoint loads with
    ``torch.load(weights_only=True)`` (no pickled objects: a results directory cannot run code)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [
            str(kind),
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((kind, keys.astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(x):
    """``random.setstate`` wants the nested tuples ``random.getstate`` gave."""
    return tuple(_as_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


def _yaml_number_hint(v) -> str:
    """A hint for YAML 1.1's strings that look like numbers (``1e30`` without a dot)."""
    if isinstance(v, str):
        try:
            float(v)
        except ValueError:
            return ""
        return (
            f" (YAML reads {v!r} as a string: write it with a dot and a signed exponent, "
            f"e.g. 1.0e+30)"
        )
    return ""


def checkpoint_problem(path: str | os.PathLike, config: "TrainConfig") -> str | None:
    """Why checkpoint ``path`` cannot be resumed by a run of ``config`` (not ours, unreadable,
    written with another config), or None when it can (or there is none)."""
    if not os.path.lexists(path):
        return None
    try:
        _check_resumable(load_checkpoint(path)["config"], config, path)
    except (CheckpointError, ValueError) as exc:
        return str(exc)
    return None


# settings that may change between a run and its resumption without changing its trajectory
# (``epochs`` may grow, except under the cosine schedule, whose rates depend on it)
_RESUMABLE_CHANGES = {"epochs", "eval_every", "checkpoint_every", "log_every", "device"}


def _check_resumable(saved: Mapping[str, Any], cfg: TrainConfig, path) -> None:
    # a field missing from either side is at its default (older checkpoints, to_dict)
    saved = {**_KEYED_WHEN_SET, **saved}
    now = {**_KEYED_WHEN_SET, **cfg.to_dict()}
    free = _RESUMABLE_CHANGES - ({"epochs"} if cfg.schedule == "cosine" else set())
    diff = {k: (saved.get(k), now[k]) for k in now if k not in free and saved.get(k) != now[k]}
    if diff:
        raise ValueError(
            f"checkpoint {path} was written with another config "
            f"({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in diff.items())}); "
            f"remove it or use a fresh path"
        )


class _Failure(Exception):
    """Internal: a non-finite loss; turned into a failed TrainResult by :func:`train`."""


# --------------------------------------------------------------------------- training


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
    """Train ``model`` with cross-entropy plus ``regularizer``, SGD with momentum.

    Parameters
    ----------
    model : nn.Module
        The student; trained in place. Maps inputs to ``(n, K)`` logits; its ``tap_points``
        resolve the regularizer's taps (:class:`harness.transfer.taps.Taps`).
    train_set, val_set : Dataset
        Yield ``(x, y)`` with ``y`` a class index. ``val_set`` is evaluated every
        ``config.eval_every`` epochs (optional).
    config : TrainConfig
    regularizer : Regularizer, optional
        From :func:`harness.transfer.regularizers.build_regularizer`; ``None`` is plain training.
    teacher : nn.Module, optional
        Frozen reference network, required when ``regularizer.needs_teacher``; run under
        ``no_grad`` with dropout off, its batch norm as ``config.teacher_mode`` says, never
        optimised. Left in eval mode, its running statistics unchanged.
    initial_weights : mapping, optional
        ``w0`` by parameter name, required when ``regularizer.needs_initial_weights`` (l2sp).
    label_cost : Tensor, optional
        ``(K_src, K_tgt)`` label cost for a ``jtln`` term built without one (lu2017).
    test_set : Dataset, optional
        Evaluated once after training (``TrainResult.test_accuracy``).
    source_set : Dataset, optional
        Joint training (lu2017 §3.1): each step also draws a batch of this source task and adds
        ``source_weight * CE(h_s(x^s), y^s)`` (lu2017 Eq. 2 and 4, ``lambda_s``), ``h_s`` the
        model's source classifier (tap point ``"source_head"``, see
        :func:`harness.zoo.models.with_source_head`). Logged as ``train/source_ce``.
    source_weight : float
        ``lambda_s``.
    checkpoint_path : path, optional
        Save model, regularizer, optimiser, scheduler, epoch, RNG states and history there
        (atomically) every ``config.checkpoint_every`` epochs; when the file exists, resume from
        it: the final weights are those of the uninterrupted run.
    progress : bool
        Show a tqdm bar.
    on_epoch : callable, optional
        ``on_epoch(epoch, record)`` after each epoch (e.g. Optuna reporting/pruning; what it
        raises propagates).

    Returns
    -------
    TrainResult
        ``status="failed"`` with a reason naming the step and term when the loss became
        non-finite; the checkpoint file is then left as it was.

    Notes
    -----
    Per step: batch -> student forward (taps recorded) -> teacher forward (no_grad, taps)
    -> ``ce + sum(terms)`` -> backward -> (clip) -> step; the schedule steps per epoch.
    Regularizers with learned embeddings (lohit2020) are materialised on the first training
    examples before the optimiser is built, so that their parameters are optimised (matched
    by ``config.param_groups`` as ``"regularizer.<name>"``). Parameters frozen by a group at
    ``lr_mult: 0`` get ``requires_grad=False`` for the run (restored on return).

    Under ``torchrun`` (``WORLD_SIZE`` > 1), every rank calls this with the same arguments.
    ``config.batch_size`` is the global batch: every rank draws the same seeded batch of
    indices and loads its contiguous slice (``batch_size`` must be a multiple of the number
    of processes). The model runs under ``DistributedDataParallel``, which averages the
    gradients over the ranks; each rank's cross-entropy is its slice's mean, so the average is
    the global batch's. With ``config.reg_batch="global"`` the regularizer's inputs are
    all-gathered first and its value and gradient are those of one process on the global
    batch; the regularizer's own parameters (embeddings) are averaged by hand. Logged losses
    are the global values (the ranks' mean); solver statistics are the rank's own. Validation
    and test sets are scored in shards and summed. Rank 0 alone writes the checkpoint (which
    keeps every rank's RNG state); each rank has its own dropout / augmentation stream, rank
    0's being the single-process one. ``on_epoch`` runs on every rank. What still differs from
    one process: batch-norm statistics are per slice, dropout masks, and float summation order.
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
            for epoch in range(run.start_epoch, run.n_epochs):
                run.train_epoch(epoch)
                record = run.end_epoch(epoch)
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


class _OneProcess:
    """How a run spans processes: one. (:class:`_ManyProcesses` is the ``torchrun`` case; the
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


class _ManyProcesses(_OneProcess):
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
        return _gathered(ctx, sizes) if (self.gather_reg and sizes is not None) else ctx

    def reduce_regularizer_grads(self, params: list[torch.Tensor]) -> None:
        for p in params:  # the regularizer's own parameters are not under DDP
            if p.grad is not None:
                p.grad.copy_(distributed.all_reduce(p.grad))

    def mean_losses(self, losses: dict[str, torch.Tensor], loss: torch.Tensor):
        # global values: the ranks' mean (ce is scaled for it)
        means = distributed.all_reduce(
            torch.stack([v.detach().float().mean() for v in losses.values()])
        )
        return dict(zip(losses, means)), means.sum()


class _JointSource:
    """Joint training (lu2017 §3.1) as a strategy of the loop: each step first draws a batch of
    the source task and scores it through the model's source classifier (tap point
    ``"source_head"``); :func:`train` adds ``source_weight * CE(h_s(x^s), y^s)`` (lu2017 Eq. 2
    and 4, ``lambda_s``) to the loss as the term ``source_ce``. Without a source task the loop
    holds ``None`` instead."""

    def __init__(
        self, source_set: Dataset, weight: float, src_tap: Taps, hooks: list, device: torch.device
    ):
        self.source_set, self.weight = source_set, weight
        self.src_tap, self.hooks, self.device = src_tap, hooks, device
        self.batches = None

    def start_epoch(self, cfg: TrainConfig, epoch: int, rank: int, world: int) -> None:
        self.batches = _cycle(_epoch_loader(self.source_set, cfg, epoch, 1, rank, world))

    def term(self, model: nn.Module) -> torch.Tensor:
        """``source_weight * CE`` of the next source batch, forwarded before the target's."""
        src_sizes, (xs, ys) = next(self.batches)
        model(xs.to(self.device))  # the module itself: DDP sees one forward a step
        ce = _local_ce(self.src_tap.features[SOURCE_HEAD_TAP], ys.to(self.device), src_sizes)
        for t in self.hooks:
            t.clear()  # the taps now record the target batch only
        return self.weight * ce


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
            _ManyProcesses(self.world, cfg.reg_batch == "global" and reg is not None)
            if self.world > 1
            else _OneProcess()
        )
        taps_names = tuple(reg.taps) if reg is not None else ()
        self.needs_teacher = needs_teacher = reg is not None and reg.needs_teacher
        needs_source = reg is not None and reg.needs_source_head
        _check_inputs(reg, teacher, initial_weights, label_cost)
        _check_split("train_set", train_set, cfg, self.world)
        if source_set is not None:
            _check_split("source_set", source_set, cfg, self.world)

        # ---- seeds, modules
        _seed_all(cfg.seed)  # the same on every rank: the regularizer's embeddings start equal
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
            _JointSource(source_set, source_weight, self.src_tap, self.hooks, device)
            if source_set is not None
            else None
        )
        # teacher_mode="train" (li2020 §3, T = A^(0)): the teacher's batch norms normalise with
        # the batch's statistics as the training student's do. track_running_stats=False makes
        # a training-mode batch norm neither read nor update its running buffers, so the
        # teacher comes back from this call as it went in (both undone in restore())
        self.batch_stat_norms = (
            [
                m
                for m in teacher.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            ]
            if (teacher is not None and cfg.teacher_mode == "train")
            else []
        )
        for m in self.batch_stat_norms:
            m.train()
            m.track_running_stats = False
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
        """Layer-wise learning rates (lu2017 §4): one SGD group per ``param_groups`` entry,
        lr = lr * lr_mult (the schedulers scale each group's rate alike); lr_mult 0 is frozen:
        no gradient is computed, and no update, momentum or weight decay reaches it."""
        reg, cfg = self.reg, self.cfg
        named = list(self.model.named_parameters()) + (
            [(REGULARIZER_PREFIX + n, p) for n, p in reg.named_parameters()]
            if reg is not None
            else []
        )
        try:
            which = assign_param_groups([n for n, _ in named], cfg.param_groups)
        except ValueError as err:
            raise ValueError(f"train.{err}") from None
        mults = [cfg.param_groups[g].lr_mult if g is not None else 1.0 for g in which]
        for (_, p), mult in zip(named, mults):
            if mult == 0 and p.requires_grad:
                p.requires_grad_(False)
                self.frozen.append(p)
        reg_ids = {id(p) for p in reg.parameters()} if reg is not None else set()
        opt_groups: dict[int, dict[str, Any]] = {}  # unmatched (-1) first, then config order
        for (_, p), g, mult in zip(named, which, mults):
            if p.requires_grad:
                opt_groups.setdefault(
                    -1 if g is None else g, {"params": [], "lr": cfg.lr * mult, "lr_mult": mult}
                )["params"].append(p)
        opt_groups = dict(sorted(opt_groups.items()))
        self.params = [p for grp in opt_groups.values() for p in grp["params"]]
        self.reg_params = [p for p in self.params if id(p) in reg_ids]
        self.student_params = [p for p in self.params if id(p) not in reg_ids]
        self.opt = torch.optim.SGD(
            list(opt_groups.values()) or [{"params": []}],
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
        self.sched = _make_scheduler(self.opt, cfg)
        if self.rank > 0:  # its own dropout / augmentation stream; rank 0 goes on as one process
            _seed_all(_rank_seed(cfg.seed, self.rank))

    def resume(self, checkpoint_path) -> None:
        """Model, regularizer, optimiser, scheduler, counters, history and RNG states from
        ``checkpoint_path`` when it exists (an unreadable one is moved aside with a warning)."""
        rank, cfg = self.rank, self.cfg
        resuming = checkpoint_path is not None and os.path.lexists(checkpoint_path)
        if distributed.broadcast_object(resuming) != resuming:  # rank 0 writes it
            raise RuntimeError(
                f"checkpoint {checkpoint_path}: rank 0 and rank {rank} disagree "
                f"on whether it exists; multi-process runs need a shared file "
                f"system"
            )
        ckpt = None
        if resuming:
            try:
                ckpt = load_checkpoint(checkpoint_path, self.device)
            except CheckpointError as exc:  # restart from scratch; keep the file for a look
                import warnings

                bad = f"{os.fspath(checkpoint_path)}.bad"
                if rank == 0:
                    move_aside(checkpoint_path, bad)
                warnings.warn(f"{exc}; moved to {bad}, training from scratch", stacklevel=3)
                resuming = False
        if not resuming:
            return
        _check_resumable(ckpt["config"], cfg, checkpoint_path)
        self.model.load_state_dict(ckpt["model"])
        if self.reg is not None and ckpt.get("regularizer") is not None:
            self.reg.load_state_dict(ckpt["regularizer"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.start_epoch, self.step = ckpt["epoch"], ckpt["step"]
        self.best_acc = ckpt["best_val_accuracy"]
        self.history = {
            "epochs": list(ckpt["history"]["epochs"]),
            "steps": defaultdict(list, {k: list(v) for k, v in ckpt["history"]["steps"].items()}),
        }
        rng_ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
        if rank < len(rng_ranks):
            _set_rng_state(rng_ranks[rank])
        else:  # more processes than when it was written: a fresh stream for this rank
            _seed_all(_rank_seed(cfg.seed * 1_000_003 + self.start_epoch, rank))

    def wrap_ddp(self) -> None:
        """Multi-process: the model under DDP, which averages the gradients over the ranks."""
        self.net = self.procs.wrap(self.model, self.device)

    def count_steps(self) -> None:
        """Epochs and steps of the run: a step budget (li2020's iterations) becomes whole
        epochs, the last one cut short."""
        cfg = self.cfg
        steps_per_epoch = len(_epoch_loader(self.train_set, cfg, 0))
        self.n_epochs = -(-cfg.steps // steps_per_epoch) if cfg.steps is not None else cfg.epochs
        self.total_steps = cfg.steps if cfg.steps is not None else self.n_epochs * steps_per_epoch
        self.diag_every = max(1, self.n_epochs // DIAG_EPOCHS)  # diagnostics: ~DIAG_EPOCHS

    def open_bar(self, progress: bool) -> None:
        if progress and self.rank == 0:
            from tqdm.auto import tqdm  # lazy: only when shown

            # beneath the suite's bar (harness.experiments.progress), cleared when the job ends
            self.bar = tqdm(
                total=self.total_steps,
                initial=min(self.step, self.total_steps),
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
    def train_epoch(self, epoch: int) -> None:
        """The epoch's steps; their logged means and the term diagnostics in ``self.sums`` /
        ``self.counts`` / ``self.diag`` (read by :meth:`end_epoch`)."""
        cfg, rank, world = self.cfg, self.rank, self.world
        self.model.train()
        self.diag: dict[str, float] = {}
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        if self.joint is not None:
            self.joint.start_epoch(cfg, epoch, rank, world)
        loader = _epoch_loader(self.train_set, cfg, epoch, 0, rank, world)
        for i, (x, y) in enumerate(loader):
            if self.step >= self.total_steps:
                break
            sizes = loader.batch_sampler.split(i)  # every rank's share of the batch
            x = channels_last(self.cfg, x)  # no-op unless channels_last and 4-D
            self.train_step(
                epoch,
                i,
                x.to(self.device, non_blocking=True),
                y.to(self.device, non_blocking=True),
                sizes,
            )

    def train_step(
        self, epoch: int, i: int, x: torch.Tensor, y: torch.Tensor, sizes: list[int]
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
        reason = _agreed(reason)
        if reason is not None:
            raise _Failure(reason)
        ctx = self.context(x, y, logits, sizes)
        terms, loss = self.loss_terms(epoch, ctx, ce, source_term)
        if (
            i == 0
            and self.procs.diagnose
            and terms
            and (epoch % self.diag_every == 0 or epoch == self.n_epochs - 1)
        ):
            # is a term too weak or wrong? On the first batch of ~10 epochs spread over
            # training (a backward per term: every epoch would cost up to +50 % on runs of a
            # few steps an epoch), each term's value and student-gradient norm against the CE's
            self.diag.update(_term_diagnostics(ce, terms, self.student_params))
        self.optimizer_step(loss)
        if self.step % self.cfg.log_every == 0:
            self.log_step(epoch, ce, terms, loss, ctx)
        self.step += 1
        self.steps_here += 1
        if self.cfg.steps:
            self.sched.step()  # milestones count steps (li2020's iterations)
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
        reason = _agreed(reason)
        if reason is not None:
            raise _Failure(reason) from cause
        return terms, loss

    def optimizer_step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()  # under DDP: the model's gradients averaged over the ranks
        self.procs.reduce_regularizer_grads(self.reg_params)
        if self.cfg.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.opt.step()

    def log_step(self, epoch: int, ce, terms, loss, ctx: RegContext) -> None:
        """Every term and the solvers' stats (n_iter, converged, matched = tr(P))."""
        losses = {"train/ce": ce, **{f"train/{k}": v for k, v in terms.items()}}
        losses, loss = self.procs.mean_losses(losses, loss)
        # solver stats are this rank's (the same on every rank when gathered)
        record = {"train/loss": loss, **losses, **ctx.stats}
        steps = self.history["steps"]
        steps["step"].append(self.step)
        for key, value in record.items():
            v = _scalar(value)
            if v is not None:
                steps[key].append(v)
                self.sums[key] += v
                self.counts[key] += 1
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{steps['train/loss'][-1]:.3f}", epoch=epoch, refresh=False)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """The epoch's record: lr, mean logged values, diagnostics, validation; the
        per-epoch schedule steps; non-finite weights raise :class:`_Failure`."""
        sums, counts = self.sums, self.counts
        record: dict[str, Any] = {
            "epoch": epoch,
            "lr": _base_lr(self.opt),
            **{k: sums[k] / counts[k] for k in sums},
            **self.diag,
        }
        if not self.cfg.steps:
            self.sched.step()  # per-epoch schedule (the papers decay at epochs)
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
        last = epoch == self.n_epochs - 1
        if self.val_set is not None and ((epoch + 1) % self.cfg.eval_every == 0 or last):
            ev = _evaluate_sharded(self.model, self.val_set, self.device)
            record.update({"val/accuracy": ev["accuracy"], "val/loss": ev["loss"]})
            if self.best_acc is None or ev["accuracy"] > self.best_acc:
                self.best_acc = ev["accuracy"]
        self.history["epochs"].append(record)
        return record

    def save_checkpoint(self, epoch: int, checkpoint_path) -> None:
        """Every ``checkpoint_every`` epochs and after the last: rank 0 writes, all wait."""
        last = epoch == self.n_epochs - 1
        if checkpoint_path is None or not ((epoch + 1) % self.cfg.checkpoint_every == 0 or last):
            return
        rng_ranks = distributed.all_gather_object(_rng_state())
        if self.rank == 0:  # one writer; the others wait for the file below
            _save_atomic(
                {
                    "model": self.model.state_dict(),
                    "regularizer": self.reg.state_dict() if self.reg is not None else None,
                    "optimizer": self.opt.state_dict(),
                    "scheduler": self.sched.state_dict(),
                    "epoch": epoch + 1,
                    "step": self.step,
                    "best_val_accuracy": self.best_acc,
                    "rng": rng_ranks[0],
                    "config": self.cfg.to_dict(),
                    **({"rng_ranks": rng_ranks} if self.world > 1 else {}),
                    "history": {
                        "epochs": self.history["epochs"],
                        "steps": dict(self.history["steps"]),
                    },
                },
                checkpoint_path,
            )
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
            _evaluate_sharded(self.model, test_set, self.device)["accuracy"]
            if test_set is not None
            else None
        )
        wall = time.perf_counter() - self.t_start
        return _result(
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


def _check_inputs(reg, teacher, initial_weights, label_cost) -> None:
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


DIAG_EPOCHS = 10  # epochs (spread over training) on which the term diagnostics are logged


def _term_diagnostics(
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


def _result(
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


# --------------------------------------------------------------------------- shared steps
# The steps harness.training.batched (K stacked models) shares with this loop, so that a batched
# member draws its batches, schedule, diagnostics and result exactly as train() would.
epoch_loader = _epoch_loader
make_scheduler = _make_scheduler
base_lr = _base_lr
log_scalar = _scalar
seed_all = _seed_all
term_diagnostics = _term_diagnostics
make_result = _result
