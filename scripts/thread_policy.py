"""A job's time beside a concurrent CPU load, torch's default threads against the policy's.

    python scripts/thread_policy.py [--load 2] [--repeats 5] [--out results/throughput]

The job: 3 epochs of li2020's Omega_P (exact plan, penultimate layer) training an MLP [16]
student on digits against an MLP [256, 256] teacher (the mini suite's compression pair),
through :func:`harness.training.loop.train`. ``--load`` busy processes run beside it for the
whole measurement. The two settings are interleaved (default, policy, default, ...) so that a
drift of the machine's load biases neither. torch's default is one thread per core
(``torch.get_num_threads()`` at start); the policy's is :func:`harness.training.threads.
choose_threads` for this model (1: a small model).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BUSY = "import time\nt = time.time() + {s}\nwhile time.time() < t:\n    pass\n"


def one_job(threads: int) -> float:
    from harness.training.loop import TrainConfig, train
    from harness.transfer.regularizers import build_regularizer
    from harness.zoo.data import load_dataset
    from harness.zoo.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    train_set = load_dataset("digits", split="train", seed=0, n_per_class=10)
    teacher = build_model("mlp", 10, widths=[256, 256]).eval()
    student = build_model("mlp", 10, widths=[16])
    reg = build_regularizer("omega_p", **{"alpha": 0.1, "taps": ["penultimate"]})
    cfg = TrainConfig(epochs=3, batch_size=25, lr=0.05, schedule="cosine", eval_every=3)
    t0 = time.perf_counter()
    res = train(
        student, train_set, None, config=cfg, regularizer=reg, teacher=teacher, progress=False
    )
    assert res.status == "completed", res.reason
    return time.perf_counter() - t0


def main(argv=None) -> int:
    from harness.training.threads import choose_threads, cpu_budget

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--load", type=int, default=2, help="busy processes beside the job")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="results/throughput")
    args = ap.parse_args(argv)
    default = torch.get_num_threads()
    policy = choose_threads(10_000, environ={})
    busy = [subprocess.Popen([sys.executable, "-c", BUSY.format(s=3600)]) for _ in range(args.load)]
    times: dict[int, list[float]] = {default: [], policy: []}
    try:
        one_job(policy)  # warm-up: imports, the digits
        for _ in range(args.repeats):
            for n in dict.fromkeys((default, policy)):
                times[n].append(one_job(n))
                print(f"{n} thread(s): {times[n][-1]:.2f} s", flush=True)
    finally:
        for p in busy:
            p.kill()
    med = {n: statistics.median(v) for n, v in times.items()}
    lines = [
        "# A job's time beside a concurrent CPU load\n",
        f"Command: `python scripts/thread_policy.py --load {args.load} --repeats {args.repeats}`"
        f" ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); machine: "
        f"{platform.machine()}, {os.cpu_count()} cores, {cpu_budget()} usable, load average "
        f"at the end {os.getloadavg()[0]:.1f}; torch {torch.__version__}.\n",
        "The job: 3 epochs of Omega_P (exact plan) training an MLP [16] student on digits "
        "(100 images) against an MLP [256, 256] teacher, beside "
        f"{args.load} busy processes; settings interleaved.\n",
        "| threads | setting | median s | runs (s) |",
        "|---|---|---|---|",
    ]
    for n, v in times.items():
        name = "torch default (one per core)" if n == default else "policy (small model: 1)"
        if n == default == policy:
            name = "default = policy"
        lines.append(f"| {n} | {name} | {med[n]:.2f} | {', '.join(f'{t:.2f}' for t in v)} |")
    if default != policy:
        lines.append(f"\nDefault / policy: {med[default] / med[policy]:.2f}x.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "threads.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
