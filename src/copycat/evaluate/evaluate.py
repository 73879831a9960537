"""Evaluation: how close the copycat comes to the oracle on a labelled test set.

Performance is the paper's measure, copycat metric over oracle metric; agreement is the share
of test images on which copycat and oracle give the same label.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from copycat.data.datasets import LabelledSet
from copycat.evaluate.metrics import Metrics, classification_metrics
from copycat.evaluate.provenance import check_test_set, ledger_dict
from copycat.oracles.base import Oracle
from copycat.redact import redact_text
from copycat.runs import write_atomic
from copycat.train.fit import predict

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Everything ``eval.json`` holds."""

    test_set: str
    test_size: int
    class_names: list[str]
    target_accuracy: float
    copycat_accuracy: float
    performance_accuracy: float
    target_macro_f1: float
    copycat_macro_f1: float
    performance_macro_f1: float
    agreement: float
    budget: int | None
    queries: int | None
    target: Metrics
    copycat: Metrics
    # The HTTP cost ledger of the test-set queries (None for local oracles).
    cost: dict[str, float | int] | None = None
    oracle: str | None = None
    # False when scored against another oracle than the answers came from (allowed by flag).
    oracle_matches_run: bool | None = None

    def save(self, path: Path) -> None:
        """Written atomically, with any credential in the oracle's URL masked."""
        data = asdict(self)
        if isinstance(data.get("oracle"), str):
            data["oracle"] = redact_text(data["oracle"])
        write_atomic(path, json.dumps(data, indent=2) + "\n")


def oracle_labels(oracle: Oracle, images: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """The oracle's labels (N,) for uint8 images (N, C, H, W)."""
    return torch.cat(
        [oracle.query(chunk.float().div(255.0)).labels for chunk in images.split(batch_size)]
    )


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def evaluate(
    copycat: nn.Module,
    *,
    test_set: LabelledSet,
    oracle: Oracle,
    budget: int | None = None,
    queries: int | None = None,
    device: torch.device | None = None,
) -> EvalResult:
    """Score ``copycat`` and ``oracle`` on ``test_set`` and compare them.

    A test set that does not fit the oracle (shape, class count, labels) raises
    :class:`~copycat.errors.DataError` before any query; ``cost`` holds the oracle's HTTP
    ledger of the test-set queries when it keeps one.
    """
    k = oracle.num_classes
    check_test_set(test_set, input_shape=oracle.input_shape, num_classes=k)
    dev = device or torch.device("cpu")
    copy_pred = predict(copycat.to(dev), test_set.images, device=dev).argmax(1)
    target_pred = oracle_labels(oracle, test_set.images)
    t = classification_metrics(test_set.labels, target_pred, num_classes=k)
    c = classification_metrics(test_set.labels, copy_pred, num_classes=k)
    agreement = float((copy_pred == target_pred).float().mean())
    res = EvalResult(
        test_set=test_set.name,
        test_size=len(test_set),
        class_names=list(test_set.class_names),
        target_accuracy=t.accuracy,
        copycat_accuracy=c.accuracy,
        performance_accuracy=_ratio(c.accuracy, t.accuracy),
        target_macro_f1=t.macro_f1,
        copycat_macro_f1=c.macro_f1,
        performance_macro_f1=_ratio(c.macro_f1, t.macro_f1),
        agreement=agreement,
        budget=budget,
        queries=queries,
        target=t,
        copycat=c,
        cost=ledger_dict(oracle),
    )
    log.info(
        "target acc %.4f, copycat acc %.4f, performance %.4f, agreement %.4f",
        t.accuracy,
        c.accuracy,
        res.performance_accuracy,
        agreement,
    )
    return res
