"""The fixed test pool (harness/zoo/pools.py): one test draw that no seed trains on; the
resampled default unchanged bit for bit; the suite-level switch reaches every stage."""

import hashlib

import numpy as np
import pytest
import torch

from harness.experiments.suite import SuiteError, expand, parse_suite
from harness.zoo.data import _digits_splits, load_dataset
from harness.zoo.pool_switch import apply_suite_test_pool
from harness.zoo.pools import FIXED_TEST_SEED

SEEDS = range(5)
# small pools keep the test fast; the defaults of each dataset otherwise
CASES = {"digits": {}, "latent": {"n_samples": 600}, "synthetic": {}}


def _rows(ds) -> set[bytes]:
    """Each example as bytes (data + label): an identity of the example that needs no index."""
    return {x.numpy().tobytes() + bytes([int(y)]) for x, y in zip(ds.data, ds.targets, strict=True)}


def _digest(ds) -> str:
    h = hashlib.sha256()
    h.update(ds.data.numpy().tobytes())
    h.update(ds.targets.numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("name", list(CASES))
def test_fixed_test_is_one_draw_that_no_seed_trains_or_validates_on(name):
    kw = {**CASES[name], "test_pool": "fixed"}
    tests = [load_dataset(name, split="test", seed=s, **kw) for s in SEEDS]
    for t in tests[1:]:
        assert torch.equal(t.data, tests[0].data) and torch.equal(t.targets, tests[0].targets)
    test_rows = _rows(tests[0])
    trains, vals = [], []
    for s in SEEDS:
        tr = load_dataset(name, split="train", seed=s, **kw)
        va = load_dataset(name, split="val", seed=s, **kw)
        assert not (_rows(tr) & test_rows) and not (_rows(va) & test_rows)
        assert not (_rows(tr) & _rows(va))
        trains.append(_digest(tr))
        vals.append(_digest(va))
        # the sizes of today's resampled split
        for split, ds in (("train", tr), ("val", va), ("test", tests[0])):
            ref = load_dataset(name, split=split, seed=s, **CASES[name])
            assert len(ds) == len(ref)
            # stratified: per-class counts within the rounding of one stratified draw
            diff = torch.bincount(ds.targets) - torch.bincount(ref.targets)
            assert int(diff.abs().max()) <= 1
    assert len(set(trains)) == len(SEEDS) and len(set(vals)) == len(SEEDS)


@pytest.mark.parametrize("name", list(CASES))
def test_resampled_test_moves_with_the_seed(name):
    tests = {_digest(load_dataset(name, split="test", seed=s, **CASES[name])) for s in SEEDS}
    assert len(tests) == len(SEEDS)
    explicit = load_dataset(name, split="test", seed=3, test_pool="resampled", **CASES[name])
    assert _digest(explicit) == _digest(load_dataset(name, split="test", seed=3, **CASES[name]))


# Computed on commit 172917c, BEFORE test_pool existed (seed 3; sha256 of data + targets bytes,
# first 16 hex digits): the default must stay bit for bit what the committed results used.
BEFORE = {
    ("digits", "train"): "a16c69b63f871294",
    ("digits", "val"): "0a0ea3dd8f2e5fcb",
    ("digits", "test"): "282a19152c1c1792",
    # latent: recomputed when its points became the same on every CPU (numpy normals, float64
    # elementwise arithmetic); the earlier torch/MKL points differed between AVX2 and AVX-512
    ("latent", "train"): "f8a83c383dd00f00",
    ("latent", "val"): "3530ee8230837dcf",
    ("latent", "test"): "d51b7a5e68300e76",
    ("synthetic", "train"): "abc737ceb7a4b7d0",
    ("synthetic", "val"): "a0ab9653e765fff8",
    ("synthetic", "test"): "32185e21c5e89be3",
}


def test_latent_points_are_the_same_whatever_the_cpu_features():
    """A worker on another node (another instruction set) draws the same latent task: the
    digest with numpy's and torch's vector kernels and MKL's dispatch held to their most
    basic path equals this process's."""
    import os
    import subprocess
    import sys

    code = (
        "import hashlib; from harness.zoo.data import load_dataset; "
        "ds = load_dataset('latent', split='train', seed=3, n_samples=600); "
        "h = hashlib.sha256(); h.update(ds.data.numpy().tobytes()); "
        "h.update(ds.targets.numpy().tobytes()); print(h.hexdigest()[:16])"
    )
    env = {
        **os.environ,
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_CBWR": "COMPATIBLE",
        "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX2 FMA3",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == BEFORE["latent", "train"]


@pytest.mark.parametrize("name,split", list(BEFORE))
def test_resampled_is_todays_split_bit_for_bit(name, split):
    assert _digest(load_dataset(name, split=split, seed=3, **CASES[name])) == BEFORE[name, split]


def test_resampled_digits_indices_are_todays():
    idx = _digits_splits(3)["test"]
    assert len(idx) == 300 and idx[:10].tolist() == [4, 16, 17, 19, 38, 41, 58, 63, 75, 82]
    digest = hashlib.sha256(np.asarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]
    assert digest == "b0313bd9a09fb5bd"


def test_options_on_top_of_the_fixed_pool():
    full_ds = load_dataset("digits", split="test", seed=0, test_pool="fixed")
    full = _rows(full_ds)
    few = load_dataset(
        "digits", split="train", seed=2, test_pool="fixed", n_per_class=5, classes=[5, 6, 7, 8, 9]
    )
    assert len(few) == 25 and set(few.targets.tolist()) == {0, 1, 2, 3, 4}
    assert not (
        _rows(
            load_dataset(
                "digits",
                split="train",
                seed=2,
                test_pool="fixed",
                classes=[5, 6, 7, 8, 9],
                relabel=False,
            )
        )
        & full
    )
    sub = load_dataset(
        "digits", split="test", seed=4, test_pool="fixed", classes=[5, 6, 7, 8, 9], relabel=False
    )
    assert _rows(sub) <= full and len(sub) == int((full_ds.targets >= 5).sum())
    co = load_dataset(
        "latent",
        split="test",
        seed=1,
        test_pool="fixed",
        n_samples=600,
        classes=list(range(10)),
        coarse=5,
    )
    co0 = load_dataset(
        "latent",
        split="test",
        seed=0,
        test_pool="fixed",
        n_samples=600,
        classes=list(range(10)),
        coarse=5,
    )
    assert torch.equal(co.data, co0.data) and set(co.targets.tolist()) == set(range(5))
    assert (
        len(load_dataset("synthetic", split="train", seed=1, test_pool="fixed", n_per_class=3))
        == 12
    )


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_test_pool_is_one_line_naming_the_choices(name):
    with pytest.raises(ValueError) as exc:
        load_dataset(name, split="test", seed=0, test_pool="frozen", **CASES[name])
    msg = str(exc.value)
    assert "\n" not in msg and "'resampled'" in msg and "'fixed'" in msg and "'frozen'" in msg


SUITE = """
name: pool-{pool}
seeds: [0, 1]
{top}
stages:
  teacher:
    model: mlp
    model_params: {{widths: [8]}}
    dataset: digits
    train: {{epochs: 1}}
  students:
    model: mlp
    model_params: {{widths: [4]}}
    dataset: digits
    dataset_params: {{n_per_class: 5}}
    teacher: teacher
    train: {{epochs: 1}}
    regularizers: [none]
  lat:
    model: mlp
    model_params: {{widths: [4]}}
    dataset: latent
    dataset_params: {{n_samples: 600, test_pool: resampled}}
    train: {{epochs: 1}}
    regularizers: [none]
"""


def _suite(pool: str | None):
    top = f"test_pool: {pool}" if pool else ""
    return parse_suite(SUITE.format(pool="x", top=top), "pool.yaml")


def test_the_suite_switch_changes_job_keys_and_reaches_the_loader():
    from harness.experiments.train_job import load_datasets as _datasets

    plain, resampled, fixed = (expand(_suite(p)) for p in (None, "resampled", "fixed"))
    assert [j.key for j in plain] == [j.key for j in resampled]  # the default writes nothing
    by = {(j.stage, j.seed): j for j in fixed}
    for j in plain:
        f = by[j.stage, j.seed]
        if j.stage == "lat":  # a stage's own setting wins
            assert f.key == j.key and f.config["dataset_params"]["test_pool"] == "resampled"
            continue
        assert f.key != j.key and f.config["dataset_params"]["test_pool"] == "fixed"
    # the students' config names the fixed teacher's key, not the resampled one
    assert by["students", 0].config["teacher"] == by["teacher", 0].key
    tests = [_datasets(by["students", s].config)[2] for s in (0, 1)]
    assert torch.equal(tests[0].data, tests[1].data)
    ref = load_dataset("digits", split="test", seed=0, test_pool="fixed")
    assert torch.equal(tests[0].data, ref.data)
    train = _datasets(by["students", 1].config)[0]
    assert len(train) == 50 and not (_rows(train) & _rows(ref))


def test_the_switch_by_override_and_a_bad_value():
    jobs = expand(
        parse_suite(SUITE.format(pool="x", top=""), "pool.yaml", overrides=["test_pool=fixed"])
    )
    assert {j.config["dataset_params"]["test_pool"] for j in jobs if j.stage != "lat"} == {"fixed"}
    with pytest.raises(SuiteError, match=r"key 'test_pool'.*'resampled', 'fixed'; got 'frozen'"):
        _suite("frozen")
    bad_stage = SUITE.format(pool="x", top="").replace("test_pool: resampled", "test_pool: nope")
    with pytest.raises(SuiteError, match=r"stages.lat.dataset_params.test_pool"):
        parse_suite(bad_stage, "pool.yaml")


def test_stages_whose_datasets_do_not_take_it_are_left_alone():
    raw = {
        "name": "x",
        "test_pool": "fixed",
        "stages": {
            "a": {"dataset": ["digits", "cifar10"]},
            "b": {"dataset": "cifar10"},
            "c": {"dataset": ["digits", "latent"], "source": {"dataset": "latent"}},
        },
    }
    out = apply_suite_test_pool(raw)
    assert "dataset_params" not in out["stages"]["a"] and "dataset_params" not in out["stages"]["b"]
    assert out["stages"]["c"]["dataset_params"] == {"test_pool": "fixed"}
    assert out["stages"]["c"]["source"]["dataset_params"] == {"test_pool": "fixed"}
    assert "dataset_params" not in raw["stages"]["c"]  # the input is not edited
    assert isinstance(FIXED_TEST_SEED, int)
