"""The transport under the HTTP oracles: concurrency, pacing, retries and the cost ledger.

One :class:`Transport` sends a list of request bodies with up to ``concurrency`` requests in
flight (threads sharing one ``httpx.Client``), paced to ``max_qps`` requests per second. Each
request is retried on connection errors, timeouts, 429, 5xx and unparsable replies (any body
that is not UTF-8 JSON), with exponential backoff and full jitter that never waits less than
the server's ``Retry-After``. Every attempt is counted in a :class:`CostLedger` and, when the
caller tracks requests (:class:`AttemptTrack`), announced before it is sent and closed with its
outcome. The API key is read from an environment variable, sent as ``Authorization: Bearer``
and never logged or put in a fingerprint; credentials in the URL are redacted in messages.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx

from copycat.config import HttpOracleConfig
from copycat.errors import OracleError
from copycat.redact import has_url_secret, redact_text, redact_url

log = logging.getLogger(__name__)
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


class _RedactUrls(logging.Filter):
    """httpx logs each request's URL at INFO: keys in the query must not reach a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(redact_text(str(a)) if "://" in str(a) else a for a in record.args)
        record.msg = redact_text(str(record.msg))
        return True


logging.getLogger("httpx").addFilter(_RedactUrls())


class AttemptTrack(Protocol):
    """Told about each attempt of one request: ``opened`` before it is sent (raising refuses
    it), ``closed`` with the outcome of one that brought no answer (see
    :class:`~copycat.oracles.base.RequestHooks`)."""

    def opened(self, attempt: int) -> None: ...
    def closed(self, outcome: str) -> None: ...


class _Failed(Exception):
    """An attempt failed with ``outcome``; ``error`` is what to raise or retry."""

    def __init__(self, outcome: str, error: Exception) -> None:
        super().__init__(str(error))
        self.outcome = outcome
        self.error = error


T = TypeVar("T")


@dataclass(slots=True)
class CostLedger:
    """What this process paid: ``queries`` answered images, ``attempts`` HTTP requests sent,
    ``failures`` attempts that failed, ``retries`` attempts repeated, ``billed_images`` images in
    requests the server answered with 2xx (what a hosted API bills, malformed replies too)."""

    price_per_1000: float = 0.0
    queries: int = 0
    requests: int = 0
    attempts: int = 0
    failures: int = 0
    retries: int = 0
    billed_images: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    @property
    def estimated_cost(self) -> float:
        return self.billed_images * self.price_per_1000 / 1000.0

    def as_dict(self) -> dict[str, float | int]:
        with self._lock:
            return {
                "queries": self.queries,
                "requests": self.requests,
                "attempts": self.attempts,
                "failures": self.failures,
                "retries": self.retries,
                "billed_images": self.billed_images,
                "price_per_1000": self.price_per_1000,
                "estimated_cost": round(self.estimated_cost, 6),
            }


class Pacer:
    """Spaces request starts ``1 / qps`` apart across threads (no bursts)."""

    def __init__(self, qps: float | None) -> None:
        self.interval = 1.0 / qps if qps else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            stop.wait(slot - now)


