"""The server's guards: API key, model name, body and batch limits, per-client rate limits (requests
and images, in a bounded table), the client's address (optionally from a trusted proxy's header)
and the query log. Every check runs before a request body is decoded."""

from __future__ import annotations

import hmac
import json
import math
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError


class ApiError(Exception):
    """An HTTP error answered as ``{"error": message}`` (the OIP error format)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class RateLimiter:
    """A token bucket per client: ``rate`` tokens per second, bursts up to ``burst`` (default
    ``max(1, rate)``). At most ``max_clients`` buckets are kept; the least recently seen client is
    forgotten first (its bucket has most likely refilled anyway), so the table stays bounded."""

    def __init__(
        self, rate: float, *, burst: float | None = None, max_clients: int = 10_000
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, client: str, cost: float = 1.0) -> float | None:
        """None if ``cost`` tokens were taken; else seconds until they would be."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            wait = None if tokens >= cost else (cost - tokens) / self.rate
            self._buckets[client] = (tokens - cost if wait is None else tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait


class QueryLog:
    """Appends one JSON line per answered request: time, client, endpoint, model, n_images."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def write(self, *, client: str, endpoint: str, model: str, n_images: int) -> None:
        rec = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "client": client,
            "endpoint": endpoint,
            "model": model,
            "n_images": n_images,
        }
        line = json.dumps(rec) + "\n"
        with self._lock, self.path.open("a") as f:
            f.write(line)


def peer_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class Guard:
    """Checks a request against the server's key, model name and rate limits (requests/s
    before the body is read, images/s once the images are counted), and names its client."""

    def __init__(
        self,
        *,
        key: str | None,
        model_name: str,
        rate_limit: float | None = None,
        image_rate_limit: float | None = None,
        max_batch: int = 1,
        max_clients: int = 10_000,
        proxy_header: str | None = None,
    ) -> None:
        self.key = key.encode() if key else None
        self.model_name = model_name
        self.rate_limit = rate_limit
        self.limiter = RateLimiter(rate_limit, max_clients=max_clients) if rate_limit else None
        self.image_rate_limit = image_rate_limit
        self.image_limiter = (
            # A full batch must always be able to pass once the bucket has refilled.
            RateLimiter(
                image_rate_limit,
                burst=max(image_rate_limit, float(max_batch)),
                max_clients=max_clients,
            )
            if image_rate_limit
            else None
        )
        self.proxy_header = proxy_header

    def client_of(self, request: Request) -> str:
        """The client's address: the peer's, or with a trusted proxy, the last address in its
        header (the one the proxy itself appended; earlier ones the client may have forged)."""
        if self.proxy_header:
            value = request.headers.get(self.proxy_header, "")
            last = value.rsplit(",", 1)[-1].strip()
            if last:
                return last[:64]
        return peer_of(request)

    def __call__(self, request: Request, model: str | None = None, *, costly: bool = False) -> None:
        if self.key is not None:
            auth = request.headers.get("authorization", "")
            given = (
                auth[7:] if auth[:7].lower() == "bearer " else request.headers.get("x-api-key", "")
            )
            if not hmac.compare_digest(given.encode(), self.key):
                raise ApiError(
                    401,
                    "missing or wrong API key; send 'Authorization: Bearer KEY' or "
                    "'X-API-Key: KEY'",
                    {"WWW-Authenticate": "Bearer"},
                )
        if model is not None and model != self.model_name:
            raise ApiError(
                404, f"model {model!r} is not served here; this server has {self.model_name!r}"
            )
        if costly and self.limiter is not None:
            wait = self.limiter.acquire(self.client_of(request))
            if wait is not None:
                raise ApiError(
                    429,
                    f"rate limit of {self.rate_limit:g} requests/s exceeded; retry later",
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )

    def images(self, request: Request, n: int) -> None:
        """Take ``n`` images from the client's image budget (429 with Retry-After if short)."""
        if self.image_limiter is None:
            return
        wait = self.image_limiter.acquire(self.client_of(request), float(n))
        if wait is not None:
            raise ApiError(
                429,
                f"rate limit of {self.image_rate_limit:g} images/s exceeded by a request of {n}; "
                "retry later or send smaller batches",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )


async def read_body(request: Request, *, max_bytes: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"body of {declared} bytes exceeds the limit of {max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_body(body: bytes, model: type[BaseModel]) -> Any:
    """Validate a JSON body against ``model``; a 400 names the first few faults."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errs = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise ApiError(400, f"malformed request: {errs}") from exc


def check_batch(n: int, *, max_batch: int) -> None:
    if n > max_batch:
        raise ApiError(413, f"batch of {n} images exceeds the limit of {max_batch}; split it")
    if n < 1:
        raise ApiError(400, "the request holds no images")
