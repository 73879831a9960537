"""The core abstraction every stage speaks: an :class:`Oracle` answers a batch of images.

A backend owns its preprocessing (the target's normalisation travels inside its weights), takes
float images in [0, 1] of shape (N, C, H, W) and answers with labels and, unless restricted,
probabilities. Wrappers (:class:`OracleWrapper`) restrict outputs, add defences or observe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from copycat.errors import OracleError


@dataclass(frozen=True, slots=True)
class Answer:
    """What the oracle said about a batch. labels always; probs only if the target exposes them."""

    labels: torch.Tensor  # (N,) int64
    probs: torch.Tensor | None = None  # (N, K) float32, rows sum to 1


@runtime_checkable
class Oracle(Protocol):
    """A black-box classifier that we may only query."""

    @property
    def num_classes(self) -> int: ...
    @property
    def input_shape(self) -> tuple[int, int, int]: ...  # (C, H, W) the target expects
    @property
    def fingerprint(self) -> str: ...  # resume refuses another oracle
    def query(self, images: torch.Tensor) -> Answer: ...  # (N, C, H, W) float in [0, 1]


def check_images(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Validate a query batch and resize it to ``shape``; returns float32 (N, C, H, W)."""
    if images.ndim != 4:
        raise OracleError(f"query images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[1] != shape[0]:
        raise OracleError(
            f"the oracle takes {shape[0]}-channel images, got {images.shape[1]}; "
            "let the pool convert channels to the oracle's input shape"
        )
    images = images.float()
    if images.shape[-2:] != shape[1:]:
        images = F.interpolate(
            images, size=shape[1:], mode="bilinear", antialias=True, align_corners=False
        )
    return images.clamp_(0.0, 1.0)


class OracleWrapper:
    """Base of oracles that wrap another: delegates everything but ``query``. ``tag`` names
    what the wrapper changes in the answers and joins the fingerprint; ``None`` (a wrapper
    that only observes, e.g. one that counts queries) keeps the inner fingerprint."""

    tag: str | None = None

    def __init__(self, inner: Oracle) -> None:
        self.inner = inner

    @property
    def num_classes(self) -> int:
        return self.inner.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.inner.input_shape

    @property
    def fingerprint(self) -> str:
        inner = self.inner.fingerprint
        return inner if self.tag is None else f"{inner}|{self.tag}"

    def query(self, images: torch.Tensor) -> Answer:
        return self.inner.query(images)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
