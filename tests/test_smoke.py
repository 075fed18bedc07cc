"""otransfer run SUITE --smoke: stand-in data, and a sample of templates of
every full-scale suite that covers every model, dataset, regularizer term, tap, solver,
embedding and label cost of the full suites at least once, run for real (2 steps, evaluation,
checkpoint, interruption, resume). CI shrinks the 224-pixel images to 64 (the models are the
real ones; the CLI keeps 224)."""

import pytest
import torch

from harness.experiments.smoke import _closure, run_smoke, template_features
from harness.experiments.suite import available_suites, expand, load_suite, quick_suite
from harness.zoo.data import load_dataset
from harness.zoo.standin import standin_datasets

FULL = [
    n
    for n in available_suites()
    if not n.endswith("-cpu") and n not in ("mini", "load-40", "tune-cpu")
]
#: rough cost of a template's models on CPU, to prefer cheap ones when covering
_COST = {
    "preact_resnet1001": 12,
    "wrn_28_10": 8,
    "resnet101": 6,
    "alexnet": 6,
    "resnet34": 3,
    "resnet18": 2,
    "mobilenet_v2": 2,
}


def _ident(job):
    return job.stage, job.dataset, job.label


def _cost(job, by_key):
    return sum(_COST.get(j.config["model"], 1) for j in _closure(job, by_key))


def _features(job):
    """What must be covered: models, terms, taps, solvers, embeddings, label costs, a source
    task (the datasets' shapes are covered by the models: every 224-pixel set has one)."""
    return {f for f in template_features(job) if not f.startswith("dataset:")}


def global_cover():
    """{suite: identities of the chosen templates}: a greedy set cover over every full suite,
    new features per unit of CPU cost."""
    cands, need = [], set()
    for name in FULL:
        jobs = expand(quick_suite(load_suite(name)))
        by_key = {j.key: j for j in jobs}
        for j in jobs:
            cands.append((name, j, _features(j), _cost(j, by_key)))
            need |= cands[-1][2]
    left, chosen = set(need), {}
    while left:
        name, job, feats, cost = max(cands, key=lambda c: len(c[2] & left) / c[3])
        left -= feats
        chosen.setdefault(name, set()).add(_ident(job))
    return need, chosen


def test_standin_shapes_and_classes():
    with standin_datasets(n=2, image_size=224) as swapped:
        assert {"cifar100", "aircraft", "imagenet", "svhn"} <= set(swapped)
        c = load_dataset("cifar100", split="train")
        assert len(c) == 2 and c[0][0].shape == (3, 32, 32) and len(c.classes) == 100
        t = load_dataset("cub200", split="test", ten_crop=True)
        assert t[0][0].shape == (10, 3, 224, 224) and len(t.classes) == 200
        boeing = load_dataset("aircraft", split="trainval", manufacturer="Boeing")
        assert len(boeing.classes) == 22  # lu2017 Table 1
        rest = load_dataset("aircraft", split="all", exclude_manufacturer="Boeing")
        assert len(rest.classes) == 78
        again = load_dataset("cifar100", split="train")
        assert torch.equal(again[0][0], c[0][0])  # seeded
    with standin_datasets(n=2, cover=True) as _:
        src = load_dataset("aircraft", split="all", exclude_manufacturer="Airbus")
        assert len(src) == 2 * 87 and set(src.targets.tolist()) == set(range(87))
    with pytest.raises(FileNotFoundError, match="OTRANSFER_DATA"):  # restored on exit
        load_dataset("cifar100", split="train", root="/nonexistent")


NEED, CHOSEN = global_cover()


def test_the_sample_covers_every_model_term_tap_and_solver():
    assert {
        "model:resnet101",
        "model:preact_resnet1001",
        "model:alexnet",
        "solver:exact",
        "solver:ipot",
        "solver:sinkhorn",
        "term:jtln",
        "tap:layer3.11",
        "source",
    } <= NEED
    covered = set()
    for name, idents in CHOSEN.items():
        covered |= set().union(
            *(_features(j) for j in expand(quick_suite(load_suite(name))) if _ident(j) in idents)
        )
    assert covered == NEED


@pytest.mark.parametrize("name", sorted(CHOSEN))
def test_smoke_sample_of_each_full_suite(name):
    """The suite's chosen templates and the teachers they need: 2 steps, evaluation,
    checkpoint, interruption and resume each, all ok."""
    idents = CHOSEN[name]

    def pick(jobs, by_key):
        out = {}
        for j in jobs:
            if _ident(j) in idents:
                out.update({d.key: d for d in _closure(j, by_key)})
        return [j for j in jobs if j.key in out]

    res = run_smoke(name, sample=pick, image_size=64, say=None)
    bad = [f"{r.job.stage} {r.job.label}: {r.status} {r.reason}" for r in res if r.status != "ok"]
    assert not bad, bad
    assert {_ident(r.job) for r in res} >= idents
    trained = [r for r in res if r.job.config["train"].get("steps")]
    assert all(r.resumed for r in trained)  # every trained one resumed from step 1


def test_cli_smoke_on_an_embedded_twin_and_one_line_errors(capsys, tmp_path):
    from harness.cli import main

    assert main(["run", "mini", "--smoke", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "none (every dataset is embedded)" in out
    assert "mini smoke: 11 of 11 templates ok" in out
    assert not (tmp_path / "results").exists()
    assert main(["run", "no_such_suite", "--smoke"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_suite" in err[0]


def test_smoke_reports_the_first_error_and_exits_1(capsys, tmp_path):
    from harness.cli import main

    suite = tmp_path / "bad.yaml"
    suite.write_text(
        "name: bad\nseeds: [0]\nstages:\n  t:\n    model: mlp\n    dataset: digits\n"
        "    train: {epochs: 1, lr: 1.0e+30}\n  s:\n    model: mlp\n    dataset: digits\n"
        "    teacher: t\n    regularizers: [kd]\n"
    )
    assert main(["run", str(suite), "--smoke"]) == 1
    lines = capsys.readouterr().out.splitlines()
    failed = [ln for ln in lines if ln.startswith("FAILED")]
    assert len(failed) == 1 and "t digits mlp none" in failed[0] and "non-finite" in failed[0]
    assert any(ln.startswith("NOT RUN") and "its teacher job (t) failed" in ln for ln in lines)
    assert "bad smoke: 0 of 2 templates ok" in lines[-1]


def test_conv_embedding_trains_on_the_raw_maps():
    """Found by the smoke (lohit2020_table1, ShuffleNetV2 column): the loop pooled every tap, so
    lohit2020 App. C's conv embedding never saw a conv map and failed at step 0."""
    from torch.utils.data import TensorDataset

    from harness.training.loop import TrainConfig, train
    from harness.transfer.regularizers import build_regularizer
    from harness.zoo.models import build_model

    torch.manual_seed(0)
    student, teacher = build_model("resnet8x4", 10), build_model("resnet32x4", 10).eval()
    data = TensorDataset(torch.randn(4, 3, 32, 32), torch.arange(4) % 10)
    reg = build_regularizer(
        "ot_samples_remd", taps=["stage1", "stage4"], embed={"stage1": "conv", "stage4": "both"}
    )
    res = train(
        student,
        data,
        config=TrainConfig(steps=2, batch_size=2, lr=0.01),
        regularizer=reg,
        teacher=teacher,
    )
    assert res.status == "completed", res.reason
    assert any("ot_samples_remd" in k for k in res.history["steps"])
