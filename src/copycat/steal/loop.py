"""The query stage: send pool images to the oracle under a budget and persist every answer.

The budget is enforced here, once, against the store's count: a resumed run sends at most
``budget - answered`` more images, and an answer counts only once it is committed.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Protocol

import torch

from copycat.config import StealConfig
from copycat.errors import OracleError, OracleUnavailableError
from copycat.oracles.base import Answer, Oracle
from copycat.pools.pool import Candidates, Pool, prefetch
from copycat.steal.store import AnswerStore, image_id

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, list[int]], None]  # (answered, budget, label histogram)


class Selector(Protocol):
    """Label-aware selection: which of an oversampled batch of candidates to send."""

    oversample: int  # candidates scored per image sent, once active

    def active(self, answered: int) -> bool: ...  # oversample from this many answers on
    def synthesize(self, cand: Candidates, store: AnswerStore) -> Candidates: ...  # add more
    def __call__(self, cand: Candidates, k: int, store: AnswerStore) -> torch.Tensor: ...


@dataclass(slots=True, kw_only=True)
class StealSummary:
    """What one ``steal`` call did."""

    budget: int
    answered: int  # in the store, all runs
    queried_now: int  # sent and committed by this call
    already_answered: int  # candidates skipped: their exact image was answered before
    batches: int
    seconds: float
    label_histogram: list[int]
    skipped_files: dict[str, int] = field(default_factory=dict)
    stopped: str = "budget reached"

    @property
    def images_per_s(self) -> float:
        return self.queried_now / self.seconds if self.seconds > 0 else 0.0


def validate_answer(ans: Answer, *, n: int, num_classes: int) -> None:
    """Refuse a malformed answer before it can poison the fake dataset."""
    if ans.labels.shape != (n,):
        raise OracleError(f"oracle returned {tuple(ans.labels.shape)} labels for {n} images")
    if n and (int(ans.labels.min()) < 0 or int(ans.labels.max()) >= num_classes):
        raise OracleError(f"oracle returned a label outside 0..{num_classes - 1}")
    if ans.probs is not None:
        if ans.probs.shape != (n, num_classes):
            raise OracleError(
                f"oracle returned probabilities of shape {tuple(ans.probs.shape)}, "
                f"expected {(n, num_classes)}"
            )
        if not torch.isfinite(ans.probs).all():
            raise OracleError("oracle returned non-finite probabilities")


def _commit(
    store: AnswerStore,
    cand: Candidates,
    idx: torch.Tensor,
    ids: list[str],
    ans: Answer,
    num_classes: int,
) -> int:
    validate_answer(ans, n=len(idx), num_classes=num_classes)
    return store.add_batch(
        [ids[i] for i in idx.tolist()],
        cand.images[idx],
        ans.labels,
        ans.probs,
        [cand.sources[i] for i in idx.tolist()],
    )


@dataclass(slots=True, kw_only=True)
class _Progress:
    """What the loop has done so far in this call."""

    start: int  # answers in the store before this call
    remaining: int
    hist: list[int]
    queried: int = 0
    batches: int = 0
    already: int = 0
    stale: int = 0
    stopped: str = "budget reached"
    seen: set[str] = field(default_factory=set)  # ids sent by this call


def steal(
    oracle: Oracle,
    pool: Pool,
    store: AnswerStore,
    *,
    config: StealConfig,
    on_batch: ProgressFn | None = None,
    selector: Selector | None = None,
) -> StealSummary:
    """Query ``oracle`` with images from ``pool`` until ``store`` holds ``config.budget`` answers.

    Re-running with the same pool seed resumes: answered images are recognised by their content
    hash and never sent again. ``selector`` (optional) picks which candidates of an oversampled
    batch to send (label-aware selection); without it candidates are sent in pool order.
    """
    k = oracle.num_classes
    store.bind(
        fingerprint=oracle.fingerprint,
        input_shape=oracle.input_shape,
        num_classes=k,
        pool=pool.describe(),
        budget=config.budget,
    )
    start = store.count()
    st = _Progress(start=start, remaining=config.budget - start, hist=store.label_histogram(k))
    t0 = time.perf_counter()
    over = selector.oversample if selector is not None else 1
    # Past the prefix that earlier runs answered, a long run of batches with nothing new means
    # the pool cannot give more distinct images (e.g. no augmentation on a small folder).
    prefix_batches = math.ceil(start * over / config.batch_size) + 1
    if on_batch is not None:
        on_batch(start, config.budget, st.hist)
    # closing the stream stops its producer thread before pool.skipped is read
    with closing(prefetch(pool.batches(config.batch_size))) as stream:
        for i, first in enumerate(stream):
            if st.remaining <= 0:
                break
            cand = first
            if selector is not None and selector.active(start + st.queried):
                cand = selector.synthesize(_oversample(first, stream, over), store)
            ids = [image_id(img) for img in cand.images]
            fresh = _fresh(ids, store, st)
            if not fresh:
                st.stale = st.stale + 1 if i >= prefix_batches else 0
                if st.stale >= 50:
                    st.stopped = "pool exhausted"
                    log.warning(
                        "the pool gives no new images (%d answered); enable augmentation "
                        "or add images",
                        start + st.queried,
                    )
                    break
                continue
            st.stale = 0
            idx = _choose(cand, fresh, min(st.remaining, config.batch_size), store, selector)
            st.seen.update(ids[j] for j in idx.tolist())
            labels = _query_and_commit(oracle, store, cand, idx, ids, k, st)
            for lab in labels.tolist():
                st.hist[lab] += 1
            if on_batch is not None:
                on_batch(start + st.queried, config.budget, st.hist)
    return _summary(config, st, time.perf_counter() - t0, pool)


def _oversample(first: Candidates, stream: Iterator[Candidates], over: int) -> Candidates:
    """``first`` and the next ``over - 1`` pool batches, as one candidate set."""
    more = [next(stream) for _ in range(over - 1)]
    return Candidates(
        images=torch.cat([first.images, *(m.images for m in more)]),
        sources=first.sources + tuple(s for m in more for s in m.sources),
    )


def _fresh(ids: list[str], store: AnswerStore, st: _Progress) -> list[int]:
    """Positions of candidates neither answered before nor sent by this call; an image that
    appears twice in one batch (synthesis can return an image unchanged) is kept once."""
    known = store.known(ids)
    st.already += sum(1 for h in ids if h in known)
    first = {h: j for j, h in reversed(list(enumerate(ids)))}
    return [j for j, h in enumerate(ids) if h not in known and h not in st.seen and first[h] == j]


def _choose(
    cand: Candidates,
    fresh: list[int],
    take: int,
    store: AnswerStore,
    selector: Selector | None,
) -> torch.Tensor:
    """At most ``take`` of the ``fresh`` positions: the selector's pick, or pool order."""
    idx = torch.tensor(fresh, dtype=torch.int64)
    if selector is not None and len(fresh) > take:
        sub = Candidates(images=cand.images[idx], sources=tuple(cand.sources[j] for j in fresh))
        idx = idx[selector(sub, take, store)]
    return idx[:take]


