"""The server's guards: API key, model name, body and batch limits, a per-client rate limit,
and the query log. Every check runs before a request body is decoded."""

from __future__ import annotations

import hmac
import json
import math
import threading
import time
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
    """A token bucket per client: ``rate`` requests per second, bursts up to ``max(1, rate)``."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, client: str) -> float | None:
        """None if allowed; else seconds until a request would be."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                return None
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.rate


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


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class Guard:
    """Checks a request against the server's key, model name and rate limit."""

    def __init__(
        self, *, key: str | None, model_name: str, rate_limit: float | None = None
    ) -> None:
        self.key = key.encode() if key else None
        self.model_name = model_name
        self.rate_limit = rate_limit
        self.limiter = RateLimiter(rate_limit) if rate_limit else None

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
            wait = self.limiter.acquire(client_of(request))
            if wait is not None:
                raise ApiError(
                    429,
                    f"rate limit of {self.rate_limit:g} requests/s exceeded; retry later",
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
