"""HTTP oracles: a deployed classifier queried over the network.

Two protocols, picked from the spec by :func:`build_http_oracle`:

- ``oip+http(s)://HOST/v2/models/NAME`` (or any ``http(s)`` URL whose path is
  ``/v2/models/NAME``): the Open Inference Protocol (KServe V2) REST API. The model's metadata
  gives the input shape and datatype (UINT8 and FP32 tensors, or BYTES holding PNG) and, from a
  probabilities output ``[-1, K]``, the class count.
- any other ``http(s)://`` URL: a plain JSON endpoint in the style of hosted vision APIs. The
  request is ``{"images": [<base64 PNG>, ...]}``; the reply is read by ``response_format``
  (``label-score``, ``label`` or ``probs``; see :func:`parse_plain_reply`). The input shape and
  the classes come from the options, since such endpoints do not publish them.

A batch is split into requests of ``request_batch`` images sent concurrently; when some of them
fail for good, :class:`~copycat.errors.OracleUnavailableError` carries the answers that were
paid for, so the steal loop commits them before stopping.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from copycat.config import HttpOracleConfig
from copycat.errors import ConfigError
from copycat.oracles.http.formats import load_label_map, parse_shape
from copycat.oracles.http.oip import OipOracle
from copycat.oracles.http.plain import PlainJsonOracle
from copycat.redact import redact_url

__all__ = ["OipOracle", "PlainJsonOracle", "build_http_oracle"]


def build_http_oracle(
    spec: str, *, device: str = "cpu", **options: Any
) -> OipOracle | PlainJsonOracle:
    """The oracle for ``spec``; ``options`` are the fields of :class:`HttpOracleConfig`
    (``label_map`` and ``input_shape`` may also be given as strings, as on the command line)."""
    opts = {k: v for k, v in options.items() if v is not None}
    if "label_map" in opts:
        opts["label_map"] = load_label_map(opts["label_map"])
    if "input_shape" in opts:
        opts["input_shape"] = parse_shape(opts["input_shape"])
    try:
        config = HttpOracleConfig(**opts)
    except TypeError as exc:
        raise ConfigError(f"unknown HTTP oracle option ({exc})") from exc
    shown = redact_url(spec)
    oip = spec.startswith("oip+")
    url = spec.removeprefix("oip+")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"oracle {shown!r} is not a valid URL; use oip+http://HOST:PORT/v2/models/NAME "
            "or http(s)://HOST/PATH"
        )
    segs = [s for s in parts.path.split("/") if s]
    if oip or (len(segs) >= 3 and segs[:2] == ["v2", "models"]):
        if len(segs) < 3 or segs[:2] != ["v2", "models"]:
            raise ConfigError(
                f"oracle {shown!r}: an Open Inference Protocol URL ends in /v2/models/NAME"
            )
        return OipOracle(url, config=config)
    return PlainJsonOracle(url, config=config)
