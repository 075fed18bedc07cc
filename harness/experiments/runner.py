"""Run a suite: expand it, train each stage's jobs in order, record every job (design.md).

Teachers are trained once: their artefact is ``<results>/<suite>/artefacts/<key>.pt`` (the
``state_dict``), reused when present. A student loads its teacher's (and its ``init`` stage's)
artefact by that job's key (in its config). Jobs whose key is already completed in the storage
are skipped, and a job interrupted mid-training resumes from its last epoch checkpoint
(``artefacts/<key>.ckpt``, removed once the job is recorded), so ``run`` after a crash or a
kill is a resume that loses at most one epoch.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from harness.experiments.artefacts import (
    check_checkpoint,
    load_artefact,
    load_pending,
    save_pending,
    save_state,
    unlink,
)
from harness.experiments.suite import PRETRAINED, Job, Suite, expand, load_suite

__all__ = ["run_suite", "RunSummary", "quick_suite"]


@dataclasses.dataclass
class RunSummary:
    suite: str
    storage: str
    jobs: int
    skipped: int
    completed: int
    failed: int
    wall_time: float
    failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    keys: list[str] = dataclasses.field(default_factory=list)
    #: jobs other workers completed while this one ran
    by_others: int = 0


def quick_suite(suite: Suite) -> Suite:
    """``suite`` with 1 epoch per stage (no step budget), only its first seed and the first value
    of each grid axis (a smoke run), named ``<name>-quick`` so that its records and artefacts
    stay apart from the real runs."""
    stages = tuple(
        dataclasses.replace(
            s,
            train={**s.train, "epochs": 1, "steps": 0 if s.train.get("steps") == 0 else None},
            seeds=s.seeds[:1],
            grid={k: tuple(v[:1]) for k, v in s.grid.items()},
        )
        for s in suite.stages
    )
    return dataclasses.replace(
        suite, name=f"{suite.name}-quick", stages=stages, seeds=suite.seeds[:1]
    )


def _split_params(params: Mapping[str, Any]) -> tuple[dict, dict]:
    """(train-split params, val/test params): ``n_per_class`` sub-samples the train split only."""
    train = dict(params)
    evals = {k: v for k, v in params.items() if k != "n_per_class"}
    return train, evals


def _datasets(cfg: Mapping[str, Any], evals: bool = True):
    from harness.experiments.suite import resolve_split
    from harness.zoo.data import get_dataset, held_splits, load_dataset

    tr_p, ev_p = _split_params(cfg["dataset_params"])
    name, seed = cfg["dataset"], int(cfg["seed"])
    # stage key 'splits': a split per role, for every dataset or per dataset ({aircraft: ...})
    chosen = {
        role: resolve_split(cfg.get("splits"), role, name) for role in ("train", "val", "test")
    }
    train_set = load_dataset(name, split=chosen["train"], seed=seed, **tr_p)
    have = held_splits(name, ev_p) if evals else ()
    val_set, test_set = (
        load_dataset(name, split=chosen[role], seed=seed, **ev_p)
        if evals and chosen[role] is not None and chosen[role] in have
        else None
        for role in ("val", "test")
    )
    if evals and chosen["test"] is not None and test_set is None:
        raise ValueError(
            f"dataset {name!r} has no split {chosen['test']!r} to test on (splits: "
            f"{', '.join(have)}); set the stage's 'splits: {{test: ...}}'"
        )
    classes = getattr(train_set, "classes", None)
    k = len(classes) if classes else get_dataset(name).num_classes
    return train_set, val_set, test_set, k


def _num_classes(cfg: Mapping[str, Any]) -> int:
    """Number of classes of a job's task (its train split's, after class selection)."""
    return _datasets(cfg, evals=False)[3]


def _build(
    cfg: Mapping[str, Any],
    num_classes: int,
    weights: str | os.PathLike | Mapping[str, Any] | None = None,
):
    from harness.zoo.models import build_model

    mp = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg["model_params"].items()}
    return build_model(cfg["model"], num_classes, weights_path=weights, **mp)


def _pretrained_path(cfg: Mapping[str, Any]) -> str:
    path = os.path.expanduser(os.path.expandvars(str(cfg["pretrained"])))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"pretrained weights {cfg['pretrained']!r} (-> {path!r}) not found: put a state_dict "
            "saved with torch.save(model.state_dict(), path) there (nothing is downloaded; "
            "torchvision's ImageNet weights files load as they are)"
        )
    return path


def _features(model, dataset, tap: str = "penultimate", batch_size: int = 256):
    """``(features, labels)`` of ``dataset`` at ``tap`` of ``model`` (eval mode, pooled)."""
    import torch
    from torch.utils.data import DataLoader

    from harness.transfer.taps import Taps

    feats, labels = [], []
    model.eval()
    device = next(model.parameters()).device
    with Taps(model, [tap]) as taps, torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=batch_size):
            model(x.to(device))
            feats.append(taps.features[tap].cpu())
            labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def _layer_traces(model, teacher, dataset, taps, max_examples: int) -> dict[str, float]:
    """li2020 Fig. 2 (post hoc): at each tap, the trace of the exact OT plan between the
    trained network's and the teacher's neurons, each neuron seen on up to ``max_examples``
    examples of ``dataset`` (the share of neurons still matched to their initial role)."""
    import torch
    from torch.utils.data import Subset

    from harness.transfer.representation import matched_fraction, solve_representation

    if len(dataset) > max_examples:  # a fixed random subset: file lists are often class-sorted
        pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
        dataset = Subset(dataset, sorted(pick[:max_examples].tolist()))
    out = {}
    for tap in taps:
        s, _ = _features(model, dataset, tap)
        t, _ = _features(teacher, dataset, tap)
        res = solve_representation(s.double(), t.double(), view="neurons", plan="exact")
        trace = matched_fraction(res)
        if trace is None:
            raise ValueError(
                f"trace analysis at {tap!r}: the network has {s.shape[1]} neurons "
                f"there and the teacher {t.shape[1]}; the trace needs d == d'"
            )
        out[tap] = float(trace)
    return out


def _label_cost(spec, extractor, source_set, target_set):
    """lu2017 §3.4: the ``(K_src, K_tgt)`` label cost from a fixed extractor's features,
    divided by its largest entry. lu2017 leaves the scale of ``C`` to ``lambda_ot``; MK-MMD^2
    lies in [0, 2] while OT between feature clouds grows with the features' squared norms, so
    we normalise both, and one ``alpha`` (``lambda_ot``) grid serves either cost."""
    from harness.transfer.regularizers import label_cost_mkmmd, label_cost_ot, label_cost_spec

    kind, options = label_cost_spec(spec)
    fs, ys = _features(extractor, source_set)
    ft, yt = _features(extractor, target_set)
    ks, kt = len(source_set.classes), len(target_set.classes)
    fn = label_cost_mkmmd if kind == "mkmmd" else label_cost_ot
    M = fn(fs, ys, ft, yt, n_source_classes=ks, n_target_classes=kt, **options)
    top = float(M.max())
    return M / top if top > 0 else M


def run_job(
    job: Job,
    jobs_by_key: Mapping[str, Job],
    artefacts: Path,
    progress: bool,
    save: bool,
    device: str | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    records: Mapping[str, Mapping[str, Any]] | None = None,
    root: str | os.PathLike | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train one job and return its metrics (the record's attributes): data -> student (its
    starting point) -> teacher -> source task -> regularizer -> :func:`train` -> metrics
    (plus layer traces and the weights file when asked). ``jobs_by_key`` resolves the job's
    ``teacher`` / ``init`` keys, whose weights are read from ``artefacts`` and verified
    against ``records`` (key -> the ``artefact*`` attributes of its completed record).
    ``root``: the results folder no write leaves (default: the one above
    ``artefacts/<suite>``); ``say``: where a checkpoint set aside is reported."""
    from harness.training import safe_io
    from harness.training.loop import train

    cfg = job.config
    root = Path(artefacts).parent.parent if root is None else root
    (train_set, val_set, test_set, model, initial_weights, teacher, source_set, reg, label_cost) = (
        job_inputs(job, (jobs_by_key, artefacts, records or {}))
    )
    ckpt = artefacts / f"{job.key}.ckpt"
    safe_io.ensure_dir(artefacts, root)
    tc = _train_config(cfg, device)
    check_checkpoint(ckpt, tc, say)
    with safe_io.confine(root):  # its checkpoints never leave the results folder either
        result = train(
            model,
            train_set,
            val_set,
            config=tc,
            regularizer=reg,
            teacher=teacher,
            test_set=test_set,
            progress=progress,
            initial_weights=initial_weights,
            label_cost=label_cost,
            source_set=source_set,
            source_weight=cfg["source"]["weight"] if cfg.get("source") else 1.0,
            checkpoint_path=ckpt,
            on_epoch=on_epoch,
        )
    metrics = _metrics(result)
    if result.status == "completed" and cfg.get("analysis"):
        an = cfg["analysis"]
        split = {"val": val_set, "test": test_set}.get(an["split"])
        if split is None:
            from harness.zoo.data import load_dataset

            split = load_dataset(
                cfg["dataset"],
                split=an["split"],
                seed=job.seed,
                **_split_params(cfg["dataset_params"])[1],
            )
        metrics["layer_traces"] = _layer_traces(
            model, teacher, split, an["trace_taps"], an["max_examples"]
        )
    if result.status == "completed" and save:
        metrics.update(save_state(model, artefacts / f"{job.key}.pt", root))
    return metrics


