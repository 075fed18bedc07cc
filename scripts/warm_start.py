"""Warm-started Sinkhorn across training steps: iterations and time, cold vs warm.

One training run of li2020's Omega_P with the tolerance-stopped, certified ``sinkhorn`` plan
(ablation_plan's ``finetune_sinkhorn`` row) on the digits MLP, warm start on (its default).
Every warm solve the run makes is repeated cold on the same cost in the same process, the
order alternating, so each step gives iterations, wall time and certification both ways on
the identical problem. Writes ``results/throughput/warm-start.md``::

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python scripts/warm_start.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

import solvers._api as api
from harness.training.loop import TrainConfig, train
from harness.transfer.regularizers import build_regularizer
from harness.zoo.data import load_dataset
from harness.zoo.models import MLP

COMMAND = "OMP_NUM_THREADS=1 PYTHONPATH=$PWD python scripts/warm_start.py"


def _digits(split: str, n_per_class: int | None = None) -> TensorDataset:
    kw = {"n_per_class": n_per_class} if n_per_class else {}
    ds = load_dataset("digits", split=split, seed=0, **kw)
    xs = torch.stack([ds[i][0] for i in range(len(ds))]).flatten(1).double()
    return TensorDataset(xs, torch.tensor([int(ds[i][1]) for i in range(len(ds))]))


def _row(res, seconds: float) -> dict:
    return {
        "n_iter": res.n_iter,
        "certified": bool(res.converged),
        "s": seconds,
        "gap": float(torch.as_tensor(res.extras.get("gap", float("nan"))).max()),
        "finish": res.extras.get("finish", ""),
        "value": float(res.value.detach()),
    }


def _timed(C, a, b, kw):
    t = time.perf_counter()
    res = ORIG(C, a, b, **kw)
    return res, time.perf_counter() - t


ORIG = api.solve
RECORDS: list[dict] = []


def _spy(C, a=None, b=None, **kw):
    """The run's solve; a warm sinkhorn solve is paired with a cold one on the same cost."""
    if kw.get("method") != "sinkhorn" or kw.get("warmstart") is None:
        return ORIG(C, a, b, **kw)
    cold_kw = {**kw, "warmstart": None}
    if len(RECORDS) % 2:  # alternate which runs first
        cold, tc = _timed(C, a, b, cold_kw)
        warm, tw = _timed(C, a, b, kw)
    else:
        warm, tw = _timed(C, a, b, kw)
        cold, tc = _timed(C, a, b, cold_kw)
    RECORDS.append({"shape": tuple(C.shape), "cold": _row(cold, tc), "warm": _row(warm, tw)})
    return warm


def run(epochs: int, lr: float, solver: dict):
    torch.manual_seed(0)
    model = MLP(10, widths=(64, 64)).double()
    teacher = MLP(10, widths=(64, 64)).double().eval()
    reg = build_regularizer(
        "omega_p",
        alpha=0.1,
        plan="sinkhorn",
        warm_start=True,
        taps=["penultimate", "stage1"],
        **solver,
    )
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=64,
        lr=lr,
        momentum=0.9,
        eval_every=epochs,
        max_grad_norm=1.0,
        seed=0,
    )
    api.solve = _spy
    try:
        return train(
            model,
            _digits("train", 40),
            _digits("val"),
            config=cfg,
            regularizer=reg,
            teacher=teacher,
            progress=False,
        )
    finally:
        api.solve = ORIG


def report(res, epochs: int, lr: float, solver: dict) -> str:
    cold = [r["cold"] for r in RECORDS]
    warm = [r["warm"] for r in RECORDS]
    med_c = statistics.median(r["n_iter"] for r in cold)
    med_w = statistics.median(r["n_iter"] for r in warm)
    tot_c, tot_w = sum(r["n_iter"] for r in cold), sum(r["n_iter"] for r in warm)
    ratio = statistics.median(w["s"] / c["s"] for c, w in zip(cold, warm, strict=True))
    t_c, t_w = sum(r["s"] for r in cold), sum(r["s"] for r in warm)
    uncert = [
        i
        for i, (c, w) in enumerate(zip(cold, warm, strict=True))
        if c["certified"] and not w["certified"]
    ]
    dv = max(
        abs(w["value"] - c["value"]) / max(abs(c["value"]), 1e-12)
        for c, w in zip(cold, warm, strict=True)
    )
    lines = [
        "# Warm-started Sinkhorn across training steps (issue 21, item 4)",
        "",
        f"Command: `{COMMAND}`",
        "",
        f"Run: li2020 Omega_P (`omega_p`, `plan: sinkhorn`, {solver or 'its defaults'}; "
        "defaults: reg 1e-3 of the cost range, certified gap 1e-3, `exact_finish`), "
        "warm_start true, taps `penultimate` and `stage1`, "
        f"digits MLP (64, 64) student and teacher, float64, 400 training examples, batch 64, "
        f"{epochs} epochs, lr {lr}, momentum 0.9: {len(RECORDS)} solves after the first step "
        "(the first of each tap has no previous potentials and starts cold). Each warm solve "
        "of the run was repeated cold on the identical cost in the same process, the order "
        "alternating; wall times are per solve, 2-core CPU shared with other jobs, "
        "OMP_NUM_THREADS=1.",
        "",
        "| | cold | warm |",
        "|---|---|---|",
        f"| median iterations per solve | {med_c:g} | {med_w:g} |",
        f"| total iterations | {tot_c} | {tot_w} |",
        f"| total solve time (s) | {t_c:.3f} | {t_w:.3f} |",
        f"| certified (converged) | {sum(r['certified'] for r in cold)}/{len(cold)} | "
        f"{sum(r['certified'] for r in warm)}/{len(warm)} |",
        f"| finished by the network simplex (`exact_finish`) | "
        f"{sum(r['finish'] == 'emd' for r in cold)} | {sum(r['finish'] == 'emd' for r in warm)} |",
        "",
        f"Iterations saved: {1 - tot_w / tot_c:.1%} of the total, median per solve "
        f"{med_c:g} -> {med_w:g}. Wall time warm / cold: median per solve {ratio:.2f}, "
        f"total {t_w / t_c:.2f}. Largest relative difference of the values, warm vs cold: "
        f"{dv:.2g}.",
        "",
        (
            "Every warm value is certified where the cold one is."
            if not uncert
            else f"Warm solves not certified where the cold one was: {uncert}."
        ),
        f"Run status: {res.status}.",
        "",
        "Per solve (step order, taps alternating):",
        "",
        "| # | shape | cold iters | warm iters | cold s | warm s | cold gap | warm gap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, (r, c, w) in enumerate(zip(RECORDS, cold, warm, strict=True)):
        lines.append(
            f"| {i} | {r['shape'][0]}x{r['shape'][1]} | {c['n_iter']} | {w['n_iter']} "
            f"| {c['s']:.4f} | {w['s']:.4f} | {c['gap']:.1e} | {w['gap']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--out", default="results/throughput/warm-start.md")
    ap.add_argument("--reg", type=float, default=None)
    ap.add_argument("--gap", type=float, default=None)
    args = ap.parse_args(argv)
    solver = {k: v for k, v in (("reg", args.reg), ("gap", args.gap)) if v is not None}
    res = run(args.epochs, args.lr, solver)
    text = report(res, args.epochs, args.lr, solver)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
