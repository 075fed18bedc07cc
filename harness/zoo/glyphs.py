"""``glyphs``: a procedurally rendered source task with many classes, embedded (no download).

Characters rendered from the TrueType fonts that matplotlib ships (DejaVu, STIX, Computer
Modern: 20+ faces), each under a seeded random affine transform (rotation, scale, shear,
translation) and stroke-width jitter, then area-averaged to ``size x size`` pixels in [0, 1] —
at ``size = 8`` the format of scikit-learn's ``digits``. It plays ImageNet's role for the
CPU-scale transfer suites: a large, diverse *source* whose features (strokes, curves, corners)
serve a small *target* task (``digits``), so that the premise of the transfer papers —
pre-training on the source helps the target — can hold here (measured in the suites).

Classes are letters (``A-Z a-z`` by default, 52 classes; digits ``0-9`` are excluded unless
asked for, so that the source does not contain the target's classes). Images are rendered
once per ``(classes, size, n_per_class, data_seed)`` and cached in memory; the train / val /
test splits are disjoint, stratified and seeded by ``seed`` (the ``glyphs`` dataset of
:mod:`harness.zoo.data`; this module renders, and knows no registry).
"""

from __future__ import annotations

import functools
import math
import string
from pathlib import Path

import numpy as np
import torch

__all__ = ["font_files", "render_glyphs", "LETTERS"]

LETTERS = string.ascii_uppercase + string.ascii_lowercase
CANVAS = 32  # render at 32 x 32, then average-pool to the output size


@functools.lru_cache(maxsize=1)
def font_files() -> tuple[str, ...]:
    """The text fonts matplotlib ships (symbol-only and fallback faces left out), sorted."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    skip = ("STIXNonUni", "STIXSiz", "cmex", "cmsy", "cmmi", "LastResort", "Display")
    return tuple(sorted(str(p) for p in folder.glob("*.ttf") if not any(s in p.name for s in skip)))


def _render_one(ch: str, font_path: str, rng: np.random.Generator, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_path, int(rng.integers(18, 25)))
    img = Image.new("L", (CANVAS * 2, CANVAS * 2), 0)
    draw = ImageDraw.Draw(img)
    width = int(rng.integers(0, 2))  # stroke jitter
    box = draw.textbbox((0, 0), ch, font=font, stroke_width=width)
    w, h = box[2] - box[0], box[3] - box[1]
    draw.text(
        (CANVAS - w / 2 - box[0], CANVAS - h / 2 - box[1]),
        ch,
        fill=255,
        font=font,
        stroke_width=width,
        stroke_fill=255,
    )
    # random affine about the centre: rotation, anisotropic scale, shear, translation
    a = math.radians(rng.uniform(-15, 15))
    sx, sy = rng.uniform(0.8, 1.15, size=2)
    sh = rng.uniform(-0.25, 0.25)
    tx, ty = rng.uniform(-2.5, 2.5, size=2)
    m = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) @ np.array(
        [[sx, sh * sx], [0.0, sy]]
    )
    inv = np.linalg.inv(m)  # PIL maps output -> input coordinates
    c = np.array([CANVAS, CANVAS], dtype=float)
    off = c - inv @ (c + np.array([tx, ty]))
    img = img.transform(
        img.size,
        Image.AFFINE,
        (inv[0, 0], inv[0, 1], off[0], inv[1, 0], inv[1, 1], off[1]),
        resample=Image.BILINEAR,
    )
    # crop the glyph's bounding box to a square with a margin (as digits' 8x8 are centred)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    ys, xs = np.nonzero(arr > 0.1)
    if len(ys) == 0:
        return np.zeros((size, size), dtype=np.float32)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    half = max(ys.max() - ys.min(), xs.max() - xs.min()) / 2 * 1.15 + 1
    box = (cx - half, cy - half, cx + half, cy + half)
    small = Image.fromarray((arr * 255).astype(np.uint8)).resize((size, size), Image.BOX, box=box)
    out = np.asarray(small, dtype=np.float32) / 255.0
    return out / max(float(out.max()), 1e-6)


@functools.lru_cache(maxsize=4)
def render_glyphs(
    classes: str = LETTERS, size: int = 8, n_per_class: int = 120, data_seed: int = 0
) -> tuple[torch.Tensor, np.ndarray]:
    """``(x, y)``: ``n_per_class`` images of each character of ``classes``, fonts cycled,
    each under its own seeded random transform; ``x`` is ``(N, size * size)`` in [0, 1]."""
    if len(set(classes)) != len(classes) or not classes:
        raise ValueError(f"glyph classes must be distinct characters; got {classes!r}")
    fonts = font_files()
    if not fonts:
        raise FileNotFoundError("no TrueType fonts found in matplotlib's data folder")
    rng = np.random.default_rng(int(data_seed))
    xs, ys = [], []
    for k, ch in enumerate(classes):
        for i in range(int(n_per_class)):
            xs.append(_render_one(ch, fonts[(i + k) % len(fonts)], rng, int(size)))
            ys.append(k)
    x = torch.as_tensor(np.stack(xs)).reshape(len(xs), -1)
    return x, np.asarray(ys)
