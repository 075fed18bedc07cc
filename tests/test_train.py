"""The training loop: learning, determinism, resumption, regularizers, NaN guard, frozen teacher.

Tiny MLPs on scikit-learn's bundled digits (1,797 8x8 images), built here so that these tests do
not depend on harness.zoo.models / harness.zoo.data.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from harness.training.loop import TrainConfig, TrainResult, evaluate, train
from harness.transfer.regularizers import build_regularizer

sklearn_datasets = pytest.importorskip("sklearn.datasets")


@pytest.fixture(scope="module")
def digits():
    x, y = sklearn_datasets.load_digits(return_X_y=True)
    x = torch.as_tensor(x, dtype=torch.float32) / 16.0
    y = torch.as_tensor(y, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return TensorDataset(x[:1200], y[:1200]), TensorDataset(x[1200:], y[1200:])


def mlp(seed: int = 0, hidden: int = 32) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    net.tap_points = {"penultimate": "1", "head": "2"}
    return net


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def dataclass_replace(cfg: TrainConfig, **changes) -> TrainConfig:
    return dataclasses.replace(cfg, **changes)


CFG = TrainConfig(epochs=2, batch_size=64, lr=0.05, schedule="step", milestones=(1,), seed=3)


def test_short_run_beats_chance(digits):
    train_set, val_set = digits
    model = mlp()
    before = evaluate(model, val_set)["accuracy"]
    res = train(model, train_set, val_set, config=CFG, test_set=val_set, progress=False)
    assert isinstance(res, TrainResult) and res.status == "completed", res.reason
    assert res.final_val_accuracy > 0.5 > before + 0.2
    assert res.best_val_accuracy >= res.final_val_accuracy
    assert res.test_accuracy == pytest.approx(res.final_val_accuracy)
    assert [r["epoch"] for r in res.history["epochs"]] == [0, 1]
    # the step schedule divided the rate by 10 after epoch 0
    assert res.history["epochs"][1]["lr"] == pytest.approx(CFG.lr * CFG.gamma)
    assert len(res.history["steps"]["train/loss"]) == res.steps == 2 * (1200 // 64)
    assert res.steps_per_s > 0 and res.wall_time > 0


def test_same_seed_same_weights(digits):
    train_set, val_set = digits
    a, b = mlp(), mlp()
    ra = train(a, train_set, val_set, config=CFG, progress=False)
    rb = train(b, train_set, val_set, config=CFG, progress=False)
    assert_same(weights(a), weights(b))
    assert ra.history["steps"]["train/loss"] == rb.history["steps"]["train/loss"]
    c = mlp()
    train(c, train_set, val_set, config=dataclass_replace(CFG, seed=4), progress=False)
    assert not torch.equal(weights(a)["0.weight"], weights(c)["0.weight"])


@pytest.mark.parametrize("spec", [None, "ot_samples_ipot"])
def test_resume_matches_straight_run(digits, tmp_path, spec):
    """Stop after epoch 1 of 3, resume from the checkpoint: same weights as without the stop.
    ``ot_samples_ipot`` has learned embeddings (width 16 student vs 32 teacher)."""
    train_set, val_set = digits
    train_set = TensorDataset(*(t[:512] for t in train_set.tensors))  # 4 steps per epoch
    cfg = TrainConfig(epochs=3, batch_size=128, lr=0.05, schedule="cosine", seed=1)

    def reg_kw():
        if spec is None:
            return {}
        reg = build_regularizer(spec, taps="penultimate", max_iter=5, alpha=0.5)
        return {"regularizer": reg, "teacher": copy.deepcopy(teacher)}

    teacher = mlp(seed=9, hidden=32)
    straight = mlp(hidden=16)
    r_straight = train(straight, train_set, val_set, config=cfg, progress=False, **reg_kw())

    path = tmp_path / "ckpt.pt"

    class Interrupted(Exception):
        pass

    def stop_after_first(epoch, record):  # a crash right after the epoch-1 checkpoint
        raise Interrupted

    with pytest.raises(Interrupted):
        train(
            mlp(hidden=16),
            train_set,
            val_set,
            config=cfg,
            checkpoint_path=path,
            progress=False,
            on_epoch=stop_after_first,
            **reg_kw(),
        )
    assert path.exists()
    resumed = mlp(seed=123, hidden=16)  # other initial weights: all come from the checkpoint
    r2 = train(
        resumed, train_set, val_set, config=cfg, checkpoint_path=path, progress=False, **reg_kw()
    )
    assert r2.status == "completed", r2.reason
    assert r2.resumed_from_epoch == 1  # read back with weights_only=True, not restarted
    assert_same(weights(straight), weights(resumed))
    assert r2.history["steps"]["train/loss"] == r_straight.history["steps"]["train/loss"]
    assert r2.final_val_accuracy == r_straight.final_val_accuracy
    assert r2.epochs_completed == 3
    assert not list(tmp_path.glob("*.tmp*"))  # atomic write left no temporary file
    with pytest.raises(ValueError, match="another config"):
        train(
            mlp(hidden=16),
            train_set,
            val_set,
            config=dataclass_replace(cfg, lr=0.1),
            checkpoint_path=path,
            progress=False,
            **reg_kw(),
        )


def test_omega_p_plus_kd_logs_terms_and_ot_stats(digits):
    train_set, val_set = digits
    teacher = mlp(seed=7)
    train(teacher, train_set, None, config=dataclass_replace(CFG, epochs=1), progress=False)
    teacher.zero_grad(set_to_none=True)  # forget the grads of its own training
    t_before = weights(teacher)
    reg = build_regularizer(
        "omega_p+kd",
        **{"omega_p.alpha": 0.1, "kd.tau": 4.0, "omega_p.plan": "ipot", "omega_p.max_iter": 10},
    )
    student = copy.deepcopy(teacher)
    cfg = TrainConfig(epochs=1, batch_size=100, lr=0.02, seed=0)
    res = train(
        student, train_set, val_set, config=cfg, regularizer=reg, teacher=teacher, progress=False
    )
    assert res.status == "completed", res.reason
    steps, epoch = res.history["steps"], res.history["epochs"][0]
    n = res.steps
    for key in (
        "train/omega_p",
        "train/kd",
        "omega_p/penultimate/n_iter",
        "omega_p/penultimate/converged",
        "omega_p/penultimate/matched",
    ):
        assert len(steps[key]) == n, key
        assert key in epoch, key
    matched = steps["omega_p/penultimate/matched"]
    assert all(0.0 <= m <= 1.0 + 1e-6 for m in matched)
    # the student starts as the teacher: most neurons match their own index (li2020 Fig. 3)
    assert matched[0] > 0.5
    assert all(1 <= k <= 10 for k in steps["omega_p/penultimate/n_iter"])
    # the frozen teacher never moved
    assert_same(t_before, weights(teacher))
    assert all(p.grad is None for p in teacher.parameters())


def test_l2sp_with_initial_weights(digits):
    train_set, val_set = digits
    model = mlp()
    w0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    reg = build_regularizer("l2sp", alpha=0.5)
    res = train(
        model,
        train_set,
        val_set,
        config=dataclass_replace(CFG, epochs=1),
        regularizer=reg,
        initial_weights=w0,
        progress=False,
    )
    assert res.status == "completed", res.reason
    l2sp = res.history["steps"]["train/l2sp"]
    assert l2sp[0] == 0.0 and l2sp[-1] > 0.0
    with pytest.raises(ValueError, match="initial_weights"):
        train(mlp(), train_set, val_set, config=CFG, regularizer=reg, progress=False)


def test_teacher_required(digits):
    train_set, val_set = digits
    with pytest.raises(ValueError, match="teacher"):
        train(
            mlp(),
            train_set,
            val_set,
            config=CFG,
            regularizer=build_regularizer("kd"),
            progress=False,
        )


@pytest.mark.parametrize("case", ["lr", "weight", "ot_weight"])
def test_non_finite_loss_fails_cleanly(digits, case):
    """lr=1e30 makes the weights diverge; a KD weight of 1e30 makes its gradients overflow."""
    train_set, val_set = digits
    if case == "lr":
        kw = {"config": dataclass_replace(CFG, lr=1e30)}
    else:
        spec = "kd" if case == "weight" else "omega_p"
        kw = {
            "config": CFG,
            "teacher": mlp(seed=5),
            "regularizer": build_regularizer(spec, alpha=1e30),
        }
    res = train(mlp(), train_set, val_set, progress=False, **kw)  # must not raise
    assert res.status == "failed"
    assert "non-finite loss" in res.reason and "step" in res.reason
    assert res.final_val_accuracy is None and res.epochs_completed == 0


def test_failure_does_not_touch_checkpoint(digits, tmp_path):
    """A run that fails after its first checkpoint leaves that checkpoint as it was."""
    train_set, val_set = digits
    path = tmp_path / "ckpt.pt"
    ok = dataclass_replace(CFG, epochs=1, lr=0.05)
    train(mlp(), train_set, val_set, config=ok, checkpoint_path=path, progress=False)
    before = path.read_bytes()
    # same trajectory-defining config, more epochs; a KD weight of 1e30 fails in epoch 1 (an
    # infinite one is refused when the term is built)
    teacher = mlp(seed=5)
    res = train(
        mlp(),
        train_set,
        val_set,
        config=dataclass_replace(ok, epochs=2),
        regularizer=build_regularizer("kd", alpha=1e30),
        teacher=teacher,
        checkpoint_path=path,
        progress=False,
    )
    assert res.status == "failed" and "non-finite" in res.reason
    assert path.read_bytes() == before


def test_config_validation_and_dict():
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    d = TrainConfig(milestones=[3, 6]).to_dict()
    assert d["milestones"] == [3, 6] and d["momentum"] == 0.9
    assert TrainConfig(**{**d, "milestones": tuple(d["milestones"])}) == TrainConfig(
        milestones=(3, 6)
    )


class TwoHeads(nn.Module):
    """A body with a source head (10 classes) and a new target head (4 classes), lu2017."""

    tap_points = {"penultimate": "act", "source_head": "source"}

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body, self.act = nn.Linear(64, 32), nn.ReLU()
        self.source, self.target = nn.Linear(32, 10), nn.Linear(32, 4)

    def forward(self, x):
        h = self.act(self.body(x))
        self.source(h)  # recorded by the "source_head" tap
        return self.target(h)


def test_jtln_reads_source_head_and_label_cost(digits):
    train_set, val_set = digits
    x, y = train_set.tensors
    target = TensorDataset(x, y % 4)
    label_cost = torch.rand(10, 4, generator=torch.Generator().manual_seed(0))
    res = train(
        TwoHeads(),
        target,
        None,
        config=dataclass_replace(CFG, epochs=1),
        regularizer=build_regularizer("jtln", alpha=0.5),
        label_cost=label_cost,
        progress=False,
    )
    assert res.status == "completed", res.reason
    assert len(res.history["steps"]["train/jtln"]) == res.steps > 0
    assert "jtln/n_iter" in res.history["epochs"][0]


def test_progress_bar_runs(digits, capsys):
    train_set, val_set = digits
    res = train(mlp(), train_set, val_set, config=dataclass_replace(CFG, epochs=1), progress=True)
    assert res.status == "completed"


def test_joint_training_adds_the_source_cross_entropy(digits):
    """lu2017 Eq. 4: CE(target) + lambda_s CE(source head on source batch) (+ OT loss)."""
    from harness.zoo.models import build_model, head_module, with_source_head

    train_set, _ = digits
    x, y = train_set.tensors
    source, target = TensorDataset(x[y < 5], y[y < 5]), TensorDataset(x[y >= 5], y[y >= 5] - 5)
    model = with_source_head(build_model("mlp", 5, widths=(16,)), 5)
    assert model.tap_points["source_head"] == "fc.source" and head_module(model).out_features == 5
    w_src0 = model.fc.source.weight.detach().clone()
    cfg = dataclass_replace(CFG, epochs=1)
    res = train(
        model, target, None, config=cfg, source_set=source, source_weight=0.5, progress=False
    )
    assert res.status == "completed", res.reason
    steps = res.history["steps"]
    assert len(steps["train/source_ce"]) == res.steps > 0
    # the logged loss is ce + 0.5 * source ce
    assert steps["train/loss"][0] == pytest.approx(
        steps["train/ce"][0] + steps["train/source_ce"][0], rel=1e-5
    )
    assert not torch.equal(model.fc.source.weight, w_src0)  # the source head is trained
    # without a source set the source head gets no gradient at all
    plain = with_source_head(build_model("mlp", 5, widths=(16,)), 5)
    w0 = plain.fc.source.weight.detach().clone()
    train(plain, target, None, config=cfg, progress=False)
    assert torch.equal(plain.fc.source.weight, w0)
    with pytest.raises(ValueError, match="source classifier"):
        train(
            build_model("mlp", 5, widths=(16,)),
            target,
            None,
            config=cfg,
            source_set=source,
            progress=False,
        )


def test_step_budget_and_step_milestones(digits):
    """li2020 A.2 counts iterations: `steps=` trains exactly that many, milestones in steps."""
    train_set, _ = digits
    x, y = train_set.tensors
    small = TensorDataset(x[:96], y[:96])  # 3 steps per epoch at batch 32
    cfg = TrainConfig(
        epochs=1, batch_size=32, lr=0.1, schedule="step", milestones=(5,), steps=7, seed=0
    )
    res = train(mlp(), small, None, config=cfg, progress=False)
    assert res.status == "completed" and res.steps == 7 and res.epochs_completed == 3
    # the lr an epoch ends with: 3 steps (before 5), 6 steps (after), 7 steps
    assert [round(e["lr"], 6) for e in res.history["epochs"]] == [0.1, 0.01, 0.01]
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=-1)


def test_ten_crop_evaluation_averages_the_crops_scores():
    """A (n, crops, c, h, w) test batch scores each image by its crops' mean softmax."""
    from harness.training.loop import evaluate

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x = torch.randn(8, 10, 3, 2, 2)
    y = torch.randint(0, 3, (8,))
    with torch.no_grad():
        probs = torch.softmax(net(x.flatten(0, 1)), -1).view(8, 10, 3).mean(1)
    got = evaluate(net, TensorDataset(x, y))
    assert got["accuracy"] == pytest.approx(float((probs.argmax(-1) == y).float().mean()))
    assert got["loss"] == pytest.approx(float(-probs[torch.arange(8), y].log().mean()), rel=1e-5)


