"""``otransfer plan SUITE``: what a suite costs before it is launched.

Per stage: jobs, the student's (and teacher's) parameters, FLOPs per training step, activation
memory at the suite's batch, the OT problems each step solves (d x d' per tap for the neurons
view, n x n for the samples view, K_src x K_tgt per example for JTLN) with their solve time
measured here, and the stage's GPU-hours at a stated throughput.

* FLOPs: :class:`torch.utils.flop_counter.FlopCounterMode` over one forward and backward of
  the student at batch 1 (eval mode, so that batch norm accepts one example; it counts
  convolutions and matrix products, identical in either mode), times the suite's batch, plus
  the teacher's forward where a term reads it, plus the source head's forward and backward on
  the source batch (lu2017's joint training).
* Activation memory: the sum of every leaf module's output at batch 1 (float32) times the
  batch: an upper estimate of what autograd keeps (in-place ReLUs share storage), plus the
  parameters, their gradients and SGD's momentum (3 x parameters x 4 bytes).
* Steps per job: ``train.steps``, else epochs x (training images // batch), the training
  images from :data:`TRAIN_IMAGES` (the datasets' official sizes; a held-out ``val_size``
  is subtracted).
* GPU-hours: FLOPs / (``tflops`` x ``utilisation``), utilisation stated (default 0.4 of the
  peak: convolutional nets at batch 64 in float32/TF32 rarely sustain more), plus the OT solve
  time measured on this machine's CPU, serial with the step (the exact solvers run on the
  CPU; a GPU solver would shorten it).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "plan_suite",
    "count_flops",
    "activation_bytes",
    "render",
    "TRAIN_IMAGES",
    "add_plan_parser",
]

#: Training images per dataset (official sizes): CIFAR 50,000, SVHN 73,257 (train), ImageNet
#: 1,281,167, CUB-200-2011 5,994, Stanford Cars 8,144, Stanford Dogs 12,000, Food-101 75,750.
TRAIN_IMAGES = {
    "cifar10": 50000,
    "cifar100": 50000,
    "cifar20": 50000,
    "svhn": 73257,
    "imagenet": 1281167,
    "cub200": 5994,
    "cars196": 8144,
    "dogs120": 12000,
    "food101": 75750,
}
#: FGVC-Aircraft: 100 images per variant, split 2/3 trainval, 1/3 test (train, val: 1/3 each).
_AIRCRAFT_PER_VARIANT = {
    "trainval": 66.67,
    "train": 33.33,
    "val": 33.33,
    "test": 33.33,
    "all": 100.0,
}
#: Test images per dataset (official sizes): CIFAR 10,000, SVHN 26,032, ImageNet 50,000 (val),
#: CUB-200-2011 5,794, Stanford Cars 8,041, Stanford Dogs 8,580, Food-101 25,250.
TEST_IMAGES = {
    "cifar10": 10000,
    "cifar100": 10000,
    "cifar20": 10000,
    "svhn": 26032,
    "imagenet": 50000,
    "cub200": 5794,
    "cars196": 8041,
    "dogs120": 8580,
    "food101": 25250,
}


def count_flops(model, shape: tuple[int, ...], backward: bool = True) -> int:
    """FLOPs of one forward (and backward) of ``model`` on one example of ``shape``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was = model.training
    model.eval()
    x = torch.randn(1, *shape)
    try:
        with FlopCounterMode(display=False) as fc:
            if backward:
                model(x).float().sum().backward()
            else:
                with torch.no_grad():
                    model(x)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was)
    return int(fc.get_total_flops())


