"""PRADA (Juuti et al., EuroS&P 2019): detect model extraction from the distribution of
distances between a client's queries.

Per client and per predicted class ``c`` a growing set ``G_c`` keeps queries that were far from
the earlier ones. Each new query's minimum L2 distance to ``G_c`` joins the set ``D``; it joins
``G_c`` itself when that distance exceeds ``T_c = max(T_c, mean - std)`` of the distances that
grew ``G_c``. Benign queries give roughly normally distributed distances; once ``|D|`` reaches
``min_samples``, a Shapiro-Wilk statistic ``W(D) < delta`` raises the alarm (Algorithm 1 of
the paper). After the alarm the client is blocked (``action=block``: :class:`QueryRefused`,
403 over HTTP) or answered with misinformation (``action=degrade``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from copycat.defences.base import Defence, QueryRefused, reverse
from copycat.defences.registry import Params, no_args
from copycat.oracles.base import Answer, Oracle, check_images


@dataclass(slots=True)
class ClientState:
    """One client's PRADA state."""

    growing: dict[int, torch.Tensor] = field(default_factory=dict)  # class -> (M, D) float32
    grew_by: dict[int, list[float]] = field(default_factory=dict)  # distances that grew G_c
    threshold: dict[int, float] = field(default_factory=dict)
    distances: list[float] = field(default_factory=list)  # the set D
    queries: int = 0
    alarm_at: int | None = None
    last_w: float | None = None


class Prada(Defence):
    """The PRADA detector with per-client state (see the module docstring)."""

    name = "prada"
    keeps_argmax = True  # with action=block: answers given are unchanged
    stateful = True

    def __init__(
        self,
        inner: Oracle,
        *,
        delta: float = 0.9,
        action: str = "block",
        min_samples: int = 100,
        window: int = 5000,
    ) -> None:
        super().__init__(inner)
        self.delta, self.action, self.min_samples, self.window = delta, action, min_samples, window
        self.keeps_argmax = action == "block"  # degrade answers alarmed clients with misinformation
        self.tag = f"prada:delta={delta:g},action={action},min={min_samples}"
        self.clients: dict[str, ClientState] = {}

    def alarms(self) -> dict[str, int]:
        return {c: s.alarm_at for c, s in self.clients.items() if s.alarm_at is not None}

    def defend(self, images: torch.Tensor, probs: torch.Tensor, *, client: str) -> Answer:
        st = self.clients.setdefault(client, ClientState())
        labels = probs.argmax(1)
        if st.alarm_at is not None and self.action == "block":
            raise QueryRefused(
                f"PRADA blocked client {client!r} after {st.alarm_at} queries "
                "(query distances not normally distributed: an extraction attack)",
                alarm_at=st.alarm_at,
            )
        x = check_images(images, self.inner.input_shape).flatten(1)
        first_alarm: int | None = None
        for i in range(len(x)):
            self._observe(st, x[i], int(labels[i]))
            if st.alarm_at is not None and first_alarm is None:
                first_alarm = i if st.alarm_at == st.queries else 0
        if first_alarm is None:
            return Answer(labels=labels, probs=probs)
        if self.action == "block":
            ok = torch.arange(first_alarm)
            raise QueryRefused(
                f"PRADA raised its alarm on client {client!r} after {st.alarm_at} queries; "
                "the client is blocked",
                alarm_at=int(st.alarm_at or 0),
                answered=ok.tolist(),
                partial=Answer(labels=labels[:first_alarm], probs=probs[:first_alarm]),
            )
        out = probs.clone()
        out[first_alarm:] = reverse(probs[first_alarm:])
        return Answer(labels=out.argmax(1), probs=out)

    def _observe(self, st: ClientState, x: torch.Tensor, c: int) -> None:
        st.queries += 1
        g = st.growing.get(c)
        if g is None:
            st.growing[c] = x[None].clone()
            st.grew_by[c] = []
            st.threshold[c] = 0.0
        else:
            d = float(torch.cdist(x[None], g).min())
            st.distances.append(d)
            if d > st.threshold[c]:
                st.growing[c] = torch.cat([g, x[None]])
                grew = st.grew_by[c]
                grew.append(d)
                st.threshold[c] = max(st.threshold[c], float(np.mean(grew) - np.std(grew)))
        if st.alarm_at is None and len(st.distances) >= self.min_samples:
            st.last_w = shapiro_w(st.distances[-self.window :])
            if st.last_w < self.delta:
                st.alarm_at = st.queries


def shapiro_w(values: list[float]) -> float:
    """The Shapiro-Wilk statistic W of ``values``; 0 for a constant sample (repeated queries)."""
    from scipy.stats import shapiro

    arr = np.asarray(values, dtype=np.float64)
    if np.ptp(arr) <= 1e-12:
        return 0.0  # identical distances: the most non-normal sample there is
    return float(shapiro(arr).statistic)


def build_prada(inner: Oracle, *args: str, device: str = "cpu", **raw: str) -> Prada:
    """``prada:delta=D,action=block|degrade,min=N``."""
    no_args("prada", args)
    p = Params("prada", raw)
    delta = p.get_float("delta", 0.9, lo=0.0, hi=1.0)
    action = p.get_choice("action", "block", ("block", "degrade"))
    min_samples = p.get_int("min", 100, lo=3)
    p.done()
    return Prada(inner, delta=delta, action=action, min_samples=min_samples)
