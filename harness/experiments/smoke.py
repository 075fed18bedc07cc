"""``otransfer run SUITE --smoke``: every job template of a suite, two steps each, before a GPU-day.

A template is a job of the suite with its seeds and grid values collapsed to the first
(:func:`~harness.experiments.suite.quick_suite`): each stage x dataset x model pair x
regularizer x tap set. Each runs, through the real runner (:func:`run_suite`), two SGD steps at
the smallest batch that keeps the shapes (2; a stage with an lu2017 label cost gets two
examples of every class, which the cost needs), an evaluation (validation split after each
step, test split at the end), a checkpoint after step 1, an interruption there, and a resume
from that checkpoint (checked: the record says it resumed from epoch 1; a ``select: val``
template must also record the validation accuracy that its report selects on). The data are
seeded random stand-ins of each dataset's real shape and class count
(:mod:`harness.zoo.standin`), the models are built at their real sizes, and a stage's
``pretrained`` file is replaced by random weights written to the throwaway folder: nothing is
downloaded or read. Teacher stages feed student stages as in a real run (their weights saved,
verified, loaded).

One smoke-only adjustment, said in the output: a teacher's batch-norm running statistics are
re-estimated on its current weights (train-mode forwards over the stand-in training set, no
gradient) before a student uses it. After two SGD steps at lr 0.1 they still describe the
initial weights, and in the 333 bottleneck blocks of ResNet-1001 that mismatch compounds until
the eval-mode outputs overflow ("non-finite inputs"). A real run does not meet it:
the same network at lr 0.1, batch 4, gave eval-mode outputs of NaN after 2 steps, 2e14 after
10, 6e4 after 30 and 3.9 after 60 (finite from then on), and 7.8 after 2 steps once its
statistics were re-estimated; a real run evaluates first after an epoch (782 steps at batch 64).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from harness.experiments.suite import PRETRAINED, Job, Suite, expand, load_suite

__all__ = ["smoke_suite", "run_smoke", "SmokeResult", "cover_sample", "template_features"]

SMOKE_STEPS = 2
#: why a ``select: val`` template fails when its run recorded no validation accuracy
NO_VAL = (
    "select: val, but no validation accuracy was recorded: the stage has no validation "
    "split (set dataset_params.val_size, or a 'splits: {val: ...}' the dataset has)"
)


class _Interrupt(BaseException):
    """Raised after a job's first epoch: the checkpoint is written, the resume must use it."""


@dataclasses.dataclass
class SmokeResult:
    job: Job
    status: str  # "ok" | "failed" | "not run"
    reason: str = ""
    wall_time: float = 0.0
    resumed: bool = False


def _label_cost_stage(stage) -> bool:
    return any("label_cost" in str(params) for _, params in stage.regularizers)


def stage_batch(stage, batch: int) -> int:
    """The smoke batch of ``stage``: ``batch``, or twice the largest class count where a
    label cost needs every class twice (the stand-in's training split is one batch)."""
    if not _label_cost_stage(stage):
        return batch
    from harness.zoo.standin import standin_classes

    return max(batch, *(2 * standin_classes(d, dict(stage.dataset_params)) for d in stage.datasets))


def smoke_suite(
    suite: Suite, weights_dir: Path, batch: int = 2, device: str | None = None
) -> Suite:
    """``suite``'s templates as a throwaway suite ``<name>-smoke``: first seed and grid value,
    2 steps at the smoke batch (a ``steps: 0`` stage stays evaluation only), evaluation and a
    checkpoint every epoch, ``pretrained`` files replaced by random weights in
    ``weights_dir``."""
    from harness.experiments.suite import quick_suite

    quick = quick_suite(suite)
    stages = []
    for s in quick.stages:
        train = {
            **s.train,
            "steps": 0 if s.train.get("steps") == 0 else SMOKE_STEPS,
            "epochs": 1,
            "batch_size": stage_batch(s, batch),
            "eval_every": 1,
            "checkpoint_every": 1,
            "log_every": 1,
            "device": device or "cpu",
        }
        pretrained = s.pretrained
        if pretrained is not None:
            pretrained = str(_random_weights(s.model, dict(s.model_params), weights_dir))
        stages.append(dataclasses.replace(s, train=train, pretrained=pretrained))
    return dataclasses.replace(quick, name=f"{suite.name}-smoke", stages=tuple(stages))