def activation_bytes(model, shape: tuple[int, ...]) -> int:
    """Bytes of every leaf module's output on one example of ``shape`` (float32)."""
    import torch

    total = [0]

    def hook(_m, _i, out):
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if torch.is_tensor(t):
                total[0] += t.numel() * 4

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.randn(1, *shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return total[0]


def train_images(dataset: str, params: Mapping[str, Any], split: str) -> int:
    from harness.zoo.standin import standin_classes

    if dataset == "aircraft":
        n = standin_classes(dataset, dict(params)) * _AIRCRAFT_PER_VARIANT[split]
    else:
        n = TRAIN_IMAGES.get(dataset)
        if n is None:  # an embedded dataset: its own loader knows
            from harness.zoo.data import load_dataset

            n = len(load_dataset(dataset, split=split, **params))
    return int(n) - int(params.get("val_size") or 0)


def _embedded(dataset: str, params: Mapping[str, Any]):
    """An embedded dataset's training split (no files), else None."""
    from harness.zoo.data import get_dataset, load_dataset

    if get_dataset(dataset).needs_root:
        return None
    return load_dataset(dataset, split="train", **params)


def _input_shape(dataset: str, params: Mapping[str, Any]) -> tuple[int, ...]:
    from harness.zoo.standin import standin_shape

    ds = _embedded(dataset, params)
    return tuple(ds[0][0].shape) if ds is not None else standin_shape(dataset, "train", {})


def _num_classes(dataset: str, params: Mapping[str, Any]) -> int:
    from harness.zoo.standin import standin_classes

    ds = _embedded(dataset, params)
    return len(ds.classes) if ds is not None else standin_classes(dataset, dict(params))


class _Models:
    """Built models and their counts, cached by (name, params, classes, shape)."""

    def __init__(self):
        self.cache: dict[tuple, dict[str, Any]] = {}

    def get(self, name: str, params: Mapping[str, Any], k: int, shape: tuple[int, ...]):
        from harness.zoo.models import build_model

        key = (name, repr(sorted(params.items())), k, shape)
        if key not in self.cache:
            mp = {a: tuple(v) if isinstance(v, list) else v for a, v in params.items()}
            model = build_model(name, k, **mp)
            self.cache[key] = {
                "model": model,
                "params": sum(p.numel() for p in model.parameters()),
                "train_flops": count_flops(model, shape),
                "fwd_flops": count_flops(model, shape, backward=False),
                "act_bytes": activation_bytes(model, shape),
            }
        return self.cache[key]


def _tap_dims(model, taps, shape) -> dict[str, int]:
    import torch

    from harness.transfer.taps import Taps

    model.eval()
    with Taps(model, list(taps)) as t, torch.no_grad():
        model(torch.randn(1, *shape))
        return {tap: int(t.features[tap].reshape(1, -1).shape[1]) for tap in taps}


def _time_solve(fn, repeats: int = 3) -> float:
    fn()  # warm-up (imports, LAPJV's first call)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _ot_problems(job_cfg, reg, student, teacher, shape, batch, source_k) -> list[dict]:
    """One entry per OT solve of a training step: term, tap, size, method, measured time."""
    import torch

    from harness.transfer.regularizers import get_regularizer
    from harness.transfer.representation import transport
    from solvers import get_method

    out = []
    for term, p in reg.params.items():
        info = get_regularizer(term)
        plan = p.get("plan", info.plan)
        if plan is None:
            continue
        solver = {k: v for k, v in p.items() if k in get_method(plan).params}
        if term == "jtln":
            k = _num_classes(job_cfg["dataset"], job_cfg["dataset_params"])
            C = torch.rand(batch, source_k, k, dtype=torch.float64)  # one batched call
            from solvers import solve

            t = _time_solve(lambda C=C, plan=plan, solver=solver: solve(C, method=plan, **solver))
            out.append(
                {
                    "term": term,
                    "tap": "heads",
                    "size": f"{batch} x {source_k} x {k} (batched)",
                    "method": plan,
                    "seconds": t,
                }
            )
            continue
        view = "samples" if term.startswith("ot_samples") else "neurons"
        s_dims = _tap_dims(student, p["taps"], shape)
        t_dims = _tap_dims(teacher, p["taps"], shape) if teacher is not None else s_dims
        for tap in p["taps"]:
            d, d2 = s_dims[tap], t_dims[tap]
            if view == "samples":  # the embedded teacher lives in the student's space
                x, y, size = torch.randn(batch, d), torch.randn(batch, d), f"{batch} x {batch}"
            else:
                x, y, size = torch.randn(batch, d), torch.randn(batch, d2), f"{d} x {d2}"
            t = _time_solve(
                lambda x=x, y=y, view=view, p=p, plan=plan, solver=solver: transport(
                    x, y, view, p.get("cost"), plan, dict(solver)
                )
            )
            out.append({"term": term, "tap": tap, "size": size, "method": plan, "seconds": t})
    return out


def _split_images(dataset: str, params: Mapping[str, Any], split: str) -> int:
    """Images of ``split`` (``val``: a held-out ``val_size`` or the official split)."""
    if dataset == "aircraft":
        from harness.zoo.standin import standin_classes

        return int(standin_classes(dataset, dict(params)) * _AIRCRAFT_PER_VARIANT[split])
    if split == "val" and params.get("val_size"):
        return int(params["val_size"])
    if split == "test" and dataset in TEST_IMAGES:
        return TEST_IMAGES[dataset]
    if dataset in TRAIN_IMAGES:  # no official val split, none held out
        return 0
    from harness.zoo.data import load_dataset

    try:
        return len(load_dataset(dataset, split=split, **params))
    except ValueError:  # an embedded dataset without that split
        return 0


def _eval_images(cfg: Mapping[str, Any]) -> int:
    """Images one job's evaluations forward (crops counted): the validation split after every
    ``eval_every`` epochs and after the last, the test split once at the end."""
    from harness.experiments.suite import resolve_split

    dataset, params, tr = cfg["dataset"], cfg["dataset_params"], cfg["train"]
    val = resolve_split(cfg.get("splits"), "val", dataset)
    test = resolve_split(cfg.get("splits"), "test", dataset) or "test"
    n_val = _split_images(dataset, params, val) if val else 0
    train = resolve_split(cfg.get("splits"), "train", dataset) or "train"
    per_epoch = max(1, train_images(dataset, params, train) // int(tr.get("batch_size", 64)))
    epochs = -(-_steps(cfg) // per_epoch)
    every = int(tr.get("eval_every", 1))
    evals = epochs // every + (1 if epochs % every else 0)
    crops = 10 if params.get("ten_crop") else 1
    return crops * (n_val * evals + _split_images(dataset, params, test))


def _steps(cfg: Mapping[str, Any]) -> int:
    from harness.experiments.suite import resolve_split

    tr = cfg["train"]
    if tr.get("steps") is not None:
        return int(tr["steps"])
    split = resolve_split(cfg.get("splits"), "train", cfg["dataset"]) or "train"
    n = train_images(cfg["dataset"], cfg["dataset_params"], split)
    return int(tr.get("epochs", 1)) * (n // int(tr.get("batch_size", 64)))


def plan_suite(suite, tflops: float = 200.0, utilisation: float = 0.4) -> dict[str, Any]:
    """The cost plan of ``suite`` (a name, a path or a Suite): one row per stage."""
    from harness.experiments.suite import PRETRAINED, Suite, expand, load_suite, quick_suite
    from harness.transfer.regularizers import build_regularizer

    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    jobs = expand(suite)
    by_key = {j.key: j for j in jobs}
    templates = expand(quick_suite(suite))
    by_key.update({j.key: j for j in templates})
    models, rows = _Models(), []
    for stage in suite.stages:
        sjobs = [j for j in jobs if j.stage == stage.name]
        stemps = [j for j in templates if j.stage == stage.name]
        for t in stemps:
            row = _template_row(
                t, sjobs, by_key, models, tflops, utilisation, build_regularizer, PRETRAINED
            )
            twins = sum(u.dataset == t.dataset and u.row == t.row for u in stemps)
            if twins > 1:  # templates sharing a row name share its jobs
                row.update(
                    jobs=row["jobs"] / twins,
                    gpu_hours=row["gpu_hours"] / twins,
                    eval_hours=row["eval_hours"] / twins,
                    ot_hours=row["ot_hours"] / twins,
                )
            rows.append(row)
    return {
        "suite": suite.name,
        "tflops": tflops,
        "utilisation": utilisation,
        "rows": rows,
        "jobs": len(jobs),
        "gpu_hours": sum(r["gpu_hours"] for r in rows),
        "eval_hours": sum(r["eval_hours"] for r in rows),
        "ot_hours": sum(r["ot_hours"] for r in rows),
    }


def _template_row(
    t, sjobs, by_key, models, tflops, utilisation, build_regularizer, PRETRAINED
) -> dict[str, Any]:
    """A template's cost, times the jobs of its stage that share its dataset and row."""
    cfg = t.config
    same = [j for j in sjobs if j.dataset == t.dataset and j.row == t.row]
    shape = _input_shape(cfg["dataset"], cfg["dataset_params"])
    k = _num_classes(cfg["dataset"], cfg["dataset_params"])
    batch = int(cfg["train"].get("batch_size", 64))
    st = models.get(cfg["model"], cfg["model_params"], k, shape)
    teacher = None
    if cfg.get("teacher") == PRETRAINED:
        teacher = models.get(cfg["model"], cfg["model_params"], 1000, shape)
    elif cfg.get("teacher"):
        tc = by_key[cfg["teacher"]].config
        teacher = models.get(
            tc["model"],
            tc["model_params"],
            _num_classes(tc["dataset"], tc["dataset_params"]),
            shape,
        )
    params = {
        a: b
        for a, b in cfg["regularizer_params"].items()
        if a not in ("label_cost", "jtln.label_cost")
    }
    reg = build_regularizer(cfg["regularizer"], **params)
    reads_teacher = reg.needs_teacher and "jtln" not in reg.names
    source_k = 0
    if cfg.get("source"):
        src = cfg["source"]
        source_k = _num_classes(src["dataset"], src.get("dataset_params", {}))
    flops_step = batch * (
        st["train_flops"] * (2 if source_k else 1)
        + (teacher["fwd_flops"] if teacher and reads_teacher else 0)
    )
    ot = (
        _ot_problems(
            cfg, reg, st["model"], teacher["model"] if teacher else None, shape, batch, source_k
        )
        if reg.names and any(p.get("taps") or n == "jtln" for n, p in reg.params.items())
        else []
    )
    ot_s = sum(o["seconds"] for o in ot)
    steps = sum(_steps(j.config) for j in same)
    eval_flops = st["fwd_flops"] * sum(_eval_images(j.config) for j in same)
    return {
        "stage": t.stage,
        "dataset": t.dataset,
        "row": t.row,
        "jobs": len(same),
        "model": cfg["model"],
        "params": st["params"],
        "teacher": (
            by_key[cfg["teacher"]].config["model"]
            if cfg.get("teacher") not in (None, PRETRAINED)
            else cfg.get("teacher") and cfg["model"]
        ),
        "teacher_params": teacher["params"] if teacher else 0,
        "batch": batch,
        "shape": shape,
        "steps_per_job": _steps(same[0].config),
        "flops_step": flops_step,
        "mem_bytes": st["act_bytes"] * batch * (2 if source_k else 1) + 12 * st["params"],
        "ot": ot,
        "ot_seconds_step": ot_s,
        "gpu_hours": steps * flops_step / (tflops * 1e12 * utilisation) / 3600,
        "eval_hours": eval_flops / (tflops * 1e12 * utilisation) / 3600,
        "ot_hours": steps * ot_s / 3600,
    }


def _si(x: float, unit: str = "") -> str:
    for div, p in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g} {p}{unit}"
    return f"{x:.3g} {unit}"


def render(plan: Mapping[str, Any], command: str) -> str:
    """The plan as Markdown, the command that made it on top."""
    lines = [
        f"# Cost plan: {plan['suite']}",
        "",
        f"`{command}`",
        "",
        f"{plan['jobs']} jobs. Throughput {plan['tflops']:g} TFLOP/s at an assumed "
        f"utilisation of {plan['utilisation']:.0%} (= {plan['tflops'] * plan['utilisation']:g}"
        f" TFLOP/s sustained). GPU-hours = steps x FLOPs per step / that; OT hours = "
        f"steps x the OT solve time measured on this machine's CPU (1 thread), serial with "
        f"the step. FLOPs: torch.utils.flop_counter, one forward+backward at batch 1 x the "
        f"batch (+ the teacher's forward where a term reads it). Eval GPU-hours: the "
        f"student's forward over the validation split every `eval_every` epochs and after "
        f"the last, and over the test split once (x 10 for ten-crop), at the same throughput. "
        f"Memory: activations (sum of leaf outputs, float32, x batch) + parameters, "
        f"gradients, momentum.",
        "",
        "| stage | dataset | row | jobs | student (params) | teacher (params) | batch | "
        "steps/job | FLOPs/step | memory | OT per step (size, method, time) | GPU-h | "
        "eval GPU-h | OT h |",
        "|" + "---|" * 14,
    ]
    for r in plan["rows"]:
        ot = (
            "; ".join(
                f"{o['term']}@{o['tap']}: {o['size']} {o['method']} {1e3 * o['seconds']:.3g} ms"
                for o in r["ot"]
            )
            or "—"
        )
        teacher = f"{r['teacher']} ({_si(r['teacher_params'])})" if r["teacher"] else "—"
        lines.append(
            f"| {r['stage']} | {r['dataset']} | {r['row']} | {r['jobs']:g} | {r['model']} "
            f"({_si(r['params'])}) | {teacher} | {r['batch']} | {r['steps_per_job']} | "
            f"{_si(r['flops_step'])} | {_si(r['mem_bytes'], 'B')} | {ot} | "
            f"{r['gpu_hours']:.3g} | {r['eval_hours']:.3g} | {r['ot_hours']:.3g} |"
        )
    total = plan["gpu_hours"] + plan["eval_hours"] + plan["ot_hours"]
    lines += [
        "",
        f"**Total: {plan['gpu_hours']:.4g} GPU-hours of training + "
        f"{plan['eval_hours']:.4g} of evaluation + "
        f"{plan['ot_hours']:.4g} hours of OT solves = {total:.4g} GPU-hours** "
        f"({total / 24:.3g} GPU-days).",
        "",
    ]
    return "\n".join(lines)


def _cmd_plan(args, parser) -> int:
    import shlex

    if args.tflops <= 0 or not 0 < args.utilisation <= 1:
        parser.error(
            f"--tflops must be > 0 and --utilisation in (0, 1]; got {args.tflops}, "
            f"{args.utilisation}"
        )
    import torch

    torch.set_num_threads(1)
    try:
        plan = plan_suite(args.suite, args.tflops, args.utilisation)
    except (FileNotFoundError, ValueError) as exc:  # an unknown suite, a bad file: one line
        print(f"otransfer plan: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    cmd = shlex.join(
        [
            "otransfer",
            "plan",
            args.suite,
            "--tflops",
            f"{args.tflops:g}",
            "--utilisation",
            f"{args.utilisation:g}",
        ]
    )
    text = render(plan, cmd)
    print(text)
    if args.out:
        out = Path(args.out) / f"{plan['suite']}.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"written to {out}")
    return 0


def add_plan_parser(sub) -> None:
    p = sub.add_parser(
        "plan",
        help="what a suite costs: FLOPs, memory, OT sizes, GPU-hours",
        description="Per stage: jobs, parameters, FLOPs per training step, "
        "activation memory, the OT problems of a step and their "
        "solve time here, and GPU-hours at a stated throughput.",
    )
    p.add_argument("suite", metavar="SUITE", help="a suite name (suites/SUITE.yaml) or a file")
    p.add_argument(
        "--tflops",
        type=float,
        default=200.0,
        help="the device's peak throughput in TFLOP/s (default 200)",
    )
    p.add_argument(
        "--utilisation",
        type=float,
        default=0.4,
        help="the share of the peak a training step sustains (default 0.4)",
    )
    p.add_argument(
        "--out",
        default="results/plan",
        metavar="DIR",
        help="also write DIR/SUITE.md (default results/plan; '' to skip)",
    )
    p.set_defaults(func=_cmd_plan, parser=p)