def _n_params(model) -> int:
    return 0 if model is None else sum(p.numel() for p in model.parameters())


def job_inputs(job: Job, deps) -> tuple:
    """What :func:`run_job` gives ``train`` for ``job`` (also read by
    :mod:`harness.experiments.batching`): ``(train_set, val_set, test_set, model,
    initial_weights, teacher, source_set, regularizer, label_cost)``. ``deps``:
    ``(jobs_by_key, artefacts, records)`` (:func:`run_job`)."""
    import torch

    from harness.training.threads import apply_threads

    cfg = job.config
    torch.manual_seed(job.seed)  # the data subset's and the student's initialisation
    train_set, val_set, test_set, k = _datasets(cfg)
    model = _build(cfg, k)
    model, initial_weights = _starting_point(cfg, k, model, deps)
    teacher = _teacher(cfg, k, deps)
    apply_threads(max(_n_params(model), _n_params(teacher)))  # workers x threads <= cores
    source_set = _source_task(cfg, job, model)
    reg, label_cost = _regularizer(cfg, teacher, source_set, train_set, initial_weights)
    return (
        train_set,
        val_set,
        test_set,
        model,
        initial_weights,
        teacher,
        source_set,
        reg,
        label_cost,
    )


def _starting_point(cfg: Mapping[str, Any], k: int, model, deps):
    """The student and its ``w0`` (L2-SP's anchor): fresh, a local pre-trained file, or the
    ``init`` stage's weights with a fresh ``k``-way head (fine-tuning). ``deps``:
    ``(jobs_by_key, artefacts, records)`` (:func:`run_job`)."""
    from harness.zoo.models import head_fits, load_weights, read_state, replace_head

    initial_weights = None
    if cfg.get("init") == PRETRAINED:  # from a local weights file (ImageNet ...)
        # the file's head is kept when it fits this task (ImageNet on ImageNet: a teacher used
        # as it is, with steps: 0); a head of another size is left fresh (fine-tuning)
        model = _build(cfg, k)
        state = read_state(_pretrained_path(cfg))  # read once: ImageNet files are large
        fresh = not head_fits(model, state)
        load_weights(model, state)
        head = model.tap_points["head"] + "."
        initial_weights = {
            n: p.detach().clone()
            for n, p in model.named_parameters()
            if not (fresh and n.startswith(head))
        }
    elif cfg.get("init"):  # fine-tuning: the init stage's weights, a fresh k-way head
        jobs_by_key, artefacts, records = deps
        state = load_artefact(artefacts, cfg["init"], "init", records.get(cfg["init"]))
        icfg = jobs_by_key[cfg["init"]].config
        model = _build(icfg, _num_classes(icfg), weights=state)
        head = model.tap_points["head"] + "."
        initial_weights = {
            n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith(head)
        }
        replace_head(model, k)
    return model, initial_weights