def _random_weights(model: str, params: dict, folder: Path) -> Path:
    """A random-weights state_dict of ``model`` with an ImageNet head (the files the suites
    name are ImageNet weights), written once."""
    import torch

    from harness.zoo.models import build_model

    path = folder / f"{model}-random.pth"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        mp = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        torch.save(build_model(model, 1000, **mp).state_dict(), path)
    return path


# --------------------------------------------------------------------------- coverage sample


def template_features(job: Job) -> set[str]:
    """What a template exercises: its model, its teacher's model, each regularizer term, each
    tap, each OT plan / solver, its label cost and its input shape."""
    cfg = job.config
    feats = {f"model:{cfg['model']}", f"dataset:{cfg['dataset']}"}
    for term in cfg["regularizer"].split("+"):
        feats.add(f"term:{term}")
    for key, value in cfg["regularizer_params"].items():
        name = key.rsplit(".", 1)[-1]
        if name == "taps":
            feats.update(f"tap:{t}" for t in value)
        elif name in ("plan", "method"):
            feats.add(f"solver:{value}")
        elif name == "label_cost":
            feats.add(f"label_cost:{value.get('kind') if isinstance(value, dict) else value}")
        elif name == "embed":
            feats.add(f"embed:{value}")
    if cfg.get("source"):
        feats.add("source")
    return feats


def cover_sample(jobs: Sequence[Job], by_key: dict[str, Job]) -> list[Job]:
    """A few templates covering every feature of ``jobs`` (greedy set cover, cheapest models
    first on ties), with the teacher and init jobs they need, in the suite's order."""
    left = set().union(*(template_features(j) for j in jobs)) if jobs else set()
    chosen: dict[str, Job] = {}
    while left:
        best = max(
            jobs, key=lambda j: (len(template_features(j) & left), -_closure_size(j, by_key))
        )
        left -= template_features(best)
        for j in _closure(best, by_key):
            chosen[j.key] = j
    order = {j.key: i for i, j in enumerate(by_key.values())}
    return sorted(chosen.values(), key=lambda j: order[j.key])


def _closure(job: Job, by_key: dict[str, Job]) -> list[Job]:
    out = [job]
    for ref in ("teacher", "init"):
        dep = job.config.get(ref)
        if dep and dep != PRETRAINED and dep in by_key:
            out += _closure(by_key[dep], by_key)
    return out


def _closure_size(job: Job, by_key: dict[str, Job]) -> int:
    return len(_closure(job, by_key))


# --------------------------------------------------------------------------- running


@contextlib.contextmanager
def _fresh_teacher_statistics():
    """Smoke only (module doc): re-estimate a teacher's batch-norm running statistics on its
    current weights before it is used."""
    from unittest import mock

    from harness.experiments import train_job

    original = train_job.load_teacher

    def teacher(cfg, k, deps):
        model = original(cfg, k, deps)
        if model is not None:
            recalibrate_batchnorm(model, train_job.load_datasets(cfg, evals=False)[0])
        return model

    with mock.patch.object(train_job, "load_teacher", teacher):
        yield


def recalibrate_batchnorm(model, dataset, batch_size: int = 64) -> int:
    """Reset every batch norm's running statistics and re-estimate them (cumulative average)
    from train-mode forwards over ``dataset`` without gradients; the model is left in eval
    mode. Returns the number of batch-norm layers."""
    import torch
    from torch.utils.data import DataLoader

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    device = next(model.parameters()).device
    with torch.no_grad():
        for x, _ in DataLoader(dataset, batch_size=batch_size):
            if x.shape[0] > 1:
                model(x.to(device))
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    model.eval()
    return len(bns)


