"""Dataset registry: embedded digits / synthetic splits, and the real loaders on tiny fake
datasets written to tmp_path in the official on-disk formats (nothing is downloaded)."""

from __future__ import annotations

import collections
import pickle

import numpy as np
import pytest
import torch

from harness.zoo.data import (
    CIFAR100_COARSE,
    DIGITS_SIZES,
    all_datasets,
    available_datasets,
    dataset_root,
    digits_transfer_split,
    get_dataset,
    load_dataset,
)


def _targets(ds):
    return [int(t) for t in ds.targets]


def _rows(ds):
    return {tuple(np.round(r.numpy().ravel(), 4)) for r in ds.data}


# --------------------------------------------------------------------------- digits


def test_digits_splits_disjoint_stratified_reproducible():
    splits = {s: load_dataset("digits", split=s, seed=0) for s in ("train", "val", "test")}
    assert {s: len(d) for s, d in splits.items()} == DIGITS_SIZES
    assert sum(len(d) for d in splits.values()) == 1797
    x = torch.cat([d.data for d in splits.values()])
    assert x.shape == (1797, 64) and 0 <= x.min() and x.max() <= 1
    from sklearn.datasets import load_digits

    full = torch.as_tensor(load_digits().data / 16.0, dtype=torch.float32)
    # every image is used exactly once: the sorted multiset of rows equals the full data's
    key = lambda t: sorted(map(tuple, t.numpy().round(4).tolist()))  # noqa: E731
    assert key(x) == key(full)
    for s, d in splits.items():
        counts = collections.Counter(_targets(d))
        assert len(counts) == 10
        assert max(counts.values()) - min(counts.values()) <= 2 + len(d) // 100, (s, counts)
    again = load_dataset("digits", split="train", seed=0)
    assert torch.equal(again.data, splits["train"].data)
    other = load_dataset("digits", split="train", seed=1)
    assert not torch.equal(other.data, splits["train"].data)


def test_digits_image_and_classes():
    img = load_dataset("digits", split="val", image=True)
    assert img.data.shape[1:] == (1, 8, 8)
    x, y = img[0]
    assert x.shape == (1, 8, 8) and int(y) in range(10)
    sub = load_dataset("digits", split="train", classes=(3, 7))
    assert set(_targets(sub)) == {0, 1}
    raw = load_dataset("digits", split="train", classes=(3, 7), relabel=False)
    assert set(_targets(raw)) == {3, 7}


def test_digits_transfer_split_relabels():
    src, tgt = digits_transfer_split("train", seed=0)
    assert set(_targets(src)) == set(range(5)) and set(_targets(tgt)) == set(range(5))
    full = load_dataset("digits", split="train", seed=0)
    assert len(src) + len(tgt) == len(full)
    src2, tgt2 = digits_transfer_split(
        "train", source_classes=(0, 1, 2), target_classes=(9, 8), image=True
    )
    assert set(_targets(tgt2)) == {0, 1} and tgt2.data.shape[1:] == (1, 8, 8)
    # label 0 of the target is digit 9 (order given)
    nines = load_dataset("digits", split="train", classes=(9,))
    assert (tgt2.targets == 0).sum() == len(nines)
    with pytest.raises(ValueError, match="disjoint"):
        digits_transfer_split(source_classes=(1, 2), target_classes=(2, 3))


def test_few_shot_sampling():
    _, tgt = digits_transfer_split("train", seed=3, n_per_class=4)
    assert collections.Counter(_targets(tgt)) == {c: 4 for c in range(5)}
    _, again = digits_transfer_split("train", seed=3, n_per_class=4)
    assert torch.equal(again.data, tgt.data)
    d = load_dataset("digits", split="train", n_per_class=10)
    assert collections.Counter(_targets(d)) == {c: 10 for c in range(10)}
    with pytest.raises(ValueError, match="n_per_class"):
        load_dataset("digits", split="test", n_per_class=1000)


def test_synthetic():
    parts = [
        load_dataset("synthetic", split=s, n_samples=200, dims=5, classes=3)
        for s in ("train", "val", "test")
    ]
    assert [len(p) for p in parts] == [140, 30, 30]
    assert parts[0].data.shape[1] == 5 and set(_targets(parts[0])) == {0, 1, 2}
    rows = [_rows(p) for p in parts]
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])
    again = load_dataset("synthetic", split="train", n_samples=200, dims=5, classes=3)
    assert torch.equal(again.data, parts[0].data)


def test_registry_metadata_and_errors():
    infos = all_datasets()
    for name in (
        "digits",
        "synthetic",
        "cifar10",
        "cifar100",
        "cifar20",
        "svhn",
        "aircraft",
        "cub200",
        "cars196",
        "dogs120",
        "food101",
        "imagenet",
    ):
        assert name in infos
    assert set(available_datasets(needs_root=False)) == {"digits", "synthetic", "glyphs", "latent"}
    assert get_dataset("cifar20").num_classes == 20
    with pytest.raises(ValueError, match="digits"):
        load_dataset("digit")
    with pytest.raises(ValueError, match="classes"):
        load_dataset("digits", clases=(1,))
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", split="extra")


