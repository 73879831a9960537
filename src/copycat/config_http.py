"""The configurations at the HTTP boundary, both sides of it: how an HTTP oracle is queried
(:class:`HttpOracleConfig`) and how ``copycat serve`` exposes a target (:class:`ServeConfig`).

Frozen keyword-only dataclasses like the rest of :mod:`copycat.config` (which re-exports them);
defaults live here, once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from copycat.errors import ConfigError


def _check(ok: bool, name: str, value: object, accepted: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid; accepted: {accepted}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeConfig:
    """``copycat serve``: how a target is exposed (the model owner's side). The API key is
    never a field: it comes from the environment variable the operator names."""

    host: str = "127.0.0.1"
    port: int = 8080
    name: str | None = None
    output: str = "label"
    rate_limit: float | None = None  # requests/s per client
    max_batch: int = 256  # images per request
    max_body_mb: float = 16.0
    query_log: str | None = "query_log.jsonl"
    rate_limit_images: float | None = None  # images/s per client
    max_clients: int = 10_000  # clients the rate limiter remembers (least recent forgotten)
    trusted_proxy_header: str | None = None  # e.g. X-Forwarded-For; only when set
    max_request_mp: float = 32.0  # megapixels decoded per request, all images together
    # Defence specs (``copycat.defences.registry.DEFENCES``) between the target and ``output``.
    defences: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65_535, "serve.port", self.port, "0..65535 (0 picks a free one)")
        _check(
            self.rate_limit_images is None or self.rate_limit_images > 0,
            "serve.rate_limit_images",
            self.rate_limit_images,
            "images/s > 0, or none",
        )
        _check(self.max_clients >= 1, "serve.max_clients", self.max_clients, ">= 1")
        _check(self.max_request_mp > 0, "serve.max_request_mp", self.max_request_mp, "MP > 0")
        _check(
            self.trusted_proxy_header is None or self.trusted_proxy_header.strip() != "",
            "serve.trusted_proxy_header",
            self.trusted_proxy_header,
            "a header name such as X-Forwarded-For, or none",
        )
        _check(self.max_batch >= 1, "serve.max_batch", self.max_batch, ">= 1")
        _check(self.max_body_mb > 0, "serve.max_body_mb", self.max_body_mb, "MiB > 0")
        _check(
            self.rate_limit is None or self.rate_limit > 0,
            "serve.rate_limit",
            self.rate_limit,
            "requests/s > 0, or none",
        )

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_request_pixels(self) -> int:
        return int(self.max_request_mp * 1_000_000)


RESPONSE_FORMATS = ("label-score", "label", "probs")
SEND_AS = ("auto", "uint8", "fp32", "png", "binary", "json")


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpOracleConfig:
    """How an HTTP oracle is queried. ``label_map`` and ``input_shape`` serve plain-JSON targets
    (OIP targets publish their shape in their metadata)."""

    api_key_env: str | None = None
    concurrency: int = 4
    max_qps: float | None = None  # requests per second, all threads together
    timeout: float = 30.0
    max_retries: int = 6
    backoff: float = 0.25  # first backoff ceiling in seconds; doubles per retry
    max_backoff: float = 30.0
    max_retry_after: float = 300.0  # a longer Retry-After is an error, not a wait
    price_per_1000: float = 0.0
    request_batch: int = 64  # images per HTTP request
    response_format: str = "label-score"
    label_map: tuple[str, ...] = ()
    num_classes: int | None = None
    input_shape: tuple[int, int, int] | None = None
    send_as: str = "auto"
    seed: int = 0  # of the backoff jitter

    def __post_init__(self) -> None:
        _check(1 <= self.concurrency <= 256, "concurrency", self.concurrency, "1..256")
        _check(self.max_qps is None or self.max_qps > 0, "max_qps", self.max_qps, "> 0 or None")
        _check(self.timeout > 0, "timeout", self.timeout, "seconds > 0")
        _check(0 <= self.max_retries <= 100, "max_retries", self.max_retries, "0..100")
        _check(self.backoff >= 0, "backoff", self.backoff, "seconds >= 0")
        _check(self.max_backoff >= self.backoff, "max_backoff", self.max_backoff, ">= backoff")
        _check(self.price_per_1000 >= 0, "price_per_1000", self.price_per_1000, ">= 0")
        _check(1 <= self.request_batch <= 65_536, "request_batch", self.request_batch, "1..65536")
        _check(
            self.response_format in RESPONSE_FORMATS,
            "response_format",
            self.response_format,
            ", ".join(RESPONSE_FORMATS),
        )
        _check(self.send_as in SEND_AS, "send_as", self.send_as, ", ".join(SEND_AS))
        _check(
            self.num_classes is None or self.num_classes >= 2,
            "num_classes",
            self.num_classes,
            ">= 2",
        )
        _check(
            self.input_shape is None
            or (len(self.input_shape) == 3 and all(d >= 1 for d in self.input_shape)),
            "input_shape",
            self.input_shape,
            "C,H,W with positive sizes, e.g. 1,28,28",
        )

    def api_key(self) -> str | None:
        """The key from ``api_key_env``; None when no variable is named."""
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(
                f"api_key_env={self.api_key_env!r} names an unset or empty environment "
                f"variable; export {self.api_key_env}=<key> or drop --api-key-env"
            )
        return key
