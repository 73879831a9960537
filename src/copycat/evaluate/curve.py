"""The budget curve of one run: copycats trained on prefixes of the fake dataset (in query
order), each scored against the oracle, so an auditor reads how many queries a thief needs to
reach 0.90 or 0.95 of the target.

Each prefix is trained as ``copycat train`` trains the whole store: the same configuration, a
held-out share of the prefix choosing the best epoch.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from copycat.config import TrainConfig
from copycat.data.datasets import LabelledSet
from copycat.devices import resolve_device
from copycat.errors import ConfigError
from copycat.evaluate.evaluate import oracle_labels
from copycat.evaluate.metrics import classification_metrics
from copycat.oracles.base import Oracle
from copycat.runs import write_atomic
from copycat.train.choose import choose_arch
from copycat.train.copies import fit_copy
from copycat.train.fit import FitResult, predict

log = logging.getLogger(__name__)

DEFAULT_BUDGETS = (1_000, 2_000, 5_000, 10_000, 20_000)
GOALS = (0.90, 0.95)


@dataclass(frozen=True, slots=True, kw_only=True)
class CurvePoint:
    """A copycat trained on the first ``answers`` answers, scored on the test set."""

    answers: int
    copycat_accuracy: float
    performance_accuracy: float
    performance_macro_f1: float
    agreement: float
    train_seconds: float
    # agreement with the target's answers on the held-out share of the prefix (what a thief
    # sees without labelled images of the task); None when nothing is held out
    heldout_agreement: float | None = None
    arch: str = ""  # the copy's architecture ("auto" resolved)


class PrefixFit(NamedTuple):
    """A copycat trained by :func:`fit_prefix`, what ``fit`` measured, and its architecture."""

    model: torch.nn.Module
    result: FitResult
    arch: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetCurve:
    """What ``curve.json`` holds. ``queries_to`` maps each goal (``"0.90"``) to the smallest
    measured budget whose performance (accuracy) reaches it, or None if none does."""

    test_set: str
    test_size: int
    target_accuracy: float
    answered: int
    points: list[CurvePoint]
    queries_to: dict[str, int | None] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), indent=2) + "\n")


def parse_budgets(text: str) -> tuple[int, ...]:
    """``1k,2k,5000`` -> (1000, 2000, 5000), sorted and unique; refuses anything else."""
    out: set[int] = set()
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(part[:-1]) * 1000 if part.endswith("k") else float(part)
        except ValueError as exc:
            raise ConfigError(
                f"--budgets {text!r} is invalid; accepted: counts like 1k,2k,5000"
            ) from exc
        if value < 1 or value != int(value):
            raise ConfigError(f"--budgets {text!r}: {part!r} is not a whole count >= 1")
        out.add(int(value))
    if not out:
        raise ConfigError(f"--budgets {text!r} names no budget; e.g. 1k,2k,5k,10k,20k")
    return tuple(sorted(out))


def queries_to_reach(points: list[CurvePoint], goal: float) -> int | None:
    """The fewest answers among ``points`` whose performance (accuracy) is at least ``goal``."""
    hits = [p.answers for p in points if p.performance_accuracy >= goal]
    return min(hits) if hits else None


def fit_prefix(
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    num_classes: int,
    config: TrainConfig,
    unlabelled: torch.Tensor | None = None,
) -> PrefixFit:
    """Train a copycat on ``images`` (N, C, H, W) uint8 with ``targets`` (hard (N,) or soft
    (N, K)), and on ``unlabelled`` pool images when ``config.semi`` asks for them, as the train
    stage does (an ensemble of ``config.copies_for(N)`` copies: copycat.train.copies); the
    epoch of best held-out agreement is returned, with what ``fit`` measured (member 0's, its
    seconds summed over the members)."""
    hard = targets.argmax(1) if targets.ndim == 2 else targets
    with tempfile.TemporaryDirectory(prefix="copycat-curve-") as tmp:
        folder = Path(tmp)
        choice = choose_arch(
            images, targets, num_classes=num_classes, config=config, checkpoint_dir=folder
        )
        copy = fit_copy(
            images,
            targets,
            labels=hard,
            num_classes=num_classes,
            config=config,
            choice=choice,
            checkpoint_dir=folder,
            unlabelled=unlabelled,
        )
    model, result, arch = copy.model, copy.result, choice.arch
    return PrefixFit(model, result, arch)


def budget_curve(
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    num_classes: int,
    budgets: tuple[int, ...],
    test_set: LabelledSet,
    oracle: Oracle,
    config: TrainConfig,
    on_point: Callable[[CurvePoint], None] | None = None,
    unlabelled: torch.Tensor | None = None,
) -> BudgetCurve:
    """Train and score a copycat on each prefix of the answers ``images`` (N, C, H, W) uint8
    with ``targets`` (N,) int64 or (N, K) float32, in query order. Budgets beyond N are
    dropped with a warning; if none is left, the whole store is one point. ``unlabelled``:
    unqueried pool images for ``config.semi`` (every prefix trains on the same ones)."""
    n = len(images)
    if len(test_set.class_names) != num_classes:
        raise ConfigError(
            f"test set {test_set.name} has {len(test_set.class_names)} classes, the oracle "
            f"{num_classes}; use the test set of the oracle's task"
        )
    kept = tuple(b for b in budgets if b <= n)
    if len(kept) < len(budgets):
        log.warning("budgets above the %d answers in the store are skipped", n)
    kept = kept or (n,)
    device = resolve_device(config.device)
    target_pred = oracle_labels(oracle, test_set.images)
    t = classification_metrics(test_set.labels, target_pred, num_classes=num_classes)
    points: list[CurvePoint] = []
    for b in kept:
        model, fitted, arch = fit_prefix(
            images[:b], targets[:b], num_classes=num_classes, config=config, unlabelled=unlabelled
        )
        pred = predict(model.to(device), test_set.images, device=device).argmax(1)
        c = classification_metrics(test_set.labels, pred, num_classes=num_classes)
        point = CurvePoint(
            answers=b,
            copycat_accuracy=c.accuracy,
            performance_accuracy=c.accuracy / t.accuracy if t.accuracy > 0 else float("nan"),
            performance_macro_f1=c.macro_f1 / t.macro_f1 if t.macro_f1 > 0 else float("nan"),
            agreement=float((pred == target_pred).float().mean()),
            train_seconds=fitted.seconds,
            heldout_agreement=fitted.best_val_agreement,
            arch=arch,
        )
        log.info(
            "curve: %d answers, performance %.4f, agreement %.4f",
            b,
            point.performance_accuracy,
            point.agreement,
        )
        points.append(point)
        if on_point is not None:
            on_point(point)
    return BudgetCurve(
        test_set=test_set.name,
        test_size=len(test_set),
        target_accuracy=t.accuracy,
        answered=n,
        points=points,
        queries_to={f"{g:.2f}": queries_to_reach(points, g) for g in GOALS},
    )
