"""The copycat's architecture under ``[train] arch = "auto"``, chosen on the answers.

Colour images get ``cnn-wide``. For grey ones neither candidate wins everywhere: ``cnn-small``
is far ahead on a small store of a two-block target (digits at 2,000 answers) and
``cnn-wide`` ahead on a three-block target (Fashion-MNIST's ``fmnist-wide`` check at 5,000),
and a thief does not know the target's architecture. So both are trained on the first
:data:`CHOOSE_ANSWERS` answers, with the held-out share the copy itself uses, and the one
that agrees more with the target on the answers neither saw is kept: that held-out share
and, in a larger store, the answers after the first :data:`CHOOSE_ANSWERS`, up to
:data:`CHOOSE_SCORED` in all (docs/suite.md, "The copy's architecture on targets it does not
match").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from copycat.config import TrainConfig
from copycat.train.fit import fit, held_out_split
from copycat.train.models import AUTO_ARCH, init_model, resolve_arch

log = logging.getLogger(__name__)

# The candidates for grey images, cheapest first (it wins a tie).
GREY_CANDIDATES = ("cnn-small", "cnn-wide")
# The answers both candidates train on: a choice costs about as much as training both on a
# 5,000-answer store, whatever the store's size.
CHOOSE_ANSWERS = 5_000
# The most answers the candidates are scored on. The 500 held out of the first 5,000 answers
# score a copy to about +-0.02, so a larger store adds the answers after them.
CHOOSE_SCORED = 5_000


@dataclass(frozen=True, slots=True)
class ArchChoice:
    """The architecture to train, and each candidate's held-out agreement when it was chosen
    among several (empty when there was no choice to make)."""

    arch: str
    heldout: dict[str, float] = field(default_factory=dict)
    trained: int = 0  # answers each candidate trained on
    scored: int = 0  # answers neither candidate trained on, each candidate's score


def choose_arch(
    images: torch.Tensor, targets: torch.Tensor, *, num_classes: int, config: TrainConfig
) -> ArchChoice:
    """``config.arch``, or for ``auto`` the architecture to train on ``images`` (N, C, H, W)
    uint8 with ``targets`` (hard (N,) or soft (N, K), in query order): ``cnn-wide`` for colour
    images; for grey ones whichever of :data:`GREY_CANDIDATES` agrees more with the held-out
    answers after training on the first :data:`CHOOSE_ANSWERS`, scored on their held-out
    share and the answers after them (``cnn-small`` when there are none). Supervised
    only: semi-supervised options apply to the final copy alone."""
    channels = int(images.shape[1])
    if config.arch != AUTO_ARCH or channels == 3:
        return ArchChoice(resolve_arch(config.arch, channels=channels))
    m = min(len(images), CHOOSE_ANSWERS)
    held, tr_idx = held_out_split(m, config=config)
    later = torch.arange(m, min(len(images), m + max(0, CHOOSE_SCORED - len(held))))
    val_idx = torch.cat([held, later])
    if len(val_idx) == 0:
        log.info("arch auto: nothing held out to choose on; training %s", GREY_CANDIDATES[0])
        return ArchChoice(GREY_CANDIDATES[0])
    hard = targets.argmax(1) if targets.ndim == 2 else targets
    heldout: dict[str, float] = {}
    for arch in GREY_CANDIDATES:
        log.info(
            "arch auto: trying %s on %d of the first %d answers, scored on %d others",
            arch,
            len(tr_idx),
            m,
            len(val_idx),
        )
        model = init_model(arch, images[:m], num_classes=num_classes, seed=config.seed)
        result = fit(
            model,
            images[tr_idx],
            targets[tr_idx],
            config=config,
            val=(images[val_idx], hard[val_idx]),
        )  # no extra loss: the candidates are compared supervised
        heldout[arch] = float(result.best_val_agreement or 0.0)
    best = max(GREY_CANDIDATES, key=lambda a: (heldout[a], -GREY_CANDIDATES.index(a)))
    log.info(
        "arch auto: %s (agreement on %d answers neither trained on: %s)",
        best,
        len(val_idx),
        ", ".join(f"{a} {v:.3f}" for a, v in heldout.items()),
    )
    return ArchChoice(best, heldout, trained=len(tr_idx), scored=len(val_idx))
