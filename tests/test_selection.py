"""Label-aware selection: quotas even out the histogram; the budget still holds exactly."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from copycat.config import PoolConfig, StealConfig, TrainConfig
from copycat.oracles.local import TorchOracle
from copycat.oracles.outputs import LabelOnly
from copycat.pools.pool import Candidates, Pool, build_pool
from copycat.pools.sources import BankSource
from copycat.steal.loop import steal
from copycat.steal.selection import (
    EARNED_UP_TO,
    BalancedSelector,
    InterimSelector,
    draw_by_set,
    earned_shares,
    pick_balanced,
    quotas,
    refit_rows,
    resolve_set_weights,
    set_shares,
    thin_by_set,
)
from copycat.steal.store import AnswerStore
from copycat.steal.strategies import build_selector
from copycat.steal.synthesis import JacobianSelector

from .conftest import SHAPE, RecordingOracle, rule_images


def test_quotas_fill_the_rarest_classes_first() -> None:
    q = quotas(torch.tensor([10, 0, 5]), 12)
    assert q.tolist() == [0, 9, 3]  # levels end at 10, 9, 8: as even as 12 allows


def test_pick_balanced_prefers_rows_likely_in_rare_classes() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.3, 0.7]])
    idx = pick_balanced(probs, torch.tensor([100, 0]), 2)
    assert sorted(idx.tolist()) == [2, 3]


def test_balanced_steal_respects_budget_and_evens_labels(
    victim: TorchOracle, tmp_path: Path
) -> None:
    cfg = StealConfig(
        budget=600, batch_size=50, selection="balanced", seed_fraction=0.5, candidates_per_query=4
    )
    train = TrainConfig(arch="cnn-tiny", epochs=1, batch_size=50, device="cpu")
    # a pool in which class 0 is nine times as common as all the others together
    images, labels = rule_images(6000, 3)
    keep = (labels == 0) | (torch.rand(6000, generator=torch.Generator().manual_seed(0)) < 0.1)
    skewed = images[keep]
    hists = {}
    for mode in ("random", "balanced"):
        oracle = RecordingOracle(LabelOnly(victim))
        pool = build_pool(PoolConfig(spec="noise"), shape=SHAPE)
        pool.sources = [BankSource("skewed", skewed)]
        selector = (
            BalancedSelector(config=cfg, train=train, num_classes=10, interim_epochs=2)
            if mode == "balanced"
            else None
        )
        with AnswerStore(tmp_path / f"{mode}.sqlite") as store:
            steal(oracle, pool, store, config=cfg, selector=selector)
            assert store.count() == 600 == len(set(oracle.queried))
            hists[mode] = torch.tensor(store.label_histogram(10)).float()
    # the spread of the label histogram shrinks when selection targets rare classes
    assert hists["balanced"].std() < hists["random"].std()


@pytest.mark.parametrize("warm", [None, True, False])
def test_refits_continue_the_interim_copycat_or_start_afresh_as_configured(
    victim: TorchOracle, tmp_path: Path, warm: bool | None
) -> None:
    cfg = StealConfig(budget=400, batch_size=50, selection="jacobian", warm_refits=warm)
    train = TrainConfig(arch="cnn-tiny", epochs=1, batch_size=50, device="cpu")
    selector = JacobianSelector(config=cfg, train=train, num_classes=10, refits=3, warm=True)
    assert selector.warm is (warm is not False)  # None keeps the strategy's own choice
    models = []
    fit_interim = selector._fit_interim

    def record(store: AnswerStore) -> None:
        fit_interim(store)
        models.append(selector.model)

    selector._fit_interim = record  # type: ignore[method-assign]
    pool = build_pool(PoolConfig(spec="noise"), shape=SHAPE)
    pool.sources = [BankSource("rule", rule_images(3000, 5)[0])]
    with AnswerStore(tmp_path / "a.sqlite") as store:
        steal(LabelOnly(victim), pool, store, config=cfg, selector=selector)
        assert store.count() == 400
    assert len(models) == 3
    assert len({id(m) for m in models}) == (1 if selector.warm else 3)


def test_refit_rows_keep_every_new_answer_and_draw_the_rest_from_earlier_ones() -> None:
    assert refit_rows(4000, fitted=3000, cap=5000, seed=0) is None  # within the cap
    assert refit_rows(9000, fitted=8000, cap=None, seed=0) is None
    rows = refit_rows(9000, fitted=8000, cap=5000, seed=0)
    assert rows is not None and len(rows) == 5000 and len(set(rows.tolist())) == 5000
    assert torch.equal(rows[-1000:], torch.arange(8000, 9000))  # every unseen answer
    assert bool((rows[:-1000] < 8000).all()) and bool((rows[:-1000].diff() > 0).all())
    assert torch.equal(rows, refit_rows(9000, fitted=8000, cap=5000, seed=0))  # reproducible
    assert not torch.equal(rows, refit_rows(9000, fitted=8000, cap=5000, seed=1))
    # more new answers than the cap: the newest
    assert torch.equal(refit_rows(9000, fitted=1000, cap=500, seed=0), torch.arange(8500, 9000))


def test_warm_refits_train_on_at_most_refit_answers(
    victim: TorchOracle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from copycat.steal import selection

    sizes: list[int] = []
    real_fit = selection.fit

    def record(model, images, labels, **kw):  # type: ignore[no-untyped-def]
        sizes.append(len(labels))
        return real_fit(model, images, labels, **kw)

    monkeypatch.setattr(selection, "fit", record)
    cfg = StealConfig(budget=400, batch_size=50, selection="jacobian", refit_answers=150)
    train = TrainConfig(arch="cnn-tiny", epochs=1, batch_size=50, device="cpu")
    selector = JacobianSelector(config=cfg, train=train, num_classes=10, refits=3, warm=True)
    pool = build_pool(PoolConfig(spec="noise"), shape=SHAPE)
    pool.sources = [BankSource("rule", rule_images(3000, 5)[0])]
    with AnswerStore(tmp_path / "a.sqlite") as store:
        steal(LabelOnly(victim), pool, store, config=cfg, selector=selector)
        assert store.count() == 400
    # the first fit (fresh) takes every answer of the seed share; the warm ones at most 150
    assert sizes[0] == 200 and sizes[1:] == [150, 150]


def test_capped_seed_share_refits_each_time_the_answers_double() -> None:
    train = TrainConfig(arch="cnn-tiny", epochs=1, device="cpu")
    even = BalancedSelector(config=StealConfig(budget=10_000), train=train, num_classes=10)
    assert even.seed_count == 5000 and even._retrain_at == [5000, 7500]
    capped = BalancedSelector(
        config=StealConfig(budget=10_000, seed_max=1000), train=train, num_classes=10
    )
    assert capped.seed_count == 1000 and capped._retrain_at == [1000, 2000, 4000, 8000]
    # a small budget keeps its own share: the cap only bites on large budgets
    small = BalancedSelector(
        config=StealConfig(budget=1000, batch_size=50, seed_max=1000), train=train, num_classes=10
    )
    assert small.seed_count == 500 and small._retrain_at == [500]


def test_more_refits_than_batches_after_the_seed_share_warn_with_the_batch_size_that_fits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refit happens between batches: 1,000 answers after the seed share are 4 batches of
    256, so refits = 8 there cannot happen, and the warning names a batch size that lets them."""
    train = TrainConfig(arch="cnn-tiny", epochs=1, device="cpu")
    with caplog.at_level(logging.WARNING, logger="copycat.steal.selection"):
        JacobianSelector(config=StealConfig(budget=2000, refits=4), train=train, num_classes=10)
        assert not caplog.records  # 4 refits in 4 batches
        JacobianSelector(config=StealConfig(budget=2000, refits=8), train=train, num_classes=10)
    (record,) = caplog.records
    assert "only 4 batch(es) of 256" in record.getMessage()
    assert "steal.batch_size to 125 or below" in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="copycat.steal.selection"):
        cfg = StealConfig(budget=2000, refits=8, batch_size=125)
        JacobianSelector(config=cfg, train=train, num_classes=10)
    assert not caplog.records
    # nothing follows a seed share of the whole budget: the fix is a smaller seed share
    with caplog.at_level(logging.WARNING, logger="copycat.steal.selection"):
        cfg = StealConfig(budget=2000, refits=8, seed_fraction=1.0)
        JacobianSelector(config=cfg, train=train, num_classes=10)
    (record,) = caplog.records
    assert "only 0 batch(es)" in record.getMessage()
    assert "fitted at most 1 time(s)" in record.getMessage()
    assert "steal.seed_fraction" in record.getMessage()


