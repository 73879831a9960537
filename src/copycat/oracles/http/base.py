"""What the HTTP oracles share: a batch split into concurrent requests, answers reassembled,
and the answers already paid kept when some requests fail for good."""

from __future__ import annotations

import base64
import io
from concurrent.futures import Future
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import torch
from PIL import Image

from copycat.config import HttpOracleConfig
from copycat.errors import OracleError, OracleUnavailableError
from copycat.oracles.base import Answer, check_images
from copycat.oracles.http.client import Interrupted, RetriesExhausted, Transport


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

    def _request(self, images: torch.Tensor) -> Answer:
        raise NotImplementedError

    def query(self, images: torch.Tensor) -> Answer:
        """Answer (N, C, H, W) float images in [0, 1]; labels (N,) int64, probs (N, K) or None."""
        x = check_images(images, self.input_shape)
        step = self.config.request_batch
        chunks = [(i, x[i : i + step]) for i in range(0, len(x), step)]

        def one(item: tuple[int, torch.Tensor]) -> Answer:
            ans = self._request(item[1])
            self.ledger.add(queries=len(item[1]), requests=1)
            return ans

        try:
            futures = self.transport.map(one, chunks)
        except Interrupted as exc:
            done = list(zip(chunks, exc.futures, strict=True))
            raise self._partial(done, "the client was interrupted") from exc
        pairs = list(zip(chunks, futures, strict=True))
        failed = [f.exception() for _, f in pairs if f.exception() is not None]
        if not failed:
            return _concat([f.result() for f in futures])
        first = failed[0]
        if not isinstance(first, OracleError):
            raise first  # type: ignore[misc]  # a bug, not the oracle: let it surface
        if all(f.exception() is not None for f in futures) and not isinstance(
            first, RetriesExhausted
        ):
            raise first
        raise self._partial(pairs, str(first)) from first

    @staticmethod
    def _partial(
        pairs: list[tuple[tuple[int, torch.Tensor], Future[Answer]]], message: str
    ) -> OracleUnavailableError:
        idx: list[int] = []
        answers: list[Answer] = []
        for (start, chunk), fut in pairs:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                idx += range(start, start + len(chunk))
                answers.append(fut.result())
        if not answers:
            return OracleUnavailableError(message)
        return OracleUnavailableError(
            f"{message} ({len(idx)} images of the batch were answered and are kept)",
            answered=torch.tensor(idx, dtype=torch.int64),
            partial=_concat(answers),
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
