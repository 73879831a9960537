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
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from copycat.config import TrainConfig
from copycat.errors import StaleCheckpointError
from copycat.train.checkpoint import load_checkpoint, save_checkpoint
from copycat.train.fit import ExtraLoss, FitResult, StepFn, fit, held_out_split
from copycat.train.models import auto_candidates, init_model, is_auto

log = logging.getLogger(__name__)

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
    # The chosen candidate's checkpoints folder and result when its training is exactly the
    # copy's own (a store of at most CHOOSE_ANSWERS answers): see adopt_choice.
    exact: tuple[Path, FitResult] | None = None


def choose_arch(
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    num_classes: int,
    config: TrainConfig,
    labels: torch.Tensor | None = None,
    checkpoint_dir: Path | None = None,
    on_step: StepFn | None = None,
) -> ArchChoice:
    """``config.arch``, or for an ``auto`` one the architecture to train on ``images`` (N, C,
    H, W) uint8 with ``targets`` (hard (N,) or soft (N, K), in query order): whichever of its
    candidates (:func:`~copycat.train.models.auto_candidates`; ``auto``: ``cnn-wide`` alone
    for colour images) agrees more with the held-out answers after training on the first
    :data:`CHOOSE_ANSWERS`, scored on their held-out share and the answers after them (the
    first candidate when there are none). Supervised only: semi-supervised options apply to
    the final copy alone.

    ``labels``: the hard answers (N,) the candidates are scored against, as the copy's own
    training scores them (default the targets' top-1). ``checkpoint_dir``: each candidate
    checkpoints in ``choose-<arch>`` below it, so an interrupted choice resumes, and on a
    store of at most :data:`CHOOSE_ANSWERS` answers the chosen candidate's training is
    returned in ``exact`` for :func:`adopt_choice`. ``on_step`` follows each candidate's
    training in turn."""
    if not is_auto(config.arch):
        return ArchChoice(config.arch)
    candidates = auto_candidates(config.arch, channels=int(images.shape[1]))
    if len(candidates) == 1:
        return ArchChoice(candidates[0])
    m = min(len(images), CHOOSE_ANSWERS)
    held, tr_idx = held_out_split(m, config=config)
    later = torch.arange(m, min(len(images), m + max(0, CHOOSE_SCORED - len(held))))
    val_idx = torch.cat([held, later])
    if len(val_idx) == 0:
        log.info("arch auto: nothing held out to choose on; training %s", candidates[0])
        return ArchChoice(candidates[0])
    hard = labels if labels is not None else targets.argmax(1) if targets.ndim == 2 else targets
    heldout: dict[str, float] = {}
    results: dict[str, FitResult] = {}
    for arch in candidates:
        log.info(
            "arch auto: trying %s on %d of the first %d answers, scored on %d others",
            arch,
            len(tr_idx),
            m,
            len(val_idx),
        )
        folder = None if checkpoint_dir is None else checkpoint_dir / f"choose-{arch}"
        # trained as the copy of this architecture would be, no extra loss: the candidates
        # are compared supervised
        result = _fit_candidate(
            init_model(arch, images[:m], num_classes=num_classes, seed=config.seed),
            images[tr_idx],
            targets[tr_idx],
            config=replace(config, arch=arch),
            val=(images[val_idx], hard[val_idx]),
            folder=folder,
            on_step=on_step,
        )
        heldout[arch] = float(result.best_val_agreement or 0.0)
        results[arch] = result
    best = max(candidates, key=lambda a: (heldout[a], -candidates.index(a)))
    log.info(
        "arch auto: %s (agreement on %d answers neither trained on: %s)",
        best,
        len(val_idx),
        ", ".join(f"{a} {v:.3f}" for a, v in heldout.items()),
    )
    exact = None
    if checkpoint_dir is not None and m == len(images):
        exact = (checkpoint_dir / f"choose-{best}", results[best])
    return ArchChoice(best, heldout, trained=len(tr_idx), scored=len(val_idx), exact=exact)


def _fit_candidate(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    config: TrainConfig,
    val: tuple[torch.Tensor, torch.Tensor],
    folder: Path | None,
    on_step: StepFn | None,
) -> FitResult:
    """``fit``, resuming a candidate's own checkpoints; those of other answers or another
    configuration (the store grew, a setting changed) are a stale cache, retrained."""

    def train() -> FitResult:
        return fit(
            model, images, targets, config=config, val=val, checkpoint_dir=folder, on_step=on_step
        )

    try:
        return train()
    except StaleCheckpointError as exc:  # not a disk error: that one names its own fix
        if folder is None:
            raise
        log.warning("arch auto: retraining the candidate in %s (%s)", folder, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return train()


def adopt_choice(
    choice: ArchChoice, checkpoint_dir: Path, *, extra_loss: ExtraLoss | None
) -> FitResult | None:
    """The chosen candidate as the copy, when its training was exactly the copy's own (same
    answers, held-out share, seed and settings, and no ``extra_loss`` for the copy: the
    candidates train without one): its ``best.pt`` and ``last.pt`` go to ``checkpoint_dir``
    and its result is returned, so the copy is not trained twice. ``None`` when the copy must
    be trained."""
    if choice.exact is None or extra_loss is not None:
        return None
    folder, result = choice.exact
    log.info("arch auto: the %s candidate, trained on these answers, is the copy", choice.arch)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    # best.pt first: a kill between the two leaves no last.pt, so a rerun chooses again (the
    # candidates resume at their last epoch) rather than resuming a copy without its best.pt
    save_checkpoint(checkpoint_dir / "best.pt", load_checkpoint(folder / "best.pt"))
    (folder / "last.pt").replace(checkpoint_dir / "last.pt")
    return result


def drop_candidates(checkpoint_dir: Path) -> None:
    """Delete the candidates' checkpoints once the copy is saved: a rerun resumes the copy."""
    for folder in checkpoint_dir.glob("choose-*"):
        shutil.rmtree(folder, ignore_errors=True)