def test_the_interim_copycat_of_an_auto_arch_stays_small_on_colour_images() -> None:
    """``auto`` gives the final copy of a colour target ``cnn-wide``; the interim copycat, which
    only ranks candidates, stays ``cnn-small`` so that refits stay cheap."""
    from copycat.steal.store import FakeDataset
    from copycat.train.models import init_model

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), generator=gen, dtype=torch.uint8)
    data = FakeDataset(images, torch.arange(64) % 9, None, ("x",) * 64)

    class Store:
        def load(self) -> FakeDataset:
            return data

    for arch, expect in (("auto", "cnn-small"), ("cnn-wide", "cnn-wide")):
        train = TrainConfig(arch=arch, epochs=1, batch_size=32, device="cpu")
        sel = JacobianSelector(config=StealConfig(budget=128), train=train, num_classes=9)
        sel._fit_interim(Store())  # type: ignore[arg-type]
        assert sel.model is not None
        want = init_model(expect, images, num_classes=9, seed=0).state_dict()
        assert sel.model.state_dict().keys() == want.keys(), arch


def test_set_shares_follow_each_sets_rare_class_yield() -> None:
    # set A answers class 0 only; set B the nine other classes, all of them rare
    rows = [(0, "a/x")] * 300 + [(1 + i % 9, "b") for i in range(100)]
    shares = set_shares(rows, 10, warmup=100)
    assert shares is not None and shares["b"] > 0.9 > 0.1 > shares["a"] >= 0.05
    assert set_shares(rows[:99], 10, warmup=100) is None  # still warming up: the pool's mix
    assert set_shares([(0, "a")] * 300, 10, warmup=100) is None  # one set: nothing to weigh
    # synthesized images count for the set they were made from
    assert set_shares([(s, src + "+jacobian") for s, src in rows], 10, warmup=100) == shares
    # "top": the set of highest yield takes all but the floor, however close the yields (class
    # 9 alone is rare: 10 answers from set a, 9 from set b)
    rows = [(9, "a")] * 10 + [(i % 9, "a") for i in range(190)]
    rows += [(9, "b")] * 9 + [(i % 9, "b") for i in range(191)]
    near = set_shares(rows, 10, warmup=100)
    assert near is not None and 0.5 < near["a"] < 0.55
    top = set_shares(rows, 10, warmup=100, power=math.inf)
    assert top == pytest.approx({"a": 0.95, "b": 0.05})


