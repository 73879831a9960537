"""The demo's target ships in the repository (``targets/fmnist``): it must load without
running code, be the very weights the README's figures were measured on, and classify."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from copycat.errors import CopycatError
from copycat.oracles.local import WEIGHTS_NAME, TorchOracle, file_digest

SHIPPED = Path(__file__).resolve().parents[1] / "targets" / "fmnist"
# `copycat target train --dataset fashion-mnist --out targets/fmnist` (6 epochs, seed 0) on
# this project's machine: the target of the README's demo and of the suite's Fashion-MNIST rows
SHA256 = "e2e19b2ef648088da6349c45335c2a0952bc54357dd1044ee19651c9e3f82eb3"


def test_the_shipped_demo_target_is_the_measured_one() -> None:
    weights = SHIPPED / WEIGHTS_NAME
    # a Git LFS pointer or a truncated checkout is a few hundred bytes, not 3.3 MB
    assert weights.stat().st_size > 1_000_000, "targets/fmnist/model.safetensors is not the model"
    assert file_digest(weights) == SHA256
    oracle = TorchOracle(SHIPPED)
    assert oracle.input_shape == (1, 28, 28) and oracle.num_classes == 10
    assert oracle.card.test_accuracy == pytest.approx(0.9118)


def test_the_shipped_demo_target_classifies_fashion_mnist() -> None:
    from copycat.data.datasets import load_fashion_mnist

    try:
        test = load_fashion_mnist("test")
    except CopycatError as exc:  # no IDX files on this machine
        pytest.skip(f"Fashion-MNIST is not installed ({exc})")
    images, labels = test.images[:500], test.labels[:500]
    answer = TorchOracle(SHIPPED).query(images)
    accuracy = float((answer.labels == labels).float().mean())
    assert accuracy > 0.85, accuracy
    # and not by chance: shuffled labels score near a tenth
    shuffled = labels[torch.randperm(500, generator=torch.Generator().manual_seed(0))]
    assert float((answer.labels == shuffled).float().mean()) < 0.3
