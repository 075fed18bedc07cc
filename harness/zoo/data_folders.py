"""The fine-grained and ImageNet image datasets, read from a local root (nothing is
downloaded): FGVC-Aircraft, CUB-200-2011, Food-101, and the class-folder layouts of Stanford
Cars, Stanford Dogs and ImageNet."""

from __future__ import annotations

from typing import Mapping

from harness.zoo.data_core import register_dataset
from harness.zoo.data_files import (
    HOLDOUT_PARAMS,
    HOLDOUT_SPLITS,
    IMG_PARAMS,
    FileListDataset,
    missing_error,
    read_lines,
    require_files,
    split_transform,
    with_holdout,
)
from harness.zoo.optional import optional_import

__all__: list[str] = []


@register_dataset(
    "aircraft",
    num_classes=100,
    splits=("train", "val", "trainval", "test", "all"),
    params={
        **IMG_PARAMS,
        "annotation": "variant",
        "manufacturer": None,
        "exclude_manufacturer": None,
    },
    paper="lu2017",
    description="FGVC-Aircraft 2013b (fgvc-aircraft-2013b/data/...); "
    "manufacturer='Boeing' / 'Airbus' keeps one manufacturer's "
    "images, relabelled over its variants; exclude_manufacturer= "
    "keeps the others: lu2017's ITL source/target split; split "
    "'all' = trainval + test (lu2017's source: every image of the "
    "other manufacturers)",
)
def _aircraft(
    root,
    split,
    seed,
    *,
    augment,
    transform,
    ten_crop,
    annotation,
    manufacturer,
    exclude_manufacturer,
):
    data = root / "fgvc-aircraft-2013b" / "data"
    if not data.is_dir() and (root / "data" / "images").is_dir():
        data = root / "data"
    names_file = {
        "variant": "variants.txt",
        "family": "families.txt",
        "manufacturer": "manufacturers.txt",
    }[annotation]
    parts = ("trainval", "test") if split == "all" else (split,)
    lists = [f"images_{annotation}_{p}.txt" for p in parts] + [names_file, "images"]
    if manufacturer is not None or exclude_manufacturer is not None:
        lists += [f"images_manufacturer_{p}.txt" for p in parts]
    missing = [str(data / f) for f in lists if not (data / f).exists()]
    if missing:
        raise missing_error(
            "aircraft",
            root,
            f"missing {', '.join(missing)}. Extract the official "
            f"fgvc-aircraft-2013b.tar.gz in {str(root)!r} (so that "
            f"{str(root / 'fgvc-aircraft-2013b' / 'data' / 'images')!r} holds the "
            f".jpg files).",
        )
    rows = [
        ln.split(" ", 1) for p in parts for ln in read_lines(data / f"images_{annotation}_{p}.txt")
    ]
    classes = read_lines(data / names_file)
    if manufacturer is not None or exclude_manufacturer is not None:
        maker = dict(
            ln.split(" ", 1)
            for p in parts
            for ln in read_lines(data / f"images_manufacturer_{p}.txt")
        )
        if manufacturer is not None:
            rows = [r for r in rows if maker.get(r[0]) == manufacturer]
        if exclude_manufacturer is not None:
            rows = [r for r in rows if maker.get(r[0]) != exclude_manufacturer]
        if not rows:
            raise ValueError(
                f"no aircraft left in split {split!r} with manufacturer="
                f"{manufacturer!r}, exclude_manufacturer={exclude_manufacturer!r}; "
                f"manufacturers: {', '.join(sorted(set(maker.values())))}"
            )
        classes = [c for c in classes if c in {r[1] for r in rows}]
    lut = {c: i for i, c in enumerate(classes)}
    tf = (
        transform
        if transform is not None
        else split_transform("imagenet", split, augment, ten_crop)
    )
    return FileListDataset(
        [data / "images" / f"{i}.jpg" for i, _ in rows], [lut[c] for _, c in rows], classes, tf
    )


