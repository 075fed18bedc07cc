"""A training run's settings and outcome: :class:`TrainConfig` (with its checks, the ``train:``
keys of a suite, listed in docs/train-options.md), :class:`ParamGroup` (layer-wise learning rates)
and :class:`TrainResult`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from harness.training.precision import GPU_DEFAULTS, check_gpu_options

__all__ = [
    "TrainConfig",
    "ParamGroup",
    "TrainResult",
    "assign_param_groups",
    "KEYED_WHEN_SET",
    "REGULARIZER_PREFIX",
    "SCHEDULES",
    "REG_BATCHES",
    "TEACHER_MODES",
    "yaml_number_hint",
]

SCHEDULES = ("step", "cosine", "constant")
REG_BATCHES = ("global", "local")
TEACHER_MODES = ("eval", "train")
#: name prefix of the regularizer's own parameters (learned embeddings) in ``param_groups``
REGULARIZER_PREFIX = "regularizer."
_GLOB_CHARS = frozenset("*?[")


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
    """Hyper-parameters of one training run: a suite's ``train:`` keys (docs/train-options.md).

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
        (:func:`harness.training.distributed.gather_batch`); ``"local"`` computes it on each
        rank's slice of ``batch_size / world_size`` examples (the loss is then the ranks' mean).
        No effect in a single process. Written into :meth:`to_dict` only when not ``"global"``.
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
                raise ValueError(f"{name} must be an integer; got {v!r}" + yaml_number_hint(v))
        for name in ("lr", "momentum", "weight_decay", "gamma", "max_grad_norm"):
            v = getattr(self, name)
            if v is None and name == "max_grad_norm":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number; got {v!r}" + yaml_number_hint(v))
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

        Fields added after suites were first keyed (:data:`KEYED_WHEN_SET`) appear only when
        set to something else than their default: a suite's job keys are hashes of this dict,
        and must not change for jobs that do not use the new setting.
        """
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        d["param_groups"] = [
            {"match": list(g.match), "lr_mult": g.lr_mult} for g in self.param_groups
        ]
        for name, default in KEYED_WHEN_SET.items():
            if d[name] == default:
                del d[name]
        return d


#: fields left out of :meth:`TrainConfig.to_dict` at their default (name -> default)
KEYED_WHEN_SET: dict[str, Any] = {
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


def yaml_number_hint(v) -> str:
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
