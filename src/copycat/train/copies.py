"""The copy trained on a store of answers: one copycat, or under ``[train] ensemble`` several
trained alike on the same answers, whose mean probabilities are the copy.

On a small store the copy's own training seed moves its performance about as much as the
steal's seed does (five copies of one 2,000-answer digits store span up to 0.146), so one copy
is one draw; the mean of several is both stronger and steadier (docs/suite.md, "How much of a
small steal's figure is the copy's own training"). The architecture is chosen once
(copycat.train.choose); member ``i`` trains with seed ``seed + 1000 i``, which also draws its
own held-out share, and checkpoints in its own folder, so an interrupted training resumes
member by member.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from copycat.config import TrainConfig
from copycat.train.checkpoint import load_checkpoint
from copycat.train.choose import ArchChoice, adopt_choice
from copycat.train.fit import FitResult, StepFn, fit, held_out_split
from copycat.train.models import Classifier, Ensemble, init_model
from copycat.train.semi import semi_loss

log = logging.getLogger(__name__)

MEMBER_SEED_STEP = 1000  # member i trains with seed + MEMBER_SEED_STEP * i


def member_config(config: TrainConfig, i: int) -> TrainConfig:
    """The configuration member ``i`` of an ensemble trains with (member 0: ``config``)."""
    return replace(config, seed=config.seed + MEMBER_SEED_STEP * i)


def member_dir(checkpoint_dir: Path, i: int) -> Path:
    """Where member ``i`` checkpoints: member 0 in ``checkpoint_dir`` itself (as a single
    copy does), the others in ``member-<i>`` below it."""
    return checkpoint_dir if i == 0 else checkpoint_dir / f"member-{i}"


@dataclass(frozen=True, slots=True)
class Copy:
    """A trained copy (eval mode), what each member's ``fit`` measured and each member's kept
    epoch (1-based), member 0 first."""

    model: Classifier | Ensemble
    results: list[FitResult]
    best_epochs: list[int]

    @property
    def result(self) -> FitResult:
        """Member 0's result, its seconds the sum over every member's training."""
        return replace(self.results[0], seconds=sum(r.seconds for r in self.results))


def fit_copy(
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    labels: torch.Tensor,
    num_classes: int,
    config: TrainConfig,
    choice: ArchChoice,
    checkpoint_dir: Path,
    on_step: StepFn | None = None,
    unlabelled: torch.Tensor | None = None,
) -> Copy:
    """Train the copy of ``choice.arch`` on ``images`` (N, C, H, W) uint8 with ``targets``
    (hard (N,) or soft (N, K), in query order): ``config.copies_for(N)`` members, each keeping
    its epoch of best agreement with ``labels`` (N,) (the hard answers) on its held-out share.
    Member 0 adopts the chosen candidate's training when it is exactly its own
    (:func:`~copycat.train.choose.adopt_choice`). ``unlabelled``: pool images for
    ``config.semi``."""
    n = config.copies_for(len(images))
    config = replace(config, arch=choice.arch)
    members: list[Classifier] = []
    results: list[FitResult] = []
    best_epochs: list[int] = []
    for i in range(n):
        cfg = member_config(config, i)
        folder = member_dir(checkpoint_dir, i)
        if n > 1:
            log.info("copy %d of %d (seed %d)", i + 1, n, cfg.seed)
        val_idx, tr_idx = held_out_split(len(images), config=cfg)
        model = init_model(choice.arch, images, num_classes=num_classes, seed=cfg.seed)
        extra = semi_loss(cfg, unlabelled)
        adopted = adopt_choice(choice, folder, extra_loss=extra) if i == 0 else None
        result = adopted or fit(
            model,
            images[tr_idx],
            targets[tr_idx],
            config=cfg,
            val=(images[val_idx], labels[val_idx]) if len(val_idx) else None,
            checkpoint_dir=folder,
            on_step=on_step,
            extra_loss=extra,
        )
        best = load_checkpoint(folder / "best.pt")
        model.load_state_dict(best["model"])
        members.append(model.cpu().eval())
        results.append(result)
        best_epochs.append(int(best["epoch"]) + 1)
    if n > 1:
        log.info(
            "ensemble of %d copies; held-out agreement of each: %s",
            n,
            ", ".join(f"{r.best_val_agreement or 0.0:.3f}" for r in results),
        )
    copy = members[0] if n == 1 else Ensemble(members).eval()
    return Copy(copy, results, best_epochs)