def run_smoke(
    suite: Suite | str,
    overrides: Iterable[str] = (),
    batch: int = 2,
    device: str | None = None,
    sample: bool | Callable = False,
    image_size: int = 224,
    folder: str | None = None,
    say: Callable[[str], None] | None = print,
) -> list[SmokeResult]:
    """Run every template of ``suite`` (or a :func:`cover_sample` of them) as the module doc
    says, in a throwaway folder (``folder``, else a temporary one, removed afterwards); one
    :class:`SmokeResult` per template, in the suite's order. ``sample``: True for
    :func:`cover_sample`, or ``fn(jobs, by_key) -> jobs`` choosing the templates (with the
    jobs they need). ``image_size`` shrinks the 224-pixel datasets (CI only)."""
    if not isinstance(suite, Suite):
        suite = load_suite(suite, list(overrides))
    tmp = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="otransfer-smoke-"))
    try:
        smoke = smoke_suite(suite, tmp / "weights", batch, device)
        jobs = expand(smoke)
        by_key = {j.key: j for j in jobs}
        if sample:
            jobs = (cover_sample if sample is True else sample)(jobs, by_key)
        return _run_jobs(smoke, jobs, tmp, device, image_size, say or (lambda s: None))
    finally:
        if not folder:
            shutil.rmtree(tmp, ignore_errors=True)


def _run_jobs(smoke: Suite, jobs: list[Job], tmp: Path, device, image_size, say):
    from harness.zoo.standin import standin_datasets

    stages = {s.name: s for s in smoke.stages}
    results: dict[str, SmokeResult] = {}
    with _fresh_teacher_statistics():
        for job in jobs:
            stage = stages[job.stage]
            failed_dep = next(
                (d for d in _deps(job) if d in results and results[d].status != "ok"), None
            )
            if failed_dep is not None:
                res = SmokeResult(
                    job,
                    "not run",
                    f"its {_dep_role(job, failed_dep)} job "
                    f"({results[failed_dep].job.stage}) failed",
                )
            else:
                with standin_datasets(
                    n=stage.train["batch_size"],
                    cover=_label_cost_stage(stage),
                    image_size=image_size,
                ):
                    res = _run_one(smoke, job, tmp, device)
            results[job.key] = res
            say(format_line(res))
    return list(results.values())


def _deps(job: Job) -> list[str]:
    return [
        job.config[r]
        for r in ("teacher", "init")
        if job.config.get(r) and job.config[r] != PRETRAINED
    ]


def _dep_role(job: Job, key: str) -> str:
    return "teacher" if job.config.get("teacher") == key else "init"


def _run_one(smoke: Suite, job: Job, tmp: Path, device) -> SmokeResult:
    """Two steps with an interruption after the first and a resume: two run_suite calls."""
    from harness.experiments.runner import run_suite

    got: dict[str, Any] = {}
    interrupted: set[str] = set()

    def on_epoch(j, epoch, record):
        if epoch == 0 and j.key not in interrupted:
            interrupted.add(j.key)
            raise _Interrupt

    t0 = time.perf_counter()
    for _ in range(2):
        try:
            run_suite(
                smoke,
                storage=f"sqlite:///{tmp}/runs.sqlite3",
                progress=False,
                results_root=tmp,
                log=None,
                device=device,
                jobs=[job],
                batch=False,
                on_epoch=on_epoch,
                on_job=lambda j, m: got.update(m),
            )
            break
        except _Interrupt:
            continue
    wall = time.perf_counter() - t0
    if got.get("status") != "completed":
        return SmokeResult(job, "failed", got.get("reason") or "no record", wall)
    steps = job.config["train"].get("steps")
    resumed = got.get("resumed_from_epoch") == 1
    if steps and not resumed:
        return SmokeResult(
            job,
            "failed",
            f"did not resume from its epoch-1 checkpoint "
            f"(resumed_from_epoch={got.get('resumed_from_epoch')})",
            wall,
        )
    if job.select == "val" and got.get("val_accuracy") is None:
        return SmokeResult(job, "failed", NO_VAL, wall, resumed)
    return SmokeResult(job, "ok", "", wall, resumed)


