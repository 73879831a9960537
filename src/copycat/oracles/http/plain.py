"""The plain JSON oracle: ``http(s)://HOST/PATH`` in the style of hosted vision APIs.

The request is ``{"images": [<base64 PNG>, ...]}``; the reply is read by ``response_format``
(``label-score``, ``label`` or ``probs``; see
:func:`~copycat.oracles.http.formats.parse_plain_reply`).
The input shape and the classes come from the options, since such endpoints do not publish them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import httpx
import torch

from copycat.config import HttpOracleConfig
from copycat.errors import ConfigError
from copycat.oracles.base import Answer
from copycat.oracles.http.base import HttpOracle, to_png_b64, without_credentials
from copycat.oracles.http.client import AttemptTrack
from copycat.oracles.http.formats import parse_plain_reply


class PlainJsonOracle(HttpOracle):
    """A plain JSON endpoint: base64 PNGs in, a documented reply format out."""

    def __init__(self, url: str, *, config: HttpOracleConfig) -> None:
        super().__init__(url, config=config)
        self._index = {name: i for i, name in enumerate(config.label_map)}

    @property
    def input_shape(self) -> tuple[int, int, int]:
        if self.config.input_shape is None:
            raise ConfigError(
                f"plain JSON target {self.transport.shown} does not publish its input shape; "
                "pass --input-shape C,H,W (e.g. 1,28,28)"
            )
        return self.config.input_shape

    @property
    def num_classes(self) -> int:
        if self.config.num_classes is not None:
            return self.config.num_classes
        if self.config.label_map:
            return len(self.config.label_map)
        raise ConfigError(
            f"plain JSON target {self.transport.shown} does not publish its classes; pass "
            "--label-map (class names in index order) or --num-classes K"
        )

    @property
    def fingerprint(self) -> str:
        cfg = self.config
        parts: list[Any] = [without_credentials(self.url), cfg.response_format]
        parts += [list(cfg.label_map), list(self.input_shape), self.num_classes]
        blob = json.dumps(parts).encode()
        return "http:" + hashlib.sha256(blob).hexdigest()[:16]

    def _request(self, images: torch.Tensor, track: AttemptTrack | None = None) -> Answer:
        body = json.dumps({"images": to_png_b64(images)}).encode()
        n = len(images)
        parse: Callable[[httpx.Response], Answer] = lambda r: parse_plain_reply(  # noqa: E731
            r.json(),
            n=n,
            fmt=self.config.response_format,
            num_classes=self.num_classes,
            index=self._index,
        )
        return self.transport.call(
            lambda: self.transport.client.post(
                self.url, content=body, headers={"Content-Type": "application/json"}
            ),
            parse,
            images=n,
            track=track,
        )