def test_cifar100_coarse_table():
    assert len(CIFAR100_COARSE) == 100
    assert collections.Counter(CIFAR100_COARSE) == {c: 5 for c in range(20)}


# --------------------------------------------------------------------------- missing roots


@pytest.mark.parametrize("name", ["cifar10", "aircraft", "food101", "imagenet", "cub200"])
def test_missing_root_names_the_path(name, tmp_path):
    root = tmp_path / "nowhere" / name
    with pytest.raises(FileNotFoundError, match=str(root)):
        load_dataset(name, root=root, split="train")


def test_default_root_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("OTRANSFER_DATA", str(tmp_path))
    assert dataset_root("cifar10") == tmp_path / "cifar10"
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "cifar10")):
        load_dataset("cifar10")
    monkeypatch.delenv("OTRANSFER_DATA")
    assert dataset_root("svhn").parts[-3:] == (".otransfer", "data", "svhn")


# --------------------------------------------------------------------------- fake datasets


def _write_cifar10(root, n=6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": [int(v) for v in rng.integers(0, 10, n)],
        }
        with open(folder / f, "wb") as fh:
            pickle.dump(batch, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)


def test_cifar10_fake(tmp_path):
    _write_cifar10(tmp_path)
    train = load_dataset("cifar10", root=tmp_path, split="train")
    test = load_dataset("cifar10", root=tmp_path, split="test")
    assert len(train) == 30 and len(test) == 6
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    assert train.classes[0] == "c0"
    tr = load_dataset("cifar10", root=tmp_path, split="train", val_size=10)
    va = load_dataset("cifar10", root=tmp_path, split="val", val_size=10)
    assert len(tr) == 20 and len(va) == 10 and not set(tr.indices) & set(va.indices)


def _write_image(path, color):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), color).save(path)


def test_food101_fake(tmp_path):
    base = tmp_path / "food-101"
    classes = ["apple_pie", "sushi"]
    (base / "meta").mkdir(parents=True)
    (base / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    (base / "meta" / "train.txt").write_text("apple_pie/1\nsushi/2\nsushi/3\n")
    (base / "meta" / "test.txt").write_text("apple_pie/4\n")
    for c, i in [("apple_pie", 1), ("sushi", 2), ("sushi", 3), ("apple_pie", 4)]:
        _write_image(base / "images" / c / f"{i}.jpg", (i * 40, 0, 0))
    train = load_dataset("food101", root=tmp_path, split="train")
    assert len(train) == 3 and train.targets == [0, 1, 1]
    x, y = train[1]
    assert x.shape == (3, 224, 224) and y == 1
    test = load_dataset("food101", root=tmp_path, split="test", ten_crop=True)
    x, y = test[0]
    assert x.shape == (10, 3, 224, 224) and y == 0
    # no official val split: val_size holds one out of train, seeded, disjoint, test transform
    tr = load_dataset("food101", root=tmp_path, split="train", val_size=1, seed=3)
    va = load_dataset("food101", root=tmp_path, split="val", val_size=1, seed=3, ten_crop=True)
    assert len(tr) == 2 and len(va) == 1
    assert set(tr.indices).isdisjoint(va.indices) and va[0][0].shape == (10, 3, 224, 224)
    with pytest.raises(ValueError, match="val_size > 0"):
        load_dataset("food101", root=tmp_path, split="val")
    # the runner evaluates no val split when none is held out
    from harness.experiments.train_job import load_datasets as _datasets

    cfg = {"dataset": "food101", "seed": 0, "dataset_params": {"root": str(tmp_path)}}
    _, val_set, test_set, k = _datasets(cfg)
    assert val_set is None and len(test_set) == 1 and k == 2


def test_aircraft_fake_manufacturer_split(tmp_path):
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "A320", "A330", "737-800"]
    makers = {"707-320": "Boeing", "A320": "Airbus", "A330": "Airbus", "737-800": "Boeing"}
    rows = [
        ("0001", "707-320"),
        ("0002", "A320"),
        ("0003", "A330"),
        ("0004", "737-800"),
        ("0005", "A320"),
    ]
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    (data / "images_variant_train.txt").write_text("".join(f"{i} {v}\n" for i, v in rows))
    (data / "images_manufacturer_train.txt").write_text(
        "".join(f"{i} {makers[v]}\n" for i, v in rows)
    )
    for i, _ in rows:
        _write_image(data / "images" / f"{i}.jpg", (0, 90, 0))
    full = load_dataset("aircraft", root=tmp_path, split="train")
    assert len(full) == 5 and full.targets == [0, 1, 2, 3, 1]
    airbus = load_dataset("aircraft", root=tmp_path, split="train", manufacturer="Airbus")
    assert airbus.classes == ["A320", "A330"] and airbus.targets == [0, 1, 0]
    boeing = load_dataset("aircraft", root=tmp_path, split="train", manufacturer="Boeing")
    assert boeing.classes == ["707-320", "737-800"] and boeing.targets == [0, 1]
    # lu2017 ITL-Boeing: the source task is every other manufacturer's variants
    source = load_dataset("aircraft", root=tmp_path, split="train", exclude_manufacturer="Boeing")
    assert source.classes == ["A320", "A330"] and source.targets == [0, 1, 0]
    x, _ = boeing[0]
    assert x.shape == (3, 224, 224)
    # trainval / test, and 'all' = trainval + test (lu2017's source: every other image)
    more = [("0006", "A330"), ("0007", "707-320")]
    for part, part_rows in (("trainval", rows + more[:1]), ("test", more[1:])):
        (data / f"images_variant_{part}.txt").write_text(
            "".join(f"{i} {v}\n" for i, v in part_rows)
        )
        (data / f"images_manufacturer_{part}.txt").write_text(
            "".join(f"{i} {makers[v]}\n" for i, v in part_rows)
        )
    for i, _ in more:
        _write_image(data / "images" / f"{i}.jpg", (0, 90, 0))
    assert len(load_dataset("aircraft", root=tmp_path, split="trainval")) == 6
    everything = load_dataset("aircraft", root=tmp_path, split="all", exclude_manufacturer="Airbus")
    assert everything.classes == ["707-320", "737-800"] and everything.targets == [0, 1, 0]


