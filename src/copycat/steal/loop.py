"""The query stage: send pool images to the oracle under a budget and persist every answer.

The budget is enforced here, once, against the store's count: a resumed run sends at most
``budget - answered`` more images, and an answer counts only once it is committed. Each request
is written to the store's ledger before it is sent (where the budget and ``max_billed`` are
checked again, inside the write transaction) and its answers are committed as soon as it
completes, so a ``kill -9`` loses at most the answers of the requests in flight.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Protocol

import torch

from copycat.config import StealConfig
from copycat.errors import OracleError, OracleUnavailableError
from copycat.oracles.base import Answer, Oracle, query_parts
from copycat.pools.pool import Candidates, Pool, prefetch
from copycat.steal.store import AnswerStore, LimitReached, image_id

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, list[int]], None]  # (answered, budget, label histogram)


class Selector(Protocol):
    """Label-aware selection: which of an oversampled batch of candidates to send."""

    oversample: int  # pool images drawn per image sent, once active (read before each batch)

    def begin(self, pool: list[tuple[str, float]], store: AnswerStore) -> None: ...  # a steal
    def active(self, answered: int) -> bool: ...  # oversample from this many answers on
    def picks(self, answered: int) -> bool: ...  # past the seed share: pick and synthesize
    def thin(self, cand: Candidates, store: AnswerStore) -> Candidates: ...  # to the shares
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
    billed: int = 0  # images that may have been billed, all runs (the store's ledger)
    billed_now: int = 0  # of which by this call (retries included)
    max_billed: int | None = None
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


class _StoreHooks:
    """The oracle's requests for one batch, recorded in the store's ledger before they are
    sent and their answers committed as each completes (from the oracle's threads)."""

    def __init__(
        self,
        store: AnswerStore,
        cand: Candidates,
        idx: torch.Tensor,
        ids: list[str],
        *,
        num_classes: int,
        config: StealConfig,
    ) -> None:
        self.store = store
        self.cand = cand
        self.pos = idx.tolist()  # batch position -> candidate position
        self.ids = ids
        self.k = num_classes
        self.config = config
        self.written = 0
        self.labels: list[int] = []
        self._lock = threading.Lock()

    def opened(self, positions: Sequence[int], attempt: int) -> int:
        ids = [self.ids[self.pos[p]] for p in positions]
        cfg = self.config
        return self.store.open_request(
            ids, attempt=attempt, budget=cfg.budget, max_billed=cfg.max_billed
        )

    def closed(self, token: int, outcome: str) -> None:
        self.store.close_request(token, outcome)

    def answered(self, token: int, positions: Sequence[int], answer: Answer) -> None:
        try:
            validate_answer(answer, n=len(positions), num_classes=self.k)
        except OracleError:
            self.store.close_request(token, "invalid")  # paid for, and refused
            raise
        sel = [self.pos[p] for p in positions]
        written = self.store.add_batch(
            [self.ids[i] for i in sel],
            self.cand.images[sel],
            answer.labels,
            answer.probs,
            [self.cand.sources[i] for i in sel],
            request=token,
        )
        with self._lock:
            self.written += written
            self.labels += answer.labels.tolist()


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
    killed = store.close_orphans()  # requests in flight when an earlier run died
    if killed:
        log.warning("%d images were in flight when an earlier run died: counted as billed", killed)
    billed_start = store.billed()
    start, drawn_before, drawn_now = store.count(), store.meta().get("pool"), pool.describe()
    # a store that already holds the budget draws nothing more: it keeps the pool it records
    drawing = start < config.budget
    store.bind(
        fingerprint=oracle.fingerprint,
        input_shape=oracle.input_shape,
        num_classes=k,
        pool=drawn_now if drawing or drawn_before is None else drawn_before,
        budget=config.budget,
    )
    if start and drawing and drawn_before not in (None, drawn_now):
        log.warning(
            "the %d answers stored were drawn from %s; this run draws from %s. Both are "
            "kept. To draw as before, give that pool, seed and augmentation (its sets and "
            "weights as npd:sets=A,B;weights=W,W); for one pool only, use a new --run-dir",
            start,
            drawn_before,
            drawn_now,
        )
    st = _Progress(start=start, remaining=config.budget - start, hist=store.label_histogram(k))
    t0 = time.perf_counter()
    if selector is not None:
        selector.begin(pool.shares(), store)
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
            cand, answered = first, start + st.queried
            if selector is not None and selector.active(answered):
                cand = _oversample(first, stream, selector.oversample)
                if selector.picks(answered):
                    cand = selector.thin(cand, store)
                    if answered >= config.synth_from:
                        cand = selector.synthesize(cand, store)
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
            take = min(st.remaining, config.batch_size, _billable(store, config))
            if take <= 0:
                st.stopped = "max-billed reached"
                break
            idx = _choose(cand, fresh, take, store, selector)
            st.seen.update(ids[j] for j in idx.tolist())
            if not _query_and_commit(oracle, store, cand, idx, ids, config, st):
                break
            if on_batch is not None:
                on_batch(start + st.queried, config.budget, st.hist)
    billed = store.billed()
    summary = _summary(config, st, time.perf_counter() - t0, pool)
    summary.billed, summary.billed_now = billed, billed - billed_start
    summary.max_billed = config.max_billed
    return summary


def _billable(store: AnswerStore, config: StealConfig) -> int:
    """Images ``max_billed`` still allows (all runs), or the batch size if there is no cap."""
    if config.max_billed is None:
        return config.batch_size
    return config.max_billed - store.billed()


def _oversample(first: Candidates, stream: Iterator[Candidates], over: int) -> Candidates:
    """``first`` and the next ``over - 1`` pool batches, as one candidate set."""
    more = [next(stream) for _ in range(over - 1)]
    return Candidates(
        images=torch.cat([first.images, *(m.images for m in more)]),
        sources=first.sources + tuple(s for m in more for s in m.sources),
    )


def _fresh(ids: list[str], store: AnswerStore, st: _Progress) -> list[int]:
    """Positions of candidates neither answered before nor sent by this call, each image once
    (a pool without augmentation repeats images within a batch)."""
    known = store.known(ids)
    st.already += sum(1 for h in ids if h in known)
    out: list[int] = []
    taken: set[str] = set()
    for j, h in enumerate(ids):
        if h not in known and h not in st.seen and h not in taken:
            taken.add(h)
            out.append(j)
    return out


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
    config: StealConfig,
    st: _Progress,
) -> bool:
    """Send ``cand.images[idx]`` request by request, each request's answers committed as it
    completes; False when a limit (budget, ``max_billed``) refused a request.

    If the oracle fails part-way, the answers it was paid for are committed before the error
    propagates."""
    hooks = _StoreHooks(store, cand, idx, ids, num_classes=oracle.num_classes, config=config)
    try:
        query_parts(oracle, cand.images[idx].float().div_(255.0), hooks)
    except LimitReached as exc:
        st.stopped = exc.reason
        return False
    except OracleUnavailableError:
        if hooks.written:
            log.warning("committed %d answers paid before the oracle failed", hooks.written)
        raise
    finally:
        st.queried += hooks.written
        for lab in hooks.labels:
            st.hist[lab] += 1
    st.remaining -= len(idx)  # images sent, whatever was written
    st.batches += 1
    return True


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