def test_zero_steps_only_evaluates(digits):
    """`steps=0`: a pre-trained network used as it is (a teacher from a weights file)."""
    train_set, val_set = digits
    model = mlp()
    before = weights(model)
    res = train(
        model,
        train_set,
        val_set,
        config=TrainConfig(steps=0, batch_size=64),
        test_set=val_set,
        progress=False,
    )
    assert res.status == "completed" and res.steps == 0 and res.epochs_completed == 0
    assert res.test_accuracy is not None
    assert_same(before, weights(model))


# --------------------------------------------------------------------------- param_groups


def mlp3(seed: int = 0) -> nn.Sequential:
    """64 -> 32 -> 32 -> 10: three linear layers ("0", "2", "4") to freeze / slow / keep."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10)
    )
    net.tap_points = {"penultimate": "3", "head": "4"}
    return net


GROUPS = ({"match": "0", "lr_mult": 0}, {"match": ["2.weight", "2.bias"], "lr_mult": 0.1})


def test_param_groups_freeze_and_scale_the_learning_rate(digits, tmp_path):
    """lu2017 §4: frozen layers do not move (bitwise), a group's lr is lr * lr_mult, also
    under the step schedule; weight decay does not reach the frozen layer."""
    train_set, _ = digits
    cfg = TrainConfig(
        epochs=2,
        batch_size=64,
        lr=0.05,
        schedule="step",
        milestones=(1,),
        weight_decay=0.01,
        seed=0,
        param_groups=GROUPS,
    )
    model = mlp3()
    before = weights(model)
    path = tmp_path / "ckpt.pt"
    res = train(model, train_set, None, config=cfg, checkpoint_path=path, progress=False)
    assert res.status == "completed", res.reason
    after = weights(model)
    for k in ("0.weight", "0.bias"):
        assert torch.equal(after[k], before[k]), k  # frozen: bitwise unchanged
    for k in ("2.weight", "4.weight"):
        assert not torch.equal(after[k], before[k]), k
    assert all(p.requires_grad for p in model.parameters())  # restored on return
    groups = torch.load(path, weights_only=False)["optimizer"]["param_groups"]
    # the unmatched parameters (lr_mult 1) first, then the config's trained groups; the frozen
    # group is not in the optimiser at all; after the milestone every rate is * gamma
    assert [(len(g["params"]), g["lr_mult"]) for g in groups] == [(2, 1.0), (2, 0.1)]
    assert [g["initial_lr"] for g in groups] == pytest.approx([0.05, 0.005], rel=1e-12)
    assert [g["lr"] for g in groups] == pytest.approx([0.005, 0.0005], rel=1e-12)
    assert [e["lr"] for e in res.history["epochs"]] == pytest.approx([0.05, 0.005])


def test_param_group_update_is_lr_times_lr_mult(digits):
    """One plain SGD step (no momentum, no decay) on a one-batch set: each parameter moves by
    -lr * lr_mult * grad, the gradient computed here by hand."""
    train_set, _ = digits
    x, y = (t[:64] for t in train_set.tensors)
    one = TensorDataset(x, y)
    ref = mlp3()
    F = torch.nn.functional
    F.cross_entropy(ref(x), y).backward()
    grads = {n: p.grad.clone() for n, p in ref.named_parameters()}
    model = mlp3()
    before = weights(model)
    cfg = TrainConfig(
        epochs=1,
        batch_size=64,
        lr=0.5,
        momentum=0.0,
        schedule="constant",
        param_groups=(
            {"match": "0", "lr_mult": 0},
            {"match": "2", "lr_mult": 0.1},
            {"match": "4.*", "lr_mult": 2.0},
        ),
    )
    assert train(model, one, None, config=cfg, progress=False).status == "completed"
    for n, p in model.named_parameters():
        mult = {"0": 0.0, "2": 0.1, "4": 2.0}[n.split(".")[0]]
        delta = p.detach() - before[n]
        torch.testing.assert_close(delta, -0.5 * mult * grads[n], rtol=1e-4, atol=1e-6, msg=n)


def test_param_groups_resume_and_regularizer_parameters(digits, tmp_path):
    """A run with groups resumes to the straight run's weights; the regularizer's learned
    embeddings are matched as 'regularizer.<name>' (frozen here: they stay as materialised)."""
    train_set, _ = digits
    train_set = TensorDataset(*(t[:256] for t in train_set.tensors))
    teacher = mlp(seed=9, hidden=48)  # 48 vs 32 neurons: a learned embedding
    groups = GROUPS + ({"match": "regularizer.*", "lr_mult": 0},)
    cfg = TrainConfig(
        epochs=2, batch_size=128, lr=0.05, schedule="cosine", seed=1, param_groups=groups
    )

    def run(model, config=cfg, **kw):
        reg = build_regularizer("ot_samples_ipot", taps="penultimate", max_iter=5, alpha=0.5)
        return reg, train(
            model,
            train_set,
            None,
            config=config,
            regularizer=reg,
            teacher=copy.deepcopy(teacher),
            progress=False,
            **kw,
        )

    straight = mlp3()
    reg, res = run(straight)
    assert res.status == "completed", res.reason
    reg0, _ = run(mlp3(), config=dataclass_replace(cfg, steps=0))  # materialised, no step
    assert len(reg.state_dict()) > 0
    assert_same(weights(reg), weights(reg0))
    path = tmp_path / "ckpt.pt"

    class Interrupted(Exception):
        pass

    def stop(epoch, record):
        raise Interrupted

    with pytest.raises(Interrupted):
        run(mlp3(), checkpoint_path=path, on_epoch=stop)
    resumed = mlp3(seed=5)
    _, res2 = run(resumed, checkpoint_path=path)
    assert res2.status == "completed" and res2.resumed_from_epoch == 1
    assert_same(weights(straight), weights(resumed))
    assert res2.history["steps"]["train/loss"] == res.history["steps"]["train/loss"]
    with pytest.raises(ValueError, match="another config"):
        run(mlp3(), config=dataclass_replace(cfg, param_groups=GROUPS), checkpoint_path=path)


def test_param_group_patterns_are_checked():
    from harness.training.loop import ParamGroup, assign_param_groups

    names = ["features.0.weight", "features.0.bias", "features.01.weight", "fc.weight"]
    g = lambda *m, lr_mult=0.0: ParamGroup(match=m, lr_mult=lr_mult)  # noqa: E731
    # dotted-boundary prefixes, full names, globs; the first match wins; no group -> None
    assert assign_param_groups(names, (g("features.0"),)) == [0, 0, None, None]
    assert assign_param_groups(names, (g("fc.weight"), g("features.*"))) == [1, 1, 1, 0]
    with pytest.raises(ValueError, match="'features.1' matches no parameter"):
        assign_param_groups(names, (g("features.0", "features.1"),))
    with pytest.raises(ValueError, match=r"param_groups\[1\].*earlier group"):
        assign_param_groups(names, (g("features.*"), g("features.0")))
    with pytest.raises(ValueError, match="'fc' matches no parameter"):
        train(
            mlp3(),
            TensorDataset(torch.zeros(8, 64), torch.zeros(8, dtype=torch.long)),
            config=TrainConfig(
                epochs=1, batch_size=8, param_groups=[{"match": "fc", "lr_mult": 0}]
            ),
            progress=False,
        )
    for bad in (
        {"match": "0", "lr_mult": -1},
        {"match": [], "lr_mult": 0},
        {"lr_mult": 0},
        {"match": "0", "lr": 0.1},
        "0",
    ):
        with pytest.raises(ValueError, match="param_groups"):
            TrainConfig(param_groups=[bad])
    # keyed only when set: suites' job keys stay as they were without groups
    assert "param_groups" not in TrainConfig().to_dict()
    d = TrainConfig(param_groups=[{"match": "0", "lr_mult": 0}]).to_dict()
    assert d["param_groups"] == [{"match": ["0"], "lr_mult": 0.0}]
    assert TrainConfig(**{**d, "milestones": ()}) == TrainConfig(
        param_groups=[ParamGroup(match="0", lr_mult=0)]
    )


# --------------------------------------------------------------------------- teacher_mode


class BNNet(nn.Module):
    """64 -> 32 -> batch norm -> ReLU -> 10, no dropout: T = A^(0) is exact in train mode."""

    tap_points = {"penultimate": "act", "head": "fc"}

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body, self.bn, self.act, self.fc = (
            nn.Linear(64, 32),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.Linear(32, 10),
        )
        with torch.no_grad():  # running statistics far from any batch's: eval mode differs
            self.bn.running_mean.fill_(3.0)
            self.bn.running_var.fill_(9.0)

    def forward(self, x):
        return self.fc(self.act(self.bn(self.body(x))))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_teacher_mode_train_gives_the_students_features_at_step_0(digits, mode):
    """li2020 §3: T = A^(0). With the teacher a copy of the student at initialisation,
    teacher_mode="train" gives bitwise the student's tapped features on the first training
    batch; "eval" (running statistics) does not. The teacher's running statistics and mode are
    left as they were."""
    train_set, _ = digits
    student = BNNet()
    teacher = copy.deepcopy(student)
    seen: dict[str, list] = {"student": [], "teacher": []}
    for who, net in (("student", student), ("teacher", teacher)):
        net.act.register_forward_hook(
            lambda m, i, out, who=who: seen[who].append((m.training, out.detach().clone()))
        )
    buffers = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, steps=1, teacher_mode=mode)
    res = train(
        student,
        train_set,
        None,
        config=cfg,
        teacher=teacher,
        regularizer=build_regularizer("kd", alpha=0.5),
        progress=False,
    )
    assert res.status == "completed", res.reason
    # the last forwards are step 0's (materialising the regularizer came before)
    (s_training, s_feat), (_, t_feat) = seen["student"][-1], seen["teacher"][-1]
    assert s_training  # the student's batch norm trains
    assert torch.equal(s_feat, t_feat) == (mode == "train")
    assert_same(buffers, teacher.state_dict())  # running statistics untouched either way
    assert not teacher.training and not teacher.bn.training and teacher.bn.track_running_stats
    assert "teacher_mode" not in TrainConfig().to_dict()
    assert TrainConfig(teacher_mode="train").to_dict()["teacher_mode"] == "train"
    with pytest.raises(ValueError, match="teacher_mode"):
        TrainConfig(teacher_mode="batch")


def test_term_diagnostics_are_value_and_gradient_ratios_to_the_cross_entropy(digits):
    """On ~10 epochs the history holds each term's value and student-gradient norm over the
    cross-entropy's, checked by hand on a one-batch
    epoch, and the training step itself is the plain one."""
    train_set, val_set = digits
    small = TensorDataset(*(t[:200] for t in train_set.tensors))
    cfg = TrainConfig(epochs=1, batch_size=200, lr=0.1, momentum=0.0, seed=0)
    alpha = 0.3
    model = mlp(seed=2)
    w0 = weights(model)
    res = train(
        model,
        small,
        val_set,
        config=cfg,
        regularizer=build_regularizer("l2", alpha=alpha),
        progress=False,
    )
    first = res.history["epochs"][0]
    ref = mlp(seed=2)
    x, y = small.tensors
    ce = nn.functional.cross_entropy(ref(x), y)
    g_ce = torch.autograd.grad(ce, list(ref.parameters()))
    l2 = alpha / 2 * sum(p.pow(2).sum() for p in ref.parameters())
    g_l2 = [alpha * p for p in ref.parameters()]  # d/dw alpha/2 ||w||^2 = alpha w
    norm = lambda gs: float(torch.sqrt(sum(g.pow(2).sum() for g in gs)))  # noqa: E731
    assert first["diag/l2/value_ratio"] == pytest.approx(float(l2 / ce), rel=1e-5)
    assert first["diag/l2/grad_ratio"] == pytest.approx(norm(g_l2) / norm(g_ce), rel=1e-5)
    # the diagnostics never touch the update: one plain SGD step on CE + l2
    for (name, _p), gc, gl in zip(ref.named_parameters(), g_ce, g_l2, strict=True):
        torch.testing.assert_close(
            weights(model)[name], w0[name] - 0.1 * (gc + gl), rtol=1e-5, atol=1e-6
        )
    plain = train(mlp(), train_set, val_set, config=CFG, progress=False)
    assert not any(k.startswith("diag/") for k in plain.history["epochs"][0])