def _query_and_commit(
    oracle: Oracle,
    store: AnswerStore,
    cand: Candidates,
    idx: torch.Tensor,
    ids: list[str],
    k: int,
    st: _Progress,
) -> torch.Tensor:
    """Send ``cand.images[idx]``, commit the answers; the labels (N,) int64 are returned.

    If the oracle fails part-way, the answers it was paid for are committed before the error
    propagates."""
    try:
        ans = oracle.query(cand.images[idx].float().div_(255.0))
    except OracleUnavailableError as exc:
        if exc.partial is not None and exc.answered is not None:
            part = idx[torch.as_tensor(exc.answered, dtype=torch.int64)]
            st.queried += _commit(store, cand, part, ids, exc.partial, k)  # type: ignore[arg-type]
            log.warning("committed %d answers paid before the oracle failed", len(part))
        raise
    written = _commit(store, cand, idx, ids, ans, k)
    st.queried += written
    st.remaining -= written
    st.batches += 1
    return ans.labels


def _summary(config: StealConfig, st: _Progress, seconds: float, pool: Pool) -> StealSummary:
    log.info(
        "steal: %d answered now, %d in store, %.1f images/s",
        st.queried,
        st.start + st.queried,
        st.queried / seconds if seconds else 0.0,
    )
    return StealSummary(
        budget=config.budget,
        answered=st.start + st.queried,
        queried_now=st.queried,
        already_answered=st.already,
        batches=st.batches,
        seconds=seconds,
        label_histogram=st.hist,
        skipped_files=dict(Counter(pool.skipped)),
        stopped=st.stopped,
    )
