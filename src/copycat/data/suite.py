"""The development suite's labelled sets beyond Fashion-MNIST, built offline from registry
packages: handwritten digits (scikit-learn's bundled 8x8 scans, upscaled to 28x28 grey) and
emoji by category (the npm packages ``emoji-datasource-google`` / ``-twitter``, 32x32 RGB).

Neither ships a split, so both are split here with a fixed seed: digits stratified per class,
emoji by emoji (both drawings of one emoji always fall in the same split, so no test emoji is
seen in training in another style). Images are ``uint8`` (N, C, H, W); labels ``int64`` (N,).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from copycat.data.datasets import (
    SPLIT_SEED,
    VAL_FRACTION,
    LabelledSet,
    carve,
    check_split,
    subset,
)
from copycat.errors import DataError

log = logging.getLogger(__name__)

TEST_FRACTION = 0.2
DIGIT_CLASSES = tuple(str(d) for d in range(10))
DIGITS_SHAPE = (1, 28, 28)
EMOJI_SHAPE = (3, 32, 32)
EMOJI_STYLES = ("google", "twitter")
# The categories of emoji-datasource's emoji.json, in its order; "Component" (5 skin-tone
# swatches) is left out: too few to learn or to test.
EMOJI_CATEGORIES = (
    "Smileys & Emotion",
    "People & Body",
    "Animals & Nature",
    "Food & Drink",
    "Travel & Places",
    "Activities",
    "Objects",
    "Symbols",
    "Flags",
)
EMOJI_FIX = (
    "Fix: `make suite`, or by hand: `npm pack emoji-datasource-google` and "
    "`mkdir -p ~/.cache/copycat/emoji-datasource-google && tar xzf "
    "emoji-datasource-google-*.tgz --strip-components=1 -C ~/.cache/copycat/"
    "emoji-datasource-google` (the same for emoji-datasource-twitter)"
)


# -- digits -----------------------------------------------------------------------------------
def digits_from_arrays(images8: np.ndarray, labels: np.ndarray) -> LabelledSet:
    """scikit-learn's digits (N, 8, 8) with values 0..16 as (N, 1, 28, 28) uint8 images: each
    scan upscaled to 20x20 and centred on a black 28x28 canvas, as MNIST centres its digits."""
    if images8.ndim != 3 or images8.shape[0] != labels.shape[0]:
        raise DataError(f"digit arrays of shapes {images8.shape} and {labels.shape} do not match")
    grey = np.clip(np.rint(images8.astype(np.float64) * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    out = np.zeros((len(grey), 1, 28, 28), dtype=np.uint8)
    for i, img in enumerate(grey):
        big = Image.fromarray(img, mode="L").resize((20, 20), Image.Resampling.BILINEAR)
        out[i, 0, 4:24, 4:24] = np.asarray(big)
    return LabelledSet(
        images=torch.from_numpy(out),
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=DIGIT_CLASSES,
        name="digits",
    )


def load_digits_full() -> LabelledSet:
    """All 1,797 digits bundled with scikit-learn (no download)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError(
            "the digits set comes with scikit-learn, which is not installed. "
            "Fix: `pip install scikit-learn` (or `make suite`)"
        ) from exc
    bunch = load_digits()
    return digits_from_arrays(np.asarray(bunch.images), np.asarray(bunch.target))


def digits_split(split: str, *, input_shape: tuple[int, int, int] | None = None) -> LabelledSet:
    """``digits:train|val|test``: seeded, stratified 70% / 10% / 20% of the 1,797 digits."""
    check_split("digits", split)
    full = load_digits_full()
    idx = carve(full.labels, val=VAL_FRACTION, test=TEST_FRACTION)[split]
    return subset(full, idx, name=f"digits:{split}")


# -- emoji ------------------------------------------------------------------------------------
def emoji_roots(style: str) -> list[Path]:
    """Folders searched for an unpacked ``emoji-datasource-STYLE`` package, in order."""
    name = f"emoji-datasource-{style}"
    roots: list[Path] = []
    if env := os.environ.get("COPYCAT_DATA"):
        roots.append(Path(env) / name)
    cache = Path(os.environ.get("COPYCAT_CACHE", Path.home() / ".cache" / "copycat"))
    roots += [cache / name, Path("node_modules") / name]
    return roots


