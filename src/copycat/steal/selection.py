"""Label-aware selection of which pool images to query next (``selection = "balanced"``).

Stolen labels are heavily skewed: most NPD images land in a few classes. After a random seed
share of the budget, an interim copycat trained on the answers so far scores an oversampled
batch of candidates, and the batch sent is the one most likely to fill the classes the fake
dataset lacks (water-filling towards a uniform label histogram, ties to high entropy). The
interim copycat is fitted on the seed answers and refitted ``refits - 1`` more times at even
steps of the rest.

:class:`InterimSelector` is the base every selection strategy builds on (the seed share, the
refit schedule, an optional ``synthesize`` step that makes extra candidates); the strategies
themselves are listed in :mod:`copycat.steal.strategies`.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch

from copycat.config import StealConfig, TrainConfig
from copycat.devices import resolve_device
from copycat.pools.pool import Candidates
from copycat.steal.store import AnswerStore, FakeDataset
from copycat.train.fit import fit, predict
from copycat.train.models import INTERIM_AUTO_ARCH, Classifier, init_model, is_auto

log = logging.getLogger(__name__)


def quotas(hist: torch.Tensor, k: int) -> torch.Tensor:
    """How many of ``k`` new answers each class should get to even out ``hist`` (K,) int64."""
    q = torch.zeros_like(hist)
    level = hist.clone()
    for _ in range(k):  # k is a batch size: a loop is clear and cheap
        c = int(torch.argmin(level))
        q[c] += 1
        level[c] += 1
    return q


def assign_balanced(probs: torch.Tensor, hist: torch.Tensor, k: int) -> tuple[list[int], list[int]]:
    """Rows of ``probs`` (N, K) that best fill the quotas of ``hist``, and the class each row was
    picked for (-1: picked for its entropy once no row is left for a class)."""
    n = probs.shape[0]
    taken = torch.zeros(n, dtype=torch.bool)
    chosen: list[int] = []
    classes: list[int] = []
    q = quotas(hist, k)
    for c in torch.argsort(q, descending=True).tolist():
        if q[c] == 0:
            break
        order = torch.argsort(probs[:, c], descending=True)
        order = order[~taken[order]][: int(q[c])]
        taken[order] = True
        chosen += order.tolist()
        classes += [c] * len(order)
    if len(chosen) < k:  # fill up with the most uncertain candidates
        ent = -(probs * probs.clamp(min=1e-12).log()).sum(1)
        ent[taken] = -1.0
        more = torch.argsort(ent, descending=True)[: k - len(chosen)].tolist()
        chosen += more
        classes += [-1] * len(more)
    return chosen[:k], classes[:k]


def pick_balanced(probs: torch.Tensor, hist: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of ``k`` rows of ``probs`` (N, K) to query given the label histogram ``hist``."""
    chosen, _ = assign_balanced(probs, hist, k)
    return torch.tensor(chosen, dtype=torch.int64)


def set_of(source: str) -> str:
    """The NPD set (or source) an answer came from: ``clipart/animals+jacobian`` -> ``clipart``."""
    return source.split("+", 1)[0].split("/", 1)[0]


# set_weights = "yield": answers read before the sets' shares move from the pool's own (at
# most; a quarter of the seed share on small budgets), how far a set's weight follows its
# yield (weight = yield ** power), and the share every set keeps
YIELD_WARMUP = 256
YIELD_POWER = 2.0
YIELD_FLOOR = 0.1
# set_weights = "auto": "earned" up to this budget, "pool" above it. Measured on the suite's
# validation splits (docs/suite.md): "earned" gains on Fashion-MNIST at 2,000 queries on every
# seed and is level at 5,000, loses at 20,000 on every seed, and is the pool's own steal on
# digits (where the strokes earn their share) and on single-set pools (colour targets).
EARNED_UP_TO = 5_000


def resolve_set_weights(set_weights: str, *, budget: int) -> str:
    """The ``steal.set_weights`` a steal of ``budget`` queries runs: ``auto`` is ``earned`` up
    to :data:`EARNED_UP_TO` queries and ``pool`` above; any other name is itself."""
    if set_weights != "auto":
        return set_weights
    return "earned" if budget <= EARNED_UP_TO else "pool"