def _teacher(cfg: Mapping[str, Any], k: int, deps):
    """The frozen reference network: a local pre-trained file or an earlier stage's job
    (its weights verified, :func:`_artefact`)."""
    if cfg.get("teacher") == PRETRAINED:  # the pre-trained network itself, frozen (li2020 §3)
        return _build(cfg, k, weights=_pretrained_path(cfg)).eval()
    if cfg.get("teacher"):
        jobs_by_key, artefacts, records = deps
        tcfg = jobs_by_key[cfg["teacher"]].config
        state = load_artefact(artefacts, cfg["teacher"], "teacher", records.get(cfg["teacher"]))
        return _build(tcfg, _num_classes(tcfg), weights=state).eval()
    return None


def _source_task(cfg: Mapping[str, Any], job: Job, model):
    """Joint training (lu2017): the source task's data, and a second classifier for it."""
    if not cfg.get("source"):
        return None
    from harness.zoo.data import load_dataset
    from harness.zoo.models import with_source_head

    src = cfg["source"]
    source_set = load_dataset(
        src["dataset"], split=src.get("split", "train"), seed=job.seed, **src["dataset_params"]
    )
    with_source_head(model, len(source_set.classes))
    return source_set


def _regularizer(cfg: Mapping[str, Any], teacher, source_set, train_set, initial_weights):
    """The job's regularizer (None for plain training) and the label cost it computes from
    the teacher's features (lu2017), checked against what the stage gives it."""
    from harness.transfer.regularizers import build_regularizer

    if not (cfg["regularizer"] != "none" or cfg["regularizer_params"]):
        return None, None
    label_cost = None
    params = dict(cfg["regularizer_params"])
    for key in ("label_cost", "jtln.label_cost"):
        if isinstance(params.get(key), (str, Mapping)):  # from the teacher's features
            kind = params.pop(key)
            if teacher is None or source_set is None:
                raise ValueError(
                    f"label_cost {kind!r} needs the stage's 'teacher' (the "
                    "feature extractor) and 'source' (the source task)"
                )
            label_cost = _label_cost(kind, teacher, source_set, train_set)
    reg = build_regularizer(cfg["regularizer"], **params)
    if reg.needs_teacher and teacher is None:
        raise ValueError(
            f"regularizer {cfg['regularizer']!r} needs a teacher: give the "
            "stage 'teacher: <earlier stage>'"
        )
    if reg.needs_initial_weights and initial_weights is None:
        raise ValueError(
            f"regularizer {cfg['regularizer']!r} needs a starting point: give "
            "the stage 'init: <earlier stage>'"
        )
    if reg.needs_source_head and source_set is None:
        raise ValueError(
            f"regularizer {cfg['regularizer']!r} needs a source task: give "
            "the stage 'source: {dataset: ...}'"
        )
    return reg, label_cost