@register_dataset(
    "cub200",
    num_classes=200,
    params=HOLDOUT_PARAMS,
    splits=HOLDOUT_SPLITS,
    paper="li2020",
    description="CUB-200-2011 (CUB_200_2011/images.txt, image_class_labels.txt, "
    "train_test_split.txt, images/); val_size= holds out a val split",
)
@with_holdout
def _cub(root, split, seed, *, augment, transform, ten_crop):
    base = root / "CUB_200_2011"
    files = [
        "images.txt",
        "image_class_labels.txt",
        "train_test_split.txt",
        "classes.txt",
        "images",
    ]
    require_files(
        "cub200",
        root,
        [f"CUB_200_2011/{f}" for f in files],
        f"Extract the official CUB_200_2011.tgz in {str(root)!r}.",
    )
    paths = dict(ln.split(" ", 1) for ln in read_lines(base / "images.txt"))
    labels = dict(ln.split(" ", 1) for ln in read_lines(base / "image_class_labels.txt"))
    is_train = dict(ln.split(" ", 1) for ln in read_lines(base / "train_test_split.txt"))
    classes = [ln.split(" ", 1)[1] for ln in read_lines(base / "classes.txt")]
    want = "1" if split == "train" else "0"
    ids = [i for i in paths if is_train[i] == want]
    tf = (
        transform
        if transform is not None
        else split_transform("imagenet", split, augment, ten_crop)
    )
    return FileListDataset(
        [base / "images" / paths[i] for i in ids], [int(labels[i]) - 1 for i in ids], classes, tf
    )


@register_dataset(
    "food101",
    num_classes=101,
    params=HOLDOUT_PARAMS,
    splits=HOLDOUT_SPLITS,
    paper="li2020",
    description="Food-101 (food-101/meta/{classes,train,test}.txt, "
    "food-101/images/<class>/<id>.jpg); val_size= holds out a val split",
)
@with_holdout
def _food(root, split, seed, *, augment, transform, ten_crop):
    base = root / "food-101"
    require_files(
        "food101",
        root,
        ["food-101/meta/classes.txt", f"food-101/meta/{split}.txt", "food-101/images"],
        f"Extract the official food-101.tar.gz in {str(root)!r}.",
    )
    classes = read_lines(base / "meta" / "classes.txt")
    lut = {c: i for i, c in enumerate(classes)}
    items = read_lines(base / "meta" / f"{split}.txt")
    tf = (
        transform
        if transform is not None
        else split_transform("imagenet", split, augment, ten_crop)
    )
    return FileListDataset(
        [base / "images" / f"{it}.jpg" for it in items],
        [lut[it.split("/")[0]] for it in items],
        classes,
        tf,
    )


def _image_folder(name: str, folders: Mapping[str, str], hint: str):
    def load(root, split, seed, *, augment, transform, ten_crop):
        torchvision = optional_import("torchvision", "vision", f"dataset {name!r}")

        sub = folders[split]
        require_files(
            name,
            root,
            [sub],
            f"Expected one folder per class: "
            f"{str(root / sub / '<class>' / '<image>.jpg')!r}. {hint}",
        )
        tf = (
            transform
            if transform is not None
            else split_transform("imagenet", split, augment, ten_crop)
        )
        return torchvision.datasets.ImageFolder(str(root / sub), transform=tf)

    return load


register_dataset(
    "cars196",
    num_classes=196,
    params=HOLDOUT_PARAMS,
    splits=HOLDOUT_SPLITS,
    paper="li2020",
    description="Stanford Cars, ImageFolder layout train/<class>/, test/<class>/; "
    "val_size= holds out a val split",
)(
    with_holdout(
        _image_folder(
            "cars196",
            {"train": "train", "test": "test"},
            "Sort the Stanford Cars images into class folders (devkit annotations).",
        )
    )
)
register_dataset(
    "dogs120",
    num_classes=120,
    params=HOLDOUT_PARAMS,
    splits=HOLDOUT_SPLITS,
    paper="li2020",
    description="Stanford Dogs, ImageFolder layout train/<breed>/, test/<breed>/; "
    "val_size= holds out a val split",
)(
    with_holdout(
        _image_folder(
            "dogs120",
            {"train": "train", "test": "test"},
            "Split the Stanford Dogs Images/<breed>/ folders with train_list.mat / test_list.mat.",
        )
    )
)
register_dataset(
    "imagenet",
    num_classes=1000,
    splits=("train", "val"),
    params=IMG_PARAMS,
    paper="li2020",
    description="ImageNet ILSVRC-2012, ImageFolder layout train/<wnid>/, val/<wnid>/",
)(
    _image_folder(
        "imagenet",
        {"train": "train", "val": "val"},
        "Use the standard ILSVRC-2012 train/ and val/ folders (val sorted into <wnid>/ folders).",
    )
)