def rare_yields(
    rows: list[tuple[int, str]], num_classes: int, *, rare: float = 0.5
) -> tuple[list[int], dict[str, tuple[int, int]]]:
    """The rare classes of ``rows`` (label, source: those holding under ``rare`` of their fair
    share, ``1/K``, of the answers), and per set its answers and how many are of a rare class."""
    labels = [label for label, _ in rows if 0 <= label < num_classes]
    hist = torch.bincount(torch.tensor(labels, dtype=torch.int64), minlength=num_classes)
    rare_classes = [c for c in range(num_classes) if hist[c] < rare * len(rows) / num_classes]
    counts: dict[str, tuple[int, int]] = {}
    for label, source in rows:
        n, hits = counts.get(set_of(source), (0, 0))
        counts[set_of(source)] = (n + 1, hits + int(label in rare_classes))
    return rare_classes, counts


def set_shares(
    rows: list[tuple[int, str]],
    num_classes: int,
    *,
    warmup: int = YIELD_WARMUP,
    power: float = YIELD_POWER,
) -> dict[str, float] | None:
    """Each set's share of the next queries from its rare-class yield in ``rows`` (label,
    source): a class is rare when it holds under half its fair share (``1/K``) of the answers,
    and a set's yield is the share of its answers in a rare class (add-one smoothed). Shares go
    as yield to ``power`` (``math.inf``: the set of highest yield takes all, the first named
    on a tie), each set keeping ``YIELD_FLOOR / len(sets)``. None until ``warmup`` answers are
    in, or with a single set: draw as the pool does."""
    if len(rows) < max(1, warmup):
        return None
    _, counts = rare_yields(rows, num_classes)
    if len(counts) < 2:
        return None
    yields = {name: (hits + 1) / (n + 2) for name, (n, hits) in counts.items()}
    if math.isinf(power):
        top = max(yields, key=lambda name: yields[name])
        w = {name: float(name == top) for name in yields}
    else:
        w = {name: y**power for name, y in yields.items()}
    total = sum(w.values())
    return {name: (1 - YIELD_FLOOR) * v / total + YIELD_FLOOR / len(w) for name, v in w.items()}


def earned_shares(
    rows: list[tuple[int, str]],
    num_classes: int,
    *,
    pool: list[tuple[str, float]],
    warmup: int = YIELD_WARMUP,
) -> dict[str, float] | None:
    """Each set's share under ``set_weights = "earned"``: the pool's own (``pool``: each set's
    name and share, in the pool's order), except that a set after the first whose rare yield in
    ``rows`` (as :func:`set_shares` reads it) is below the first set's drops to the floor
    (``YIELD_FLOOR / len(sets)``), the others sharing the rest by the pool's weights. The first
    set is the pool's base (clip-art); later ones (pen strokes for grey targets) are specialists
    that keep their share only where they give the rare classes at least as often. None until
    ``warmup`` answers are in, with a single set, or when every set earns its share: draw as
    the pool does."""
    names = [name for name, share in pool if share > 0]
    if len(rows) < max(1, warmup) or len(names) < 2:
        return None
    _, counts = rare_yields(rows, num_classes)
    yields = {name: (hits + 1) / (n + 2) for name, (n, hits) in counts.items()}
    first = yields.get(names[0])
    if first is None:
        return None
    dropped = {name for name in names[1:] if name in yields and yields[name] < first}
    if not dropped:
        return None
    floor = YIELD_FLOOR / len(names)
    weights = dict(pool)
    kept = sum(weights[name] for name in names if name not in dropped)
    rest = 1 - floor * len(dropped)
    return {name: floor if name in dropped else rest * weights[name] / kept for name in names}


def _by_set(
    sources: tuple[str, ...], shares: dict[str, float]
) -> tuple[dict[str, list[int]], dict[str, float]]:
    """Positions of ``sources`` by set, in pool order, and each set's share (a set the answers
    have not shown yet counts as the average one)."""
    by_set: dict[str, list[int]] = {}
    for i, src in enumerate(sources):
        by_set.setdefault(set_of(src), []).append(i)
    default = 1.0 / max(1, len(shares))
    return by_set, {name: shares.get(name, default) for name in by_set}


