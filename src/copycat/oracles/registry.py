"""The oracle registry: ``scheme:id`` -> an oracle, restricted to what the target reveals.

Every oracle scheme is listed here, once; :func:`parse_oracle_spec`, ``--help`` and the error
messages read the list from :data:`ORACLES`. Builders take ``(spec, *, device, **options)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from copycat.errors import ConfigError
from copycat.registry import Registry

if TYPE_CHECKING:
    from copycat.oracles.base import Oracle

ORACLES = Registry("oracle scheme")
ORACLES.add("torch", "copycat.oracles.local:build_torch", usage="torch:DIR")
ORACLES.add("onnx", "copycat.oracles.local:build_onnx", usage="onnx:FILE")
ORACLES.add(
    "oip+http", "copycat.oracles.http:build_http_oracle", usage="oip+http://HOST/v2/models/NAME"
)
ORACLES.add("oip+https", "copycat.oracles.http:build_http_oracle", usage="oip+https://...")
ORACLES.add("http", "copycat.oracles.http:build_http_oracle", usage="http://HOST/PATH")
ORACLES.add("https", "copycat.oracles.http:build_http_oracle", usage="https://HOST/PATH")

#: Schemes that speak HTTP: only they take the HTTP client options.
HTTP_SCHEMES = ("http", "https", "oip+http", "oip+https")


def is_http(spec: str) -> bool:
    return spec.split(":", 1)[0] in HTTP_SCHEMES


def parse_oracle_spec(
    spec: str, *, output: str = "label", device: str = "cpu", **http_options: Any
) -> Oracle:
    """Build an oracle from a ``scheme:id`` spec (see :data:`ORACLES`), restricted to
    ``output`` (top-1 label by default)."""
    from copycat.oracles.outputs import restrict

    scheme, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ConfigError(f"oracle {spec!r} has no scheme; use {ORACLES.usages()}")
    build = ORACLES.get(scheme)
    inner: Oracle = build(spec, device=device, **http_options)
    return restrict(inner, output)
