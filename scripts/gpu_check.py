"""The device check: what the full-scale suites need from one CUDA GPU, measured in one run.

    python scripts/gpu_check.py --out results/gpu          # (scripts/gpu-check wraps it)

Sections, each timed, each failure kept as a row rather than stopping the run:

1. ``env``: torch, CUDA, the device.
2. ``solvers``: every registered OT method on the device at the full-scale widths (the 2048
   neurons of ResNet-101's penultimate layer, li2020 Table 1; a batch of 64 examples) and a batch
   of 16 problems at once, each value against exact OT (POT's network simplex in float64, CPU).
3. ``steps``: a training step of the full-scale model pairs (ResNet-101 on 224x224, WRN-28-10 and
   ResNet-56 on 32x32) with each regularizer, as a ratio to L2-SP's step
   (:mod:`harness.reports.step_bench`, li2020 §4.4's 2.7x).
4. ``mini``: the default suite's first two seeds end to end on the GPU (``--device cuda``), its
   per-job test accuracies against the committed CPU run (results/mini/runs.csv).
5. ``probe``: the issue-23 question: does PreAct-ResNet-1001 (li2020 Table 2's teacher) stay
   finite in eval mode after 100 steps at the suite's lr 0.1, batch 64, on CIFAR-shaped data?
6. ``ddp``: a two-process step on NCCL (``torchrun``), which one GPU cannot host for two ranks
   (NCCL refuses two ranks on one device): the outcome is reported as it is.

Writes ``gpu-check.md`` (one table per section) and ``gpu-check.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn, repeats=3):
    fn()  # warm-up: kernels compiled, allocator primed
    _sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def section_env(args):
    if args.device == "cpu":
        return [{"python": platform.python_version(), "torch": torch.__version__}]
    p = torch.cuda.get_device_properties(0)
    return [
        {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "device": p.name,
            "sms": p.multi_processor_count,
            "memory_gib": round(p.total_memory / 2**30, 1),
            "host_cpus": os.cpu_count(),
        }
    ]


def _neuron_problem(d: int, n: int, seed: int, device: str):
    """li2020's neurons view: d neurons seen on n examples, the student a noisy permutation."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(d, n, generator=g)
    s = t[torch.randperm(d, generator=g)] + 0.3 * torch.randn(d, n, generator=g)
    return s.to(device), t.to(device)


def _exact_value(C: torch.Tensor) -> float:
    import ot

    Cd = C.detach().double().cpu().numpy()
    a = ot.unif(Cd.shape[0])
    b = ot.unif(Cd.shape[1])
    return float(ot.emd2(a, b, Cd, numItermax=10_000_000))


def _solve_row(method: str, s, t, C, ref: float) -> dict:
    import solvers

    info = solvers.get_method(method)
    if info.input == "points":
        fn = lambda: solvers.solve_sample(s, t, cost="euclidean", method=method)  # noqa: E731
    else:
        fn = lambda: solvers.solve(C, method=method)  # noqa: E731
    sec, res = _timed(fn)
    value = float(res.value.detach().double().sum())
    return {
        "ms": round(1e3 * sec, 2),
        "value": value,
        "rel_error": (value - ref) / abs(ref),
        "converged": bool(torch.as_tensor(res.converged).all())
        if res.converged is not None
        else None,
        "n_iter": int(torch.as_tensor(res.n_iter).max()) if res.n_iter is not None else None,
        "on_device": str(res.value.device),
    }


#: not OT solvers: li2020's fixed plans (Eq. 5, 6)
FIXED_PLANS = ("identity", "uniform")


def section_solvers(args):
    import solvers

    rows = []
    methods = [m for m in solvers.available() if m not in FIXED_PLANS and m not in args.skip]
    for d in args.widths:
        s, t = _neuron_problem(d, 64, seed=d, device=args.device)
        C = torch.cdist(s, t)
        ref = _exact_value(C)
        for method in methods:
            row = {"problem": f"neurons d={d} n=64", "method": method, "exact_value": ref}
            try:
                row.update(_solve_row(method, s, t, C, ref))
            except Exception as exc:  # a row that says why, the run goes on
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            rows.append(row)
    rows.extend(_batched_rows(args.device))
    return rows


