"""The core abstraction every stage speaks: an :class:`Oracle` answers a batch of images.

A backend owns its preprocessing (the target's normalisation travels inside its weights), takes
float images in [0, 1] of shape (N, C, H, W) and answers with labels and, unless restricted,
probabilities. Wrappers (:class:`OracleWrapper`) restrict outputs, add defences or observe.

A caller that pays per request (the steal loop) sends a batch with :func:`query_parts` and
:class:`RequestHooks`: it hears of each request before it is sent and gets each request's
answers as soon as they arrive, so it can record and commit them one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from copycat.data.imageio import PIXEL_SLACK
from copycat.errors import OracleError, OracleUnavailableError


@dataclass(frozen=True, slots=True)
class Answer:
    """What the oracle said about a batch. labels always; probs only if the target exposes them."""

    labels: torch.Tensor  # (N,) int64
    probs: torch.Tensor | None = None  # (N, K) float32, rows sum to 1


@runtime_checkable
class Oracle(Protocol):
    """A black-box classifier that we may only query."""

    @property
    def num_classes(self) -> int: ...
    @property
    def input_shape(self) -> tuple[int, int, int]: ...  # (C, H, W) the target expects
    @property
    def fingerprint(self) -> str: ...  # resume refuses another oracle
    def query(self, images: torch.Tensor) -> Answer: ...  # (N, C, H, W) float in [0, 1]


class RequestHooks(Protocol):
    """Told about every request an oracle sends for one batch (called from any thread).

    ``opened`` runs before each attempt is sent (a retry is a new attempt) and returns a token;
    raising refuses the attempt. ``closed`` gives the outcome of an attempt that brought no
    answer: ``refused`` (the server said no: HTTP 4xx/5xx/429), ``unsent`` (no connection),
    ``timeout`` or ``cut`` (no reply in time, or a connection cut mid-reply: the server may
    have answered, so both count as billed),
    ``malformed`` (a 2xx reply that could not be read) or ``failed`` (a local error).
    ``answered`` hands over the answers of one request; ``positions`` index the batch.
    """

    def opened(self, positions: Sequence[int], attempt: int) -> int: ...
    def closed(self, token: int, outcome: str) -> None: ...
    def answered(self, token: int, positions: Sequence[int], answer: Answer) -> None: ...


def query_parts(oracle: Oracle, images: torch.Tensor, hooks: RequestHooks) -> None:
    """Send ``images`` (N, C, H, W) float in [0, 1] through ``oracle``, telling ``hooks`` about
    each request. An oracle that splits a batch (HTTP) does so in its ``query_parts``; any other
    is one request. Raises what the oracle raised, after the answers it gave were handed over."""
    parts = getattr(type(oracle), "query_parts", None)
    if parts is not None:
        parts(oracle, images, hooks)
        return
    whole_request(oracle, images, hooks)


def whole_request(oracle: Oracle, images: torch.Tensor, hooks: RequestHooks) -> None:
    """``oracle.query(images)`` as one request, told to ``hooks``."""
    positions = list(range(len(images)))
    token = hooks.opened(positions, 0)
    try:
        ans = oracle.query(images)
    except OracleUnavailableError as exc:
        if exc.partial is not None and exc.answered is not None:
            part = [positions[int(i)] for i in exc.answered]  # type: ignore[attr-defined]
            hooks.answered(token, part, exc.partial)  # type: ignore[arg-type]
        else:
            hooks.closed(token, "failed")
        raise
    except OracleError:
        hooks.closed(token, "failed")
        raise
    hooks.answered(token, positions, ans)


class _Adjusting:
    """Hooks that pass each request's answers through a wrapper's ``adjust`` first."""

    def __init__(self, hooks: RequestHooks, wrapper: OracleWrapper) -> None:
        self.hooks = hooks
        self.wrapper = wrapper

    def opened(self, positions: Sequence[int], attempt: int) -> int:
        return self.hooks.opened(positions, attempt)

    def closed(self, token: int, outcome: str) -> None:
        self.hooks.closed(token, outcome)

    def answered(self, token: int, positions: Sequence[int], answer: Answer) -> None:
        self.hooks.answered(token, positions, self.wrapper.adjust(answer))


def check_images(images: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Validate a query batch and resize it to ``shape``; returns float32 (N, C, H, W) in
    [0, 1]. Queries are floats in [0, 1]; uint8 pixels are scaled by 1/255 (they were clamped
    to 0 or 1 before: a silent wrong answer), and floats far outside [0, 1] are refused."""
    if images.ndim != 4:
        raise OracleError(f"query images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[1] != shape[0]:
        raise OracleError(
            f"the oracle takes {shape[0]}-channel images, got {images.shape[1]}; "
            "let the pool convert channels to the oracle's input shape"
        )
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    else:
        images = images.float()
        if images.numel() and not bool(torch.isfinite(images).all()):
            raise OracleError("query images hold NaN or infinite values; send pixels in [0, 1]")
        if images.numel() and (images.min() < -PIXEL_SLACK or images.max() > 1.0 + PIXEL_SLACK):
            raise OracleError(
                f"query images are floats in [0, 1]; got values from {images.min().item():.3g} "
                f"to {images.max().item():.3g}: divide 0..255 pixels by 255 (or pass uint8)"
            )
    if images.shape[-2:] != shape[1:]:
        images = F.interpolate(
            images, size=shape[1:], mode="bilinear", antialias=True, align_corners=False
        )
    return images.clamp_(0.0, 1.0)


class OracleWrapper:
    """Base of oracles that wrap another: delegates everything but ``query``. ``tag`` names
    what the wrapper changes in the answers and joins the fingerprint; ``None`` (a wrapper
    that only observes, e.g. one that counts queries) keeps the inner fingerprint."""

    tag: str | None = None

    def __init__(self, inner: Oracle) -> None:
        self.inner = inner

    @property
    def num_classes(self) -> int:
        return self.inner.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.inner.input_shape

    @property
    def fingerprint(self) -> str:
        inner = self.inner.fingerprint
        return inner if self.tag is None else f"{inner}|{self.tag}"

    def adjust(self, answer: Answer) -> Answer:
        """What this wrapper changes in an answer (nothing here)."""
        return answer

    def query(self, images: torch.Tensor) -> Answer:
        return self.adjust(self.inner.query(images))

    def query_parts(self, images: torch.Tensor, hooks: RequestHooks) -> None:
        """Request by request through the inner oracle, each answer adjusted. A subclass that
        overrides ``query`` itself is opaque: its batch is one request."""
        if type(self).query is not OracleWrapper.query:
            whole_request(self, images, hooks)
            return
        query_parts(self.inner, images, _Adjusting(hooks, self))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