def _train_config(cfg: Mapping[str, Any], device: str | None):
    from harness.training.loop import TrainConfig

    tc = dict(cfg["train"])
    tc["milestones"] = tuple(tc.get("milestones", ()))
    if device:
        tc["device"] = device
    return TrainConfig(**tc)


def _metrics(result) -> dict[str, Any]:
    """A record's metrics from a :class:`~harness.training.loop.TrainResult`."""
    epochs = result.history.get("epochs", []) if result.history else []
    last = epochs[-1] if epochs else {}
    losses = {
        k[len("train/") :]: float(v)
        for k, v in last.items()
        if k.startswith("train/") and isinstance(v, (int, float))
    }
    return {
        "status": result.status,
        "reason": result.reason,
        "val_accuracy": result.final_val_accuracy,
        "best_val_accuracy": result.best_val_accuracy,
        "test_accuracy": result.test_accuracy,
        "wall_time": result.wall_time,
        "epochs_completed": result.epochs_completed,
        "final_losses": losses,
        "resumed_from_epoch": result.resumed_from_epoch,
        # per-epoch means of every logged term and solver stat (plan traces, li2020
        # Fig. 3): what the report's plots read
        "epochs": [{k: v for k, v in e.items() if isinstance(v, (int, float))} for e in epochs],
    }


def _deps(job: Job) -> list[str]:
    """Keys of the jobs whose weights ``job`` loads (its teacher and init stages)."""
    return [
        job.config[r]
        for r in ("teacher", "init")
        if job.config.get(r) and job.config[r] != PRETRAINED
    ]


