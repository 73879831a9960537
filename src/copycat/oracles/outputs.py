"""Output restrictions: what the oracle reveals (top-1 label, top-k, rounded probabilities).

Each is a wrapper, not a flag; its tag joins the fingerprint, so a run never resumes against
the same target with another restriction.
"""

from __future__ import annotations

import torch

from copycat.errors import ConfigError
from copycat.oracles.base import Answer, Oracle, OracleWrapper


class LabelOnly(OracleWrapper):
    """Only the top-1 label: the paper's threat model."""

    tag = "label"

    def adjust(self, answer: Answer) -> Answer:
        return Answer(labels=answer.labels)


class TopK(OracleWrapper):
    """The top-k probabilities, renormalised; the rest are zero."""

    def __init__(self, inner: Oracle, k: int) -> None:
        super().__init__(inner)
        if k < 1:
            raise ConfigError(f"topk k={k} is invalid; accepted: an integer >= 1")
        self.k = k
        self.tag = f"topk{k}"

    def adjust(self, answer: Answer) -> Answer:
        ans = answer
        if ans.probs is None:
            return ans
        top = ans.probs.topk(min(self.k, ans.probs.shape[1]), dim=1)
        probs = torch.zeros_like(ans.probs).scatter_(1, top.indices, top.values)
        return Answer(labels=ans.labels, probs=probs / probs.sum(1, keepdim=True))


class Rounded(OracleWrapper):
    """Probabilities rounded to ``decimals`` places (a common output defence)."""

    def __init__(self, inner: Oracle, decimals: int) -> None:
        super().__init__(inner)
        if not 0 <= decimals <= 8:
            raise ConfigError(f"rounded decimals={decimals} is invalid; accepted: 0..8")
        self.decimals = decimals
        self.tag = f"round{decimals}"

    def adjust(self, answer: Answer) -> Answer:
        ans = answer
        if ans.probs is None:
            return ans
        return Answer(labels=ans.labels, probs=torch.round(ans.probs, decimals=self.decimals))


def restrict(oracle: Oracle, output: str) -> Oracle:
    """Apply an output restriction: ``label``, ``probs``, ``topk:K`` or ``rounded:D``."""
    kind, _, arg = output.partition(":")
    try:
        if kind == "label" and not arg:
            return LabelOnly(oracle)
        if kind == "probs" and not arg:
            return oracle
        if kind == "topk":
            return TopK(oracle, int(arg))
        if kind == "rounded":
            return Rounded(oracle, int(arg))
    except ValueError:
        pass
    raise ConfigError(f"unknown output {output!r}; use label, probs, topk:K or rounded:D")
