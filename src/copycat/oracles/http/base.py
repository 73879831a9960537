"""What the HTTP oracles share: a batch split into concurrent requests, each request's answers
handed over as soon as it completes (so a caller can commit them one by one), and the answers
already paid kept when some requests fail for good."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import torch
from PIL import Image

from copycat.config import HttpOracleConfig
from copycat.errors import OracleError, OracleUnavailableError
from copycat.oracles.base import Answer, RequestHooks, check_images
from copycat.oracles.http.client import AttemptTrack, RetriesExhausted, Transport


def to_png_b64(images: torch.Tensor) -> list[str]:
    """(N, C, H, W) float in [0, 1] to base64 PNG strings (lossless for 8-bit images)."""
    arr = images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()
    out = []
    for a in arr:
        img = (
            Image.fromarray(a[0], "L") if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0))
        )
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=1)
        out.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return out


class _Track:
    """The attempts of one request, told to the caller's hooks under one token each."""

    def __init__(self, hooks: RequestHooks, positions: list[int]) -> None:
        self.hooks = hooks
        self.positions = positions
        self.token = 0

    def opened(self, attempt: int) -> None:
        self.token = self.hooks.opened(self.positions, attempt)

    def closed(self, outcome: str) -> None:
        self.hooks.closed(self.token, outcome)


class _Collect:
    """Hooks that only gather the answers (plain :meth:`HttpOracle.query`)."""

    def __init__(self) -> None:
        self.parts: list[tuple[list[int], Answer]] = []
        self._lock = threading.Lock()

    def opened(self, positions: Sequence[int], attempt: int) -> int:
        return 0

    def closed(self, token: int, outcome: str) -> None:
        pass  # the transport's CostLedger counts failures

    def answered(self, token: int, positions: Sequence[int], answer: Answer) -> None:
        with self._lock:
            self.parts.append((list(positions), answer))


class HttpOracle:
    """Splits a batch into concurrent requests and reassembles the answers."""

    def __init__(self, url: str, *, config: HttpOracleConfig) -> None:
        self.url = url
        self.config = config
        self.transport = Transport(url, config=config)

    @property
    def ledger(self) -> Any:
        return self.transport.ledger

    @property
    def input_shape(self) -> tuple[int, int, int]:
        raise NotImplementedError

    def close(self) -> None:
        self.transport.close()

    def _request(self, images: torch.Tensor, track: AttemptTrack | None = None) -> Answer:
        raise NotImplementedError

    def query(self, images: torch.Tensor) -> Answer:
        """Answer (N, C, H, W) float images in [0, 1]; labels (N,) int64, probs (N, K) or None."""
        got = _Collect()
        self.query_parts(images, got)
        got.parts.sort(key=lambda part: part[0][0])
        return _concat([a for _, a in got.parts])

    def query_parts(self, images: torch.Tensor, hooks: RequestHooks) -> None:
        """Send (N, C, H, W) float images in [0, 1] as concurrent requests of
        ``request_batch`` images; each request's answers go to ``hooks`` as soon as they come.

        When some requests fail for good, :class:`OracleUnavailableError` names the positions
        answered (their answers were handed over already); Ctrl-C waits for the requests in
        flight, whose answers are handed over too, then propagates."""
        x = check_images(images, self.input_shape)
        step = self.config.request_batch
        chunks = [list(range(i, min(i + step, len(x)))) for i in range(0, len(x), step)]
        done: list[tuple[list[int], Answer]] = []
        lock = threading.Lock()

        def one(positions: list[int]) -> None:
            track = _Track(hooks, positions)
            ans = self._request(x[positions[0] : positions[-1] + 1], track)
            self.ledger.add(queries=len(positions), requests=1)
            hooks.answered(track.token, positions, ans)
            with lock:
                done.append((positions, ans))

        futures = self.transport.map(one, chunks)  # Interrupted (Ctrl-C) propagates
        failed = [f.exception() for f in futures if f.exception() is not None]
        if not failed:
            return
        first = failed[0]
        if not isinstance(first, OracleError) or (
            not done and not isinstance(first, RetriesExhausted)
        ):
            raise first  # type: ignore[misc]  # a refusal, a limit, or a bug: as it is
        raise self._partial(done, str(first)) from first

    @staticmethod
    def _partial(done: list[tuple[list[int], Answer]], message: str) -> OracleUnavailableError:
        if not done:
            return OracleUnavailableError(message)
        done = sorted(done, key=lambda part: part[0][0])
        idx = [i for positions, _ in done for i in positions]
        return OracleUnavailableError(
            f"{message} ({len(idx)} images of the batch were answered and are kept)",
            answered=torch.tensor(idx, dtype=torch.int64),
            partial=_concat([a for _, a in done]),
        )


def _concat(answers: list[Answer]) -> Answer:
    labels = torch.cat([a.labels for a in answers])
    probs_list = [a.probs for a in answers]
    if any(p is None for p in probs_list):
        return Answer(labels=labels)
    return Answer(labels=labels, probs=torch.cat([p for p in probs_list if p is not None]))


def without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