def draw_by_set(sources: tuple[str, ...], k: int, shares: dict[str, float]) -> torch.Tensor:
    """``k`` positions of ``sources`` (in pool order, so random) with each set's count as near
    its share as the candidates allow."""
    by_set, w = _by_set(sources, shares)
    total = sum(w.values())
    want = {name: min(len(idx), int(k * w[name] / total)) for name, idx in by_set.items()}
    chosen = [i for name, idx in by_set.items() for i in idx[: want[name]]]
    if len(chosen) < k:  # rounding, or a set with too few candidates: fill in pool order
        taken = set(chosen)
        chosen += [i for i in range(len(sources)) if i not in taken][: k - len(chosen)]
    return torch.tensor(sorted(chosen[:k]), dtype=torch.int64)


def thin_by_set(sources: tuple[str, ...], shares: dict[str, float]) -> torch.Tensor:
    """Positions of ``sources`` kept so that each set's candidates stand to the others as their
    shares do: all of the highest-share set's, the first ``share / highest`` of each other's."""
    by_set, w = _by_set(sources, shares)
    top = max(w.values())
    kept = [i for name, idx in by_set.items() for i in idx[: math.ceil(len(idx) * w[name] / top)]]
    return torch.tensor(sorted(kept), dtype=torch.int64)


def refit_rows(n: int, *, fitted: int, cap: int | None, seed: int) -> torch.Tensor | None:
    """The rows of a store of ``n`` answers that a warm refit trains on, in store order: every
    answer after the first ``fitted`` (those the interim copycat has not seen; the newest
    ``cap`` if they are more), the rest of ``cap`` drawn at random from the earlier ones with
    a generator seeded by ``seed`` and ``n`` (so a rerun draws the same). None: every answer
    (no cap, or a store within it)."""
    if cap is None or n <= cap:
        return None
    new = torch.arange(min(fitted, n), n)
    if len(new) >= cap:
        return new[-cap:]
    gen = torch.Generator().manual_seed(seed * 1_000_003 + n)
    old = torch.randperm(n - len(new), generator=gen)[: cap - len(new)]
    return torch.cat([old.sort().values, new])