def section_keops(args):
    """KeOps alone, in its own process: its first call compiles CUDA code (and may crash)."""
    args.skip = ()
    return [r for r in section_solvers(args) if r["method"] == "keops"]


def _batched_rows(device: str, B: int = 16, d: int = 256):
    import solvers

    probs = [_neuron_problem(d, 64, seed=100 + i, device=device) for i in range(B)]
    C = torch.stack([torch.cdist(s, t) for s, t in probs])
    refs = [_exact_value(c) for c in C]
    rows = []
    for method in [
        m
        for m in solvers.available(batched=True)
        if m not in FIXED_PLANS and solvers.get_method(m).input == "cost"
    ]:
        row = {
            "problem": f"batch of {B}, d={d} n=64",
            "method": method,
            "exact_value": statistics.mean(refs),
        }
        try:
            sec, res = _timed(lambda m=method: solvers.solve(C, method=m))
            vals = res.value.detach().double().cpu()
            row.update(
                {
                    "ms": round(1e3 * sec, 2),
                    "value": float(vals.mean()),
                    "rel_error": max((float(v) - r) / r for v, r in zip(vals, refs, strict=True)),
                    "converged": bool(torch.as_tensor(res.converged).all()),
                    "on_device": str(res.value.device),
                }
            )
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        rows.append(row)
    return rows


def section_steps(args):
    from harness.reports import step_bench

    specs = [s for s in step_bench.DEFAULT_SPECS if s[0] != "omega_p (emd)"]
    df = step_bench.run(
        args.models, specs, batch=64, steps=args.steps, repeats=2, device=args.device, log=print
    )
    keep = [
        "case",
        "method",
        "batch",
        "step_ms",
        "step_ms_all",
        "ratio_to_l2sp",
        "ratio_min_to_l2sp",
        "solver_iters",
    ]
    return df[keep].to_dict("records")


def section_mini(args):
    import pandas as pd

    res = Path(tempfile.mkdtemp(prefix="gpu-check-mini-"))
    # seeds 0-1 of mini (34 jobs): the same keys as the committed run's first two seeds
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        "run",
        "mini",
        "--set",
        "seeds=[0,1]",
        "--device",
        args.device,
        "--results",
        str(res),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.mini_s)
    wall = time.perf_counter() - t0
    row = {"command": " ".join(cmd[1:]), "exit": proc.returncode, "wall_s": round(wall, 1)}
    if proc.returncode != 0:
        row["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        return [row]
    ours = pd.read_csv(res / "mini" / "runs.csv")
    cpu = pd.read_csv(ROOT / "results" / "mini" / "runs.csv")
    both = ours.merge(cpu, on="key", suffixes=("_cuda", "_cpu"))
    diff = 100 * (both["test_accuracy_cuda"] - both["test_accuracy_cpu"])
    row.update(
        {
            "jobs_cuda": len(ours),
            "jobs_paired": len(both),
            "identical": int((diff == 0).sum()),
            "mean_diff_points": round(float(diff.mean()), 3),
            "max_abs_diff_points": round(float(diff.abs().max()), 3),
        }
    )
    return [row]


def section_probe(args):
    from harness.zoo.models import build_model

    rows = []
    for lr, warm in ((0.1, 0), (0.1, 20)):  # the suite's rate, then He et al.'s 0.01 warm-up
        torch.manual_seed(0)
        model = build_model("preact_resnet1001", 100).cuda()
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
        g = torch.Generator(device="cuda").manual_seed(0)
        losses = []
        t0 = time.perf_counter()
        for step in range(args.probe_steps):
            for group in opt.param_groups:
                group["lr"] = lr / 10 if step < warm else lr
            x = torch.randn(64, 3, 32, 32, device="cuda", generator=g)
            y = torch.randint(0, 100, (64,), device="cuda", generator=g)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss))
        step_ms = 1e3 * (time.perf_counter() - t0) / args.probe_steps
        model.eval()
        with torch.inference_mode():
            out = model(torch.randn(256, 3, 32, 32, device="cuda", generator=g))
        rows.append(
            {
                "model": "preact_resnet1001",
                "lr": lr,
                "warmup_steps_at_lr/10": warm,
                "steps": args.probe_steps,
                "step_ms": round(step_ms, 1),
                "first_loss": round(losses[0], 3),
                "last_loss": round(losses[-1], 3),
                "train_losses_finite": all(map(lambda v: v == v and abs(v) < 1e30, losses)),
                "eval_outputs_finite": bool(torch.isfinite(out).all()),
                "eval_output_absmax": float(out.abs().max()),
            }
        )
    return rows


