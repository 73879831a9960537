"""Where pool images come from: folders, the built-in NPD images, labelled sets, noise.

Each source hands out base images (n, C, S, S) uint8 in a seeded order; the pool augments them
to the oracle's input shape. Unusable files are skipped and counted by reason, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from copycat.data.datasets import IMAGE_SUFFIXES, load_labelled
from copycat.data.imageio import ImageDecodeError, decode_image, pil_to_tensor
from copycat.errors import DataError

log = logging.getLogger(__name__)

OPENCLIPART_DIR = Path("/usr/share/openclipart/png")
# Bump when to_base changes what it makes, so stale caches are not reused.
BANK_VERSION = 2


def base_size(shape: tuple[int, int, int]) -> int:
    """Side of the stored base images: twice the oracle's side, room for crops without
    aliasing, and exactly what ``augment_batch`` resamples from without shrinking first."""
    return max(32, min(2 * max(shape[1:]), 320))


def list_images(root: Path) -> tuple[list[Path], Counter[str]]:
    """Image files under ``root`` (recursive, sorted); other files are counted as skipped."""
    if not root.is_dir():
        raise DataError(
            f"pool folder {root} does not exist; pass folder:PATH to a folder of images"
        )
    files, skipped = [], Counter[str]()
    for f in sorted(root.rglob("*")):
        if f.is_file():
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
            else:
                skipped["not an image"] += 1
    return files, skipped


def to_base(
    path: Path, *, channels: int, size: int, max_pixels: int, object_crop: bool
) -> torch.Tensor:
    """Decode one file to a (C, size, size) uint8 base image.

    With ``object_crop`` the image is cropped to its object and padded to a black square, so
    clip-art looks like a centred object on a plain background (as in Fashion-MNIST). The
    object is the opaque part of a transparent image, drawn bright: it is composited onto
    white and inverted, so black line art and dark fills stay visible. An opaque image is
    cropped to what differs from its corner colour.
    """
    from PIL import Image, ImageChops, ImageOps

    img = decode_image(
        path,
        max_pixels=max_pixels,
        max_side=max(2 * size, 256),
        background=None if object_crop else 0,
    )
    if object_crop:
        if img.mode == "RGBA":
            alpha = img.getchannel("A")
            box = alpha.point(lambda v: 255 if v > 16 else 0).getbbox()
            white = Image.new("RGB", img.size, (255, 255, 255))
            white.paste(img, mask=alpha)
            img = ImageOps.invert(white)
        else:
            corner = Image.new("RGB", img.size, img.getpixel((0, 0)))
            diff = ImageChops.difference(img, corner).convert("L")
            box = diff.point(lambda v: 255 if v > 24 else 0).getbbox()
            # A light background is made dark, as in the target's domain.
            if np.asarray(img.convert("L"))[0, 0] > 127:
                img = ImageOps.invert(img)
        if box is None:
            raise ImageDecodeError("blank", str(path))
        img = img.crop(box)
        side = max(img.size)
        canvas = Image.new("RGB", (side, side))
        canvas.paste(img, ((side - img.size[0]) // 2, (side - img.size[1]) // 2))
        img = canvas.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    else:
        img = ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)
    return pil_to_tensor(img, channels=channels)


class BankSource:
    """Base images held in memory, drawn in seeded permutations (one pass, then the next)."""

    def __init__(
        self, name: str, bank: torch.Tensor, *, skipped: Counter[str] | None = None
    ) -> None:
        if len(bank) == 0:
            raise DataError(f"pool source {name} has no usable images")
        self.name = name
        self.bank = bank
        self.skipped: Counter[str] = skipped or Counter()
        self._order = torch.empty(0, dtype=torch.int64)

    def reset(self) -> None:
        self._order = torch.empty(0, dtype=torch.int64)

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        while len(self._order) < n:
            self._order = torch.cat([self._order, torch.randperm(len(self.bank), generator=gen)])
        idx, self._order = self._order[:n], self._order[n:]
        return self.bank[idx]


class FolderSource:
    """Images of a folder, decoded on demand (any size of folder) and memoised up to a limit."""

    def __init__(
        self,
        root: str | Path,
        *,
        shape: tuple[int, int, int],
        max_pixels: int,
        object_crop: bool = False,
        cache_mb: int = 1024,
    ) -> None:
        self.root = Path(root)
        self.name = f"folder:{self.root}"
        self.shape = shape
        self.max_pixels = max_pixels
        self.object_crop = object_crop
        self.size = base_size(shape)
        self.cache_limit = max(1, cache_mb * 2**20 // (shape[0] * self.size**2))
        self.skipped: Counter[str] = Counter()
        self._files: list[Path] | None = None
        self._bad: set[int] = set()
        self._cache: dict[int, torch.Tensor] = {}
        self._order = torch.empty(0, dtype=torch.int64)

    def files(self) -> list[Path]:
        if self._files is None:
            self._files, skipped = list_images(self.root)
            self.skipped.update(skipped)
            if not self._files:
                raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {self.root}")
        return self._files

    def _load(self, i: int) -> torch.Tensor | None:
        if i in self._cache:
            return self._cache[i]
        if i in self._bad:
            return None
        try:
            t = to_base(
                self.files()[i],
                channels=self.shape[0],
                size=self.size,
                max_pixels=self.max_pixels,
                object_crop=self.object_crop,
            )
        except ImageDecodeError as exc:
            self._bad.add(i)
            self.skipped[exc.reason] += 1
            log.debug("skipped %s: %s", self.files()[i], exc)
            return None
        if len(self._cache) < self.cache_limit:
            self._cache[i] = t
        return t

    def reset(self) -> None:
        self._order = torch.empty(0, dtype=torch.int64)

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        out: list[torch.Tensor] = []
        files = self.files()
        while len(out) < n:
            if len(self._bad) == len(files):
                raise DataError(
                    f"none of the {len(files)} files under {self.root} is a usable "
                    f"image ({dict(self.skipped)}); point the pool at image files"
                )
            if len(self._order) == 0:
                self._order = torch.randperm(len(files), generator=gen)
            i, self._order = int(self._order[0]), self._order[1:]
            t = self._load(i)
            if t is not None:
                out.append(t)
        return torch.stack(out)


def _cache_dir() -> Path:
    return Path(os.environ.get("COPYCAT_CACHE", Path.home() / ".cache" / "copycat"))


def build_bank(
    files: list[Path], *, channels: int, size: int, max_pixels: int, object_crop: bool, tag: str
) -> tuple[torch.Tensor, Counter[str]]:
    """Decode ``files`` in parallel into one bank, cached on disk by content key."""
    key = hashlib.sha256(
        json.dumps(
            [
                BANK_VERSION,
                tag,
                channels,
                size,
                max_pixels,
                object_crop,
                [(str(f), f.stat().st_size) for f in files],
            ]
        ).encode()
    ).hexdigest()[:16]
    cache = _cache_dir() / f"bank-{tag}-{key}.npy"
    counts = cache.with_suffix(".json")
    if cache.is_file() and counts.is_file():
        try:
            return (
                torch.from_numpy(np.load(cache, allow_pickle=False)),
                Counter(json.loads(counts.read_text())),
            )
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable cache %s (%s)", cache, exc)
    log.info(
        "decoding %d images for the %s pool (cached for next time in %s)",
        len(files),
        tag,
        cache.parent,
    )

    def one(f: Path) -> torch.Tensor | str:
        try:
            return to_base(
                f, channels=channels, size=size, max_pixels=max_pixels, object_crop=object_crop
            )
        except ImageDecodeError as exc:
            return exc.reason

    skipped: Counter[str] = Counter()
    good: list[torch.Tensor] = []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        for r in ex.map(one, files):
            if isinstance(r, str):
                skipped[r] += 1
            else:
                good.append(r)
    bank = torch.stack(good) if good else torch.empty(0, channels, size, size, dtype=torch.uint8)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, bank.numpy())
        os.replace(tmp, cache)
        counts.write_text(json.dumps(skipped))
    except OSError as exc:
        log.warning("could not cache the pool in %s (%s); it will be decoded again", cache, exc)
    return bank, skipped


def skimage_photos() -> list[Path]:
    """The sample photos bundled inside scikit-image (no download)."""
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)


def exclude_files(files: list[Path], root: Path, words: tuple[str, ...]) -> list[Path]:
    """``files`` less those whose path below ``root`` (lower-cased) contains one of ``words``."""
    return [f for f in files if not any(w in str(f.relative_to(root)).lower() for w in words)]


def npd_source(
    *, shape: tuple[int, int, int], max_pixels: int, exclude: tuple[str, ...] = ()
) -> BankSource:
    """The built-in non-problem-domain pool: openclipart PNGs plus scikit-image's photos.
    Clip-art whose path below the openclipart folder contains a word of ``exclude`` is left
    out (e.g. ``people/clothing`` when the target classifies garments)."""
    files = skimage_photos()
    if OPENCLIPART_DIR.is_dir():
        clip, skipped = list_images(OPENCLIPART_DIR)
        if exclude:
            kept = exclude_files(clip, OPENCLIPART_DIR, exclude)
            log.info("npd: %d clip-art files excluded by %s", len(clip) - len(kept), exclude)
            clip = kept
        files += clip
    else:
        skipped = Counter()
        log.warning(
            "%s not found: the NPD pool has only scikit-image's %d photos, which steal "
            "poorly. Fix: `apt-get install openclipart-png` (or `make setup`), or use "
            "--pool folder:PATH with your own images",
            OPENCLIPART_DIR,
            len(files),
        )
    bank, bad = build_bank(
        files,
        channels=shape[0],
        size=base_size(shape),
        max_pixels=max_pixels,
        object_crop=True,
        tag="npd",
    )
    skipped.update(bad)
    return BankSource("npd", bank, skipped=skipped)


def labelled_source(name: str, *, shape: tuple[int, int, int]) -> BankSource:
    """A labelled set's training images with the labels discarded (a PD pool)."""
    ds = load_labelled(f"{name}:train" if ":" not in name else name, input_shape=shape)
    if tuple(ds.images.shape[1:]) != shape:
        raise DataError(
            f"pd:{name} images are {tuple(ds.images.shape[1:])}, the oracle takes "
            f"{shape}; use a folder: pool instead"
        )
    return BankSource(f"pd:{name}", ds.images)


