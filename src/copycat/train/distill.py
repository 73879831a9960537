"""Distillation: the copycat's loss on soft labels, when the target reveals probabilities.

Cross-entropy against the oracle's probabilities, both sides softened by a temperature
(Hinton et al., 2015); at temperature 1 it is the plain soft-label loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distill_loss(logits: torch.Tensor, probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of ``logits`` (N, K) against ``probs`` (N, K), both softened by
    ``temperature`` (the teacher's logits are log ``probs`` up to a constant), times T^2 so
    gradients keep their scale. At T = 1 it is the plain soft-label loss."""
    if temperature == 1.0:
        return -(probs * F.log_softmax(logits, 1)).sum(1).mean()
    teacher = torch.softmax(probs.clamp(min=1e-8).log() / temperature, 1)
    student = F.log_softmax(logits / temperature, 1)
    return -(teacher * student).sum(1).mean() * temperature**2
