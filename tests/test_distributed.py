"""Multi-process training: the global-batch regularizer is the single-process one.

One ``torchrun --nproc_per_node 2`` launch (gloo, CPU) runs this file as a script (the
``_worker`` at the bottom): each rank holds half of a fixed batch, computes the regularizers
with their inputs gathered (``reg_batch="global"``) and on its own half (``"local"``), backward
through DistributedDataParallel, and trains small MLPs with :func:`harness.training.loop.train`. The
ranks save what they got; the tests compare it with one process on the whole batch.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from harness.training import distributed
from harness.training.loop import (
    TrainConfig,
    _check_split,
    _epoch_loader,
    _gathered,
    _local_ce,
    train,
)
from harness.transfer.regularizers import RegContext, build_regularizer
from harness.transfer.taps import Taps
from harness.zoo.models import build_model, with_source_head

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
N = 16  # the fixed batch; each rank holds N // WORLD rows
# regularizer specs checked on the fixed batch: the neurons view (li2020 Omega_P, exact plan),
# a samples view (lohit2020 REMD) and KD (logits)
SPECS = {
    "omega_p": {"alpha": 0.5},
    "ot_samples_remd+kd": {"ot_samples_remd.taps": "penultimate", "kd.tau": 2.0},
}


# --------------------------------------------------------------------------- shared set-up


def fixed_batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 64, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (N,), generator=g)
    return x, y


def nets(dtype=torch.float64):
    torch.manual_seed(1)
    student = build_model("mlp", 10, widths=(12,)).to(dtype)
    torch.manual_seed(2)
    teacher = build_model("mlp", 10, widths=(12,)).to(dtype).eval()
    return student, teacher


def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.as_tensor(x, dtype=torch.float32) / 16.0
    y = torch.as_tensor(y, dtype=torch.long)
    return TensorDataset(x[:192], y[:192]), TensorDataset(x[192:292], y[192:292])


CFG = TrainConfig(epochs=2, batch_size=32, lr=0.05, schedule="step", milestones=(1,), seed=0)
FROZEN = ({"match": "features.1", "lr_mult": 0}, {"match": "fc", "lr_mult": 0.5})


def train_runs() -> dict[str, dict]:
    """The training runs compared between 2 processes and 1: name -> train() arguments."""
    train_set, val_set = digits()
    x, y = train_set.tensors

    def student():
        torch.manual_seed(3)
        return build_model("mlp", 10, widths=(16,))

    torch.manual_seed(4)
    teacher = build_model("mlp", 10, widths=(24,))
    omega = {"regularizer": "omega_p", "params": {"alpha": 1.0}}
    # joint training (lu2017): a source task of the first five classes, KD on the target
    torch.manual_seed(5)
    joint = with_source_head(build_model("mlp", 5, widths=(16,)), 5)
    torch.manual_seed(6)
    t5 = build_model("mlp", 5, widths=(16,))
    return {
        "global": dict(
            model=student(),
            train_set=train_set,
            val_set=val_set,
            config=CFG,
            teacher=teacher,
            test_set=val_set,
            **omega,
        ),
        "local": dict(
            model=student(),
            train_set=train_set,
            val_set=val_set,
            teacher=teacher,
            config=dataclasses.replace(CFG, reg_batch="local"),
            **omega,
        ),
        # lu2017's layer-wise rates: the hidden layer frozen, the head at half the rate
        "frozen": dict(
            model=student(),
            train_set=train_set,
            val_set=val_set,
            teacher=teacher,
            config=dataclasses.replace(CFG, param_groups=FROZEN),
            **omega,
        ),
        "joint": dict(
            model=joint,
            train_set=TensorDataset(x[y >= 5], y[y >= 5] - 5),
            source_set=TensorDataset(x[y < 5], y[y < 5]),
            source_weight=0.5,
            teacher=t5,
            config=CFG,
            regularizer="kd",
            params={"tau": 2.0},
        ),
    }


def run_train(kw: dict, **extra):
    kw = {**kw, **extra}
    reg = build_regularizer(kw.pop("regularizer"), **kw.pop("params"))
    model = kw.pop("model")
    res = train(
        model, kw.pop("train_set"), kw.pop("val_set", None), regularizer=reg, progress=False, **kw
    )
    return model, res


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- the worker


def _worker(out: Path) -> None:
    """One rank of the torchrun launch: save what this rank computes to ``out/rank<r>.pt``."""
    rank, world = distributed.init_from_env("cpu")
    assert (rank, world) == (distributed.rank(), WORLD) and distributed.is_main() == (rank == 0)
    got: dict = {}

    # helpers: broadcast, gather of unequal slices with the gradient scaling, any_rank
    got["broadcast"] = distributed.broadcast_object({"from": rank})
    got["objects"] = distributed.all_gather_object(rank * 10)
    got["any"] = distributed.any_rank(rank == 1)
    rows = torch.arange(10.0).view(5, 2)
    mine = (rows[:3] if rank == 0 else rows[3:]).clone().requires_grad_()  # 3 and 2 rows
    full = distributed.gather_batch(mine)  # sizes gathered, padded, cut back
    (full * torch.arange(5.0)[:, None]).sum().backward()
    got["gather"] = (full.detach(), mine.grad)
    got["labels"] = distributed.gather_batch(torch.tensor([rank] * (3 - rank)), [3, 2])

    # the fixed batch, each rank its half, under DDP
    x, y = fixed_batch()
    lo, hi = rank * N // WORLD, (rank + 1) * N // WORLD
    xs, ys = x[lo:hi], y[lo:hi]
    sizes = [N // WORLD] * WORLD
    for spec, params in SPECS.items():
        student, teacher = nets()
        reg = build_regularizer(spec, **params)
        net = nn.parallel.DistributedDataParallel(student, static_graph=True)
        with Taps(student, reg.taps) as s_taps, Taps(teacher, reg.taps) as t_taps:
            logits = net(xs)
            with torch.no_grad():
                t_logits = teacher(xs)
        ctx = RegContext(
            student=student,
            teacher=teacher,
            features=dict(s_taps.features),
            teacher_features=dict(t_taps.features),
            logits=logits,
            teacher_logits=t_logits,
            labels=ys,
        )
        local = {k: v.detach() for k, v in reg(ctx).items()}
        terms = reg(_gathered(ctx, sizes))
        (_local_ce(logits, ys, sizes) + sum(terms.values())).backward()
        got[spec] = {
            "global": {k: v.detach() for k, v in terms.items()},
            "local": local,
            "grads": {n: p.grad.clone() for n, p in student.named_parameters()},
        }

    # train() under DDP; "resumed" stops after epoch 0 and resumes from the checkpoint
    runs = train_runs()
    for name, kw in runs.items():
        model, res = run_train(kw)
        got[f"train/{name}"] = (state(model), res)

    class Interrupted(Exception):
        pass

    def stop(epoch, record):
        raise Interrupted

    ckpt = out / "resume.ckpt"
    try:
        run_train(train_runs()["global"], checkpoint_path=ckpt, on_epoch=stop)
    except Interrupted:
        pass
    model, res = run_train(train_runs()["global"], checkpoint_path=ckpt)
    got["train/resumed"] = (state(model), res)
    diverging = train_runs()["global"]  # every rank stops, none waits in a collective
    _, got["train/failed"] = run_train(diverging, config=dataclasses.replace(CFG, lr=1e30))
    torch.save(got, out / f"rank{rank}.pt")
    distributed.barrier()


# --------------------------------------------------------------------------- launch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """Launch the 2-process worker once; each rank's saved results."""
    out = tmp_path_factory.mktemp("ddp")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={WORLD}",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        __file__,
        str(out),
    ]
    # a session of its own: on a timeout (a rank stuck in a collective) the workers go too
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    assert proc.returncode == 0, stdout[-3000:] + stderr[-5000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# --------------------------------------------------------------------------- tests


def test_collective_helpers(ranks):
    rows = torch.arange(10.0).view(5, 2)
    for r, got in enumerate(ranks):
        assert got["broadcast"] == {"from": 0}
        assert got["objects"] == [0, 10] and got["any"] is True
        full, grad = got["gather"]
        torch.testing.assert_close(full, rows)  # unequal slices (3 + 2 rows), in rank order
        # every rank's dR/dfull for its rows, summed: W times the single-process gradient
        weights = torch.arange(5.0)[:, None].expand(5, 2)
        torch.testing.assert_close(grad, WORLD * (weights[:3] if r == 0 else weights[3:]))
        assert got["labels"].tolist() == [0, 0, 0, 1, 1]


@pytest.mark.parametrize("spec", list(SPECS))
def test_global_batch_regularizer_is_the_single_process_one(ranks, spec):
    """Value (every rank) and DDP-averaged gradient equal one process on the whole batch;
    ``"local"`` is each rank's regularizer on its own half."""
    x, y = fixed_batch()
    student, teacher = nets()
    reg = build_regularizer(spec, **SPECS[spec])

    def terms_on(rows):
        with Taps(student, reg.taps) as s_taps, Taps(teacher, reg.taps) as t_taps:
            logits = student(x[rows])
            with torch.no_grad():
                t_logits = teacher(x[rows])
        ctx = RegContext(
            student=student,
            teacher=teacher,
            features=dict(s_taps.features),
            teacher_features=dict(t_taps.features),
            logits=logits,
            teacher_logits=t_logits,
            labels=y[rows],
        )
        return logits, reg(ctx)

    logits, terms = terms_on(slice(None))
    (F.cross_entropy(logits, y) + sum(terms.values())).backward()
    assert set(terms) == set(spec.split("+"))
    for r, got in enumerate(ranks):
        res = got[spec]
        for name, value in terms.items():
            torch.testing.assert_close(res["global"][name], value.detach(), rtol=1e-9, atol=1e-9)
        for name, p in student.named_parameters():
            torch.testing.assert_close(res["grads"][name], p.grad, rtol=1e-9, atol=1e-9, msg=name)
        half = slice(r * N // WORLD, (r + 1) * N // WORLD)
        _, local = terms_on(half)
        for name, value in local.items():
            torch.testing.assert_close(res["local"][name], value.detach(), rtol=1e-9, atol=1e-9)
            # another batch, another value
            assert abs(float(value.detach()) - float(terms[name].detach())) > 1e-6


@pytest.mark.parametrize("name", ["global", "joint", "frozen"])
def test_ddp_training_matches_single_process(ranks, name):
    """Two processes with reg_batch="global" train the single-process weights (float32);
    under DDP too, a frozen param group (lr_mult 0) keeps its initial weights bitwise."""
    kw = train_runs()[name]
    initial = state(kw["model"])
    model, res = run_train(kw)
    assert res.status == "completed", res.reason
    if name == "frozen":
        for got in ranks:
            for k in ("features.1.weight", "features.1.bias"):
                assert torch.equal(got["train/frozen"][0][k], initial[k]), k
            assert not torch.equal(got["train/frozen"][0]["fc.weight"], initial["fc.weight"])
    for r, got in enumerate(ranks):
        weights, res2 = got[f"train/{name}"]
        assert res2.status == "completed", res2.reason
        assert res2.steps == res.steps > 0
        for k, v in state(model).items():
            torch.testing.assert_close(weights[k], v, rtol=1e-5, atol=1e-5, msg=f"{k} rank {r}")
        # the logged losses are the global batch's
        for key in res.history["steps"]:
            if key.startswith("train/"):
                torch.testing.assert_close(
                    torch.tensor(res2.history["steps"][key]),
                    torch.tensor(res.history["steps"][key]),
                    rtol=1e-4,
                    atol=1e-5,
                    msg=key,
                )
        assert res2.final_val_accuracy == res.final_val_accuracy
        assert res2.test_accuracy == res.test_accuracy


def test_local_regularizer_batch_trains_otherwise(ranks):
    glob, _ = ranks[0]["train/global"]
    local, res = ranks[0]["train/local"]
    assert res.status == "completed", res.reason
    assert (glob["fc.weight"] - local["fc.weight"]).abs().max() > 1e-4
    for k, v in local.items():  # DDP kept the ranks' weights equal
        torch.testing.assert_close(ranks[1]["train/local"][0][k], v, rtol=0, atol=0)


def test_resumed_ddp_run_ends_where_the_straight_one_does(ranks):
    straight, res = ranks[0]["train/global"]
    for got in ranks:
        resumed, res2 = got["train/resumed"]
        assert res2.status == "completed" and res2.epochs_completed == 2
        for k, v in straight.items():
            torch.testing.assert_close(resumed[k], v, rtol=0, atol=0, msg=k)
        assert res2.history["steps"]["train/loss"] == res.history["steps"]["train/loss"]


def test_non_finite_loss_stops_every_rank(ranks):
    for got in ranks:
        res = got["train/failed"]
        assert res.status == "failed" and "non-finite loss" in res.reason, res.reason


# --------------------------------------------------------------------------- single process


def test_rank_slices_are_the_single_process_batch():
    """Concatenated in rank order, the ranks' slices are the one-process batches, also the
    last, short one (split 3 + 3 + 2 over 3 ranks)."""
    data = TensorDataset(torch.arange(40))
    cfg = TrainConfig(batch_size=12, drop_last=False, seed=5)
    one = [b[0].tolist() for b in _epoch_loader(data, cfg, 1)]
    assert [len(b) for b in one] == [12, 12, 12, 4]
    for world in (2, 3):
        loaders = [_epoch_loader(data, cfg, 1, 0, r, world) for r in range(world)]
        parts = [[b[0].tolist() for b in loader] for loader in loaders]
        for i, batch in enumerate(one):
            assert sum((p[i] for p in parts), []) == batch
            assert [len(p[i]) for p in parts] == loaders[0].batch_sampler.split(i)
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        _check_split("train_set", data, TrainConfig(batch_size=12), 5)
    with pytest.raises(ValueError, match="last batch"):  # 40 = 3 * 12 + 4: 4 < 6 processes
        _check_split("train_set", data, cfg, 6)
    _check_split("train_set", data, TrainConfig(batch_size=12), 6)  # drop_last: full only


def test_reg_batch_config_keeps_old_job_keys():
    assert "reg_batch" not in TrainConfig().to_dict()  # suites' job keys hash this dict
    d = TrainConfig(reg_batch="local").to_dict()
    assert d["reg_batch"] == "local"
    assert TrainConfig(**{**d, "milestones": ()}) == TrainConfig(reg_batch="local")
    with pytest.raises(ValueError, match="reg_batch"):
        TrainConfig(reg_batch="everything")


def test_helpers_are_identities_in_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env() == (0, 1)
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    t = torch.randn(3, 2, requires_grad=True)
    assert distributed.gather_batch(t) is t
    obj = {"job": 1}
    assert distributed.broadcast_object(obj) is obj
    assert distributed.all_gather_object(obj) == [obj] and not distributed.any_rank(False)
    torch.testing.assert_close(distributed.all_reduce(t), t.detach())
    distributed.barrier()
    assert distributed.local_device("cuda") == torch.device("cuda")


if __name__ == "__main__":  # one rank of the launch in the `ranks` fixture
    _worker(Path(sys.argv[1]))
