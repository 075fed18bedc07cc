"""GPU-run TrainConfig options (issue 23 item 4): validation, job keys, batching refusal."""
import pytest

from harness.training.loop import TrainConfig
from harness.training.precision import gpu_options_set


def test_defaults_are_not_keyed():
    d = TrainConfig().to_dict()
    assert not {"precision", "channels_last", "loader_workers"} & set(d)


@pytest.mark.parametrize("kw", [{"precision": "bf16"}, {"channels_last": True},
                                {"loader_workers": 2}])
def test_set_options_are_keyed(kw):
    cfg = TrainConfig(**kw)
    assert cfg.to_dict()[next(iter(kw))] == next(iter(kw.values()))
    assert gpu_options_set(cfg) == list(kw)


@pytest.mark.parametrize("kw,name", [({"precision": "fp16"}, "precision"),
                                     ({"channels_last": 1}, "channels_last"),
                                     ({"loader_workers": -1}, "loader_workers"),
                                     ({"loader_workers": True}, "loader_workers")])
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
    from harness.training.loop import _epoch_loader
    from torch.utils.data import TensorDataset
    ds = TensorDataset(torch.arange(100.0).unsqueeze(1), torch.arange(100))
    seqs = []
    for w in (0, 2):
        cfg = TrainConfig(batch_size=16, seed=3, loader_workers=w)
        seqs.append([y.tolist() for _, y in _epoch_loader(ds, cfg, 0)])
    assert seqs[0] == seqs[1] and len(seqs[0]) == 100 // 16
