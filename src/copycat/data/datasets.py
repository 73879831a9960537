"""Labelled image sets: Fashion-MNIST from its original IDX files, ImageFolder trees, and the
``NAME:SPLIT`` parser every stage uses (names from :data:`copycat.data.registry.DATASETS`).

Images are held as ``uint8`` tensors of shape (N, C, H, W); labels as ``int64`` (N,). Every named
set has ``train``, ``val`` and ``test`` splits; ``val`` is carved from the training data with a
fixed seed (never from the test split) and ``train`` is what remains.
"""

from __future__ import annotations

import gzip
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from copycat.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True, slots=True)
class LabelledSet:
    """A labelled image set held in memory."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    class_names: tuple[str, ...]
    name: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def fashion_mnist_roots(root: str | Path | None = None) -> list[Path]:
    """Folders searched for the IDX files, in order."""
    candidates: list[Path] = []
    if root is not None:
        candidates.append(Path(root))
    if env := os.environ.get("COPYCAT_DATA"):
        candidates.append(Path(env))
    candidates += [DEBIAN_FASHION_MNIST, Path("data")]
    roots: list[Path] = []
    for c in candidates:
        # torchvision keeps the raw files under <root>/FashionMNIST/raw
        roots += [c, c / "fashion-mnist", c / "FashionMNIST" / "raw"]
    return roots


def _find_idx(roots: list[Path], stem: str) -> Path | None:
    for r in roots:
        for name in (stem, stem + ".gz"):
            if (r / name).is_file():
                return r / name
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file; re-download it")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise DataError(
            f"{path} is truncated ({len(raw) - offset} of {expected} bytes); re-download it"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def load_fashion_mnist(split: str = "train", *, root: str | Path | None = None) -> LabelledSet:
    """Fashion-MNIST from its IDX files (Debian's package, a torchvision root or COPYCAT_DATA)."""
    if split not in _IDX_FILES:
        raise ConfigError(f"fashion-mnist split {split!r} is unknown; use 'train' or 'test'")
    roots = fashion_mnist_roots(root)
    img_stem, lbl_stem = _IDX_FILES[split]
    img_path, lbl_path = _find_idx(roots, img_stem), _find_idx(roots, lbl_stem)
    if img_path is None or lbl_path is None:
        raise DataError(
            "Fashion-MNIST IDX files not found (looked in "
            + ", ".join(str(r) for r in roots[:6])
            + ", ...). Fix: `apt-get install dataset-fashion-mnist` on Debian/Ubuntu, or download "
            "the four *-ubyte.gz files into a folder and set COPYCAT_DATA to it "
            "(torchvision.datasets.FashionMNIST(root, download=True) also works)."
        )
    images = read_idx(img_path)
    labels = read_idx(lbl_path)
    if images.ndim != 3 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{img_path} and {lbl_path} do not match; re-download them")
    log.info("loaded fashion-mnist %s: %d images from %s", split, len(labels), img_path.parent)
    return LabelledSet(
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=FASHION_MNIST_CLASSES,
        name=f"fashion-mnist:{split}",
    )


def load_image_folder(path: str | Path, *, input_shape: tuple[int, int, int]) -> LabelledSet:
    """An ImageFolder-layout set (one sub-folder per class, sorted names = class indices),
    converted to ``input_shape`` (C, H, W). Unreadable files are skipped and logged."""
    from copycat.data.imageio import ImageDecodeError, decode_image, fit_to_shape

    root = Path(path)
    if not root.is_dir():
        raise DataError(
            f"test-set folder {root} does not exist; pass folder:PATH to a folder "
            "with one sub-folder per class"
        )
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise DataError(
            f"{root} has no class sub-folders; use the ImageFolder layout (root/<class>/<image>)"
        )
    images, labels, skipped = [], [], 0
    for idx, cls in enumerate(classes):
        for f in sorted((root / cls).rglob("*")):
            if not f.is_file() or f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                img = decode_image(f)
            except ImageDecodeError as exc:
                skipped += 1
                log.warning("skipped %s: %s", f, exc)
                continue
            images.append(fit_to_shape(img, input_shape))
            labels.append(idx)
    if not images:
        raise DataError(f"no readable images under {root}")
    if skipped:
        log.warning("%d unreadable files skipped in %s", skipped, root)
    return LabelledSet(
        images=torch.stack(images),
        labels=torch.tensor(labels, dtype=torch.int64),
        class_names=tuple(classes),
        name=f"folder:{root}",
    )


SPLITS = ("train", "val", "test")
# Fixed, so that a validation split is the same images in every run, on every machine.
SPLIT_SEED = 20_261_127
VAL_FRACTION = 0.1


def carve(
    labels: torch.Tensor, *, val: float, test: float = 0.0, seed: int = SPLIT_SEED
) -> dict[str, torch.Tensor]:
    """Stratified, seeded split of positions 0..N-1 into ``train``, ``val`` and ``test``.

    Per class, a share ``val`` (and ``test``) of its images, rounded, goes to that split; the
    rest to ``train``. The result depends only on ``labels`` and ``seed``. Returns sorted
    int64 index tensors."""
    rng = np.random.default_rng(seed)
    lab = labels.numpy()
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in np.unique(lab):
        idx = rng.permutation(np.flatnonzero(lab == c))
        n_test, n_val = round(len(idx) * test), round(len(idx) * val)
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    return {
        s: torch.from_numpy(np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64)).long()
        for s, p in parts.items()
    }


