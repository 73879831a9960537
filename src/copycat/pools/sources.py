"""Where pool images come from: folders, the built-in NPD images, labelled sets, noise.

Each source hands out base images (n, C, S, S) uint8 in a seeded order; the pool augments them
to the oracle's input shape. Unusable files are skipped and counted by reason, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from copycat.data.datasets import IMAGE_SUFFIXES, load_labelled
from copycat.data.imageio import ImageDecodeError, decode_image, pil_to_tensor
from copycat.errors import DataError
from copycat.pools.pool import total_skipped
from copycat.runs import save_atomic, write_atomic

log = logging.getLogger(__name__)

OPENCLIPART_DIR = Path("/usr/share/openclipart/png")
# Bump when to_base or photo_crops change what they make, so stale caches are not reused.
BANK_VERSION = 4  # 4: colour objects keep their colours
# What object images are centred on (see to_base); the pool option npd:background=
Background = Literal["black", "white"]
BACKGROUNDS: tuple[Background, ...] = ("black", "white")


@dataclass(frozen=True, slots=True)
class NpdSet:
    """One set of the built-in NPD images: image files of a Debian package, or drawn.

    ``objects``: each file is one object, cropped to it and centred on black (clip-art,
    stamps, sprites, renders); ``photos``: large photos, each cut into ``crops`` random crops;
    ``pictures``: photos used whole (their centre square); ``procedural``: drawn by
    :mod:`copycat.pools.procedural` (no files, no package). With ``archives`` (file name
    patterns) the images are the members of those archives under the roots whose names end in
    one of ``members``, unpacked once (:mod:`copycat.pools.archives`).
    """

    name: str
    roots: tuple[Path, ...]
    kind: Literal["objects", "photos", "pictures", "procedural"]
    package: str
    crops: int = 0
    archives: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    member_depth: int = 0  # > 0: only members at most this deep in their archive

    @property
    def installed(self) -> bool:
        """A drawn set always is; a set of files when one of its folders exists."""
        return self.kind == "procedural" or any(r.is_dir() for r in self.roots)


NPD_SETS: tuple[NpdSet, ...] = (
    NpdSet("clipart", (OPENCLIPART_DIR,), "objects", "openclipart-png"),
    NpdSet("stamps", (Path("/usr/share/tuxpaint/stamps"),), "objects", "tuxpaint-stamps-default"),
    NpdSet("sprites", (Path("/usr/share/scratch/Media/Costumes"),), "objects", "scratch"),
    NpdSet(
        "photos",
        (
            Path("/usr/share/backgrounds"),
            Path("/usr/share/wallpapers"),
            Path("/usr/share/scratch/Media/Backgrounds"),
        ),
        "photos",
        "gnome-backgrounds mate-backgrounds",
        crops=48,
    ),
    # GCompris' photos (animals, monuments, paintings, objects), packed in Qt resource files
    NpdSet(
        "gcompris",
        (Path("/usr/share/gcompris-qt/rcc"),),
        "pictures",
        "gcompris-qt-data",
        archives=("*.rcc",),
        members=(".webp", ".jpg", ".jpeg"),
    ),
    # Sweet Home 3D's renders of furniture and things (catalogue icons in its zip libraries)
    NpdSet(
        "furniture",
        (Path("/usr/share/sweethome3d/furniture"),),
        "objects",
        "sweethome3d-furniture",
        archives=("*.sh3f",),
        members=(".png",),
        member_depth=2,  # LIBRARY/NAME.png; deeper ones are its models' textures
    ),
    # Oxygen's icons (devices, places, applications, file types, emblems, faces in emotes/):
    # shaded colour objects, the nearest in style to emoji of the registries' sets. One size,
    # 128 px, so that an icon is not in the set once per size
    NpdSet(
        "icons",
        (Path("/usr/share/icons/oxygen/base/128x128"),),
        "objects",
        "oxygen-icon-theme",
    ),
    NpdSet("strokes", (), "procedural", ""),
    NpdSet("shapes", (), "procedural", ""),
)
# The default sets, by the target's channels: clip-art for colour targets; clip-art and pen
# strokes for grey ones, which lift a handwriting target's rare classes (digits +0.087 over
# 10 seeds at 2,000 queries) at a small cost elsewhere (docs/suite.md, "Pen strokes for grey
# targets")
DEFAULT_NPD_SETS: tuple[str, ...] = ("clipart",)
GREY_NPD_SETS: tuple[str, ...] = ("clipart", "strokes")


def default_npd_sets(channels: int) -> tuple[str, ...]:
    """The NPD sets of a plain ``npd`` pool for images of ``channels``."""
    return GREY_NPD_SETS if channels == 1 else DEFAULT_NPD_SETS


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
    path: Path,
    *,
    channels: int,
    size: int,
    max_pixels: int,
    object_crop: bool,
    background: Background = "black",
) -> torch.Tensor:
    """Decode one file to a (C, size, size) uint8 base image.

    With ``object_crop`` the image is cropped to its object and centred on a square of
    ``background``, so clip-art looks like an object on a plain background (as in
    Fashion-MNIST or an emoji set). The object is the opaque part of a transparent image; an
    opaque image is cropped to what differs from its corner colour. On black, a grey target's
    objects are drawn bright (composited onto white and inverted, so black line art and dark
    fills stay visible, and a light opaque image is inverted), while a colour target's keep
    their own colours: an inverted colour image is one no real target sees (a cyan strawberry).
    On white, objects are drawn as they are (a dark grey opaque image is inverted).
    """
    from PIL import Image, ImageChops, ImageOps

    img = decode_image(
        path,
        max_pixels=max_pixels,
        max_side=max(2 * size, 256),
        background=None if object_crop else 0,
    )
    if object_crop:
        bright = background == "black" and channels == 1  # grey objects drawn bright on black
        fill: tuple[int, int, int] = (0, 0, 0) if background == "black" else (255, 255, 255)
        if img.mode == "RGBA":
            alpha = img.getchannel("A")
            box = alpha.point(lambda v: 255 if v > 16 else 0).getbbox()
            under = Image.new("RGB", img.size, (255, 255, 255) if bright else fill)
            under.paste(img, mask=alpha)
            img = ImageOps.invert(under) if bright else under
        else:
            corner = Image.new("RGB", img.size, img.getpixel((0, 0)))
            diff = ImageChops.difference(img, corner).convert("L")
            box = diff.point(lambda v: 255 if v > 24 else 0).getbbox()
            light = bool(np.asarray(img.convert("L"))[0, 0] > 127)
            if channels == 1 and light == (background == "black"):
                # a grey image's background is made the one asked for, as in the target's
                # domain; a colour image keeps its colours (and its own background)
                img = ImageOps.invert(img)
            elif channels != 1:
                r, g, b = np.asarray(img)[0, 0, :3].tolist()
                fill = (r, g, b)
        if box is None:
            raise ImageDecodeError("blank", str(path))
        img = img.crop(box)
        side = max(img.size)
        canvas = Image.new("RGB", (side, side), fill)
        canvas.paste(img, ((side - img.size[0]) // 2, (side - img.size[1]) // 2))
        img = canvas.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    else:
        img = ImageOps.fit(img, (size, size), Image.Resampling.BILINEAR)
    return pil_to_tensor(img, channels=channels)


def photo_crops(
    path: Path, *, channels: int, size: int, max_pixels: int, n: int
) -> list[torch.Tensor]:
    """``n`` square crops of one photo at random places and scales (from a tenth to the whole
    of its short side), each resized to ``size``: a large photo gives many distinct images, as
    random crops of ImageNet photos do. The draws are seeded by the file's name."""
    from PIL import Image

    img = decode_image(path, max_pixels=max_pixels, max_side=1024, background=0)
    w, h = img.size
    rng = np.random.default_rng(int(hashlib.sha256(path.name.encode()).hexdigest()[:8], 16))
    out = []
    for _ in range(n):
        side = min(min(w, h), max(8, int(min(w, h) * rng.uniform(0.1, 1.0))))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = img.crop((x, y, x + side, y + side))
        crop = crop.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        out.append(pil_to_tensor(crop, channels=channels))
    return out


