"""Labelled image sets: Fashion-MNIST from its original IDX files, and ImageFolder test sets.

Images are held as ``uint8`` tensors of shape (N, C, H, W); labels as ``int64`` (N,).
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


def load_labelled(spec: str, *, input_shape: tuple[int, int, int] | None = None) -> LabelledSet:
    """Parse ``fashion-mnist[:train|test]`` or ``folder:PATH`` and load it."""
    scheme, _, rest = spec.partition(":")
    if scheme == "fashion-mnist":
        return load_fashion_mnist(rest or "test")
    if scheme == "folder":
        if input_shape is None:
            raise ConfigError("folder: test sets need the oracle's input shape")
        return load_image_folder(rest, input_shape=input_shape)
    raise ConfigError(f"unknown test set {spec!r}; use fashion-mnist:test or folder:PATH")
