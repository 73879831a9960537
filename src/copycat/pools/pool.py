"""Pools of unlabelled query images, with stable content ids and query-time augmentation.

A pool is a deterministic, endless stream of candidate images at the oracle's input shape,
drawn from one or more sources (a folder, the built-in NPD images, a labelled set with its
labels discarded, noise) and augmented in batch. The same seed gives the same stream, so a
resumed steal sees the same candidates and skips those already answered.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import torch

from copycat.config import AugmentConfig, PoolConfig
from copycat.errors import ConfigError
from copycat.pools.augment import augment_batch, to_uint8

log = logging.getLogger(__name__)

CHUNK = 256  # candidates are generated in fixed chunks, so the stream ignores the batch size


class Source(Protocol):
    """Base images for a pool: (n, C, S, S) uint8 with the oracle's channel count."""

    name: str
    skipped: Counter[str]

    # n images, and the name of each: the source's, or the source's and the image's group
    def draw_named(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, list[str]]: ...
    def reset(self) -> None: ...  # forget the draw order: a new stream starts afresh


@runtime_checkable
class Mixture(Source, Protocol):
    """A source that draws from several sets by fixed shares (``npd``'s sets)."""

    def shares(self) -> list[tuple[str, float]]: ...


def total_skipped(sources: Iterable[Source]) -> Counter[str]:
    """Files the ``sources`` skipped, counted by reason, all together."""
    total: Counter[str] = Counter()
    for s in sources:
        total.update(s.skipped)
    return total


@dataclass(frozen=True, slots=True)
class Candidates:
    """A batch of images ready to send."""

    images: torch.Tensor  # (N, C, H, W) uint8
    sources: tuple[str, ...]


class Pool:
    """Mixes sources by weight and augments what they give."""

    def __init__(
        self,
        sources: list[Source],
        *,
        weights: list[float],
        shape: tuple[int, int, int],
        augment: AugmentConfig,
        seed: int,
        spec: str,
    ) -> None:
        self.sources = sources
        self.weights = weights
        self.shape = shape
        self.augment = augment
        self.seed = seed
        self.spec = spec

    def shares(self) -> list[tuple[str, float]]:
        """Each source's share of the images drawn, the sets of ``npd`` each on its own."""
        total = sum(self.weights) or 1.0
        out: list[tuple[str, float]] = []
        for src, w in zip(self.sources, self.weights, strict=True):
            inner = src.shares() if isinstance(src, Mixture) else [(src.name, 1.0)]
            out += [(name, w / total * share) for name, share in inner]
        return out

    def describe(self) -> str:
        """The spec, what it draws from (when more than one set), the seed and augmentation:
        recorded with the answers, so a resumed steal can tell the pool has changed."""
        aug = "augmented" if self.augment.enabled else "not augmented"
        parts = self.shares()
        mix = f" [{', '.join(f'{n} {s:.0%}' for n, s in parts)}]" if len(parts) > 1 else ""
        return f"{self.spec}{mix} (seed {self.seed}, {aug})"

    @property
    def skipped(self) -> Counter[str]:
        return total_skipped(self.sources)

    def stream(self) -> Iterator[Candidates]:
        """Endless chunks of CHUNK candidates; the same seed gives the same chunks."""
        gen = torch.Generator().manual_seed(self.seed)
        for src in self.sources:
            src.reset()
        w = torch.tensor(self.weights, dtype=torch.float64)
        while True:
            which = torch.multinomial(w, CHUNK, replacement=True, generator=gen)
            parts, names = [], []
            for i, src in enumerate(self.sources):
                n = int((which == i).sum())
                if n == 0:
                    continue
                raw, got = src.draw_named(n, gen)
                parts.append(augment_batch(raw.float().div_(255.0), self.shape, self.augment, gen))
                names += got
            imgs = torch.cat(parts)
            order = torch.randperm(len(imgs), generator=gen)
            yield Candidates(
                images=to_uint8(imgs[order]), sources=tuple(names[i] for i in order.tolist())
            )

    def batches(self, batch_size: int) -> Iterator[Candidates]:
        """The stream re-cut into batches of ``batch_size``."""
        buf_i: list[torch.Tensor] = []
        buf_s: list[str] = []
        have = 0
        for chunk in self.stream():
            buf_i.append(chunk.images)
            buf_s += chunk.sources
            have += len(chunk.sources)
            while have >= batch_size:
                allimg = torch.cat(buf_i)
                yield Candidates(images=allimg[:batch_size], sources=tuple(buf_s[:batch_size]))
                buf_i, buf_s = [allimg[batch_size:]], buf_s[batch_size:]
                have -= batch_size


T = TypeVar("T")


def prefetch(items: Iterator[T], *, depth: int = 2) -> Generator[T, None, None]:
    """``items`` produced ahead in a background thread (at most ``depth`` waiting), so making
    the next batch overlaps with querying this one. Order, and so determinism, is kept; an
    error in the producer is raised here; closing this iterator stops the producer."""
    q: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(kind: str, value: object) -> bool:
        while not stop.is_set():
            try:
                q.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put("item", item):
                    return
            put("end", None)
        except BaseException as exc:  # handed to the consumer, raised there
            put("error", exc)

    worker = threading.Thread(target=produce, name="copycat-pool", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value  # type: ignore[misc]
            yield value  # type: ignore[misc]
    finally:
        stop.set()
        worker.join(timeout=10)


def build_pool(cfg: PoolConfig, *, shape: tuple[int, int, int]) -> Pool:
    """Parse ``cfg.spec``: schemes of :data:`~copycat.pools.registry.POOLS` joined by ``+``."""
    from copycat.pools.registry import POOLS

    built: list[Source] = []
    for part in cfg.spec.split("+"):
        scheme, arg = parse_pool_part(part, spec=cfg.spec)
        built.append(POOLS.get(scheme)(arg, shape=shape, max_pixels=cfg.max_pixels))
    weights = list(cfg.mix) if cfg.mix else [1.0] * len(built)
    return Pool(
        built, weights=weights, shape=shape, augment=cfg.augment, seed=cfg.seed, spec=cfg.spec
    )


def parse_pool_part(part: str, *, spec: str = "") -> tuple[str, str]:
    """``scheme[:arg]`` checked against the scheme's usage in the registry: ``name`` takes no
    argument, ``name:ARG`` needs one, ``name[:ARG]`` may take one."""
    from copycat.pools.registry import POOLS

    scheme, sep, arg = part.strip().partition(":")
    usage = next((e.usage for e in POOLS if e.name == scheme), None)
    optional = usage is not None and usage.startswith(f"{scheme}[:")
    required = usage is not None and not optional and ":" in usage
    if usage is None or (sep and not arg) or (bool(arg) != required and not optional):
        raise ConfigError(
            f"unknown pool part {part!r} in {spec or part!r}; use {POOLS.usages()}, joined by '+'"
        )
    return scheme, arg
