"""Many seeds (and grid points) of one job as one batched model.

The contract: every member of :func:`harness.training.batched.train_batched` ends where its own
:func:`harness.training.loop.train` run ends (float64: to round-off), with a result of the same
keys; what cannot be batched exactly says why and trains nothing.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from harness.training.batched import Member, NotBatchable, train_batched, why_not_batchable
from harness.training.loop import TrainConfig, train
from harness.transfer.regularizers import build_regularizer
from harness.zoo.data import load_dataset
from harness.zoo.models import MLP

SEEDS = (0, 1, 2)


def _digits(split: str, seed: int, n_per_class=None, dtype=torch.float64):
    kw = {"n_per_class": n_per_class} if n_per_class else {}
    ds = load_dataset("digits", split=split, seed=seed, **kw)
    xs = torch.stack([ds[i][0] for i in range(len(ds))]).flatten(1).to(dtype)
    ys = torch.tensor([int(ds[i][1]) for i in range(len(ds))])
    return TensorDataset(xs, ys)


def _members(
    spec: str, params_by_seed, cfg: TrainConfig, dtype=torch.float64, widths=(16, 16), n_per_class=6
):
    out = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = MLP(10, widths=widths).to(dtype)
        teacher = MLP(10, widths=(32, 16)).to(dtype).eval()
        w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
        reg = build_regularizer(spec, **params_by_seed(seed)) if spec != "none" else None
        out.append(
            Member(
                model,
                _digits("train", seed, n_per_class, dtype),
                _digits("val", seed, dtype=dtype),
                _digits("test", seed, dtype=dtype),
                TrainConfig(**{**cfg.__dict__, "seed": seed}),
                reg,
                teacher,
                w0,
            )
        )
    return out


def _single(m: Member):
    model = copy.deepcopy(m.model)
    reg = copy.deepcopy(m.regularizer)
    res = train(
        model,
        m.train_set,
        m.val_set,
        config=m.config,
        regularizer=reg,
        teacher=m.teacher,
        initial_weights=m.initial_weights,
        test_set=m.test_set,
        progress=False,
    )
    return model, res


CFG = TrainConfig(
    epochs=3,
    batch_size=16,
    lr=0.05,
    momentum=0.9,
    weight_decay=1e-4,
    schedule="cosine",
    eval_every=1,
    max_grad_norm=1.0,
)
CASES = {
    "none": ("none", lambda s: {}),
    "l2sp": ("l2sp", lambda s: {"alpha": [0.01, 0.1, 1.0][s]}),
    "kd": ("kd", lambda s: {"alpha": 1.0, "tau": [4, 5, 10][s], "scale": "none"}),
    "omega_p exact": (
        "omega_p",
        lambda s: {"alpha": [0.01, 0.1, 0.1][s], "taps": ["penultimate", "stage1"]},
    ),
    "omega_u": ("omega_u", lambda s: {"alpha": 0.1, "taps": ["penultimate"]}),
    "ipot samples": (
        "ot_samples_ipot",
        lambda s: {"alpha": 0.5, "taps": ["penultimate"], "embed": "none"},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_batched_weights_equal_single_runs_float64(case):
    """float64, 3 seeds (and per-seed alpha / tau): each batched member's final weights equal
    its single-model run's to round-off, and its result has the same keys and values."""
    spec, params = CASES[case]
    members = _members(spec, params, CFG)
    singles = [_single(m) for m in members]
    results = train_batched(members)
    for m, (model, ref), res in zip(members, singles, results, strict=True):
        assert res.status == ref.status == "completed", (res.reason, ref.reason)
        for (n, p), (_, q) in zip(
            m.model.named_parameters(), model.named_parameters(), strict=True
        ):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11, msg=f"{case}: {n}")
        assert res.test_accuracy == ref.test_accuracy
        assert res.best_val_accuracy == ref.best_val_accuracy
        assert res.to_dict().keys() == ref.to_dict().keys()
        assert [e.keys() for e in res.history["epochs"]] == [
            e.keys() for e in ref.history["epochs"]
        ]
        assert res.history["steps"].keys() == ref.history["steps"].keys()
        assert (res.steps, res.epochs_completed) == (ref.steps, ref.epochs_completed)
        for a, b in zip(res.history["epochs"], ref.history["epochs"], strict=True):
            for key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-7, abs=1e-9), key


