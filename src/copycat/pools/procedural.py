"""Procedural NPD images: pen strokes and filled shapes drawn from a seeded generator.

They need no package and hold no picture of anything, so no target's classes are in them by
construction; what they give is structure that noise lacks: strokes of a pen (random Bezier
curves of random width) or filled shapes (ellipses, polygons, and "dead leaves" collages of
overlapping discs and squares, the synthetic images of Baradad et al., NeurIPS 2021). Every
image is bright on black, as the objects of the other NPD sets are. The bank of a set is the
same for the same (set, size, channels, count): its draws depend on :data:`SEED` and the set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from PIL.ImageDraw import ImageDraw

# The groups each procedural set draws from, in turn: what a drawn image is named
# (``strokes/curves``)
GROUPS: dict[str, tuple[str, ...]] = {
    "strokes": ("curves",),
    "shapes": ("blobs", "leaves"),
}
SEED = 20_260_000
COUNT = 8_000  # images per procedural set: about as many as the clip-art set holds
Colour = tuple[int, int, int]


def _colour(rng: np.random.Generator, channels: int) -> Colour:
    """A bright grey for one channel; for three, a colour with one strong channel."""
    if channels == 1:
        g = int(rng.integers(90, 256))
        return (g, g, g)
    c = rng.integers(0, 256, 3)
    c[int(rng.integers(0, 3))] = int(rng.integers(150, 256))
    return (int(c[0]), int(c[1]), int(c[2]))


def bezier(control: np.ndarray, n: int = 24) -> list[tuple[float, float]]:
    """``n`` points along the Bezier curve of ``control`` (k, 2) (de Casteljau)."""
    t = np.linspace(0.0, 1.0, n)[:, None, None]
    pts = np.broadcast_to(control, (n, *control.shape)).astype(np.float64)
    while pts.shape[1] > 1:
        pts = pts[:, :-1] * (1 - t) + pts[:, 1:] * t
    return [(float(x), float(y)) for x, y in pts[:, 0]]


def _curves(draw: ImageDraw, rng: np.random.Generator, size: int, channels: int) -> None:
    m = size * 0.15
    for _ in range(int(rng.integers(1, 4))):
        control = rng.uniform(m, size - m, (int(rng.integers(2, 5)), 2))
        width = max(1, int(size * rng.uniform(0.05, 0.14)))
        draw.line(bezier(control), fill=_colour(rng, channels), width=width, joint="curve")


def _blobs(draw: ImageDraw, rng: np.random.Generator, size: int, channels: int) -> None:
    m = size * 0.15
    for _ in range(int(rng.integers(1, 3))):
        if rng.random() < 0.5:
            a, b = rng.uniform(m, size - m, (2, 2))
            box = (min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]) + 2, max(a[1], b[1]) + 2)
            draw.ellipse(box, fill=_colour(rng, channels))
        else:
            centre = rng.uniform(m, size - m, 2)
            k = int(rng.integers(3, 8))
            angles = np.sort(rng.uniform(0, 2 * np.pi, k))
            radii = size * rng.uniform(0.15, 0.4) * rng.uniform(0.5, 1.0, k)
            xy = centre + radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], 1)
            draw.polygon([(float(x), float(y)) for x, y in xy], fill=_colour(rng, channels))


def _leaves(draw: ImageDraw, rng: np.random.Generator, size: int, channels: int) -> None:
    if rng.random() < 0.3:  # a plain background now and then
        draw.rectangle((0, 0, size, size), fill=_colour(rng, channels))
    for _ in range(int(rng.integers(4, 12))):
        cx, cy = rng.uniform(0, size, 2)
        r = size * rng.uniform(0.05, 0.3)
        if rng.random() < 0.5:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_colour(rng, channels))
        else:
            h = r * rng.uniform(0.3, 1.0)
            draw.rectangle((cx - r, cy - h, cx + r, cy + r), fill=_colour(rng, channels))


Painter = Callable[["ImageDraw", np.random.Generator, int, int], None]
PAINTERS: dict[str, Painter] = {"curves": _curves, "blobs": _blobs, "leaves": _leaves}


def draw_one(rng: np.random.Generator, *, group: str, size: int, channels: int) -> np.ndarray:
    """One (channels, size, size) uint8 image of ``group`` (a key of :data:`PAINTERS`)."""
    from PIL import Image, ImageDraw, ImageFilter

    img = Image.new("RGB", (size, size))
    PAINTERS[group](ImageDraw.Draw(img), rng, size, channels)
    if rng.random() < 0.3:  # soft edges now and then, as scans and photos have
        img = img.filter(ImageFilter.GaussianBlur(size * 0.02))
    if channels == 1:
        return np.asarray(img.convert("L"))[None]
    return np.asarray(img).transpose(2, 0, 1)


def procedural_bank(
    name: str, *, size: int, channels: int, count: int = COUNT
) -> tuple[torch.Tensor, list[str]]:
    """``count`` images of the set ``name`` (a key of :data:`GROUPS`) as ``(count, channels,
    size, size)`` uint8, and the group of each, drawn in turn from the set's groups with a
    generator seeded by :data:`SEED`."""
    groups = GROUPS[name]
    rng = np.random.default_rng([SEED, list(GROUPS).index(name)])
    names = [groups[i % len(groups)] for i in range(count)]
    images = np.stack([draw_one(rng, group=g, size=size, channels=channels) for g in names])
    return torch.from_numpy(np.ascontiguousarray(images)), names
