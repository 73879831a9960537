"""Selection and synthesis strategies: on a victim whose classes are very unequally reachable
from the pool, each strategy reaches the rare classes far more often than random selection,
within the exact budget, and every synthesized image is stored exactly as it was sent."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from copycat.config import PoolConfig, StealConfig, TrainConfig
from copycat.errors import ConfigError
from copycat.oracles.local import TorchOracle
from copycat.oracles.outputs import LabelOnly
from copycat.pools.pool import Candidates, build_pool
from copycat.pools.sources import BankSource
from copycat.steal.loop import steal
from copycat.steal.registry import SELECTIONS
from copycat.steal.selection import InterimSelector
from copycat.steal.store import AnswerStore
from copycat.steal.strategies import build_selector
from copycat.steal.synthesis import JacobianSelector, k_center, mix_pairs, push_toward
from copycat.train.models import init_model

from .conftest import SHAPE, RecordingOracle, rule_images

CFG = StealConfig(budget=600, batch_size=50, seed_fraction=0.5, synth_from=0)
TRAIN = TrainConfig(arch="cnn-tiny", epochs=2, batch_size=50, lr=1e-2, device="cpu")


def skewed_pool() -> torch.Tensor:
    """Rule images where classes 0 and 1 make up ~95%: the other eight are hard to reach."""
    images, labels = rule_images(6000, 3)
    keep = (labels <= 1) | (torch.rand(6000, generator=torch.Generator().manual_seed(0)) < 0.03)
    return images[keep]


def run(victim_dir: Path, selection: str, tmp: Path) -> tuple[list[int], RecordingOracle, Path]:
    oracle = RecordingOracle(LabelOnly(TorchOracle(victim_dir)))
    pool = build_pool(PoolConfig(spec="noise"), shape=SHAPE)
    pool.sources = [BankSource("skewed", skewed_pool())]
    selector = build_selector(selection, config=CFG, train=TRAIN, num_classes=10)
    path = tmp / f"{selection}.sqlite"
    with AnswerStore(path) as store:
        steal(oracle, pool, store, config=CFG, selector=selector)
        return store.label_histogram(10), oracle, path


@pytest.fixture(scope="module")
def random_hist(victim_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[int]:
    hist, _, _ = run(victim_dir, "random", tmp_path_factory.mktemp("random"))
    return hist


@pytest.mark.parametrize(
    "selection", ["balanced", "wide", "active", "jacobian", "boundary", "mixup", "adaptive"]
)
def test_strategy_reaches_rare_classes_far_more_than_random(
    selection: str, victim_dir: Path, random_hist: list[int], tmp_path: Path
) -> None:
    hist, oracle, path = run(victim_dir, selection, tmp_path)
    # the budget holds exactly and nothing is sent twice
    assert sum(hist) == CFG.budget == len(oracle.queried) == len(set(oracle.queried))
    with AnswerStore(path) as store:  # the store holds the exact images the oracle saw
        assert store.known(oracle.queried) == set(oracle.queried)
    # the three rarest classes get 1.5x what random gives its three rarest (a single class's
    # count of a handful of answers moves by a few between CPUs' floating point)
    assert rarest(hist) >= 1.5 * rarest(random_hist), (hist, random_hist)


def rarest(hist: list[int], k: int = 3) -> int:
    """Answers of the ``k`` rarest classes together."""
    return sum(sorted(hist)[:k])


def test_strong_strategies_triple_the_rarest_classes(
    victim_dir: Path, random_hist: list[int], tmp_path: Path
) -> None:
    for selection in ("wide", "jacobian"):
        hist, _, _ = run(victim_dir, selection, tmp_path)
        assert rarest(hist) >= 3 * rarest(random_hist), (selection, hist, random_hist)
        assert min(hist) >= 3 * max(min(random_hist), 1), (selection, hist, random_hist)


def test_synthesis_knobs_set_the_share_of_pushed_images_sent(
    victim_dir: Path, tmp_path: Path
) -> None:
    """steal.synth_share caps the pushed images in each batch, steal.refits sets the interim
    copycat's fits; an unset knob keeps the strategy's own number."""
    assert len(build_selector("jacobian", config=CFG, train=TRAIN, num_classes=10)._retrain_at) == 8
    sent: dict[float, int] = {}
    for share in (0.0, 0.2):
        cfg = replace(CFG, synth_share=share, refits=3, synth_steps=4, synth_step_size=0.05)
        selector = build_selector("jacobian", config=cfg, train=TRAIN, num_classes=10)
        assert isinstance(selector, JacobianSelector) and len(selector._retrain_at) == 3
        assert (selector.max_share, selector.steps, selector.step_size) == (share, 4, 0.05)
        oracle = RecordingOracle(LabelOnly(TorchOracle(victim_dir)))
        pool = build_pool(PoolConfig(spec="noise"), shape=SHAPE)
        pool.sources = [BankSource("skewed", skewed_pool())]
        with AnswerStore(tmp_path / f"{share}.sqlite") as store:
            steal(oracle, pool, store, config=cfg, selector=selector)
            sources = [s for _, s in store.labels_and_sources()]
        assert len(sources) == cfg.budget
        sent[share] = sum(s.endswith("+jacobian") for s in sources)
    after_seed = CFG.budget - int(CFG.budget * CFG.seed_fraction)
    assert sent[0.0] == 0
    assert 0 < sent[0.2] <= 0.2 * after_seed, sent


def test_synthesis_starts_once_synth_from_answers_are_in(victim_dir: Path, tmp_path: Path) -> None:
    """Before steal.synth_from answers, the strategy picks among pool images only."""
    cfg = replace(CFG, synth_from=450, refits=3)
    selector = build_selector("jacobian", config=cfg, train=TRAIN, num_classes=10)
    oracle = RecordingOracle(LabelOnly(TorchOracle(victim_dir)))
    pool = build_pool(PoolConfig(spec="noise"), shape=SHAPE)
    pool.sources = [BankSource("skewed", skewed_pool())]
    with AnswerStore(tmp_path / "store.sqlite") as store:
        steal(oracle, pool, store, config=cfg, selector=selector)
        sources = [s for _, s in store.labels_and_sources()]
    pushed = [i for i, s in enumerate(sources) if s.endswith("+jacobian")]
    assert len(sources) == cfg.budget
    assert pushed and min(pushed) >= 450, pushed[:5]


def test_synth_from_within_the_seed_share_leaves_the_steal_unchanged(
    victim_dir: Path, tmp_path: Path
) -> None:
    """A threshold the seed share reaches first (as 5,000 is for 10,000 queries and up) sends
    exactly the images synthesis from the seed share sends."""
    sent = []
    for synth_from in (0, 300):  # the seed share is 300 of 600
        cfg = replace(CFG, synth_from=synth_from, refits=2)
        selector = build_selector("jacobian", config=cfg, train=TRAIN, num_classes=10)
        oracle = RecordingOracle(LabelOnly(TorchOracle(victim_dir)))
        pool = build_pool(PoolConfig(spec="noise"), shape=SHAPE)
        pool.sources = [BankSource("skewed", skewed_pool())]
        with AnswerStore(tmp_path / f"{synth_from}.sqlite") as store:
            steal(oracle, pool, store, config=cfg, selector=selector)
            sent.append(store.load().images)
    assert torch.equal(sent[0], sent[1])


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"synth_from": -1}, "steal.synth_from"),
        ({"synth_share": 1.5}, "steal.synth_share"),
        ({"synth_steps": -1}, "steal.synth_steps"),
        ({"synth_step_size": 0.0}, "steal.synth_step_size"),
        ({"refits": 0}, "steal.refits"),
        ({"synth_confidence": 1.0}, "steal.synth_confidence"),
    ],
)
def test_synthesis_knobs_out_of_range_are_refused_by_name(change: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        StealConfig(**change)


def test_push_toward_moves_images_into_the_target_class_and_stays_uint8() -> None:
    images, labels = rule_images(64, 5)
    model = init_model("cnn-tiny", images, num_classes=10, seed=0)
    from copycat.train.fit import fit, predict

    fit(model, images, labels, config=TrainConfig(arch="cnn-tiny", epochs=3, device="cpu"))
    target = (labels + 1) % 10
    before = predict(model, images, device=torch.device("cpu")).argmax(1)
    out = push_toward(model, images, target, steps=8, step_size=0.05, device=torch.device("cpu"))
    after = predict(model, out, device=torch.device("cpu")).argmax(1)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert (after == target).float().mean() > (before == target).float().mean() + 0.3
    # asked for a sure push, the images go on past the boundary
    cpu, at = torch.device("cpu"), torch.arange(len(target))
    sure = {
        c: predict(
            model,
            push_toward(model, images, target, steps=16, step_size=0.05, device=cpu, confidence=c),
            device=cpu,
        ).softmax(1)[at, target]
        for c in (0.0, 0.5)
    }
    # (this small model is unsure of everything: 0.12 on average without, 0.20 with)
    assert sure[0.5].mean() > 1.3 * sure[0.0].mean(), sure


def test_mixes_pair_different_labels_and_k_center_spreads() -> None:
    from copycat.steal.store import FakeDataset

    images, labels = rule_images(200, 6)
    data = FakeDataset(images=images, labels=labels, probs=None, sources=("x",) * 200)
    mixes = mix_pairs(data, 50, torch.Generator().manual_seed(0))
    assert mixes.dtype == torch.uint8 and mixes.shape == (50, *SHAPE)
    points = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [0.0, 0.2]])
    assert k_center(points, torch.tensor([[0.0, 0.0]]), 1) == [2]


def test_unknown_selection_is_refused_with_the_list() -> None:
    assert {"random", "balanced", "wide", "active", "jacobian", "mixup"} <= set(SELECTIONS.names())
    with pytest.raises(ConfigError, match="wide"):
        build_selector("bogus", config=CFG, train=TRAIN, num_classes=10)


class _Twice(InterimSelector):
    """Synthesis that returns every candidate twice, side by side; picks in order."""

    def synthesize(self, cand: Candidates, store: AnswerStore) -> Candidates:
        images = torch.stack([cand.images, cand.images], 1).flatten(0, 1)
        return Candidates(images=images, sources=tuple(s for s in cand.sources for _ in "ab"))

    def pick(self, cand: Candidates, k: int, store: AnswerStore) -> torch.Tensor:
        return torch.arange(k)


def test_an_image_repeated_within_a_batch_is_paid_once(victim_dir: Path, tmp_path: Path) -> None:
    oracle = RecordingOracle(LabelOnly(TorchOracle(victim_dir)))
    pool = build_pool(PoolConfig(spec="noise"), shape=SHAPE)
    selector = _Twice(config=CFG, train=TRAIN, num_classes=10)
    with AnswerStore(tmp_path / "twice.sqlite") as store:
        steal(oracle, pool, store, config=CFG, selector=selector)
        assert store.count() == CFG.budget == len(oracle.queried) == len(set(oracle.queried))


def test_adaptive_learns_which_pool_folders_give_rare_labels(
    victim_dir: Path, tmp_path: Path
) -> None:
    """Folders of a pool answer differently: the bandit learns to draw from the one whose
    images the oracle labels with rare classes, far more than its share of the pool."""
    from copycat.steal.adaptive import AdaptiveSelector

    images, labels = rule_images(6000, 3)
    common = images[labels <= 1]
    rare = images[labels > 1][:150]  # 150 images: 11% of the pool
    bank = torch.cat([common, rare])
    groups = ["common"] * len(common) + ["rare"] * len(rare)
    hists = {}
    for selection in ("random", "adaptive"):
        oracle = RecordingOracle(LabelOnly(TorchOracle(victim_dir)))
        pool = build_pool(PoolConfig(spec="noise"), shape=SHAPE)
        pool.sources = [BankSource("pool", bank, groups=groups)]
        selector = build_selector(selection, config=CFG, train=TRAIN, num_classes=10)
        with AnswerStore(tmp_path / f"{selection}.sqlite") as store:
            steal(oracle, pool, store, config=CFG, selector=selector)
            hists[selection] = store.label_histogram(10)
            sources = Counter(s for _, s in store.labels_and_sources())
        if selection == "adaptive":
            assert isinstance(selector, AdaptiveSelector)
            assert selector.pref["pool/rare"] > selector.pref["pool/common"]
            assert sources["pool/rare"] >= 0.4 * CFG.budget, sources  # 11% of the pool
    # the victim's rarest classes come mostly from the small folder: random selection gives
    # them a handful of answers, the bandit several times as many
    rarest = min(hists["random"])
    assert min(hists["adaptive"]) >= max(3 * rarest, rarest + 10), hists