def test_earned_shares_drop_a_later_set_that_yields_less_than_the_first() -> None:
    """The pool's first set is its base; a later one keeps its pool weight only while its rare
    yield is at least the first's, and drops to the floor otherwise (the rest shared by the
    pool's weights). The first set itself never drops."""
    rows = [(0, "a/x")] * 300 + [(1 + i % 9, "b") for i in range(100)]  # b gives rare classes
    pool = [("a", 0.5), ("b", 0.5)]
    assert earned_shares(rows, 10, pool=pool, warmup=100) is None  # b earns: the pool's mix
    flipped = [("b", 0.5), ("a", 0.5)]  # b first: a yields less and drops to the floor
    assert earned_shares(rows, 10, pool=flipped, warmup=100) == pytest.approx(
        {"b": 0.95, "a": 0.05}
    )
    three = [("b", 0.5), ("a", 0.25), ("c", 0.25)]  # c unseen: kept, by the pool's weights
    got = earned_shares(rows, 10, pool=three, warmup=100)
    floor = 0.1 / 3
    assert got == pytest.approx({"b": (1 - floor) * 2 / 3, "a": floor, "c": (1 - floor) / 3})
    assert earned_shares(rows[:99], 10, pool=flipped, warmup=100) is None  # warming up
    assert earned_shares(rows, 10, pool=[("b", 1.0)], warmup=100) is None  # one set
    assert earned_shares(rows, 10, pool=[], warmup=100) is None  # the pool was not told


