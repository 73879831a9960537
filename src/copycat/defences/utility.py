"""What a defence costs a benign user, measured: the defended target's answers on its own
labelled test set against the undefended target's.

Benign traffic is the test set sent in order, in batches, as one client; a detector that
raises its alarm on it is a false alarm (and, with ``action=block``, the benign user is cut
off: the unanswered rest counts as wrong).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from copycat.data.datasets import LabelledSet
from copycat.defences.base import QueryRefused, as_client
from copycat.defences.registry import defence_layers
from copycat.oracles.base import Oracle

BENIGN_CLIENT = "benign"


@dataclass(frozen=True, slots=True)
class Utility:
    """The measured cost of a defence to benign users (fractions in [0, 1])."""

    accuracy: float  # the defended target's accuracy on the test set
    undefended_accuracy: float
    agreement: float  # share of test images with the same top-1 label as undefended
    mean_l1: float | None  # mean L1 distance of the probabilities (None: labels only)
    answered: float  # share of benign queries answered (a blocking detector may refuse)
    false_alarm_at: int | None  # benign queries sent when a detector fired (None: no alarm)
    images: int

    @property
    def accuracy_cost(self) -> float:
        return self.undefended_accuracy - self.accuracy

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy_cost": self.accuracy_cost}


def measure(
    defended: Oracle,
    undefended: Oracle,
    test_set: LabelledSet,
    *,
    batch_size: int = 256,
    limit: int | None = None,
) -> Utility:
    """Send ``test_set`` (its first ``limit`` images) to both oracles and compare."""
    images = test_set.images[:limit] if limit else test_set.images
    truth = test_set.labels[: len(images)]
    n = len(images)
    base_labels = torch.empty(n, dtype=torch.int64)
    base_probs: list[torch.Tensor | None] = []
    for start in range(0, n, batch_size):
        base = undefended.query(images[start : start + batch_size].float().div(255.0))
        base_labels[start : start + len(base.labels)] = base.labels
        base_probs.append(base.probs)
    labels = torch.full((n,), -1, dtype=torch.int64)
    l1: list[torch.Tensor] = []
    answered = n
    alarm: int | None = None
    with as_client(BENIGN_CLIENT):
        for i, start in enumerate(range(0, n, batch_size)):
            x = images[start : start + batch_size].float().div(255.0)
            try:
                ans = defended.query(x)
            except QueryRefused as exc:
                alarm = exc.alarm_at
                part = getattr(exc.partial, "labels", torch.empty(0, dtype=torch.int64))
                labels[start : start + len(part)] = part
                answered = start + len(part)
                break
            labels[start : start + len(x)] = ans.labels
            bp = base_probs[i]
            if ans.probs is not None and bp is not None:
                l1.append((ans.probs - bp).abs().sum(1))
    if alarm is None:
        fired = [
            a
            for layer in defence_layers(defended)
            for c, a in layer.alarms().items()
            if c == BENIGN_CLIENT
        ]
        alarm = min(fired) if fired else None
    return Utility(
        accuracy=float((labels == truth).float().mean()),
        undefended_accuracy=float((base_labels == truth).float().mean()),
        agreement=float((labels == base_labels).float().mean()),
        mean_l1=float(torch.cat(l1).mean()) if l1 else None,
        answered=answered / n if n else 1.0,
        false_alarm_at=alarm,
        images=n,
    )
