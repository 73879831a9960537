"""Classification metrics: accuracy, macro-F1, per-class scores and confusion matrices."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class Metrics:
    accuracy: float
    macro_f1: float
    per_class_f1: list[float]
    per_class_recall: list[float]
    confusion: list[list[int]]  # rows: true class, columns: predicted class


def confusion_matrix(true: torch.Tensor, pred: torch.Tensor, *, num_classes: int) -> torch.Tensor:
    """(K, K) int64 counts, rows true, columns predicted."""
    idx = true.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes**2).view(num_classes, num_classes)


def classification_metrics(true: torch.Tensor, pred: torch.Tensor, *, num_classes: int) -> Metrics:
    """Metrics of predictions ``pred`` (N,) against ``true`` (N,), both int64."""
    cm = confusion_matrix(true, pred, num_classes=num_classes).double()
    tp = cm.diag()
    precision = tp / cm.sum(0).clamp(min=1)
    recall = tp / cm.sum(1).clamp(min=1)
    f1 = torch.where(
        precision + recall > 0,
        2 * precision * recall / (precision + recall).clamp(min=1e-12),
        torch.zeros_like(tp),
    )
    present = cm.sum(1) > 0  # macro-F1 over the classes that occur in the test set
    return Metrics(
        accuracy=float(tp.sum() / cm.sum().clamp(min=1)),
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        per_class_f1=f1.tolist(),
        per_class_recall=recall.tolist(),
        confusion=cm.long().tolist(),
    )