class RetryableError(Exception):
    """An attempt failed in a way worth retrying; ``retry_after`` is the server's wish."""

    def __init__(self, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.retry_after = retry_after


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :meth:`Transport.map`; ``futures`` holds the requests, some answered."""

    def __init__(self, futures: list[Future[Any]]) -> None:
        super().__init__()
        self.futures = futures


def _retryable(cause: str, exc: Exception) -> RetryableError:
    err = RetryableError(cause)
    err.__cause__ = exc
    return err


class RetriesExhausted(OracleError):
    """One request failed ``max_retries + 1`` times; the message names the last cause."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds (fractions accepted) or HTTP-date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_text(r: httpx.Response) -> str:
    """The server's error message (``{"error": ...}`` or ``{"detail": ...}``) or its body."""
    try:
        body = r.json()
    except ValueError:
        return r.text[:200]
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            if key in body:
                return str(body[key])[:300]
    return str(body)[:200]


class Transport:
    """Sends requests concurrently with pacing and retries; counts everything in ``ledger``."""

    def __init__(self, url: str, *, config: HttpOracleConfig) -> None:
        self.url = url
        self.config = config
        self.shown = redact_url(url)  # the URL as messages show it
        self.ledger = CostLedger(price_per_1000=config.price_per_1000)
        self.stop = threading.Event()
        self._pacer = Pacer(config.max_qps)
        self._rng = random.Random(config.seed)
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            headers = {"User-Agent": "copycat"}
            key = self.config.api_key()
            if key is not None:
                headers["Authorization"] = f"Bearer {key}"
            self._warn_plain_http(key is not None)
            n = self.config.concurrency
            self._client = httpx.Client(
                headers=headers,
                timeout=self.config.timeout,
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            )
        return self._client

    def _warn_plain_http(self, has_key: bool) -> None:
        parts = urlsplit(self.url)
        if parts.scheme != "http" or (parts.hostname or "") in _LOOPBACK:
            return
        if has_key or has_url_secret(self.url):
            log.warning(
                "an API key is sent over plain http to %s: anyone on the path can read it; "
                "use https",
                parts.hostname,
            )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def get_json(self, url: str) -> Any:
        """GET ``url`` with retries (metadata); returns the parsed JSON."""
        return self.call(lambda: self.client.get(url), lambda r: r.json(), images=0)

    def call(
        self,
        send: Callable[[], httpx.Response],
        parse: Callable[[httpx.Response], T],
        *,
        images: int,
        track: AttemptTrack | None = None,
    ) -> T:
        """One logical request: ``send`` until ``parse`` succeeds or retries run out.

        ``track`` hears of each attempt before it is sent and of the outcome of each failed
        one; an attempt that succeeds is closed by the caller, with its answers."""
        cfg = self.config
        for attempt in range(cfg.max_retries + 1):
            if self.stop.is_set():
                raise RetriesExhausted("the client was stopped before this request was answered")
            self._pacer.wait(self.stop)
            if track is not None:
                track.opened(attempt)  # durable before a byte is sent; may refuse
            self.ledger.add(attempts=1)
            try:
                return self._attempt(send, parse, images=images)
            except _Failed as failed:
                self.ledger.add(failures=1)
                if track is not None:
                    track.closed(failed.outcome)
                exc = failed.error
                if not isinstance(exc, RetryableError):
                    raise exc from failed.error.__cause__
                wait_s = self._backoff(attempt, exc.retry_after)
                if attempt == cfg.max_retries:
                    raise RetriesExhausted(
                        f"{self.shown} failed {attempt + 1} times; last cause: {exc}. Check "
                        "that the server is up, or raise --max-retries / --timeout, lower "
                        "--concurrency / --max-qps"
                    ) from exc
                log.debug("retry %d after %.2fs: %s", attempt + 1, wait_s, exc)
                self.ledger.add(retries=1)
                self.stop.wait(wait_s)
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cfg = self.config
        jitter = self._rng.uniform(0.0, min(cfg.max_backoff, cfg.backoff * 2.0**attempt))
        if retry_after is None:
            return jitter
        if retry_after > cfg.max_retry_after:
            raise OracleError(
                f"{self.shown} asks to wait {retry_after:.0f} s (Retry-After), more than "
                f"{cfg.max_retry_after:.0f} s; try again later or lower --max-qps"
            )
        return max(retry_after, jitter)

    def _attempt(
        self,
        send: Callable[[], httpx.Response],
        parse: Callable[[httpx.Response], T],
        *,
        images: int,
    ) -> T:
        """One attempt; a failure is raised as :class:`_Failed` with its outcome."""
        try:
            r = send()
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            cause = f"no connection ({type(exc).__name__}: {redact_text(str(exc))})"
            raise _Failed("unsent", _retryable(cause, exc)) from exc
        except httpx.TimeoutException as exc:
            cause = f"timeout after {self.config.timeout} s ({type(exc).__name__})"
            raise _Failed("timeout", _retryable(cause, exc)) from exc
        except httpx.TransportError as exc:
            cause = f"connection error ({type(exc).__name__}: {redact_text(str(exc))})"
            raise _Failed("cut", _retryable(cause, exc)) from exc
        code = r.status_code
        if not 200 <= code < 300:
            raise _Failed("refused", self._refusal(r))
        self.ledger.add(billed_images=images)
        try:
            return parse(r)
        except ValueError as exc:  # truncated JSON, or bytes that are not UTF-8 text at all
            cause = f"malformed reply, not JSON ({type(exc).__name__}: {str(exc)[:120]})"
            raise _Failed("malformed", _retryable(cause, exc)) from exc
        except OracleError as exc:  # JSON, but not an answer: retrying would not change it
            raise _Failed("malformed", exc) from exc

    def _refusal(self, r: httpx.Response) -> Exception:
        """The error for a reply that is not 2xx: retryable (429, 5xx) or not."""
        code = r.status_code
        if code == 429 or code >= 500:
            after = parse_retry_after(r.headers.get("Retry-After"))
            return RetryableError(f"HTTP {code}: {error_text(r)}", after)
        if code in (401, 403):
            env = self.config.api_key_env
            fix = f"check the key in ${env}" if env else "pass --api-key-env VAR with the key"
            return OracleError(f"{self.shown} refused the request (HTTP {code}); {fix}")
        if code == 413:
            return OracleError(
                f"{self.shown} says the request is too large (HTTP 413: {error_text(r)}); "
                "lower --request-batch"
            )
        return OracleError(f"{self.shown} rejected the request (HTTP {code}: {error_text(r)})")

    def map(self, fn: Callable[[T], Any], items: Sequence[T]) -> list[Future[Any]]:
        """Run ``fn`` over ``items`` on the worker threads; waits for every future.

        On Ctrl-C the requests not yet started are cancelled and those in flight are awaited,
        so what they paid for can still be committed; then the interrupt is re-raised.
        """
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="oracle")
        futures = [self._pool.submit(fn, item) for item in items]
        try:
            wait(futures)
        except KeyboardInterrupt as exc:
            for f in futures:
                f.cancel()
            self.stop.set()
            wait(futures, timeout=self.config.timeout + 1.0)
            raise Interrupted(futures) from exc
        return futures
