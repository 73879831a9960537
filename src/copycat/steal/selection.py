"""Label-aware selection of which pool images to query next (``selection = "balanced"``).

Stolen labels are heavily skewed: most NPD images land in a few classes. After a random seed
share of the budget, an interim copycat trained on the answers so far scores an oversampled
batch of candidates, and the batch sent is the one most likely to fill the classes the fake
dataset lacks (water-filling towards a uniform label histogram, ties to high entropy). The
interim copycat is fitted on the seed answers and refitted once more (``rounds``) halfway
through the rest.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from copycat.config import StealConfig, TrainConfig
from copycat.devices import resolve_device
from copycat.pools.pool import Candidates
from copycat.steal.store import AnswerStore
from copycat.train.fit import fit, predict
from copycat.train.models import init_model

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


def pick_balanced(probs: torch.Tensor, hist: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of ``k`` rows of ``probs`` (N, K) to query given the label histogram ``hist``."""
    n = probs.shape[0]
    taken = torch.zeros(n, dtype=torch.bool)
    chosen: list[int] = []
    q = quotas(hist, k)
    for c in torch.argsort(q, descending=True).tolist():
        if q[c] == 0:
            break
        order = torch.argsort(probs[:, c], descending=True)
        order = order[~taken[order]][: int(q[c])]
        taken[order] = True
        chosen += order.tolist()
    if len(chosen) < k:  # fill up with the most uncertain candidates
        ent = -(probs * probs.clamp(min=1e-12).log()).sum(1)
        ent[taken] = -1.0
        chosen += torch.argsort(ent, descending=True)[: k - len(chosen)].tolist()
    return torch.tensor(chosen[:k], dtype=torch.int64)


class BalancedSelector:
    """Picks which candidates to send, from ``seed_fraction`` of the budget on."""

    def __init__(
        self,
        *,
        config: StealConfig,
        train: TrainConfig,
        num_classes: int,
        rounds: int = 2,
        interim_epochs: int = 3,
    ) -> None:
        self.config = config
        self.train = train
        self.num_classes = num_classes
        self.interim_epochs = interim_epochs
        self._model: torch.nn.Module | None = None
        # The interim copycat needs a few batches of answers to learn anything.
        self.seed_count = max(int(config.budget * config.seed_fraction), 2 * config.batch_size)
        # It is fitted at the seed count, then again at even steps of what remains.
        rest = max(0, config.budget - self.seed_count)
        self._retrain_at = [self.seed_count + i * rest // rounds for i in range(rounds)]

    def active(self, answered: int) -> bool:
        return answered >= self.seed_count

    def __call__(self, cand: Candidates, k: int, store: AnswerStore) -> torch.Tensor:
        answered = store.count()
        if answered < self.seed_count:
            return torch.arange(k)  # random seed share: pool order
        if self._model is None or any(t <= answered for t in self._retrain_at):
            self._fit_interim(store)
            self._retrain_at = [t for t in self._retrain_at if t > answered]
        assert self._model is not None  # fitted just above
        device = resolve_device(self.train.device)
        probs = torch.softmax(predict(self._model, cand.images, device=device), 1)
        hist = torch.tensor(store.label_histogram(self.num_classes), dtype=torch.int64)
        return pick_balanced(probs, hist, k)

    def _fit_interim(self, store: AnswerStore) -> None:
        data = store.load()
        cfg = dataclasses.replace(
            self.train, epochs=self.interim_epochs, balance=True, val_fraction=0.0
        )
        model = init_model(cfg.arch, data.images, num_classes=self.num_classes, seed=cfg.seed)
        log.info("label-aware selection: interim copycat on %d answers", len(data))
        fit(model, data.images, data.labels, config=cfg)
        self._model = model.eval()
