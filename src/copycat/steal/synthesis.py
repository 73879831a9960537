"""Query synthesis and active selection: candidates the pool alone does not yield.

Candidates are free, queries are not. Each selector here starts from the oversampled pool
candidates of one query batch and the interim copycat of :class:`InterimSelector`, and either
makes more candidates before the pick (``synthesize``) or picks differently:

- :class:`JacobianSelector` pushes pool images toward the classes the answers lack with a few
  targeted signed-gradient steps on the interim copycat (Papernot et al.'s Jacobian-based
  augmentation, aimed at rare classes), stopping each image once the interim copycat crosses
  into its class, so it lands near the decision boundary;
- :class:`MixupSelector` mixes answered images that received different answers (one from a rare
  class), which lie between the classes the oracle separates;
- :class:`ActiveSelector` keeps the most uncertain candidates (entropy) and among them greedily
  the ones farthest from everything answered so far (k-center on the interim copycat's
  probabilities), as in ActiveThief.

Every synthesized image is a valid uint8 image; the store keeps the exact bytes sent.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from copycat.pools.pool import Candidates
from copycat.steal.selection import InterimSelector, assign_balanced, pick_balanced
from copycat.steal.store import AnswerStore, FakeDataset


def _with(cand: Candidates, extra: torch.Tensor, tag: str, sources: list[str]) -> Candidates:
    """``cand`` followed by ``extra`` (M, C, H, W) uint8, each source tagged ``+tag``."""
    return Candidates(
        images=torch.cat([cand.images, extra]),
        sources=cand.sources + tuple(f"{s}+{tag}" for s in sources),
    )


def push_toward(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    *,
    steps: int,
    step_size: float,
    device: torch.device,
    confidence: float = 0.0,
) -> torch.Tensor:
    """Targeted signed-gradient steps on ``model``: uint8 ``images`` (N, C, H, W) moved toward
    ``targets`` (N,) int64, each image frozen once ``model`` labels it so with probability at
    least ``confidence`` (0: as soon as it is the top label). Returns uint8."""
    model.eval()
    x = images.to(device).float().div_(255.0)
    t = targets.to(device)
    for _ in range(steps):
        x.requires_grad_(True)
        logits = model(x)
        moving = logits.argmax(1) != t
        if confidence > 0:
            sure = logits.detach().softmax(1).gather(1, t[:, None]).squeeze(1)
            moving |= sure < confidence
        if not bool(moving.any()):
            break
        loss = F.cross_entropy(logits, t, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        step = step_size * grad.sign() * moving.view(-1, 1, 1, 1)
        x = (x.detach() - step).clamp_(0.0, 1.0)
    return x.detach().mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).cpu()


class SynthesisSelector(InterimSelector):
    """Balanced picks with at most ``max_share`` of each batch from synthesized candidates
    (their sources end in ``+tag``): the interim copycat is surest about exactly the images
    made for it, so a cap keeps the oracle's view anchored in the pool. ``None``: the config's
    ``steal.synth_share``."""

    tag = "synth"

    def __init__(self, *, max_share: float | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.max_share = self.config.synth_share if max_share is None else max_share

    def pick(self, cand: Candidates, k: int, store: AnswerStore) -> torch.Tensor:
        synth = torch.tensor([s.endswith("+" + self.tag) for s in cand.sources], dtype=torch.bool)
        orig_idx, syn_idx = (~synth).nonzero().squeeze(1), synth.nonzero().squeeze(1)
        probs, hist = self.probs(cand.images), self.histogram(store)
        n_orig = min(len(orig_idx), k - min(len(syn_idx), int(k * self.max_share)))
        first = orig_idx[pick_balanced(probs[orig_idx], hist, n_orig)]
        # the second pick evens out the histogram as the first one is expected to leave it
        hist = hist + torch.bincount(probs[first].argmax(1), minlength=len(hist))
        second = syn_idx[pick_balanced(probs[syn_idx], hist, min(k - n_orig, len(syn_idx)))]
        return torch.cat([first, second])


class JacobianSelector(SynthesisSelector):
    """Balanced picks among pool candidates and copies of them pushed toward rare classes.

    ``toward="boundary"``: a candidate the interim copycat already gives the class it was
    picked for is pushed across its nearest boundary (toward its runner-up class) instead.
    ``steps`` and ``step_size`` default to the config's ``steal.synth_steps`` and
    ``steal.synth_step_size``; ``share`` of the candidates are pushed.
    """

    tag = "jacobian"

    def __init__(
        self,
        *,
        steps: int | None = None,
        step_size: float | None = None,
        share: float = 0.5,
        toward: Literal["rare", "boundary"] = "rare",
        **kw: Any,
    ) -> None:
        if toward not in ("rare", "boundary"):
            raise ValueError(f"toward={toward!r}; accepted: 'rare' or 'boundary'")
        super().__init__(**kw)
        self.steps = self.config.synth_steps if steps is None else steps
        self.step_size = self.config.synth_step_size if step_size is None else step_size
        self.share = share
        self.toward = toward

    def synthesize(self, cand: Candidates, store: AnswerStore) -> Candidates:
        self.ready(store)
        assert self.model is not None  # fitted by ready()
        hist = self.histogram(store)
        m = max(1, int(len(cand.images) * self.share))
        probs = self.probs(cand.images)
        rows, classes = assign_balanced(probs, hist, m)
        rarest = int(torch.argmin(hist))
        t = torch.tensor([c if c >= 0 else rarest for c in classes], dtype=torch.int64)
        if self.toward == "boundary":
            # an image the interim copycat already gives its class is pushed across its nearest
            # boundary instead (toward its runner-up class), so it is not sent unchanged
            top2 = probs[rows].topk(2, dim=1).indices
            t = torch.where(top2[:, 0] == t, top2[:, 1], t)
        pushed = push_toward(
            self.model,
            cand.images[rows],
            t,
            steps=self.steps,
            step_size=self.step_size,
            device=self.device,
            confidence=self.config.synth_confidence,
        )
        return _with(cand, pushed, "jacobian", [cand.sources[r] for r in rows])


def mix_pairs(
    data: FakeDataset, m: int, gen: torch.Generator, *, lam: tuple[float, float] = (0.3, 0.7)
) -> torch.Tensor:
    """``m`` uint8 mixes of answered images with different labels; the first image of each
    pair is drawn with weight 1 / (its class count), so rare classes lead."""
    labels = data.labels
    counts = torch.bincount(labels).clamp(min=1).double()
    a = torch.multinomial((1.0 / counts)[labels], m, replacement=True, generator=gen)
    b = torch.randint(0, len(labels), (m,), generator=gen)
    for _ in range(4):  # redraw partners that share the label (few, unless one class dominates)
        same = labels[a] == labels[b]
        if not bool(same.any()):
            break
        b[same] = torch.randint(0, len(labels), (int(same.sum()),), generator=gen)
    w = torch.empty(m, 1, 1, 1).uniform_(*lam, generator=gen)
    mix = w * data.images[a].float() + (1.0 - w) * data.images[b].float()
    return mix.round_().clamp_(0, 255).to(torch.uint8)


class MixupSelector(SynthesisSelector):
    """Balanced picks among pool candidates and mixes of answers from different classes."""

    tag = "mixup"

    def __init__(self, *, share: float = 0.5, **kw: Any) -> None:
        super().__init__(**kw)
        self.share = share

    def synthesize(self, cand: Candidates, store: AnswerStore) -> Candidates:
        self.ready(store)
        assert self.data is not None  # loaded by ready()
        m = max(1, int(len(cand.images) * self.share))
        mixes = mix_pairs(self.data, m, self.gen)
        return _with(cand, mixes, "mixup", ["answers"] * m)


def k_center(points: torch.Tensor, centers: torch.Tensor, k: int) -> list[int]:
    """Greedy k-center: ``k`` rows of ``points`` (N, D), each the farthest from ``centers``
    (M, D) and from the rows already chosen."""
    if len(centers):
        mind = (
            torch.stack([torch.cdist(points, c).min(1).values for c in centers.split(4096)])
            .min(0)
            .values
        )
    else:
        mind = torch.full((len(points),), float("inf"))
    chosen: list[int] = []
    for _ in range(min(k, len(points))):
        i = int(torch.argmax(mind))
        chosen.append(i)
        mind = torch.minimum(mind, torch.cdist(points, points[i : i + 1]).squeeze(1))
        mind[i] = -1.0
    return chosen


class ActiveSelector(InterimSelector):
    """ActiveThief-style: a prefilter (the candidates that best fill rare classes, ties to high
    entropy; or, with ``balanced=False``, the most uncertain), spread out by k-center."""

    def __init__(self, *, prefilter: int = 2, balanced: bool = True, **kw: Any) -> None:
        super().__init__(**kw)
        self.prefilter = prefilter
        self.balanced = balanced
        self.centers = torch.empty(0)

    def refitted(self, data: FakeDataset) -> None:
        self.centers = self.probs(data.images)

    def pick(self, cand: Candidates, k: int, store: AnswerStore) -> torch.Tensor:
        p = self.probs(cand.images)
        if self.balanced:  # candidates likely in rare classes first, then the most uncertain
            pre = pick_balanced(p, self.histogram(store), self.prefilter * k)
        else:
            ent = -(p * p.clamp(min=1e-12).log()).sum(1)
            pre = torch.argsort(ent, descending=True)[: self.prefilter * k]
        chosen = torch.tensor(k_center(p[pre], self.centers, k), dtype=torch.int64)
        self.centers = torch.cat([self.centers, p[pre][chosen]])
        return pre[chosen]
