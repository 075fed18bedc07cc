"""Training-step time of each regularizer, as a ratio to the same step with L2-SP.

li2020 §4.4 ("Regarding run-times"): "with mini-batches of 64 examples, our OT-based regularizer
is 2.7 more time consuming than when using a standard parameter regularizer". This benchmark
measures that ratio here, for the fine-tuning setting of li2020 Table 1 (the reference network is
the student's own starting point, ``d == d'``):

* one *step* is what :func:`harness.training.loop.train` does per batch: student forward
  (taps), the frozen reference network's forward when the term needs it, the regularizer (OT
  solve included), backward, SGD step, logging;
* each configuration trains ``steps`` batches of ``batch`` random inputs of the model's input
  shape, after one warm-up batch, ``repeats`` times; the median time per step is reported and
  divided by the median of ``l2sp`` on the same model, measured in the same run. The repeats
  are interleaved (repeat 1 of every row, then repeat 2 ...), so that a slow drift of the
  machine's speed biases no row.

``otransfer regularizers bench`` writes ``results/regularizers/step_time.{csv,md}``.
"""

from __future__ import annotations

import copy
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from harness.training import safe_io

__all__ = [
    "CASES",
    "DEFAULT_SPECS",
    "BASELINE",
    "time_steps",
    "run",
    "ratio_table",
    "write_outputs",
]

#: The models of the issue's target: ResNet-56 on CIFAR-shaped input and the digits CNN.
CASES: dict[str, dict[str, Any]] = {
    "resnet56": {"model": "resnet56", "input": (3, 32, 32), "classes": 10},
    "cnn": {"model": "cnn", "input": (1, 8, 8), "classes": 10},
    "mlp": {"model": "mlp", "input": (64,), "classes": 10},
    # the full-scale widths: li2020 Table 1's ResNet-101 (2048-neuron penultimate
    # layer, 224x224 crops) and lohit2020's WRN-28-10 teacher (640 channels, 32x32)
    "resnet101": {"model": "resnet101", "input": (3, 224, 224), "classes": 100},
    "wrn_28_10": {"model": "wrn_28_10", "input": (3, 32, 32), "classes": 100},
}
BASELINE = "l2sp"
#: (row label, spec, params): the baseline, the fixed plans, and Omega_P with each plan.
DEFAULT_SPECS: tuple[tuple[str, str, dict], ...] = (
    ("l2sp", "l2sp", {}),
    ("none", "none", {}),
    ("omega_i", "omega_i", {}),
    ("omega_u", "omega_u", {}),
    ("omega_p", "omega_p", {}),
    ("omega_p (ipot)", "omega_p", {"plan": "ipot"}),
    ("omega_p (sinkhorn)", "omega_p", {"plan": "sinkhorn"}),
    ("omega_p (emd)", "omega_p", {"plan": "emd"}),
    ("omega_p (assignment)", "omega_p", {"plan": "assignment"}),
    ("kd", "kd", {}),
)


def _inputs(case: Mapping[str, Any], batch: int, steps: int, seed: int):
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(seed)
    n = batch * (steps + 1)
    x = torch.randn((n, *case["input"]), generator=g)
    y = torch.randint(0, case["classes"], (n,), generator=g)
    return TensorDataset(x, y)


def time_steps(
    case: Mapping[str, Any],
    spec: str,
    params: Mapping[str, Any],
    *,
    batch: int = 64,
    steps: int = 10,
    repeats: int = 3,
    seed: int = 0,
    device: str = "cpu",
) -> dict:
    """Median seconds per training step of ``spec`` on ``case`` (see the module docstring).

    Each repeat trains a fresh copy of the same student for ``steps + 1`` batches with
    :func:`harness.training.loop.train` and keeps the time of the last ``steps`` (the first
    batch warms up allocators and solver caches). Returns ``{"step_s", "step_s_all", "n_iter"}``;
    :func:`run` calls it with ``repeats=1`` per round to interleave the rows.
    """
    from harness.training.loop import TrainConfig, train
    from harness.transfer.regularizers import build_regularizer
    from harness.zoo.models import build_model

    torch.manual_seed(seed)
    base = build_model(case["model"], case["classes"])
    reference = copy.deepcopy(base).eval()
    w0 = {k: v.detach().clone() for k, v in base.named_parameters()}
    data = _inputs(case, batch, steps, seed)
    times, iters = [], []
    for r in range(repeats):
        model = copy.deepcopy(base)
        reg = build_regularizer(spec, **params) if spec != "none" else None
        marks: list[float] = []

        def on_epoch(epoch, record, marks=marks):
            marks.append(time.perf_counter())

        cfg = TrainConfig(
            epochs=1,
            batch_size=batch,
            lr=1e-3,
            schedule="constant",
            seed=r,
            drop_last=True,
            device=device,
        )
        # one untimed warm-up batch, then the timed steps (the same model and regularizer)
        warm = torch.utils.data.Subset(data, range(batch))
        timed = torch.utils.data.Subset(data, range(batch, len(data)))
        train(
            model,
            warm,
            None,
            config=cfg,
            regularizer=reg,
            teacher=reference,
            initial_weights=w0,
            progress=False,
        )
        t0 = time.perf_counter()
        res = train(
            model,
            timed,
            None,
            config=cfg,
            regularizer=reg,
            teacher=reference,
            initial_weights=w0,
            progress=False,
            on_epoch=on_epoch,
        )
        if res.status != "completed":
            raise RuntimeError(f"{spec} {dict(params)} on {case['model']}: {res.reason}")
        times.append((marks[-1] - t0) / res.steps)
        for key, values in res.history["steps"].items():
            if key.endswith("/n_iter"):  # solver iterations of each OT term, every step
                iters.extend(values)
    return {
        "step_s": statistics.median(times),
        "step_s_all": times,
        "n_iter": statistics.mean(iters) if iters else float("nan"),
    }