def describe(job: Job, by_key: dict[str, Job] | None = None) -> str:
    cfg = job.config
    teacher = cfg.get("teacher")
    pair = cfg["model"]
    if teacher == PRETRAINED:
        pair = f"{cfg['model']} <- {cfg['model']} (pretrained)"
    elif teacher and by_key and teacher in by_key:
        pair = f"{cfg['model']} <- {by_key[teacher].config['model']}"
    taps = sorted({str(v) for k, v in cfg["regularizer_params"].items() if k.endswith("taps")})
    return f"{job.stage} {cfg['dataset']} {pair} {job.label}" + (
        f" taps={'/'.join(taps)}" if taps else ""
    )


def format_line(res: SmokeResult) -> str:
    what = f"{res.job.stage} {res.job.dataset} {res.job.config['model']} {res.job.label}"
    if res.status == "ok":
        how = "eval only (steps: 0)" if not res.resumed else "2 steps, eval, checkpoint, resume"
        return f"ok      {what}: {how} ({res.wall_time:.1f} s)"
    reason = " ".join(res.reason.split())
    return f"{res.status.upper():7s} {what}: {reason[:300]}"


def header(suite: Suite, batch: int, image_size: int, sample: bool) -> str:
    from harness.zoo.data import get_dataset

    datasets = sorted({d for s in suite.stages for d in s.datasets})
    standin = [d for d in datasets if get_dataset(d).needs_root]
    pretrained = sorted({s.model for s in suite.stages if s.pretrained})
    batches = sorted({s.train.get("batch_size", 64) for s in suite.stages})
    lines = [
        f"smoke run of {suite.name}: {'a covering sample of ' if sample else 'every '}"
        f"job template (first seed, first grid value), {SMOKE_STEPS} SGD steps at batch "
        f"{batch} (the smallest that keeps the shapes; the suite's: "
        f"{'/'.join(map(str, batches))}), evaluation, checkpoint, interruption and resume",
        "  data: seeded random stand-ins of the real shapes and class counts for "
        f"{', '.join(standin) or 'none (every dataset is embedded)'}"
        + (f" (224-pixel images shrunk to {image_size} for CI)" if image_size != 224 else ""),
        "  models at their real sizes; random weights"
        + (f" stand in for the pretrained files of {', '.join(pretrained)}" if pretrained else ""),
        "  teachers' batch-norm statistics re-estimated on their current weights before "
        "use (2 steps leave them stale; see harness/experiments/smoke.py)",
    ]
    return "\n".join(lines)


def smoke_cli(args) -> int:
    """``otransfer run SUITE --smoke``: one line per template, the wall time; exit 1 on any
    failure."""
    batch = getattr(args, "smoke_batch", 2)
    if batch < 2:
        raise ValueError(f"--smoke-batch must be >= 2 (batch norm needs two examples); got {batch}")
    suite = load_suite(args.suite, args.set or ())
    print(header(suite, batch, 224, False), flush=True)
    t0 = time.perf_counter()
    results = run_smoke(suite, batch=batch, device=args.device, say=lambda s: print(s, flush=True))
    wall = time.perf_counter() - t0
    bad = [r for r in results if r.status != "ok"]
    print(
        f"{suite.name} smoke: {len(results) - len(bad)} of {len(results)} templates ok, "
        f"{len(bad)} failed or not run, in {wall:.1f} s"
    )
    return 1 if bad else 0
