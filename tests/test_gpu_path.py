"""GPU-run TrainConfig options: validation, job keys, batching refusal."""

import pytest

from harness.training.loop import TrainConfig
from harness.training.precision import gpu_options_set


def test_defaults_are_not_keyed():
    d = TrainConfig().to_dict()
    assert not {"precision", "channels_last", "loader_workers"} & set(d)


@pytest.mark.parametrize(
    "kw", [{"precision": "bf16"}, {"channels_last": True}, {"loader_workers": 2}]
)
def test_set_options_are_keyed(kw):
    cfg = TrainConfig(**kw)
    assert cfg.to_dict()[next(iter(kw))] == next(iter(kw.values()))
    assert gpu_options_set(cfg) == list(kw)


@pytest.mark.parametrize(
    "kw,name",
    [
        ({"precision": "fp16"}, "precision"),
        ({"channels_last": 1}, "channels_last"),
        ({"loader_workers": -1}, "loader_workers"),
        ({"loader_workers": True}, "loader_workers"),
    ],
)
def test_bad_values_name_the_option(kw, name):
    with pytest.raises(ValueError, match=name):
        TrainConfig(**kw)


def test_schema_lists_the_options():
    from harness.experiments.schema import _train_schema as train_schema

    props = train_schema()["properties"]
    assert props["precision"]["enum"] == ["fp32", "bf16"]
    assert props["loader_workers"]["minimum"] == 0


def test_loader_workers_keep_the_batch_order():
    import torch
    from torch.utils.data import TensorDataset

    from harness.training.loop import _epoch_loader

    ds = TensorDataset(torch.arange(100.0).unsqueeze(1), torch.arange(100))
    seqs = []
    for w in (0, 2):
        cfg = TrainConfig(batch_size=16, seed=3, loader_workers=w)
        seqs.append([y.tolist() for _, y in _epoch_loader(ds, cfg, 0)])
    assert seqs[0] == seqs[1] and len(seqs[0]) == 100 // 16


def _digits():
    import torch
    from sklearn.datasets import load_digits
    from torch.utils.data import TensorDataset

    x, y = load_digits(return_X_y=True)
    x = torch.as_tensor(x, dtype=torch.float32) / 16.0
    y = torch.as_tensor(y, dtype=torch.long)
    return TensorDataset(x[:1200], y[:1200]), TensorDataset(x[1200:], y[1200:])


def _mlp(seed=0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    net.tap_points = {"penultimate": "1", "head": "2"}
    return net


def test_bf16_trains_and_the_regularizer_sees_float32(monkeypatch):
    import copy

    import torch

    from harness.training.loop import train
    from harness.transfer.regularizers import Regularizer, build_regularizer

    train_set, val_set = _digits()
    teacher = _mlp(7)
    train(
        teacher,
        train_set,
        None,
        config=TrainConfig(epochs=1, batch_size=64, lr=0.05),
        progress=False,
    )
    seen, call = [], Regularizer.__call__

    def spy(self, ctx, *a, **k):
        seen.append(
            {
                t.dtype
                for t in [
                    *ctx.features.values(),
                    *ctx.teacher_features.values(),
                    ctx.logits,
                    ctx.teacher_logits,
                ]
            }
        )
        return call(self, ctx, *a, **k)

    monkeypatch.setattr(Regularizer, "__call__", spy)
    acc, losses = {}, {}
    for prec in ("fp32", "bf16"):
        reg = build_regularizer(
            "omega_p+kd",
            **{"omega_p.alpha": 0.1, "kd.tau": 4.0, "omega_p.plan": "ipot", "omega_p.max_iter": 10},
        )
        cfg = TrainConfig(epochs=2, batch_size=100, lr=0.02, seed=0, precision=prec)
        res = train(
            copy.deepcopy(teacher),
            train_set,
            val_set,
            config=cfg,
            regularizer=reg,
            teacher=teacher,
            progress=False,
        )
        assert res.status == "completed", res.reason
        assert all(
            torch.isfinite(torch.tensor(v)).all() for v in res.history["steps"]["train/loss"]
        )
        acc[prec] = res.final_val_accuracy
        losses[prec] = res.history["steps"]["train/loss"]
    assert seen and all(s == {torch.float32} for s in seen)
    assert losses["bf16"] != losses["fp32"]  # the forward did run in bf16
    assert acc["bf16"] > 0.5 and abs(acc["bf16"] - acc["fp32"]) < 0.05, acc


def test_bf16_autocast_is_active_in_the_forward():
    import torch

    from harness.training.precision import autocast

    lin = torch.nn.Linear(4, 4)
    with autocast(TrainConfig(precision="bf16")):
        assert lin(torch.ones(2, 4)).dtype == torch.bfloat16
    with autocast(TrainConfig()):
        assert lin(torch.ones(2, 4)).dtype == torch.float32


def test_channels_last_trains_a_tiny_cnn_and_is_a_no_op_for_mlps():
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    from harness.training.loop import train
    from harness.training.precision import channels_last

    cfg = TrainConfig(channels_last=True, epochs=1, batch_size=50, lr=0.05)
    assert channels_last(cfg, torch.ones(3, 64)).is_contiguous()
    x = channels_last(cfg, torch.ones(2, 3, 4, 4))
    assert x.is_contiguous(memory_format=torch.channels_last)
    tr, va = _digits()
    img = lambda d: TensorDataset(d.tensors[0].view(-1, 1, 8, 8), d.tensors[1])  # noqa: E731
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 10))
    res = train(net, img(tr), img(va), config=cfg, progress=False)
    assert res.status == "completed", res.reason
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert res.final_val_accuracy > 0.5
