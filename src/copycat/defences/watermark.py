"""DAWN-style watermarking (Szyller et al., ACM MM 2021): a keyed hash of each query decides
whether its answer is flipped, so a model trained on the answers carries a mark only the key
holder can test for.

For a fraction ``rate`` of queries, chosen by ``HMAC-SHA256(key, exact image bytes)``, the
answer's top class is replaced by a wrong class that the same hash picks (uniformly among the
K - 1 others); probabilities are permuted so that class is on top. The same query always gets
the same answer, so averaging repeated queries does not remove the mark. The key comes from the
environment variable ``key_env`` and is never logged or written; the fingerprint names the
variable only.

:func:`watermark_test` is the verification: on the queries that were flipped, how often does a
suspect predict the flipped class? For a model that never saw the flipped answers, the flipped
class is a keyed uniform draw among the wrong classes, independent of the model, so on the ``n``
flipped queries where the suspect disagrees with the target it matches with probability
exactly ``1 / (K - 1)``; the p-value is the binomial tail of the matches observed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

import numpy as np
import torch

from copycat.defences.base import Defence, to_uint8
from copycat.defences.registry import Params, no_args
from copycat.errors import ConfigError
from copycat.oracles.base import Answer, Oracle

DEFAULT_KEY_ENV = "COPYCAT_WATERMARK_KEY"


def read_key(key_env: str) -> bytes:
    """The watermark key from the environment; an unset variable names the fix."""
    key = os.environ.get(key_env)
    if not key:
        raise ConfigError(
            f"watermark key_env={key_env!r} names an unset or empty environment variable; "
            f"export {key_env}=$(openssl rand -hex 16) (keep it: verification needs it)"
        )
    return key.encode()


def keyed_draws(key: bytes, images_u8: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per image (uint8 (N, C, H, W)): a uniform in [0, 1) (is it flipped?) and an integer
    (which wrong class), both from one HMAC of the exact bytes."""
    u = np.empty(len(images_u8), dtype=np.float64)
    r = np.empty(len(images_u8), dtype=np.int64)
    arr = np.ascontiguousarray(images_u8.numpy())
    for i in range(len(arr)):
        digest = hmac.new(key, repr(arr[i].shape).encode() + arr[i].tobytes(), hashlib.sha256)
        d = digest.digest()
        u[i] = int.from_bytes(d[:8], "big") / 2.0**64
        r[i] = int.from_bytes(d[8:15], "big")  # 56 bits: fits int64
    return u, r


def watermark_labels(
    key: bytes, images_u8: torch.Tensor, true_labels: torch.Tensor, *, rate: float, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(flipped mask (N,) bool, watermark label (N,) int64) for ``images_u8``; the watermark
    label is a keyed draw among the ``k - 1`` classes other than ``true_labels``."""
    u, r = keyed_draws(key, images_u8)
    mask = torch.from_numpy(u < rate)
    shift = torch.from_numpy(1 + r % (k - 1))
    return mask, (true_labels + shift) % k


class Watermark(Defence):
    """Flip the answer of a keyed-hash fraction ``rate`` of queries (see the module)."""

    name = "watermark"

    def __init__(self, inner: Oracle, *, rate: float = 0.01, key_env: str = DEFAULT_KEY_ENV):
        super().__init__(inner)
        self.rate, self.key_env = rate, key_env
        self.tag = f"watermark:rate={rate:g},key_env={key_env}"
        self._key: bytes | None = None
        self.flipped = 0

    def defend(self, images: torch.Tensor, probs: torch.Tensor, *, client: str) -> Answer:
        if self._key is None:
            self._key = read_key(self.key_env)
        top = probs.argmax(1)
        mask, wm = watermark_labels(
            self._key, to_uint8(images), top, rate=self.rate, k=probs.shape[1]
        )
        if not mask.any():
            return Answer(labels=top, probs=probs)
        out = probs.clone()
        rows = mask.nonzero().squeeze(1)
        a, b = top[rows], wm[rows]
        out[rows, a], out[rows, b] = probs[rows, b], probs[rows, a]  # swap: wm class on top
        self.flipped += len(rows)
        return Answer(labels=torch.where(mask, wm, top), probs=out)


def build_watermark(inner: Oracle, *args: str, device: str = "cpu", **raw: str) -> Watermark:
    """``watermark:rate=R,key_env=VAR``."""
    no_args("watermark", args)
    p = Params("watermark", raw)
    rate = p.get_float("rate", 0.01, lo=0.0, hi=0.5)
    key_env = p.get_str("key_env", DEFAULT_KEY_ENV)
    p.done()
    return Watermark(inner, rate=rate, key_env=key_env)


@dataclass(frozen=True, slots=True)
class WatermarkVerdict:
    """The verification of one suspect: on ``flipped`` watermarked queries the suspect gave the
    watermark class ``matches`` times; ``informative`` of them it disagreed with the target
    (only those can match); ``p_value`` is P(matches or more | an independent model)."""

    queries: int
    flipped: int
    informative: int
    matches: int
    chance: float
    p_value: float
    alpha: float

    @property
    def stolen(self) -> bool:
        return self.flipped > 0 and self.p_value < self.alpha

    @property
    def match_rate(self) -> float:
        return self.matches / self.flipped if self.flipped else 0.0


def watermark_test(
    images_u8: torch.Tensor,
    *,
    target_labels: torch.Tensor,
    suspect_labels: torch.Tensor,
    key: bytes,
    rate: float,
    num_classes: int,
    alpha: float = 0.01,
) -> WatermarkVerdict:
    """Test whether a suspect reproduces the watermark on the queries ``images_u8`` (uint8
    (N, C, H, W): what the target answered), given the target's true labels (N,) and the
    suspect's labels (N,) on them."""
    from scipy.stats import binom

    mask, wm = watermark_labels(key, images_u8, target_labels, rate=rate, k=num_classes)
    disagree = mask & (suspect_labels != target_labels)
    matches = int((mask & (suspect_labels == wm)).sum())
    n = int(disagree.sum())
    chance = 1.0 / (num_classes - 1)
    p = float(binom.sf(matches - 1, n, chance)) if matches > 0 else 1.0
    return WatermarkVerdict(
        queries=len(images_u8),
        flipped=int(mask.sum()),
        informative=n,
        matches=matches,
        chance=chance,
        p_value=p,
        alpha=alpha,
    )
