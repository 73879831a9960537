"""What every defence shares: the :class:`Defence` wrapper, the client a query comes from, and
the error a blocking defence raises.

A defence sits between the target and its output restriction (``label``, ``topk:K``...), so it
sees the target's probabilities and a label-only client sees the argmax of what it returns.
Stateful defences keep their state per client: ``copycat serve`` names the client of each
request with :func:`as_client`; a local steal is the single client ``"local"``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from copycat.errors import OracleError, OracleUnavailableError
from copycat.oracles.base import Answer, Oracle, OracleWrapper

LOCAL_CLIENT = "local"
_CLIENT: ContextVar[str] = ContextVar("copycat_defence_client", default=LOCAL_CLIENT)


@contextmanager
def as_client(name: str) -> Iterator[None]:
    """Queries made inside this block come from client ``name`` (per-client defence state)."""
    token = _CLIENT.set(name)
    try:
        yield
    finally:
        _CLIENT.reset(token)


def current_client() -> str:
    return _CLIENT.get()


class QueryRefused(OracleUnavailableError):
    """A detecting defence blocked the client (HTTP 403 in ``copycat serve``). ``alarm_at``
    is the number of queries the client had sent when the alarm fired."""

    def __init__(
        self,
        message: str,
        *,
        alarm_at: int,
        answered: object = None,
        partial: object = None,
    ) -> None:
        super().__init__(message, answered=answered, partial=partial)
        self.alarm_at = alarm_at


class Defence(OracleWrapper):
    """Base of every defence. ``keeps_argmax``: whether the top-1 label a benign user gets is
    promised unchanged; ``stateful``: whether answers depend on the client's earlier queries.
    The utility cost is measured, not declared: see :func:`copycat.defences.utility.measure`."""

    name: str = "defence"
    keeps_argmax: bool = False
    stateful: bool = False

    def __init__(self, inner: Oracle) -> None:
        super().__init__(inner)
        self._lock = threading.Lock()

    def query(self, images: torch.Tensor, *, client: str | None = None) -> Answer:
        ans = self.inner.query(images)
        if ans.probs is None:
            raise OracleError(
                f"defence {self.name!r} needs the target's probabilities but the oracle gave "
                "labels only; put defences on a torch: or onnx: target (restrict the output "
                "with --output after them)"
            )
        with self._lock:
            return self.defend(images, ans.probs, client=client or current_client())

    def defend(self, images: torch.Tensor, probs: torch.Tensor, *, client: str) -> Answer:
        """The defended answer for ``images`` (N, C, H, W) float in [0, 1], whose undefended
        probabilities are ``probs`` (N, K) float32."""
        raise NotImplementedError

    def alarms(self) -> dict[str, int]:
        """Per client, the number of queries sent when a detector raised its alarm."""
        return {}


def normalise(p: torch.Tensor, fallback: torch.Tensor | None = None) -> torch.Tensor:
    """Rows of non-negative ``p`` (N, K) scaled to sum to 1; an all-zero row becomes
    ``fallback``'s row (default: uniform)."""
    p = p.clamp(min=0.0)
    s = p.sum(1, keepdim=True)
    bad = s.squeeze(1) <= 1e-12
    out = p / s.clamp(min=1e-12)
    if bad.any():
        fb = fallback if fallback is not None else torch.full_like(p, 1.0 / p.shape[1])
        out[bad] = fb[bad]
    return out


def reverse(probs: torch.Tensor) -> torch.Tensor:
    """Misinformation: softmax of the negated logits, i.e. the least likely class on top
    (log p equals the logits up to a constant per row)."""
    return torch.softmax(-torch.log(probs.clamp(min=1e-8)), dim=1)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """The exact bytes a client sent: float [0, 1] (N, C, H, W) -> uint8."""
    return images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