def test_cifar20_fake_coarse_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for f, fine in (("train", [0, 1, 99, 4]), ("test", [55])):
        with open(folder / f, "wb") as fh:
            pickle.dump(
                {
                    "data": rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8),
                    "fine_labels": fine,
                    "coarse_labels": [0] * len(fine),
                },
                fh,
            )
    with open(folder / "meta", "wb") as fh:
        pickle.dump(
            {
                "fine_label_names": [f"f{i}" for i in range(100)],
                "coarse_label_names": [f"c{i}" for i in range(20)],
            },
            fh,
        )
    c20 = load_dataset("cifar20", root=tmp_path, split="train")
    assert c20.targets == [4, 1, 13, 0] and len(c20.classes) == 20  # apple->fruit_and_veg ...
    c100 = load_dataset("cifar100", root=tmp_path, split="test")
    assert c100.targets == [55] and c100[0][0].shape == (3, 32, 32)


def test_cub200_fake(tmp_path):
    base = tmp_path / "CUB_200_2011"
    base.mkdir()
    imgs = {1: "001.Albatross/a.jpg", 2: "002.Auklet/b.jpg", 3: "002.Auklet/c.jpg"}
    (base / "images.txt").write_text("".join(f"{i} {p}\n" for i, p in imgs.items()))
    (base / "image_class_labels.txt").write_text("1 1\n2 2\n3 2\n")
    (base / "train_test_split.txt").write_text("1 1\n2 0\n3 1\n")
    (base / "classes.txt").write_text("1 001.Albatross\n2 002.Auklet\n")
    for p in imgs.values():
        _write_image(base / "images" / p, (10, 20, 30))
    train = load_dataset("cub200", root=tmp_path, split="train")
    test = load_dataset("cub200", root=tmp_path, split="test", augment=False)
    assert train.targets == [0, 1] and test.targets == [1]
    assert train.classes == ["001.Albatross", "002.Auklet"]
    assert test[0][0].shape == (3, 224, 224)


def test_glyphs_are_rendered_deterministically_with_disjoint_stratified_splits():
    from harness.zoo.glyphs import font_files, render_glyphs

    assert len(font_files()) >= 10  # matplotlib's DejaVu, STIX and Computer Modern faces
    x, y = render_glyphs("AbC", 8, 12, 0)
    x2, _ = render_glyphs.__wrapped__("AbC", 8, 12, 0)  # rendered again, not from the cache
    assert x.shape == (36, 64) and torch.equal(x, x2)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert not torch.equal(x, render_glyphs.__wrapped__("AbC", 8, 12, 1)[0])  # data_seed
    parts = {
        s: load_dataset("glyphs", split=s, chars="AbC", n_per_class=20)
        for s in ("train", "val", "test")
    }
    assert [len(parts[s]) for s in ("train", "val", "test")] == [48, 6, 6]
    rows = {s: {tuple(r.tolist()) for r in parts[s].data} for s in parts}
    assert not (rows["train"] & rows["test"]) and not (rows["val"] & rows["test"])
    assert parts["train"].classes == ["A", "b", "C"]
    assert torch.bincount(parts["train"].targets).tolist() == [16, 16, 16]
    img = load_dataset("glyphs", split="test", chars="AbC", n_per_class=20, image=True)
    assert img.data.shape == (6, 1, 8, 8)
    few = load_dataset("glyphs", split="train", chars="AbC", n_per_class=20, few_shot=2)
    assert torch.bincount(few.targets).tolist() == [2, 2, 2]
    with pytest.raises(ValueError, match="distinct"):
        render_glyphs("AA", 8, 2, 0)
