"""Seeded synthetic stand-ins for the datasets that need files (``otransfer run --smoke``).

Inside :func:`standin_datasets`, every registered dataset with ``needs_root`` (CIFAR, SVHN, the
fine-grained sets, ImageNet) loads as random images of its real shape and class count instead
of reading ``$OTRANSFER_DATA``: nothing is read or downloaded. The registry entry keeps its
name, splits and parameters, so a suite's ``dataset_params`` and ``splits`` are checked and
resolved exactly as in a real run; only the loader changes.

Shapes (the real loaders' outputs): CIFAR-10/100/20 and SVHN ``(3, 32, 32)``; the 224-pixel
sets ``(3, 224, 224)``, and ``(10, 3, 224, 224)`` per example on an evaluation split with
``ten_crop=True`` (li2020's ten-crop test). Class counts: the registry's, except FGVC-Aircraft
restricted to a manufacturer (lu2017's ITL split), whose variant counts come from lu2017
Table 1 (:data:`AIRCRAFT_VARIANTS`). ``image_size`` (default: the real 224) shrinks the
224-pixel sets for CI only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import zlib
from typing import Any, Iterator

import torch

from harness.zoo import data as _data

__all__ = ["standin_datasets", "standin_shape", "standin_classes", "AIRCRAFT_VARIANTS"]

#: FGVC-Aircraft 2013b variants per manufacturer (lu2017 Table 1: ITL-Boeing 22 target
#: variants, ITL-Airbus 13); the dataset has 100 variants in all.
AIRCRAFT_VARIANTS = {"Boeing": 22, "Airbus": 13}
_AIRCRAFT_ANNOTATION = {"variant": 100, "family": 70, "manufacturer": 30}
_CIFAR_LIKE = ("cifar10", "cifar100", "cifar20", "svhn")
_EVAL_SPLITS = ("val", "test")


def standin_classes(name: str, params: dict[str, Any]) -> int:
    """The class count dataset ``name`` has with ``params`` (its real files' count)."""
    if name != "aircraft":
        return _data.get_dataset(name).num_classes
    total = _AIRCRAFT_ANNOTATION[params.get("annotation", "variant")]
    only, other = params.get("manufacturer"), params.get("exclude_manufacturer")
    for maker in (only, other):
        if maker is not None and maker not in AIRCRAFT_VARIANTS:
            raise ValueError(
                f"the smoke stand-in of 'aircraft' knows the variant counts of "
                f"{', '.join(AIRCRAFT_VARIANTS)} only; got manufacturer {maker!r}"
            )
    if only is not None:
        return AIRCRAFT_VARIANTS[only]
    return total - AIRCRAFT_VARIANTS[other] if other is not None else total


def standin_shape(
    name: str, split: str, params: dict[str, Any], image_size: int = 224
) -> tuple[int, ...]:
    """One example's shape as the real loader returns it (after its transform)."""
    if name in _CIFAR_LIKE:
        return (3, 32, 32)
    crop = (3, image_size, image_size)
    return (10, *crop) if params.get("ten_crop") and split in _EVAL_SPLITS else crop


def _loader(info, n: int, cover: bool, image_size: int):
    def load(root, split, seed, **params):
        k = standin_classes(info.name, params)
        size = max(n, 2 * k) if cover else n  # cover: every class twice (label costs)
        salt = zlib.crc32(f"{info.name}/{split}/{sorted(params.items())}".encode())
        g = torch.Generator().manual_seed((int(seed) * 1_000_003 + salt) % 2**63)
        x = torch.randn(size, *standin_shape(info.name, split, params, image_size), generator=g)
        y = torch.arange(size) % k
        return _data.ArrayDataset(x, y, [f"class{c}" for c in range(k)])

    return load


@contextlib.contextmanager
def standin_datasets(n: int = 2, cover: bool = False, image_size: int = 224) -> Iterator[list[str]]:
    """Within the block, the datasets that need files load as seeded random stand-ins.

    Parameters
    ----------
    n : int
        Examples per split (the smoke's batch: one step per epoch).
    cover : bool
        At least two examples of every class per split (a label cost, lu2017 §3.4, needs them).
    image_size : int
        Side of the 224-pixel datasets' images (CI may shrink it; the real shape is 224).

    Yields
    ------
    list of str
        The datasets replaced.
    """
    with _data.DATASETS.restoring() as registry:
        saved = dict(registry.items())
        swapped = [name for name, info in saved.items() if info.needs_root]
        for name in swapped:  # no folder needed: the run's preflight check lets them pass
            registry.replace(
                name,
                dataclasses.replace(
                    saved[name], loader=_loader(saved[name], n, cover, image_size), needs_root=False
                ),
            )
        yield swapped