def subset(ds: LabelledSet, idx: torch.Tensor, *, name: str) -> LabelledSet:
    """The images of ``ds`` at positions ``idx`` (N,) int64, renamed."""
    return LabelledSet(
        images=ds.images[idx], labels=ds.labels[idx], class_names=ds.class_names, name=name
    )


def check_split(dataset: str, split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(
            f"{dataset} split {split!r} is unknown; use {dataset}:train, {dataset}:val "
            f"or {dataset}:test"
        )


def fashion_mnist_split(
    split: str, *, input_shape: tuple[int, int, int] | None = None
) -> LabelledSet:
    """``fashion-mnist:train|val|test``: val is a seeded tenth of the 60,000 training images."""
    check_split("fashion-mnist", split)
    if split == "test":
        return load_fashion_mnist("test")
    full = load_fashion_mnist("train")
    idx = carve(full.labels, val=VAL_FRACTION)[split]
    return subset(full, idx, name=f"fashion-mnist:{split}")


def folder_split(path: str | Path, split: str, *, input_shape: tuple[int, int, int]) -> LabelledSet:
    """A split of a user's ImageFolder tree: seeded, stratified 70% train, 10% val, 20% test."""
    check_split("folder", split)
    full = load_image_folder(path, input_shape=input_shape)
    idx = carve(full.labels, val=VAL_FRACTION, test=0.2)[split]
    if len(idx) == 0:
        raise DataError(
            f"{full.name} has too few images for a {split} split; add images to each class"
        )
    return subset(full, idx, name=f"{full.name}:{split}")


def load_labelled(spec: str, *, input_shape: tuple[int, int, int] | None = None) -> LabelledSet:
    """Parse ``NAME[:train|val|test]`` (a name of ``DATASETS``; test by default) or
    ``folder:PATH`` (a whole ImageFolder tree) and load it."""
    from copycat.data.registry import DATASETS

    scheme, _, rest = spec.partition(":")
    if scheme == "folder":
        if input_shape is None:
            raise ConfigError("folder: test sets need the oracle's input shape")
        return load_image_folder(rest, input_shape=input_shape)
    if scheme not in DATASETS:
        raise ConfigError(f"unknown labelled set {spec!r}; use {DATASETS.usages()} or folder:PATH")
    split = rest or "test"
    check_split(scheme, split)
    loaded: LabelledSet = DATASETS.get(scheme)(split, input_shape=input_shape)
    return loaded