DDP_SCRIPT = """
import os, torch, torch.distributed as dist
dist.init_process_group("nccl")
r = dist.get_rank(); torch.cuda.set_device(0)
m = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(64, 10).cuda(), device_ids=[0])
loss = m(torch.randn(8, 64, device="cuda")).square().mean(); loss.backward()
t = torch.ones(1, device="cuda"); dist.all_reduce(t)
print("rank", r, "allreduce", float(t)); dist.destroy_process_group()
"""


def section_ddp(args):
    script = Path(args.out) / "ddp_step.py"
    script.write_text(DDP_SCRIPT)
    rows = []
    for nproc in (1, 2):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            str(script),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
            out = (proc.stdout + proc.stderr).strip().splitlines()
            said = [ln for ln in out if "allreduce" in ln or "Error" in ln or "error" in ln]
            rows.append({"nproc": nproc, "exit": proc.returncode, "said": said[:3]})
        except subprocess.TimeoutExpired:
            rows.append({"nproc": nproc, "exit": "timeout after 90 s"})
    script.unlink()
    return rows


SECTIONS = {
    "env": section_env,
    "solvers": section_solvers,
    "keops": section_keops,
    "steps": section_steps,
    "probe": section_probe,
    "mini": section_mini,
    "ddp": section_ddp,
}


def _markdown(results: dict) -> str:
    import pandas as pd

    lines = [
        "# Device check\n",
        f"Command: `python scripts/gpu_check.py {' '.join(sys.argv[1:])}`"
        f" ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})\n",
    ]
    for name, sec in results.items():
        lines.append(f"## {name} ({sec['seconds']:.0f} s)\n")
        if "error" in sec:
            lines.append(f"FAILED: {sec['error']}\n")
        if sec.get("rows"):
            lines.append(pd.DataFrame(sec["rows"]).to_markdown(index=False, floatfmt=".4g"))
            lines.append("")
    return "\n".join(lines)


def _run_section(name: str, argv: list[str], timeout: float) -> dict:
    """One section in a child process: a crash (a segfault in a compiler) or a hang is a row."""
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, __file__, *argv, "--only", name, "--rows-to", f.name]
        try:
            proc = subprocess.run(
                cmd, text=True, stdout=sys.stdout, stderr=subprocess.PIPE, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return {"rows": [], "error": f"no answer within {timeout:.0f} s"}
        sys.stderr.write(proc.stderr[-4000:])
        text = Path(f.name).read_text()
        if proc.returncode != 0 or not text:
            tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-1:]
            return {
                "rows": json.loads(text) if text else [],
                "error": f"exit {proc.returncode}: {' '.join(tail)[:300]}",
            }
        return {"rows": json.loads(text)}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/gpu")
    ap.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS))
    ap.add_argument("--widths", type=int, nargs="*", default=[256, 2048])
    ap.add_argument("--models", nargs="*", default=["resnet101", "wrn_28_10", "resnet56"])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--probe-steps", type=int, default=100)
    ap.add_argument("--mini-s", type=int, default=150)
    ap.add_argument("--section-s", type=int, default=240, help="seconds a section may take")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script's own logic")
    ap.add_argument("--only", help=argparse.SUPPRESS)
    ap.add_argument("--rows-to", help=argparse.SUPPRESS)
    return ap


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    args.skip = ("keops",)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here; run it on a GPU machine", file=sys.stderr)
        return 2
    if args.only:  # the child of _run_section
        rows = SECTIONS[args.only](args)
        Path(args.rows_to).write_text(json.dumps(rows, default=str))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.sections:
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        results[name] = _run_section(name, argv, args.section_s)
        results[name]["seconds"] = time.perf_counter() - t0
        (out / "gpu-check.json").write_text(json.dumps(results, indent=1, default=str))
        (out / "gpu-check.md").write_text(_markdown(results))
        print(f"   {name}: {results[name]['seconds']:.0f} s", flush=True)
    print(_markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
