"""Semi-supervised copycat training beyond the paid answers.

:class:`FixMatch`: semi-supervised training on pool images that were never queried (free):
the copycat's confident predictions on an image become its pseudo-label, and the copycat is
trained to give that label to a strongly augmented view of the image (Sohn et al., 2020).

``fit`` takes a FixMatch object as its ``extra_loss``; it draws from ``fit``'s own generator,
so training stays seeded and resumes exactly.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from copycat.config import TrainConfig
from copycat.errors import CopycatError
from copycat.train.fit import ExtraLoss, shift

log = logging.getLogger(__name__)


def strong_augment(
    x: torch.Tensor, gen: torch.Generator, *, pad: int = 2, cut: int = 10
) -> torch.Tensor:
    """Shifts, a random square cut out, brightness / contrast jitter and pixel noise, per
    sample, batched: images (N, C, H, W) float in [0, 1] -> same shape."""
    n, _, h, w = x.shape
    dev = x.device
    x = shift(x, gen, pad)
    cy = torch.randint(0, h, (n,), generator=gen).to(dev)[:, None, None, None]
    cx = torch.randint(0, w, (n,), generator=gen).to(dev)[:, None, None, None]
    yy = torch.arange(h, device=dev)[None, None, :, None]
    xx = torch.arange(w, device=dev)[None, None, None, :]
    hole = ((yy - cy).abs() <= cut // 2) & ((xx - cx).abs() <= cut // 2)
    x = x.masked_fill(hole, 0.5)
    b = (torch.rand(n, 1, 1, 1, generator=gen).to(dev) - 0.5) * 0.4
    c = 1.0 + (torch.rand(n, 1, 1, 1, generator=gen).to(dev) - 0.5) * 0.6
    noise = torch.randn(x.shape, generator=gen).to(dev) * 0.03
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c + mean + b + noise).clamp(0.0, 1.0)


class FixMatch:
    """The unlabelled loss of one training step (FixMatch with an identity weak view).

    ``unlabelled`` (M, C, H, W) uint8: pool images never queried. Each step draws ``ratio``
    times the labelled batch size of them; those the copycat labels with probability
    >= ``threshold`` count, with ``weight``, toward its loss on their strong views.
    """

    def __init__(
        self,
        unlabelled: torch.Tensor,
        *,
        batch_size: int,
        threshold: float = 0.95,
        weight: float = 1.0,
        ratio: int = 1,
    ) -> None:
        self.unlabelled = unlabelled
        self.batch_size = batch_size * ratio
        self.threshold = threshold
        self.weight = weight
        self.seen = 0
        self.confident = 0

    @property
    def confident_share(self) -> float:
        """Share of the unlabelled images drawn so far that passed the threshold."""
        return self.confident / self.seen if self.seen else 0.0

    def __call__(
        self, model: nn.Module, gen: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        idx = torch.randint(0, len(self.unlabelled), (self.batch_size,), generator=gen)
        xu = self.unlabelled[idx].to(device, non_blocking=True).float().div_(255.0)
        with torch.no_grad():
            conf, pseudo = torch.softmax(model(xu), 1).max(1)
        mask = conf >= self.threshold
        strong = strong_augment(xu, gen)  # drawn for every image, so the stream stays fixed
        self.seen += len(idx)
        self.confident += int(mask.sum())
        if not bool(mask.any()):
            return torch.zeros((), device=device)
        logits = model(strong[mask].contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(logits, pseudo[mask], reduction="sum") / len(idx)
        return loss * self.weight


def semi_loss(config: TrainConfig, unlabelled: torch.Tensor | None) -> ExtraLoss | None:
    """The extra loss ``config.semi`` asks for (None for ``none``), on ``unlabelled`` (M, C, H,
    W) uint8 pool images; refused by name when semi-supervised training has no images."""
    if config.semi == "none":
        return None
    if unlabelled is None or not len(unlabelled):
        raise CopycatError("train.semi='fixmatch' needs unlabelled pool images; none were given")
    log.info("semi-supervised (%s) on %d unqueried pool images", config.semi, len(unlabelled))
    return FixMatch(
        unlabelled,
        batch_size=config.batch_size,
        threshold=config.semi_threshold,
        weight=config.semi_weight,
    )