def run_suite(
    suite: Suite | str | os.PathLike,
    storage: str | None = None,
    overrides: Iterable[str] = (),
    progress: bool = True,
    quick: bool = False,
    results_root: str | os.PathLike = "results",
    on_job: Callable[[Job, Mapping[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = print,
    device: str | None = None,
    worker: bool = False,
    stale_after: float = 120.0,
    heartbeat: float = 10.0,
    poll: float = 2.0,
    jobs: Iterable[Job] | None = None,
    record_extra: Mapping[str, Mapping[str, Any]] | None = None,
    batch: bool = True,
    only: Iterable[str] = (),
    on_epoch: Callable[[Job, int, dict], None] | None = None,
) -> RunSummary:
    """Run every job of ``suite`` not yet completed in ``storage``; record each one.

    Any number of processes, on any number of machines, may run the same suite on the same
    storage at once: each job is claimed before it runs (:mod:`harness.experiments.claims`), so none is run
    twice to completion, and one whose worker died is taken over and resumed from its last
    epoch checkpoint. A job waits for its teacher and init jobs, whoever runs them.

    Parameters
    ----------
    suite : Suite, path or name
        A loaded suite, a suite file or a name in ``suites/``.
    storage : str, optional
        Any Optuna storage URL; default ``sqlite:///<results_root>/<suite>/runs.sqlite3``.
    overrides : iterable of str
        ``--set`` strings (``stages.students.train.epochs=2``), applied before expansion.
    progress : bool
        In a terminal (standard error a TTY, ``log`` left as ``print``): one suite bar and the
        running job's bar beneath it (:mod:`harness.experiments.progress`). Otherwise, or when False, one
        plain line per job through ``log``.
    quick : bool
        1 epoch per stage and the first seed only (smoke run).
    results_root : path
        Artefacts go to ``<results_root>/<suite>/artefacts/<key>.pt``; workers on several
        machines need it on a shared file system.
    on_job : callable, optional
        ``on_job(job, metrics)`` after each recorded job (what it raises propagates).
    log : callable, optional
        One line per job; ``None`` is silent.
    device : str, optional
        Train every job on this device (``"cuda"`` ...), overriding ``train.device`` without
        changing the jobs' keys.
    worker : bool
        ``otransfer worker``: leave the jobs that failed earlier alone (``run``/``resume``
        forget those failures and try them again).
    stale_after, heartbeat : float
        Seconds: a claim whose heartbeat is older than ``stale_after`` is taken over by another
        worker (a dead process on the same host at once); claims beat every ``heartbeat``.
    poll : float
        Seconds between looks at the storage while every job left is held by other workers.
    jobs : iterable of Job, optional
        Run these jobs instead of the suite's expansion (``tune``: the teacher stages of the
        searched stage, the re-runs of its best point); teachers they load are looked up in
        the suite's expansion.
    record_extra : mapping, optional
        Extra attributes of the records of some jobs, by key.
    batch : bool
        Train the jobs that differ only in seed (and regularizer weights) as one batched model
        where that is exact (:mod:`harness.experiments.batching`); False: one at a time.
    only : iterable of str
        ``--only KEY=V[,V]`` filters: run only the jobs they match, and those they load.
    on_epoch : callable, optional
        ``on_epoch(job, epoch, record)`` after each epoch of a job trained alone (``--smoke``
        interrupts there to prove the resume, :mod:`harness.experiments.smoke`).
    """
    from harness.experiments.suite import with_overrides

    overrides = list(overrides)
    if not isinstance(suite, Suite):
        suite = load_suite(suite, overrides)
    elif overrides:
        suite = with_overrides(suite, overrides)
    if quick:
        suite = quick_suite(suite)
    if only and jobs is None:  # --only: a subset, same keys (harness.experiments.only)
        from harness.experiments.only import select_jobs

        jobs = select_jobs(expand(suite), only)
    run = _SuiteRun(
        suite,
        storage,
        results_root,
        jobs,
        progress,
        log,
        device,
        stale_after,
        heartbeat,
        poll,
        record_extra,
    )
    run.batch.enabled = run.batch.enabled and batch and not run.multi
    from harness.experiments.preflight import check_data_roots

    check_data_roots(j for j in run.jobs if not run.finished(j.key))  # before any job starts
    run.on_epoch = on_epoch
    try:
        run.open_claims(reset_failed=not worker)
        while (job := run.next_job()) is not None:
            metrics = run.run(job)
            if on_job is not None and metrics is not None:
                on_job(job, metrics)
    finally:
        run.close()
    return run.finish()


def _warm_backends(jobs) -> None:
    """Import the optional backends the jobs use (KeOps, through GeomLoss too) before the
    progress bars are drawn: pykeops prints its warnings on import, which would break into a
    bar's line."""
    import contextlib
    import importlib

    text = " ".join(j.config_json() for j in jobs[:2000])
    for word, module in (("keops", "pykeops"), ("geomloss", "pykeops")):
        if word in text:
            with contextlib.suppress(Exception):
                importlib.import_module(module)


class _SuiteRun:
    """One call of :func:`run_suite`: the jobs, what is done, this worker's claims, and the
    steps of the loop as methods (choose and claim a job -> start its record -> train ->
    move the claim to ``recording`` -> write the record -> close the claim -> say so)."""

    def __init__(
        self,
        suite: Suite,
        storage,
        results_root,
        jobs,
        progress,
        log,
        device,
        stale_after,
        heartbeat,
        poll,
        record_extra,
    ):
        from harness.experiments import records
        from harness.experiments.progress import SuiteBar, is_terminal
        from harness.training import distributed as ddp

        self.suite, self.device, self.poll = suite, device, poll
        self.stale_after, self.heartbeat = stale_after, heartbeat
        self.record_extra = record_extra or {}
        self.storage = storage = storage or records.default_storage(suite.name, results_root)
        self.root = Path(results_root)
        self.artefacts = self.root / suite.name / "artefacts"
        expanded = expand(suite)
        self.jobs = jobs = expanded if jobs is None else list(jobs)
        self.by_key = {j.key: j for j in [*expanded, *jobs]}
        self.number = {j.key: i for i, j in enumerate(jobs, 1)}
        # jobs whose weights later stages load (as teacher or as init) keep an artefact
        self.teacher_keys = {d for j in self.by_key.values() for d in _deps(j)}
        # under torchrun every rank trains each job (DDP); rank 0 alone claims and records
        self.multi = ddp.world_size() > 1
        if self.multi:
            ddp.init_from_env(device or "cpu")
        self.main = main = ddp.is_main()
        self.study = records.open_study(storage, suite.name) if main else None
        # the completed jobs, and what their records say of their weights (teachers)
        self.arts = records.done_artefacts(storage, suite.name) if main else {}
        self.done = set(self.arts)
        self.say = (log if main else None) or (lambda s: None)
        # a terminal gets one suite bar (and the job's bar beneath it); a log a line per job
        self.bar_mode = bool(progress and main and log is print and is_terminal())
        self.t0 = time.perf_counter()
        self.summary = RunSummary(
            suite.name, storage, len(jobs), 0, 0, 0, 0.0, keys=[j.key for j in jobs]
        )
        for job in jobs:
            if self.finished(job.key):
                self.summary.skipped += 1
                if not self.bar_mode:
                    self.say(f"{self.tag(job)}: done ({job.key}), skipped")
        if not self.bar_mode and main:  # how much work there is, before the first job
            from harness.experiments.secrets import redact

            left = len(jobs) - self.summary.skipped
            self.say(
                f"{suite.name}: {len(jobs)} jobs, {self.summary.skipped} already done, "
                f"{left} to run; records in {redact(storage)}"
            )
        if self.bar_mode:
            _warm_backends(jobs)  # their import-time warnings print once, above the bars
        self.bar = (
            SuiteBar(suite.name, len(jobs), done=self.summary.skipped) if self.bar_mode else None
        )
        if self.bar is not None:
            self.say = self.bar.write  # lines a person must see go above the bars
        self.first_done = set(self.done)
        self.claims = None
        self.tried: set[str] = set()  # failed here: not tried again in this run
        self.since = None  # the database time of pick's last read of the claims
        self.unkept: set[str] = set()  # why a pending result could not be kept, said once
        from harness.experiments.batching import SeedBatches

        # jobs differing only in seed/alpha: trained together (run_job's steps, passed in)
        self.batch = SeedBatches(self, job_inputs, _train_config, _metrics)

    # ---- small helpers
    def tag(self, job: Job) -> str:
        """``[k/N] stage dataset row-with-grid-point seed=S``."""
        return (
            f"[{self.number[job.key]}/{len(self.jobs)}] {job.stage} {job.dataset} "
            f"{job.label or job.regularizer} seed={job.seed}"
        )

    def eta(self) -> str:
        """``; 12 of 170 done, ~3.5 min left`` from this process's pace so far."""
        done = len(self.done & set(self.number))
        left = len(self.jobs) - done
        ran = self.summary.completed + self.summary.failed
        if not ran or not left:
            return f"; {done} of {len(self.jobs)} done"
        secs = (time.perf_counter() - self.t0) / ran * left
        when = f"{secs / 60:.1f} min" if secs >= 90 else f"{secs:.0f} s"
        return f"; {done} of {len(self.jobs)} done, ~{when} left"

    def finished(self, key: str) -> bool:
        """Recorded done in the storage, whatever this worker's results folder holds: a job is
        never recorded done twice (a teacher whose weights are elsewhere fails its students
        with a line saying where they are, :func:`_artefact`)."""
        return key in self.done

    def dep_records(self, job: Job) -> dict[str, Any]:
        """The ``artefact*`` attributes of the records of ``job``'s teacher and init jobs
        (read again from the storage for those done by other workers since)."""
        from harness.experiments import records

        deps = _deps(job)
        if any(d not in self.arts for d in deps):
            self.arts.update(
                self.store(
                    lambda: records.done_artefacts(self.storage, self.suite.name),
                    f"reading the records of {job.key}'s teacher",
                )
            )
        return {d: self.arts[d] for d in deps if d in self.arts}

    def store(self, fn, what):
        """A storage operation, retried through an outage (records.retrying)."""
        from harness.experiments import records

        return records.retrying(fn, what, self.storage, say=self.say)

    def open_claims(self, reset_failed: bool) -> None:
        from harness.experiments.claims import Claims

        if not self.main:
            return
        self.claims = Claims(
            self.storage, self.suite.name, stale_after=self.stale_after, heartbeat=self.heartbeat
        )
        if reset_failed:  # run / resume try failed jobs again; a worker leaves them alone
            self.claims.reset_failed()

    # ---- choosing the next job
    def pick(self):
        """The next job this worker claims (with its claim), ``"wait"`` when every job left is
        held by others or waits on one that is, or ``None`` when nothing is left to do."""
        from harness.experiments.claims import DONE, FAILED

        claims, done = self.claims, self.done
        # the live and failed claims and those done since the last read (1 s of margin for a
        # late commit): the read stays small however many jobs are done; a job done by another
        # worker and missed is learnt from try_claim's refusal below
        states = claims.states(unfinished=True, done_since=self.since)
        self.since = claims.last_now - 1.0
        done.update(k for k, c in states.items() if c.state == DONE)
        wait = False
        for job in [j for j in self.jobs if not self.finished(j.key) and j.key not in self.tried]:
            c = states.get(job.key)
            if c is not None and c.state == FAILED:
                continue  # another worker's failure in this run: left as it is
            if any(
                not (
                    self.finished(d)
                    or d in self.tried
                    or d not in self.number
                    or (d in states and states[d].state == FAILED)
                )
                for d in _deps(job)
            ):
                wait = True  # its teacher is not there yet
                continue
            if c is not None and c.state != DONE and not claims.is_abandoned(c):
                wait = True  # another worker runs it
                continue
            got = self.claim(job)
            if got == "skip":
                continue
            if got is None:
                wait = True
                continue
            return job
        return "wait" if wait else None

    def claim(self, job: Job):
        """Claim ``job``: the claim, ``None`` when another worker holds it, ``"skip"`` when it
        turns out done (by another worker, or recorded by a lost one) or failed."""
        from harness.experiments import records
        from harness.experiments.claims import DONE, FAILED

        claims, done = self.claims, self.done
        got = claims.try_claim(job.key)
        if got is None and claims.last_refused == DONE:  # done by another worker
            done.add(job.key)
            return "skip"
        if got is None and claims.last_refused == FAILED:
            return "skip"  # another worker's failure in this run: left as it is
        if got is not None and got.attempts > 1 and claims.last_previous:  # from a lost worker
            n = records.fail_orphans(self.study, job.key, claims.last_previous)
            self.say(
                f"{self.tag(job)}: taken over from {claims.last_previous} (attempt "
                f"{got.attempts}; {n} orphan record(s) marked failed)"
            )
            if job.key in records.done_keys(self.storage, self.suite.name):
                done.add(job.key)  # it died after recording
                claims.begin_record(job.key)
                claims.finish(job.key, ok=True)
                return "skip"
        return got

    def next_job(self) -> Job | None:
        from harness.training import distributed as ddp

        job = self.store(self.pick, "choosing the next job") if self.main else None
        while job == "wait":
            time.sleep(self.poll)
            job = self.store(self.pick, "choosing the next job")
        if self.multi:  # every rank trains the job rank 0 claimed
            job = self.by_key.get(ddp.broadcast_object(job.key if job else None))
        return job

    # ---- one job
    def run(self, job: Job) -> Mapping[str, Any] | None:
        """Train ``job`` and record it (rank 0); the metrics recorded (None on other ranks)."""
        from harness.experiments import records
        from harness.training import distributed as ddp
        from harness.training.checkpoints import remove_checkpoint

        deps = self.dep_records(job) if self.main else None
        if self.multi:  # the other ranks verify the teacher's weights as rank 0 does
            deps = ddp.broadcast_object(deps)
        if self.bar is not None:
            self.bar.start(
                f"{job.stage} {job.dataset} {job.label or job.regularizer} seed={job.seed}"
            )
        if not self.main:  # a DDP rank: train, rank 0 records (a failure too)
            try:
                run_job(
                    job,
                    self.by_key,
                    self.artefacts,
                    progress=False,
                    save=False,
                    device=self.device,
                    records=deps,
                    root=self.root,
                )
            except Exception:
                pass
            return None
        claims, study = self.claims, self.study
        trial = self.store(
            lambda: records.start_record(
                study, job, extra={**self.record_extra.get(job.key, {}), "worker": claims.worker}
            ),
            f"starting the record of {job.key}",
        )
        try:
            metrics = self.train(job, deps)
        except Exception as exc:  # recorded, and the run goes on
            metrics = {
                "status": "failed",
                "reason": " ".join(f"{type(exc).__name__}: {exc}".split()),
            }
        except BaseException:  # Ctrl-C, SIGTERM: record the interruption, then stop
            records.finish_record(study, trial, {"status": "failed", "reason": "interrupted"})
            claims.release(job.key)  # resume (or another worker) takes it at once
            raise
        metrics = self.record(job, trial, metrics)
        unlink(self.artefacts / f"{job.key}.result.json")
        remove_checkpoint(self.artefacts / f"{job.key}.ckpt")  # recorded: resume no more
        return metrics

    def train(self, job: Job, deps: Mapping[str, Any]) -> dict[str, Any]:
        """The job's metrics: the result a worker stopped by a storage outage kept (once its
        proof verifies), else :func:`run_job`'s, kept beside the checkpoint until recorded."""
        say = lambda msg: self.say(f"{self.tag(job)}: {msg}")  # noqa: E731
        pending = self.artefacts / f"{job.key}.result.json"
        metrics, why = load_pending(pending, job)  # trained before an outage stopped a worker
        if why:
            say(why)
        if metrics is not None:
            say(f"recording the result trained before the storage went away ({pending.name})")
            return metrics
        metrics = self.batch.metrics(
            job,
            lambda: run_job(
                job,
                self.by_key,
                self.artefacts,
                self.bar_mode,
                save=job.key in self.teacher_keys,
                device=self.device,
                records=deps,
                root=self.root,
                say=say,
                on_epoch=self.epoch_hook(job),
            ),
        )  # its seed batch or alone
        if metrics["status"] == "completed":  # kept until the storage has it
            why = save_pending(pending, job, metrics, self.root)
            if why and why not in self.unkept:
                self.unkept.add(why)
                say(why)
        return metrics

    def epoch_hook(self, job: Job):
        hook = getattr(self, "on_epoch", None)
        return None if hook is None else (lambda epoch, rec: hook(job, epoch, rec))

    def record(self, job: Job, trial, metrics: Mapping[str, Any]) -> Mapping[str, Any]:
        """Move the claim to ``recording``, write the record, close the claim, say so."""
        from harness.experiments import records

        claims = self.claims
        ok = metrics["status"] == "completed"
        if ok and not self.store(
            lambda: claims.begin_record(job.key), f"claiming the record of {job.key}"
        ):
            # we stalled, another worker has it
            metrics = {
                **metrics,
                "status": "failed",
                "reason": "claim lost to another worker (this one stalled longer "
                f"than stale_after={self.stale_after:g} s)",
            }
            ok = None
        self.store(
            lambda: records.finish_record(self.study, trial, metrics),
            f"recording the result of {job.key}",
        )
        if ok is not None:
            self.store(lambda: claims.finish(job.key, ok=ok), f"closing the claim of {job.key}")
        if self.bar is not None:
            self.bar.finish(bool(ok))
        if ok:
            self.summary.completed += 1
            self.done.add(job.key)
            self.arts[job.key] = {k: metrics.get(k) for k in records.ARTEFACT_KEYS}
            if self.bar is None:
                wall = metrics.get("wall_time")
                self.say(
                    f"{self.tag(job)}: test {100 * metrics['test_accuracy']:.1f}%"
                    + (f" ({wall:.1f} s)" if isinstance(wall, (int, float)) else "")
                    + self.eta()
                )
        else:
            self.tried.add(job.key)
            self.summary.failed += 1
            self.summary.failures.append((job.key, metrics.get("reason", "")))
            self.say(f"{self.tag(job)}: FAILED: {metrics.get('reason', '')}")
        return metrics

    # ---- the end
    def close(self) -> None:
        if self.claims is not None:
            self.claims.close()
        if self.bar is not None:
            self.bar.close()

    def finish(self) -> RunSummary:
        s = self.summary
        s.by_others = len(set(self.done) - self.first_done) - s.completed
        s.wall_time = time.perf_counter() - self.t0
        return s