def test_grid_points_share_their_seed_teacher_forward(monkeypatch):
    """Two grid points per seed (KD, omega_p): the members of a seed share a teacher (loaded
    from one file: a copy with equal weights) and batches, so the stacked teacher holds one copy
    per seed and runs once per (seed, batch); every member still equals its single run."""
    import harness.training.batched as batched

    forward = batched._BatchedRun.teacher_forward
    for spec, params in (
        ("kd", {"tau": 4, "scale": "none"}),
        ("omega_p", {"taps": ["penultimate"]}),
    ):
        members = []
        for alpha in (0.1, 1.0):
            for m in _members(spec, lambda s, p=params, a=alpha: {**p, "alpha": a}, CFG):
                members.append(m)
        for m in members[3:]:  # the second grid point: its seed's teacher, reloaded
            m.teacher = copy.deepcopy(members[m.config.seed].teacher)
            m.model = copy.deepcopy(members[m.config.seed].model)
        rows = []

        def spy(self, x, rows=rows):
            rows.append(len(next(iter(self.teacher.params.values()))))
            return forward(self, x)

        monkeypatch.setattr(batched._BatchedRun, "teacher_forward", spy)
        singles = [_single(m) for m in members]
        results = train_batched(members)
        assert set(rows) == {len(SEEDS)}, spec  # 3 distinct teachers for 6 members
        for m, (model, ref), res in zip(members, singles, results, strict=True):
            assert res.status == ref.status == "completed", (res.reason, ref.reason)
            for (n, p), (_, q) in zip(
                m.model.named_parameters(), model.named_parameters(), strict=True
            ):
                torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11, msg=f"{spec}: {n}")
            assert res.test_accuracy == ref.test_accuracy


def test_not_batchable_says_why():
    """Batch norm, dropout, differing train settings: a reason, and nothing trained."""
    members = _members("none", lambda s: {}, CFG)
    bn = copy.deepcopy(members)
    for m in bn:
        m.model = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Linear(8, 10)
        ).double()
    assert "batch norm" in why_not_batchable(bn)
    with pytest.raises(NotBatchable, match="batch norm"):
        train_batched(bn)
    drop = copy.deepcopy(members)
    for m in drop:
        m.model = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 8), nn.Dropout(0.5), nn.Linear(8, 10)
        ).double()
    assert "dropout" in why_not_batchable(drop)
    other = copy.deepcopy(members)
    other[1].config = TrainConfig(**{**CFG.__dict__, "seed": 1, "lr": 0.01})
    assert "differ beyond the seed" in why_not_batchable(other)
    assert why_not_batchable(members) is None


def test_runner_batches_seeds_one_record_per_job(tmp_path):
    """run_suite: the seeds of a student stage train as one batch, each job recorded on its
    own with the keys and (float32, same code path for the data) the test accuracy of the
    one-at-a-time run; --no-batch (batch=False) trains them one by one."""
    from harness.experiments.records import records_frame
    from harness.experiments.runner import run_suite
    from harness.experiments.suite import expand, load_suite

    over = [
        "seeds=[0, 1, 2]",
        "stages.student_LM_digits.grid.alpha=[0.1]",
        "stages.student_LM_digits.grid.kd.tau=[4]",
        "stages.teacher_L_digits.train.epochs=1",
        "stages.student_LM_digits.train.epochs=2",
    ]
    jobs = expand(load_suite("li2020_table2-cpu", over))
    pick = [j for j in jobs if j.stage == "teacher_L_digits"] + [
        j for j in jobs if j.stage == "student_LM_digits" and j.regularizer in ("none", "kd")
    ]
    said = {}
    for batch in (False, True):
        lines = said[batch] = []
        s = run_suite(
            "li2020_table2-cpu",
            overrides=over,
            jobs=pick,
            progress=False,
            results_root=tmp_path / str(batch),
            log=lines.append,
            batch=batch,
        )
        assert s.completed == len(pick) and not s.failed
    assert any("trained as one batched model" in line for line in said[True])
    assert not any("batched" in line for line in said[False])
    one, many = (
        records_frame(
            f"sqlite:///{tmp_path / str(b)}/li2020_table2-cpu/runs.sqlite3", "li2020_table2-cpu"
        ).set_index("key")
        for b in (False, True)
    )
    assert list(one.columns) == list(many.columns)
    assert sorted(one.index) == sorted(many.index) and len(one) == len(pick)
    for key in one.index:
        assert one.loc[key, "test_accuracy"] == pytest.approx(
            many.loc[key, "test_accuracy"], abs=0.01
        )
        assert [e.keys() for e in one.loc[key, "epochs"]] == [
            e.keys() for e in many.loc[key, "epochs"]
        ]


def test_member_views_slice_by_unbind_one_stacked_gradient():
    """Members read their parameters through one unbind per stacked tensor: the L2 term of
    every member backpropagates as one stacked gradient (UnbindBackward), equal to each
    member's own 2 * w, not K zero-filled full-size gradients of K [k] slices."""
    from harness.training.stacked import Stack

    models = [MLP(2, in_features=4, widths=(3,)) for _ in range(3)]
    stack = Stack(models, (), torch.device("cpu"), grad=True)
    views = stack.members()
    first = next(iter(views[0].parameters()))
    assert type(first.grad_fn).__name__.startswith("UnbindBackward")
    torch.stack([sum(p.pow(2).sum() for p in v.parameters()) for v in views]).sum().backward()
    for name, p in stack.params.items():
        want = torch.stack([2 * dict(m.named_parameters())[name].detach() for m in models])
        torch.testing.assert_close(p.grad, want, rtol=0, atol=0)
