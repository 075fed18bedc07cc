"""The ``glyphs`` dataset: the embedded many-class source task (rendering:
:mod:`harness.zoo.glyphs`)."""

from __future__ import annotations

import torch

from harness.zoo.data_core import ArrayDataset, few_shot_indices, register_dataset
from harness.zoo.glyphs import LETTERS, render_glyphs
from harness.zoo.pools import stratified_split

__all__: list[str] = []


@register_dataset(
    "glyphs",
    num_classes=len(LETTERS),
    input_kind="flat",
    needs_root=False,
    splits=("train", "val", "test"),
    params={
        "chars": LETTERS,
        "size": 8,
        "n_per_class": 120,
        "data_seed": 0,
        "val_fraction": 0.1,
        "test_fraction": 0.1,
        "few_shot": None,
        "image": False,
    },
    description="characters rendered from matplotlib's fonts under random affine transforms, "
    "8x8 like digits (letters, 52 classes by default): an embedded many-class "
    "source task",
)
def _glyphs(
    root,
    split,
    seed,
    *,
    chars,
    size,
    n_per_class,
    data_seed,
    val_fraction,
    test_fraction,
    few_shot,
    image,
):
    x, y = render_glyphs(str(chars), int(size), int(n_per_class), int(data_seed))
    n = len(y)
    n_val, n_test = int(round(val_fraction * n)), int(round(test_fraction * n))
    sizes = {"train": n - n_val - n_test, "val": n_val, "test": n_test}
    idx = stratified_split(y, sizes, seed)[split]
    if few_shot is not None:
        idx = few_shot_indices(idx, y, int(few_shot), seed)
    data = x[idx].view(-1, 1, int(size), int(size)) if image else x[idx]
    return ArrayDataset(data, torch.as_tensor(y[idx]), list(chars))
