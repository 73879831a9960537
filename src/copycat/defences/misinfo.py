"""Adaptive misinformation (Kariyappa & Qureshi, CVPR 2020): queries that look
out-of-distribution are answered by a misinformation function.

The OOD score is the target's maximum softmax probability (MSP): a query whose top probability
falls below ``tau`` is flagged. The answer mixes the true and the misinformation outputs,
``y = (1 - a) f(x) + a f^(x)`` with ``a = sigmoid(nu (tau - max f(x)))``, so the switch is
smooth (large ``nu``: a hard threshold). Approximations (stated): the paper trains its
detector with outlier exposure and trains a separate misinformation model; here the OOD score
is the plain MSP of the deployed target and the misinformation model is the target's own
negated logits (``softmax(-z)``: the least likely class on top).
"""

from __future__ import annotations

import torch

from copycat.defences.base import Defence, normalise, reverse
from copycat.defences.registry import Params, no_args
from copycat.oracles.base import Answer, Oracle


class AdaptiveMisinformation(Defence):
    """Flag queries with ``max p < tau``; answer them with misinformation."""

    name = "adaptive-misinfo"

    def __init__(self, inner: Oracle, *, tau: float = 0.5, nu: float = 50.0) -> None:
        super().__init__(inner)
        self.tau, self.nu = tau, nu
        self.tag = f"adaptive-misinfo:tau={tau:g},nu={nu:g}"
        self.flagged = 0
        self.seen = 0

    def defend(self, images: torch.Tensor, probs: torch.Tensor, *, client: str) -> Answer:
        top = probs.max(1).values
        a = torch.sigmoid(self.nu * (self.tau - top))[:, None]
        out = normalise((1.0 - a) * probs + a * reverse(probs), fallback=probs)
        self.flagged += int((top < self.tau).sum())
        self.seen += len(probs)
        return Answer(labels=out.argmax(1), probs=out)


def build_adaptive_misinfo(
    inner: Oracle, *args: str, device: str = "cpu", **raw: str
) -> AdaptiveMisinformation:
    """``adaptive-misinfo:tau=T,nu=N``."""
    no_args("adaptive-misinfo", args)
    p = Params("adaptive-misinfo", raw)
    tau = p.get_float("tau", 0.5, lo=0.0, hi=1.0)
    nu = p.get_float("nu", 50.0, lo=0.0, hi=1e6)
    p.done()
    return AdaptiveMisinformation(inner, tau=tau, nu=nu)