def test_set_weights_auto_is_earned_up_to_its_budget_then_the_pools_own() -> None:
    assert StealConfig().set_weights == "auto"
    assert resolve_set_weights("auto", budget=2_000) == "earned"
    assert resolve_set_weights("auto", budget=EARNED_UP_TO) == "earned"
    assert resolve_set_weights("auto", budget=EARNED_UP_TO + 1) == "pool"
    for name in ("pool", "yield", "earned"):  # a name given is kept at any budget
        assert resolve_set_weights(name, budget=100_000) == name
    train = TrainConfig(arch="cnn-tiny", epochs=1, device="cpu")
    for budget, want in ((2_000, "earned"), (20_000, "pool")):
        sel = BalancedSelector(config=StealConfig(budget=budget), train=train, num_classes=10)
        assert sel.set_weights == want and sel.set_yield == (want == "earned")
    # the adaptive bandit weighs the sets itself: "auto" leaves the pool's draw to it
    adaptive = build_selector(
        "adaptive",
        config=StealConfig(budget=2_000, selection="adaptive"),
        train=train,
        num_classes=10,
    )
    assert isinstance(adaptive, InterimSelector)
    assert adaptive.set_weights == "pool" and not adaptive.set_yield


def test_draw_and_thin_by_set_keep_pool_order_within_each_set() -> None:
    sources = ("a",) * 6 + ("b",) * 6
    idx = draw_by_set(sources, 4, {"a": 0.25, "b": 0.75})
    assert idx.tolist() == [0, 6, 7, 8]
    assert draw_by_set(sources[:7], 4, {"a": 0.25, "b": 0.75}).tolist() == [0, 1, 2, 6]
    assert thin_by_set(sources, {"a": 0.25, "b": 0.75}).tolist() == [0, 1, 6, 7, 8, 9, 10, 11]


def two_set_pool(common: torch.Tensor, rare: torch.Tensor, *, rare_first: bool = False) -> Pool:
    """A pool of two sets drawn 3 : 1, ``common`` (images of class 0) and ``rare`` (the rest);
    ``rare_first`` names the rare set first (the pool's base set)."""
    pool = build_pool(PoolConfig(spec="noise"), shape=SHAPE)
    sets = [BankSource("common", common), BankSource("rare", rare)]
    pool.sources, pool.weights = (sets[::-1], [1, 3]) if rare_first else (sets, [3, 1])
    return pool