def run(
    cases: Iterable[str] = ("resnet56", "cnn"),
    specs: Sequence[tuple[str, str, dict]] = DEFAULT_SPECS,
    *,
    batch: int = 64,
    steps: int = 10,
    repeats: int = 3,
    log=print,
    device: str = "cpu",
):
    """Time every spec on every case; a pandas frame with one row per (case, spec)."""
    import pandas as pd

    rows = []
    for name in cases:
        case = CASES[name]
        runs: dict[str, list[dict]] = {label: [] for label, _, _ in specs}
        for r in range(repeats):  # interleaved: round r times every row once
            for label, spec, params in specs:
                runs[label].append(
                    time_steps(
                        case,
                        spec,
                        params,
                        batch=batch,
                        steps=steps,
                        repeats=1,
                        seed=r,
                        device=device,
                    )
                )
        for label, spec, params in specs:
            times = [o["step_s"] for o in runs[label]]
            iters = [o["n_iter"] for o in runs[label]]
            rows.append(
                {
                    "case": name,
                    "model": case["model"],
                    "input": "x".join(map(str, case["input"])),
                    "batch": batch,
                    "device": device,
                    "method": label,
                    "spec": spec,
                    "params": dict(params),
                    "step_ms": 1e3 * statistics.median(times),
                    "step_ms_min": 1e3 * min(times),
                    "step_ms_all": [round(1e3 * t, 3) for t in times],
                    "solver_iters": statistics.mean(iters),
                }
            )
            if log:
                log(
                    f"{name:9s} {label:22s} {1e3 * statistics.median(times):9.2f} ms/step "
                    f"(runs: {', '.join(f'{1e3 * t:.1f}' for t in times)})"
                )
    df = pd.DataFrame(rows)
    base = df[df["method"] == BASELINE].set_index("case")["step_ms"]
    df["ratio_to_l2sp"] = df["step_ms"] / df["case"].map(base)
    # the fastest repeat is the least disturbed by other processes (timeit's estimator)
    base_min = df[df["method"] == BASELINE].set_index("case")["step_ms_min"]
    df["ratio_min_to_l2sp"] = df["step_ms_min"] / df["case"].map(base_min)
    return df


def ratio_table(df):
    """Rows = method, columns = case; cells ``"median ratio (median ms) · min-ratio"``."""
    import pandas as pd

    out = pd.DataFrame(
        index=list(dict.fromkeys(df["method"])),
        columns=list(dict.fromkeys(df["case"])),
        dtype=object,
    )
    for _, r in df.iterrows():
        out.at[r["method"], r["case"]] = (
            f"{r['ratio_to_l2sp']:.2f}x ({r['step_ms']:.1f} ms) · {r['ratio_min_to_l2sp']:.2f}x"
        )
    out.index.name = "regularizer"
    return out.fillna("-")


def write_outputs(df, out_dir: str | Path = "results/regularizers", command: str = "") -> dict:
    out = safe_io.ensure_dir(Path(out_dir))
    paths = {"csv": out / "step_time.csv", "md": out / "step_time.md"}
    safe_io.write_text(paths["csv"], df.to_csv(index=False), out)
    machine = (
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    batch = int(df["batch"].iloc[0]) if len(df) else 0
    text = [
        f"# Training-step time / L2-SP step time, batch {batch}\n",
        f"Each cell: the ratio of the median over repeats of the mean step time of "
        f"`harness.training.loop.train` (student forward, reference forward when needed, "
        f"regularizer, backward, SGD step) to L2-SP's, the median step time, and after `·` "
        f"the same ratio of the fastest repeats (least disturbed by other processes). "
        f"li2020 reports 2.7x for Omega_P on its GPU. Machine: {machine}.\n",
        f"Command: `{command}`\n" if command else "",
        ratio_table(df).to_markdown(),
        "",
    ]
    safe_io.write_text(paths["md"], "\n".join(text), out)
    return paths