class InterimSelector:
    """The seed share (pool order), then picks made with an interim copycat refitted on a
    schedule. Subclasses override :meth:`pick` and, to make candidates the pool alone does not
    yield, :meth:`synthesize`.

    ``oversample``: candidates scored per query once active; ``refits``: how often the interim
    copycat is fitted (at the seed count, then at even steps of the rest; ``steal.refits``, when
    set, overrides the strategy's own number); ``warm``: refits
    continue from the previous interim copycat instead of starting afresh (cheaper, so refits
    can be frequent).
    """

    def __init__(
        self,
        *,
        config: StealConfig,
        train: TrainConfig,
        num_classes: int,
        oversample: int | None = None,
        refits: int = 2,
        interim_epochs: int = 3,
        warm: bool = False,
        seed_fraction: float | None = None,
    ) -> None:
        self.config = config
        self.train = train
        if config.refits is not None:
            refits = config.refits
        if config.warm_refits is not None:
            warm = config.warm_refits
        self.num_classes = num_classes
        # candidates scored per query once active; the loop reads it before each batch, and
        # thinning to the sets' shares raises it so the picks still see this many per query
        self.candidates = oversample if oversample is not None else config.candidates_per_query
        self.oversample = self.candidates
        self.interim_epochs = interim_epochs
        self.warm = warm
        self.model: Classifier | None = None
        self.data: FakeDataset | None = None  # the answers the interim copycat was fitted on
        self.gen = torch.Generator().manual_seed(train.seed + 7919)
        self.set_weights = self.set_weights_of(config)
        self.set_yield = self.set_weights in ("yield", "yield-seed", "top", "earned")
        # "yield", "top" and "earned" also thin the candidates the interim copycat picks among
        # to the shares
        self.thin_yield = self.set_weights in ("yield", "top", "earned")
        self.yield_power = math.inf if self.set_weights == "top" else YIELD_POWER
        self.pool_shares: list[tuple[str, float]] = []  # the pool's sets, for "earned"
        self.store: AnswerStore | None = None  # the steal's, from begin()
        # the sets' shares and how many seed answers they were read from: read once per batch
        # until the seed share is complete (whose answers then no longer change), then kept
        self._read_shares: tuple[int, dict[str, float] | None] | None = None
        share = config.seed_fraction if seed_fraction is None else seed_fraction
        seed = int(config.budget * share)
        if config.seed_max is not None:
            seed = min(seed, config.seed_max)
        # The interim copycat needs a few batches of answers to learn anything.
        self.seed_count = max(seed, 2 * config.batch_size)
        if config.seed_max is not None:  # refit each time the answers double
            self._retrain_at = [self.seed_count]
            while self._retrain_at[-1] * 2 < config.budget:
                self._retrain_at.append(self._retrain_at[-1] * 2)
        else:
            rest = max(0, config.budget - self.seed_count)
            self._retrain_at = [self.seed_count + i * rest // refits for i in range(refits)]
            # a refit happens between batches, so no more often than one per batch sent
            batches = -(-rest // config.batch_size)
            if config.refits is not None and config.refits > max(1, batches):
                if batches == 0:  # the copy is fitted once, at the seed share
                    fix = "lower steal.seed_fraction so that some answers follow it"
                else:
                    fix = f"lower steal.batch_size to {max(1, rest // config.refits)} or below"
                log.warning(
                    "steal.refits = %d, but only %d batch(es) of %d follow the %d-answer seed "
                    "share, so the interim copycat is fitted at most %d time(s); for more, %s",
                    config.refits,
                    batches,
                    config.batch_size,
                    self.seed_count,
                    max(1, batches),
                    fix,
                )

    def set_weights_of(self, config: StealConfig) -> str:
        """The ``set_weights`` this selection runs (:func:`resolve_set_weights`); the flags
        above are derived from it."""
        return resolve_set_weights(config.set_weights, budget=config.budget)

    @property
    def device(self) -> torch.device:
        return resolve_device(self.train.device)

    def picks(self, answered: int) -> bool:
        """Past the random seed share: the interim copycat picks (and synthesis may run)."""
        return answered >= self.seed_count

    def active(self, answered: int) -> bool:
        # weighting the sets by yield draws the seed share from oversampled candidates too;
        # "earned" only once a set has dropped, so where every set earns its share the steal
        # is the pool's own, answer for answer
        if self.picks(answered):
            return True
        if not self.set_yield:
            return False
        if self.set_weights != "earned":
            return True
        return self.store is not None and self._shares(self.store, answered) is not None

    def begin(self, pool: list[tuple[str, float]], store: AnswerStore) -> None:
        """Before a steal: the pool's sets and their shares, in its order (``Pool.shares``),
        and the store its answers go to."""
        self.pool_shares = list(pool)
        self.store = store
        if self.config.set_weights == "auto" and sum(share > 0 for _, share in pool) > 1:
            log.info(
                "set_weights auto: %s for this steal of %d queries (earned up to %d, pool "
                "above and under the adaptive selection)",
                self.set_weights,
                self.config.budget,
                EARNED_UP_TO,
            )

    def synthesize(self, cand: Candidates, store: AnswerStore) -> Candidates:
        """Extra candidates made from ``cand`` (and the answers); the base adds none."""
        return cand

    def thin(self, cand: Candidates, store: AnswerStore) -> Candidates:
        """The candidates the picks choose among, past the seed share: all of them, or, when
        the sets are weighted by their yield and thinned, each set's candidates cut to its
        share (before any synthesis, so no push is spent on a candidate thinned away). The
        next batch then draws enough candidates that ``candidates`` per query remain."""
        answered = store.count()
        if not (self.thin_yield and self.picks(answered)):
            return cand
        shares = self._shares(store, answered)
        if shares is None:
            self.oversample = self.candidates
            return cand
        keep = thin_by_set(cand.sources, shares)
        if len(keep) == 0:
            return cand
        # at most four times as many: a set of the pool's that gives almost no candidates
        # should not make every batch huge
        ratio = len(cand.sources) / len(keep)
        self.oversample = min(4 * self.candidates, math.ceil(self.candidates * ratio - 1e-9))
        return Candidates(
            images=cand.images[keep], sources=tuple(cand.sources[i] for i in keep.tolist())
        )

    def __call__(self, cand: Candidates, k: int, store: AnswerStore) -> torch.Tensor:
        answered = store.count()
        if not self.picks(answered):  # random seed share: pool order, or drawn by the shares
            shares = self._shares(store, answered) if self.set_yield else None
            return torch.arange(k) if shares is None else draw_by_set(cand.sources, k, shares)
        self.ready(store)
        return self.pick(cand, k, store)

    def _shares(self, store: AnswerStore, answered: int) -> dict[str, float] | None:
        """The sets' shares from the seed share's answers (the picks after it aim at rare
        classes), read once per count of answers until the seed share is complete, then kept."""
        seen = min(answered, self.seed_count)
        if self._read_shares is not None and self._read_shares[0] == seen:
            return self._read_shares[1]
        rows = store.labels_and_sources()[: self.seed_count]
        warmup = min(YIELD_WARMUP, self.seed_count // 4)
        if self.set_weights == "earned":
            shares = earned_shares(rows, self.num_classes, pool=self.pool_shares, warmup=warmup)
        else:
            shares = set_shares(rows, self.num_classes, warmup=warmup, power=self.yield_power)
        self._read_shares = (seen, shares)
        return shares

    def pick(self, cand: Candidates, k: int, store: AnswerStore) -> torch.Tensor:
        """Indices (k,) int64 of ``cand`` to send: the label-aware (balanced) pick."""
        probs = self.probs(cand.images)
        return pick_balanced(probs, self.histogram(store), k)

    def probs(self, images: torch.Tensor) -> torch.Tensor:
        """Interim copycat probabilities (N, K) float32 for uint8 ``images``."""
        assert self.model is not None, "ready() fits the interim copycat first"
        return torch.softmax(predict(self.model, images, device=self.device), 1)

    def histogram(self, store: AnswerStore) -> torch.Tensor:
        return torch.tensor(store.label_histogram(self.num_classes), dtype=torch.int64)

    def ready(self, store: AnswerStore) -> None:
        """Fit the interim copycat if none is there yet or a refit is due."""
        answered = store.count()
        if self.model is None or any(t <= answered for t in self._retrain_at):
            self._fit_interim(store)
            self._retrain_at = [t for t in self._retrain_at if t > answered]

    def _fit_interim(self, store: AnswerStore) -> None:
        data = store.load()
        cfg = dataclasses.replace(
            self.train, epochs=self.interim_epochs, balance=True, val_fraction=0.0
        )
        model = self.model if self.warm and self.model is not None else None
        images, labels = data.images, data.labels
        if model is None:
            arch = INTERIM_AUTO_ARCH if is_auto(cfg.arch) else cfg.arch
            model = init_model(arch, data.images, num_classes=self.num_classes, seed=cfg.seed)
            log.info("selection: interim copycat on %d answers", len(data))
        else:
            rows = refit_rows(
                len(data),
                fitted=len(self.data) if self.data is not None else 0,
                cap=self.config.refit_answers,
                seed=cfg.seed,
            )
            if rows is not None:
                images, labels = images[rows], labels[rows]
            log.info(
                "selection: interim copycat refitted on %d of %d answers", len(labels), len(data)
            )
        fit(model, images, labels, config=cfg)
        self.model = model.eval()
        self.data = data
        self.refitted(data)

    def refitted(self, data: FakeDataset) -> None:
        """Hook for subclasses that cache something per interim copycat."""


class BalancedSelector(InterimSelector):
    """Today's default: 5x oversampling, two fits of the interim copycat, balanced picks."""
