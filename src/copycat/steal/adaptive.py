"""Knockoff Nets' adaptive policy (Orekondy et al., CVPR 2019) over the pool's groups.

A pool's images come from groups: the NPD sets and, inside each, the top folders of their files
(``clipart/animals``, ``stamps/food``, ``photos/gnome``); the store records each answer's group
as its source. The policy is a gradient bandit over those groups: each answer rewards the
group it came from by how rare its label still was among the answers when it arrived
(``1 - K x share``, so a label under its fair share of ``1/K`` pays, an over-represented one
costs), against a running mean of the rewards as the baseline. Candidates are drawn in
proportion to their group's probability, with a share ``explore`` kept uniform so no group is
starved. With only top-1 labels, rarity is the reward Knockoff's *diversity* term becomes; its
*certainty* term needs probabilities and its *loss* term an interim copycat, which the
balanced pick adds once it is active: after the seed share, the bandit's draw is narrowed to
``narrow`` candidates per image sent and the interim copycat picks among them by quota.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any

import torch

from copycat.config import StealConfig
from copycat.pools.pool import Candidates
from copycat.steal.selection import InterimSelector, pick_balanced
from copycat.steal.store import AnswerStore

log = logging.getLogger(__name__)


class AdaptiveSelector(InterimSelector):
    """The gradient bandit over pool groups, then the balanced pick (see the module)."""

    def set_weights_of(self, config: StealConfig) -> str:
        """``auto`` is the pool's draw here: the bandit weighs the sets itself."""
        return "pool" if config.set_weights == "auto" else super().set_weights_of(config)

    def __init__(
        self,
        *,
        lr: float = 0.5,
        explore: float = 0.1,
        narrow: int = 3,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        if self.set_yield:
            log.warning(
                "steal.set_weights = %r is not used by the adaptive selection, whose "
                "bandit weighs the pool's groups itself; use jacobian or balanced with it",
                self.config.set_weights,
            )
            self.thin_yield = False  # the bandit draws the candidates; none are thinned
        self.lr = lr
        self.explore = explore
        self.narrow = narrow
        self.pref: dict[str, float] = {}
        self.baseline = 0.0
        self.learned = 0  # answers the bandit has learnt from (the labels counted in hist)
        self.hist: Counter[int] = Counter()

    def active(self, answered: int) -> bool:
        return True  # candidates are oversampled from the first batch: the bandit draws

    def policy(self, groups: list[str]) -> dict[str, float]:
        """Probability of each of ``groups``: softmax of preferences, mixed with uniform."""
        h = torch.tensor([self.pref.get(g, 0.0) for g in groups], dtype=torch.float64)
        pi = (1 - self.explore) * torch.softmax(h, 0) + self.explore / len(groups)
        return dict(zip(groups, pi.tolist(), strict=True))

    def learn(self, store: AnswerStore) -> None:
        """Update preferences from the answers that arrived since the last call."""
        new = store.labels_and_sources(skip=self.learned)
        if not new:
            return
        groups = sorted({s for _, s in new} | set(self.pref))
        pi = self.policy(groups)
        grad = dict.fromkeys(groups, 0.0)
        k = self.num_classes
        for label, source in new:
            share = self.hist[label] / self.learned if self.learned else 0.0
            r = max(-1.0, 1.0 - k * share)
            self.learned += 1
            self.baseline += (r - self.baseline) / self.learned
            adv = r - self.baseline
            for g in groups:
                grad[g] += adv * ((1.0 if g == source else 0.0) - pi[g])
            self.hist[label] += 1
        for g in groups:
            self.pref[g] = self.pref.get(g, 0.0) + self.lr * grad[g] / len(new)

    def draw(self, cand: Candidates, n: int) -> torch.Tensor:
        """``n`` candidate indices drawn without replacement by their group's probability."""
        if n >= len(cand.sources):
            return torch.arange(len(cand.sources))
        count = Counter(cand.sources)
        pi = self.policy(sorted(count))
        w = torch.tensor([pi[s] / count[s] for s in cand.sources], dtype=torch.float64)
        return torch.multinomial(w, n, replacement=False, generator=self.gen)

    def __call__(self, cand: Candidates, k: int, store: AnswerStore) -> torch.Tensor:
        self.learn(store)
        if store.count() < self.seed_count:
            return self.draw(cand, k)
        self.ready(store)
        sub = self.draw(cand, min(len(cand.sources), math.ceil(k * self.narrow)))
        probs = self.probs(cand.images[sub])
        return sub[pick_balanced(probs, self.histogram(store), k)]