def find_emoji_packages() -> dict[str, Path]:
    """Style -> package folder (holding ``emoji.json`` and ``img/STYLE/64``) of each one found."""
    found: dict[str, Path] = {}
    for style in EMOJI_STYLES:
        for root in emoji_roots(style):
            if (root / "emoji.json").is_file() and (root / "img" / style / "64").is_dir():
                found[style] = root
                break
    return found


def emoji_in_split(unified: str, *, seed: int = SPLIT_SEED) -> str:
    """The split of one emoji, from a hash of its code points: the same in every style."""
    u = int.from_bytes(hashlib.sha256(f"{seed}:{unified}".encode()).digest()[:8], "big") / 2**64
    if u < TEST_FRACTION:
        return "test"
    return "val" if u < TEST_FRACTION + VAL_FRACTION else "train"


def _emoji_image(path: Path, size: int) -> np.ndarray:
    """One emoji PNG composited onto black, resized to (3, size, size) uint8."""
    with Image.open(path) as im:
        rgba = im.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, (0, 0, 0))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    small = canvas.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(small, dtype=np.uint8).transpose(2, 0, 1)


def load_emoji_package(root: Path, style: str, *, size: int = 32) -> tuple[LabelledSet, list[str]]:
    """Every emoji of one package that has an image in ``style``, labelled by category; also
    returns each image's code points (to split by emoji). Skin-tone variants are left out."""
    try:
        entries = json.loads((root / "emoji.json").read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{root / 'emoji.json'} is unreadable ({exc}). {EMOJI_FIX}") from exc
    images, labels, codes, missing = [], [], [], 0
    for e in entries:
        cat = e.get("category")
        if cat not in EMOJI_CATEGORIES or not e.get(f"has_img_{style}"):
            continue
        path = root / "img" / style / "64" / str(e.get("image", ""))
        if not path.is_file():
            missing += 1
            continue
        images.append(_emoji_image(path, size))
        labels.append(EMOJI_CATEGORIES.index(cat))
        codes.append(str(e.get("unified", e.get("image"))))
    if missing:
        log.warning("%d emoji images listed in %s are missing", missing, root / "emoji.json")
    if not images:
        raise DataError(f"no emoji images under {root}. {EMOJI_FIX}")
    ds = LabelledSet(
        images=torch.from_numpy(np.stack(images)),
        labels=torch.tensor(labels, dtype=torch.int64),
        class_names=EMOJI_CATEGORIES,
        name=f"emoji-{style}",
    )
    return ds, codes


def emoji_split(split: str, *, input_shape: tuple[int, int, int] | None = None) -> LabelledSet:
    """``emoji:train|val|test``: the Google and Twitter drawings (whichever are installed) of
    every emoji, 9 categories, 32x32 RGB on black; about 70% / 10% / 20% of the emoji."""
    check_split("emoji", split)
    packages = find_emoji_packages()
    if not packages:
        looked = ", ".join(str(r) for s in EMOJI_STYLES for r in emoji_roots(s))
        raise DataError(f"emoji packages not found (looked in {looked}). {EMOJI_FIX}")
    parts: list[LabelledSet] = []
    for style, root in sorted(packages.items()):
        ds, codes = load_emoji_package(root, style, size=EMOJI_SHAPE[1])
        keep = torch.tensor([i for i, c in enumerate(codes) if emoji_in_split(c) == split])
        parts.append(subset(ds, keep.long(), name=ds.name))
    log.info("emoji %s: styles %s", split, ", ".join(sorted(packages)))
    return LabelledSet(
        images=torch.cat([p.images for p in parts]),
        labels=torch.cat([p.labels for p in parts]),
        class_names=EMOJI_CATEGORIES,
        name=f"emoji:{split}",
    )
