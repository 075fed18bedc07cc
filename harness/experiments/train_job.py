"""Train one job of a suite: its data, its student and teacher, its regularizer, then
:func:`~harness.training.loop.train`, and the metrics its record keeps.

A job's teacher and ``init`` weights are read by key from ``artefacts/<key>.pt`` and verified
against the records of those jobs (:func:`~harness.experiments.artefacts.load_artefact`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

from harness.experiments.artefacts import check_checkpoint, load_artefact, save_state
from harness.experiments.suite import PRETRAINED, Job

__all__ = [
    "run_job",
    "job_inputs",
    "job_deps",
    "job_metrics",
    "train_config",
    "load_datasets",
    "load_teacher",
]


def _split_params(params: Mapping[str, Any]) -> tuple[dict, dict]:
    """(train-split params, val/test params): ``n_per_class`` sub-samples the train split only."""
    train = dict(params)
    evals = {k: v for k, v in params.items() if k != "n_per_class"}
    return train, evals


def load_datasets(cfg: Mapping[str, Any], evals: bool = True):
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
    return load_datasets(cfg, evals=False)[3]


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
    threads: int | None = None,
) -> dict[str, Any]:
    """Train one job and return its metrics (the record's attributes): data -> student (its
    starting point) -> teacher -> source task -> regularizer -> :func:`train` -> metrics
    (plus layer traces and the weights file when asked). ``jobs_by_key`` resolves the job's
    ``teacher`` / ``init`` keys, whose weights are read from ``artefacts`` and verified
    against ``records`` (key -> the ``artefact*`` attributes of its completed record).
    ``root``: the results folder no write leaves (default: the one above
    ``artefacts/<suite>``); ``say``: where a checkpoint set aside is reported; ``threads``:
    its CPU threads (default: :func:`harness.training.threads.choose_threads`'s policy)."""
    from harness.training import safe_io
    from harness.training.loop import train

    cfg = job.config
    root = Path(artefacts).parent.parent if root is None else root
    (train_set, val_set, test_set, model, initial_weights, teacher, source_set, reg, label_cost) = (
        job_inputs(job, (jobs_by_key, artefacts, records or {}), threads=threads)
    )
    ckpt = artefacts / f"{job.key}.ckpt"
    safe_io.ensure_dir(artefacts, root)
    tc = train_config(cfg, device)
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
    metrics = job_metrics(result)
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


def job_inputs(job: Job, deps, threads: int | None = None) -> tuple:
    """What :func:`run_job` gives ``train`` for ``job`` (also read by
    :mod:`harness.experiments.batching`): ``(train_set, val_set, test_set, model,
    initial_weights, teacher, source_set, regularizer, label_cost)``. ``deps``:
    ``(jobs_by_key, artefacts, records)`` (:func:`run_job`); ``threads``: as
    :func:`run_job`'s."""
    import torch

    from harness.training.threads import apply_threads

    cfg = job.config
    torch.manual_seed(job.seed)  # the data subset's and the student's initialisation
    train_set, val_set, test_set, k = load_datasets(cfg)
    model = _build(cfg, k)
    model, initial_weights = _starting_point(cfg, k, model, deps)
    teacher = load_teacher(cfg, k, deps)
    apply_threads(max(_n_params(model), _n_params(teacher)), threads=threads)
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


def load_teacher(cfg: Mapping[str, Any], k: int, deps):
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


def train_config(cfg: Mapping[str, Any], device: str | None):
    from harness.training.loop import TrainConfig

    tc = dict(cfg["train"])
    tc["milestones"] = tuple(tc.get("milestones", ()))
    if device:
        tc["device"] = device
    return TrainConfig(**tc)


def job_metrics(result) -> dict[str, Any]:
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


def job_deps(job: Job) -> list[str]:
    """Keys of the jobs whose weights ``job`` loads (its teacher and init stages)."""
    return [
        job.config[r]
        for r in ("teacher", "init")
        if job.config.get(r) and job.config[r] != PRETRAINED
    ]
