"""Shared fixtures: a seeded tiny victim with a learnable rule, seeded PNG folders, a tiny
Fashion-MNIST in IDX format, and oracles that count or fail. Nothing downloads; nothing trains
at import time."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from copycat.config import TrainConfig
from copycat.data.datasets import LabelledSet
from copycat.oracles.base import Answer, Oracle, OracleWrapper
from copycat.oracles.local import TorchOracle
from copycat.steal.store import image_id

torch.set_num_threads(1)
SHAPE = (1, 28, 28)
NUM_CLASSES = 10


def rule_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, 28, 28) uint8 images whose label is the cell (of a 2 x 5 grid) holding the
    brightest blob: a rule a small CNN learns in one epoch."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n)
    imgs = rng.integers(0, 60, (n, 1, 28, 28)).astype(np.uint8)
    for i, lab in enumerate(labels):
        r, c = divmod(int(lab), 5)
        y = 2 + r * 13 + rng.integers(0, 4)
        x = 1 + c * 5 + rng.integers(0, 2)
        imgs[i, 0, y : y + 8, x : x + 3] = rng.integers(180, 256)
    return torch.from_numpy(imgs), torch.from_numpy(labels.astype(np.int64))


def rule_set(n: int, seed: int, name: str) -> LabelledSet:
    images, labels = rule_images(n, seed)
    return LabelledSet(
        images=images,
        labels=labels,
        class_names=tuple(f"c{i}" for i in range(NUM_CLASSES)),
        name=name,
    )


@pytest.fixture(scope="session")
def victim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real target folder (safetensors + card + ONNX) trained on the rule in seconds."""
    from copycat.targets.publish import train_target

    out = tmp_path_factory.mktemp("victim")
    train_target(
        rule_set(3000, 0, "rule:train"),
        rule_set(500, 1, "rule:test"),
        out=out,
        config=TrainConfig(
            arch="cnn-tiny",
            epochs=2,
            lr=1e-2,
            balance=False,
            val_fraction=0.0,
            batch_size=64,
            device="cpu",
        ),
    )
    return out


@pytest.fixture
def victim(victim_dir: Path) -> TorchOracle:
    return TorchOracle(victim_dir)


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


@pytest.fixture(scope="session")
def tiny_fmnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Fashion-MNIST stand-in in the original IDX format (the rule, 10 classes)."""
    root = tmp_path_factory.mktemp("fmnist")
    for split, n, seed in (("train", 2000, 10), ("t10k", 400, 11)):
        images, labels = rule_images(n, seed)
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images.squeeze(1).numpy())
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels.numpy())
    return root


@pytest.fixture
def fmnist_env(tiny_fmnist: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("COPYCAT_DATA", str(tiny_fmnist))
    monkeypatch.setenv("COPYCAT_CACHE", str(tmp_path / "cache"))
    return tiny_fmnist


@pytest.fixture
def png_folder(tmp_path: Path) -> Path:
    """Seeded images in many modes and formats, plus files that must be skipped."""
    rng = np.random.default_rng(0)
    root = tmp_path / "pool"
    (root / "sub").mkdir(parents=True)
    for i in range(12):
        arr = rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / f"rgb{i}.png")
    Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8)).save(root / "gray.jpg")
    Image.fromarray(rng.integers(0, 256, (30, 30, 4), dtype=np.uint8), "RGBA").save(
        root / "sub" / "rgba.png"
    )
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).convert("P").save(
        root / "sub" / "palette.gif"
    )
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).convert("CMYK").save(
        root / "cmyk.jpg"
    )
    Image.fromarray(rng.integers(0, 65535, (30, 30), dtype=np.uint16)).save(root / "deep.png")
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(root / "img.webp")
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(root / "img.bmp")
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(root / "img.tiff")
    good = (root / "rgb0.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    # seeded: unseeded bytes were now and then read as a PNG with bad chunks ("corrupt")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(200))
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    (root / "fake.png").write_text("plain text with an image suffix")
    return root


class RecordingOracle(OracleWrapper):
    """Wraps an oracle and records the id of every image it is asked about."""

    def __init__(self, inner: Oracle) -> None:
        super().__init__(inner)
        self.queried: list[str] = []
        self.batches = 0

    def query(self, images: torch.Tensor) -> Answer:
        u8 = images.mul(255).round().to(torch.uint8)
        self.queried += [image_id(img) for img in u8]
        self.batches += 1
        return self.inner.query(images)


class FailingOracle(RecordingOracle):
    """Answers ``fail_after`` batches, then raises like a dead server."""

    def __init__(self, inner: Oracle, fail_after: int) -> None:
        super().__init__(inner)
        self.fail_after = fail_after

    def query(self, images: torch.Tensor) -> Answer:
        if self.batches >= self.fail_after:
            from copycat.errors import OracleUnavailableError

            raise OracleUnavailableError("oracle went away (test)")
        return super().query(images)