def test_set_weights_yield_draws_more_of_the_set_that_gives_rare_classes(
    victim: TorchOracle, tmp_path: Path
) -> None:
    """Two sets: three images in four come from one that the victim answers with class 0
    alone; the other gives the nine rare classes. Weighting the sets by their yield sends far
    more of the second in the random seed share, and the labels come out more even. After the
    seed share, ``yield`` thins the candidates the interim copycat picks among to the shares;
    ``yield-seed`` leaves it all of them, as ``pool`` does; a thinned batch is followed by
    batches drawn larger, so the picks see five candidates per query again. ``top`` gives the
    rare set all but the floor of the draws. ``earned`` is the pool's own steal, answer for answer,
    while the later set yields more than the first (as here), and drops the later set to the
    floor when the rare set comes first; the default (``auto``) is ``earned`` at this budget."""
    images, labels = rule_images(4000, 11)
    common, rare = images[labels == 0], images[labels != 0]
    train = TrainConfig(arch="cnn-tiny", epochs=1, batch_size=50, device="cpu")
    got = {}

    class Counting(BalancedSelector):
        offered: list[int]  # set before each steal

        def pick(self, cand: Candidates, k: int, store: AnswerStore) -> torch.Tensor:
            self.offered.append(len(cand.sources))
            return super().pick(cand, k, store)

    drawn, answers = {}, {}
    for weights in (
        "pool",
        "yield",
        "yield-seed",
        "top",
        "earned",
        "earned-rare-first",
        "auto-rare-first",
    ):
        mode = weights.removesuffix("-rare-first")
        cfg = StealConfig(budget=600, batch_size=50, selection="balanced", set_weights=mode)
        pool = two_set_pool(common, rare, rare_first=weights.endswith("first"))
        selector = Counting(config=cfg, train=train, num_classes=10, interim_epochs=1)
        selector.offered = []
        with AnswerStore(tmp_path / f"{weights}.sqlite") as store:
            steal(LabelOnly(victim), pool, store, config=cfg, selector=selector)
            assert store.count() == 600
            rows = store.labels_and_sources()
            hist = torch.tensor(store.label_histogram(10)).float()
        seed_rare = sum(src == "rare" for _, src in rows[:300]) / 300
        got[weights] = (seed_rare, hist.std(), selector.offered)
        drawn[weights] = selector.oversample
        answers[weights] = rows
    assert got["pool"][0] < 0.35 and got["yield"][0] > 0.55 and got["yield-seed"][0] > 0.55
    assert got["yield"][1] < got["pool"][1] and got["yield-seed"][1] < got["pool"][1]
    # six batches of 50 after the seed share, each picked among 5 x 50 candidates: the first
    # thinned batch among fewer, the next ones drawn from more pool images to make up for it
    assert got["pool"][2] == got["yield-seed"][2] == [250] * 6
    for weights in ("yield", "top", "earned-rare-first"):
        offered = got[weights][2]
        assert len(offered) == 6 and offered[0] < 250 and min(offered[1:]) >= 200, weights
    assert drawn["pool"] == drawn["yield-seed"] == 5 < drawn["yield"] < drawn["top"]
    # past the warm-up (a quarter of the seed share), the common set keeps its floor alone
    assert got["top"][0] > got["yield"][0] and got["top"][1] < got["pool"][1]
    # the later set (rare) earns its share: the pool's own steal, answer for answer; named
    # later, common drops
    assert answers["earned"] == answers["pool"] and got["earned"][2] == [250] * 6
    assert got["earned-rare-first"][0] > got["yield"][0]
    assert got["earned-rare-first"][1] < got["pool"][1]
    # the default, "auto", is "earned" on a budget this small
    assert answers["auto-rare-first"] == answers["earned-rare-first"]


def test_set_weights_yield_keeps_synthesis_out_of_the_seed_share(
    victim: TorchOracle, tmp_path: Path
) -> None:
    """Weighting the sets oversamples from the first batch, but synthesis still waits for the
    end of the seed share, even where ``synth_from`` comes before it: the seed share holds
    pool images only, as without the weighting."""
    images, labels = rule_images(3000, 12)
    train = TrainConfig(arch="cnn-tiny", epochs=1, batch_size=50, device="cpu")
    cfg = StealConfig(
        budget=500, batch_size=50, selection="jacobian", set_weights="yield", synth_from=0
    )
    pool = two_set_pool(images[labels == 0], images[labels != 0])
    selector = JacobianSelector(config=cfg, train=train, num_classes=10, interim_epochs=1)
    with AnswerStore(tmp_path / "a.sqlite") as store:
        steal(LabelOnly(victim), pool, store, config=cfg, selector=selector)
        rows = store.labels_and_sources()
    assert len(rows) == 500
    assert not any(src.endswith("+jacobian") for _, src in rows[: selector.seed_count])
    assert any(src.endswith("+jacobian") for _, src in rows[selector.seed_count :])