class BankSource:
    """Base images held in memory, drawn in seeded permutations (one pass, then the next).

    ``groups`` (optional, one per image) names where each image comes from, e.g. its top
    folder; drawn images are then named ``NAME/GROUP`` (what the store records as their
    source, and what an adaptive selection learns which groups to draw from)."""

    def __init__(
        self,
        name: str,
        bank: torch.Tensor,
        *,
        skipped: Counter[str] | None = None,
        groups: list[str] | None = None,
    ) -> None:
        if len(bank) == 0:
            raise DataError(f"pool source {name} has no usable images")
        if groups is not None and len(groups) != len(bank):
            raise ValueError(f"{len(groups)} groups for {len(bank)} images")
        self.name = name
        self.bank = bank
        self.groups = groups
        self.skipped: Counter[str] = skipped or Counter()
        self._order = torch.empty(0, dtype=torch.int64)

    def reset(self) -> None:
        self._order = torch.empty(0, dtype=torch.int64)

    def draw_named(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        """``n`` images and the name of each (``NAME`` or ``NAME/GROUP``)."""
        while len(self._order) < n:
            self._order = torch.cat([self._order, torch.randperm(len(self.bank), generator=gen)])
        idx, self._order = self._order[:n], self._order[n:]
        if self.groups is None:
            return self.bank[idx], [self.name] * n
        return self.bank[idx], [f"{self.name}/{self.groups[i]}" for i in idx.tolist()]


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

    def draw_named(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        """``n`` images, each named ``folder:PATH/TOP`` by the top folder of its file (what
        ``--selection adaptive`` learns to draw from) or ``folder:PATH`` for a file at the top."""
        out: list[torch.Tensor] = []
        names: list[str] = []
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
                parts = files[i].relative_to(self.root).parts
                names.append(f"{self.name}/{parts[0]}" if len(parts) > 1 else self.name)
        return torch.stack(out), names


def _cache_dir() -> Path:
    return Path(os.environ.get("COPYCAT_CACHE", Path.home() / ".cache" / "copycat"))


def build_bank(
    files: list[Path],
    *,
    channels: int,
    size: int,
    max_pixels: int,
    object_crop: bool,
    tag: str,
    crops: int = 0,
    roots: tuple[Path, ...] = (),
    background: Background = "black",
) -> tuple[torch.Tensor, Counter[str], list[str]]:
    """Decode ``files`` in parallel into one bank, cached on disk by content key. With
    ``crops`` each file gives that many random crops (:func:`photo_crops`) instead of one
    image. The third item names each image's group: the top folder of its file below the
    first of ``roots`` that holds it (``-`` for a file directly in a root or outside them)."""
    key = hashlib.sha256(
        json.dumps(
            [
                BANK_VERSION,
                tag,
                channels,
                size,
                max_pixels,
                object_crop,
                background,
                crops,
                [(str(f), f.stat().st_size) for f in files],
            ]
        ).encode()
    ).hexdigest()[:16]
    cache = _cache_dir() / f"bank-{tag}-{key}.npy"
    counts = cache.with_suffix(".json")
    if cache.is_file() and counts.is_file():
        try:
            meta = json.loads(counts.read_text())
            bank = torch.from_numpy(np.load(cache, allow_pickle=False))
            if isinstance(meta.get("groups"), list) and len(meta["groups"]) == len(bank):
                return bank, Counter(meta["skipped"]), list(meta["groups"])
            log.info("rebuilding %s: its cache predates image groups", cache)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable cache %s (%s)", cache, exc)
    log.info(
        "decoding %d images for the %s pool (cached for next time in %s)",
        len(files),
        tag,
        cache.parent,
    )

    def one(f: Path) -> list[torch.Tensor] | str:
        try:
            if crops:
                return photo_crops(f, channels=channels, size=size, max_pixels=max_pixels, n=crops)
            return [
                to_base(
                    f,
                    channels=channels,
                    size=size,
                    max_pixels=max_pixels,
                    object_crop=object_crop,
                    background=background,
                )
            ]
        except ImageDecodeError as exc:
            return exc.reason

    def group(f: Path) -> str:
        for root in roots:
            if f.is_relative_to(root):
                parts = f.relative_to(root).parts
                return parts[0] if len(parts) > 1 else "-"
        return "-"

    skipped: Counter[str] = Counter()
    good: list[torch.Tensor] = []
    groups: list[str] = []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        for f, r in zip(files, ex.map(one, files), strict=True):
            if isinstance(r, str):
                skipped[r] += 1
            else:
                good += r
                groups += [group(f)] * len(r)
    bank = torch.stack(good) if good else torch.empty(0, channels, size, size, dtype=torch.uint8)
    try:
        array = bank.numpy()
        save_atomic(cache, lambda f: np.save(f, array))
        write_atomic(counts, json.dumps({"skipped": skipped, "groups": groups}))
    except OSError as exc:
        log.warning("could not cache the pool in %s (%s); it will be decoded again", cache, exc)
    return bank, skipped, groups


def skimage_photos() -> list[Path]:
    """The sample photos bundled inside scikit-image (no download)."""
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)


def exclude_files(files: list[Path], root: Path, words: tuple[str, ...]) -> list[Path]:
    """``files`` less those whose path below ``root`` (lower-cased) contains one of ``words``."""
    return [f for f in files if not any(w in str(f.relative_to(root)).lower() for w in words)]


def set_roots(npd_set: NpdSet) -> tuple[tuple[Path, ...], Counter[str]]:
    """The folders that hold an NPD set's image files: its roots, or for a set of archives
    the one folder they are unpacked into (one sub-folder per archive), with what unpacking
    skipped."""
    if not npd_set.archives:
        return npd_set.roots, Counter()
    from copycat.pools.archives import unpack

    found = sorted(
        {f for r in npd_set.roots if r.is_dir() for p in npd_set.archives for f in r.glob(p)}
    )
    if not found:
        return (), Counter()
    dest = _cache_dir() / "npd-archives" / npd_set.name
    _, skipped = unpack(found, dest, suffixes=npd_set.members, max_depth=npd_set.member_depth)
    return (dest,), skipped


def npd_set_files(
    npd_set: NpdSet,
    *,
    exclude: tuple[str, ...] = (),
    roots: tuple[tuple[Path, ...], Counter[str]] | None = None,
) -> tuple[list[Path], Counter[str]]:
    """The image files of one NPD set that are installed, less those whose path below their
    root (lower-cased) holds a word of ``exclude`` (images of the target's own classes). For
    a set of archives the path starts with the archive's name (``lang/gcompris/...``).
    ``roots``: what :func:`set_roots` gave, if the caller has it already."""
    files: list[Path] = []
    folders, unpacked = roots if roots is not None else set_roots(npd_set)
    skipped = Counter(unpacked)
    for root in folders:
        if not root.is_dir():
            continue
        # a package folder also holds sounds and texts: those are not skipped images
        found, _ = list_images(root)
        kept = exclude_files(found, root, exclude) if exclude else found
        if len(kept) < len(found):
            log.info(
                "npd %s: %d files excluded by %s", npd_set.name, len(found) - len(kept), exclude
            )
        files += kept
    if npd_set.name == "clipart":  # as before the other sets: scikit-image's photos first
        files = skimage_photos() + files
    return files, skipped


def npd_set_source(
    npd_set: NpdSet,
    *,
    shape: tuple[int, int, int],
    max_pixels: int,
    exclude: tuple[str, ...] = (),
    background: Background = "black",
) -> BankSource | None:
    """The bank of one NPD set, or None when none of its files is installed. A procedural
    set is drawn, not read: ``exclude`` does not apply to it (it holds no picture)."""
    if npd_set.kind == "procedural":
        from copycat.pools.procedural import procedural_bank

        drawn, names = procedural_bank(npd_set.name, size=base_size(shape), channels=shape[0])
        return BankSource(npd_set.name, drawn, groups=names)
    roots = set_roots(npd_set)
    files, skipped = npd_set_files(npd_set, exclude=exclude, roots=roots)
    if not files:
        return None
    bank, bad, groups = build_bank(
        files,
        channels=shape[0],
        size=base_size(shape),
        max_pixels=max_pixels,
        object_crop=npd_set.kind == "objects",
        background=background,
        tag=f"npd-{npd_set.name}",
        crops=npd_set.crops,
        roots=roots[0],
    )
    skipped.update(bad)
    if len(bank) == 0:
        return None
    return BankSource(npd_set.name, bank, skipped=skipped, groups=groups)


class WeightedSource:
    """Several sources drawn from by fixed weights, as one source (the sets of ``npd``)."""

    def __init__(self, name: str, sources: list[BankSource], weights: list[float]) -> None:
        self.name = name
        self.sources = sources
        self.weights = torch.tensor(weights, dtype=torch.float64)

    @property
    def skipped(self) -> Counter[str]:
        return total_skipped(self.sources)

    def shares(self) -> list[tuple[str, float]]:
        total = float(self.weights.sum())
        return [(s.name, float(w) / total) for s, w in zip(self.sources, self.weights, strict=True)]

    def reset(self) -> None:
        for s in self.sources:
            s.reset()

    def draw_named(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        which = torch.multinomial(self.weights, n, replacement=True, generator=gen)
        out = torch.empty(n, *self.sources[0].bank.shape[1:], dtype=torch.uint8)
        names = [""] * n
        for i, src in enumerate(self.sources):
            idx = (which == i).nonzero().flatten()
            if len(idx):
                out[idx], got = src.draw_named(len(idx), gen)
                for j, name in zip(idx.tolist(), got, strict=True):
                    names[j] = name
        return out, names


def npd_source(
    *,
    shape: tuple[int, int, int],
    max_pixels: int,
    exclude: tuple[str, ...] = (),
    sets: tuple[str, ...] = (),
    weights: tuple[float, ...] = (),
    background: Background = "black",
) -> BankSource | WeightedSource:
    """The built-in non-problem-domain pool: the installed sets of :data:`NPD_SETS` named in
    ``sets`` (``("all",)``: every one; none: :func:`default_npd_sets` for ``shape``), each
    drawn from equally often, or as often as its entry of ``weights`` (one per named set, in
    the order named). Files whose path holds a word of ``exclude`` are left out (e.g.
    ``clothing`` when the target classifies garments); objects are centred on ``background``
    (:func:`to_base`). The default is the clip-art set (with scikit-image's photos), and for
    grey targets pen strokes beside it: over the suite's validation splits the other sets
    helped some targets and hurt others (docs/suite.md)."""
    sets = sets or default_npd_sets(shape[0])
    names = {s.name for s in NPD_SETS} if "all" in sets else set(sets)
    weight_of = dict(zip(sets, weights, strict=True)) if weights else {}
    chosen = [s for s in NPD_SETS if s.name in names]
    built = [
        src
        for s in chosen
        if (
            src := npd_set_source(
                s, shape=shape, max_pixels=max_pixels, exclude=exclude, background=background
            )
        )
    ]
    missing = [s.package for s in chosen if not s.installed]
    if missing:
        log.warning(
            "NPD images not installed: %s. The pool is poorer without them. Fix: "
            "`apt-get install %s` (or `make setup`), or use --pool folder:PATH",
            ", ".join(missing),
            " ".join(missing),
        )
    if not built:
        raise DataError(
            f"none of the NPD sets {sorted(names)} is installed; run `make setup` "
            "(apt-get install " + " ".join(s.package for s in chosen) + ") or use folder:PATH"
        )
    if len(built) == 1:
        return built[0]
    return WeightedSource("npd", built, [weight_of.get(b.name, 1.0) for b in built])


def parse_npd_arg(arg: str) -> dict[str, tuple[str, ...]]:
    """``exclude=W,W``, ``sets=A,B``, ``weights=W,W`` (with ``sets``) and/or
    ``background=black|white`` joined by ``;`` (``npd:sets=clipart,strokes;weights=3,1``)."""
    out: dict[str, tuple[str, ...]] = {"sets": (), "weights": (), "background": ("black",)}
    seen: set[str] = set()
    for item in filter(None, arg.split(";")):
        key, _, words = item.partition("=")
        if key not in ("exclude", "sets", "weights", "background") or key in seen:
            raise DataError(
                f"pool npd:{arg} is invalid; use npd, npd:exclude=WORD,WORD"
                " or npd:sets=SET,SET;weights=W,W;exclude=WORD;background=black|white"
            )
        seen.add(key)
        out[key] = tuple(w.strip().lower() for w in words.split(",") if w.strip())
    if len(out["background"]) != 1 or out["background"][0] not in BACKGROUNDS:
        raise DataError(
            f"pool npd:{arg}: background={','.join(out['background'])} is unknown; use "
            "background=black (objects on black, the default) or background=white"
        )
    unknown = [s for s in out["sets"] if s not in {n.name for n in NPD_SETS} | {"all"}]
    if unknown or ("sets" in seen and not out["sets"]):
        raise DataError(
            f"pool npd:{arg}: unknown NPD set {unknown or out['sets']}; sets are "
            + ", ".join(n.name for n in NPD_SETS)
            + " or all"
        )
    if "weights" in seen:
        _check_weights(arg, out["sets"], out["weights"])
    return out


def _check_weights(arg: str, sets: tuple[str, ...], weights: tuple[str, ...]) -> None:
    """Refuse ``weights=`` unless it gives one positive number per set named in ``sets``."""
    fix = "give one positive number per set named, e.g. npd:sets=clipart,strokes;weights=3,1"
    if not sets or "all" in sets or len(weights) != len(sets) or len(set(sets)) != len(sets):
        raise DataError(f"pool npd:{arg}: weights= needs the sets named in sets=; {fix}")
    try:
        numbers = [float(w) for w in weights]
    except ValueError:
        raise DataError(
            f"pool npd:{arg}: weights={','.join(weights)} is not numbers; {fix}"
        ) from None
    if not all(math.isfinite(w) and w > 0 for w in numbers):
        raise DataError(f"pool npd:{arg}: weights={','.join(weights)}; {fix}")


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

    def draw_named(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, list[str]]:
        images = torch.randint(0, 256, (n, *self.shape), generator=gen, dtype=torch.uint8)
        return images, [self.name] * n


def build_npd(
    arg: str, *, shape: tuple[int, int, int], max_pixels: int
) -> BankSource | WeightedSource:
    """``npd``: the clip-art set, with pen strokes for grey targets (:func:`default_npd_sets`);
    ``npd:sets=clipart,photos`` (or ``sets=all``) draws equally from those sets,
    ``npd:sets=clipart,strokes;weights=3,1`` three clip-art images to one stroke image;
    ``npd:exclude=WORD,...`` leaves out files whose path holds one of the words (images of the
    target's own classes); ``npd:background=white`` centres objects on white instead of
    black."""
    opts = parse_npd_arg(arg)
    background: Background = "white" if opts["background"] == ("white",) else "black"
    return npd_source(
        shape=shape,
        max_pixels=max_pixels,
        exclude=opts.get("exclude", ()),
        sets=opts["sets"],
        weights=tuple(float(w) for w in opts["weights"]),
        background=background,
    )


def build_folder(arg: str, *, shape: tuple[int, int, int], max_pixels: int) -> FolderSource:
    """``folder:PATH``: every image under PATH, recursively."""
    return FolderSource(arg, shape=shape, max_pixels=max_pixels)


def build_pd(arg: str, *, shape: tuple[int, int, int], max_pixels: int) -> BankSource:
    """``pd:NAME``: a labelled set's images with the labels discarded."""
    return labelled_source(arg, shape=shape)


def build_noise(arg: str, *, shape: tuple[int, int, int], max_pixels: int) -> NoiseSource:
    """``noise``: uniform noise."""
    return NoiseSource(shape=shape)
