"""otransfer plan: FLOP counts against hand counts, a suite's plan, the CLI."""

import pytest
import torch
from torch import nn

from harness.reports.plan import activation_bytes, count_flops, plan_suite, render


def _mlp_train_flops(widths):
    """Hand count of one forward + backward at batch 1 of a chain of Linear layers: a matrix
    product of (1 x i) by (i x o) is 2*i*o FLOPs; backward: every weight gradient (2*i*o) and
    every input gradient except the first layer's (the input needs none)."""
    pairs = list(zip(widths[:-1], widths[1:], strict=True))
    fwd = sum(2 * i * o for i, o in pairs)
    return fwd + fwd + sum(2 * i * o for i, o in pairs[1:])


def test_linear_flops_match_hand_count():
    lin = nn.Linear(64, 10)
    assert count_flops(lin, (64,), backward=False) == 2 * 64 * 10
    assert count_flops(lin, (64,)) == 2 * (2 * 64 * 10)  # forward + weight gradient
    mlp = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    assert count_flops(mlp, (64,)) == _mlp_train_flops([64, 256, 10])


def test_conv_flops_match_hand_count():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)  # 2 * (3*3*3) * 8 per output pixel
    assert count_flops(conv, (3, 32, 32), backward=False) == 2 * 27 * 8 * 32 * 32


def test_activation_bytes_sum_leaf_outputs():
    mlp = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    assert activation_bytes(mlp, (64,)) == 4 * (256 + 256 + 10)


@pytest.fixture(scope="module")
def mini_plan():
    torch.set_num_threads(1)
    return plan_suite("mini", tflops=100, utilisation=0.5)


def test_plan_of_mini(mini_plan):
    rows = {(r["stage"], r["row"]): r for r in mini_plan["rows"]}
    teacher = rows[("teacher", "none")]
    # mlp 64-256-256-10 at the suite's batch 64, no teacher
    assert teacher["flops_step"] == 64 * _mlp_train_flops([64, 256, 256, 10])
    assert teacher["params"] == 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    kd = rows[("students", "kd")]  # student 64-16-10 at batch 25, + the teacher's forward
    t_fwd = 2 * (64 * 256 + 256 * 256 + 256 * 10)
    assert kd["flops_step"] == 25 * (_mlp_train_flops([64, 16, 10]) + t_fwd)
    op = rows[("students", "omega_p")]
    assert [(o["tap"], o["size"], o["method"]) for o in op["ot"]] == [
        ("penultimate", "16 x 256", "exact")
    ]
    assert op["ot"][0]["seconds"] > 0
    assert rows[("students", "none")]["ot"] == []
    # GPU-hours: steps x FLOPs / (100 TFLOP/s x 0.5), summed over the rows
    steps = teacher["steps_per_job"] * teacher["jobs"]
    assert teacher["gpu_hours"] == pytest.approx(steps * teacher["flops_step"] / 5e13 / 3600)
    assert mini_plan["gpu_hours"] == pytest.approx(sum(r["gpu_hours"] for r in mini_plan["rows"]))
    text = render(mini_plan, "otransfer plan mini")
    assert text.splitlines()[2] == "`otransfer plan mini`" and "utilisation of 50%" in text


def test_plan_counts_the_evaluations(mini_plan):
    """Eval GPU-hours: the student's forward over the validation split after every
    `eval_every` epochs and after the last, and over the test split once, per job."""
    import math

    from harness.experiments.suite import expand, load_suite
    from harness.zoo.data import load_dataset

    job = next(j for j in expand(load_suite("mini")) if j.stage == "teacher")
    cfg, tr = job.config, job.config["train"]
    n_val, n_test = (
        len(load_dataset(cfg["dataset"], split=s, **cfg["dataset_params"])) for s in ("val", "test")
    )
    evals = math.ceil(tr["epochs"] / tr.get("eval_every", 1))
    teacher = next(r for r in mini_plan["rows"] if r["stage"] == "teacher")
    fwd = 2 * (64 * 256 + 256 * 256 + 256 * 10)
    want = teacher["jobs"] * fwd * (n_val * evals + n_test) / 5e13 / 3600
    assert n_val > 0 and teacher["eval_hours"] == pytest.approx(want)
    assert mini_plan["eval_hours"] == pytest.approx(sum(r["eval_hours"] for r in mini_plan["rows"]))
    assert "of evaluation" in render(mini_plan, "otransfer plan mini")


def test_plan_cli_writes_the_file(tmp_path, capsys):
    from harness.cli import main

    assert main(["plan", "mini", "--tflops", "100", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "mini.md").read_text().startswith("# Cost plan: mini")
    assert main(["plan", "no_such_suite", "--out", ""]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_suite" in err[0]