class NoiseSource:
    """Uniform noise: the baseline any real pool must beat."""

    def __init__(self, *, shape: tuple[int, int, int]) -> None:
        self.name = "noise"
        self.shape = shape
        self.skipped: Counter[str] = Counter()

    def reset(self) -> None:
        pass

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randint(0, 256, (n, *self.shape), generator=gen, dtype=torch.uint8)


def build_npd(arg: str, *, shape: tuple[int, int, int], max_pixels: int) -> BankSource:
    """``npd``: openclipart PNGs plus scikit-image's photos; ``npd:exclude=WORD,...`` leaves
    out the clip-art whose path holds one of the words (images of the target's own classes)."""
    key, _, words = arg.partition("=")
    if arg and key != "exclude":
        raise DataError(f"pool npd:{arg} is invalid; use npd or npd:exclude=WORD,WORD")
    exclude = tuple(w.strip().lower() for w in words.split(",") if w.strip())
    return npd_source(shape=shape, max_pixels=max_pixels, exclude=exclude)


def build_folder(arg: str, *, shape: tuple[int, int, int], max_pixels: int) -> FolderSource:
    """``folder:PATH``: every image under PATH, recursively."""
    return FolderSource(arg, shape=shape, max_pixels=max_pixels)


def build_pd(arg: str, *, shape: tuple[int, int, int], max_pixels: int) -> BankSource:
    """``pd:NAME``: a labelled set's images with the labels discarded."""
    return labelled_source(arg, shape=shape)


def build_noise(arg: str, *, shape: tuple[int, int, int], max_pixels: int) -> NoiseSource:
    """``noise``: uniform noise."""
    return NoiseSource(shape=shape)
