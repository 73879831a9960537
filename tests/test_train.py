"""Copycat training: beats chance on a tiny victim by a floor; checkpoints resume exactly."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from copycat.config import PoolConfig, StealConfig, TrainConfig
from copycat.data.datasets import LabelledSet
from copycat.errors import CheckpointError
from copycat.evaluate.evaluate import evaluate
from copycat.oracles.local import TorchOracle
from copycat.oracles.outputs import LabelOnly
from copycat.pipeline import train_copycat
from copycat.pools.pool import build_pool
from copycat.runs import RunDir
from copycat.steal.loop import steal
from copycat.steal.store import AnswerStore
from copycat.train.checkpoint import load_copycat

from .conftest import SHAPE, rule_set

# No training flips: the rule depends on left and right.
# Single copies: tests/test_copies.py tests the ensemble ([train] ensemble).
CFG = TrainConfig(
    arch="cnn-tiny", epochs=4, batch_size=64, lr=1e-2, augment=False, device="cpu", ensemble=1
)


def _steal_pd(victim: TorchOracle, run: RunDir, budget: int, output: str = "label") -> None:
    """A problem-domain pool: images drawn like the victim's (labels discarded)."""
    from copycat.pools.sources import BankSource

    pool = build_pool(PoolConfig(spec="noise"), shape=SHAPE)
    pool.sources = [BankSource("pd:rule", rule_set(4000, 7, "rule").images)]
    oracle = LabelOnly(victim) if output == "label" else victim
    with AnswerStore(run.store) as store:
        steal(oracle, pool, store, config=StealConfig(budget=budget))


@pytest.fixture(scope="module")
def test_set() -> LabelledSet:
    return rule_set(600, 99, "rule:test")


def test_copycat_beats_chance_by_a_floor(
    victim: TorchOracle, tmp_path: Path, test_set: LabelledSet
) -> None:
    run = RunDir.at(tmp_path)
    _steal_pd(victim, run, 2000)
    train_copycat(run, config=CFG)
    res = evaluate(load_copycat(run), test_set=test_set, oracle=victim)
    assert res.agreement >= 0.6  # chance is 0.1
    assert res.performance_accuracy >= 0.6
    assert (run.checkpoints / "best.pt").is_file() and run.metrics.is_file()


def test_soft_labels_are_used_when_probabilities_were_stored(
    victim: TorchOracle, tmp_path: Path
) -> None:
    run = RunDir.at(tmp_path)
    _steal_pd(victim, run, 300, output="probs")
    train_copycat(run, config=dataclasses.replace(CFG, epochs=1))
    assert '"labels": "soft"' in run.copycat_card.read_text()


def test_rerunning_finished_training_keeps_it(victim: TorchOracle, tmp_path: Path) -> None:
    run = RunDir.at(tmp_path)
    _steal_pd(victim, run, 400)
    cfg = dataclasses.replace(CFG, epochs=2)
    full = train_copycat(run, config=cfg)
    again = train_copycat(run, config=cfg)
    assert torch.load(run.checkpoints / "last.pt", weights_only=True)["epoch"] == 1
    assert again.history == full.history  # nothing retrained


def test_interrupted_training_resumes_where_it_stopped(victim: TorchOracle, tmp_path: Path) -> None:
    ref, cut = RunDir.at(tmp_path / "ref"), RunDir.at(tmp_path / "cut")
    for run in (ref, cut):
        _steal_pd(victim, run, 400)
    cfg = dataclasses.replace(CFG, epochs=3)
    train_copycat(ref, config=cfg)

    class Stop(Exception):
        pass

    def stop_in_epoch_3(epoch: int, step: int, steps: int, loss: float, agree: float) -> None:
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train_copycat(cut, config=cfg, on_step=stop_in_epoch_3)
    train_copycat(cut, config=cfg)
    a = torch.load(ref.checkpoints / "last.pt", weights_only=True)["model"]
    b = torch.load(cut.checkpoints / "last.pt", weights_only=True)["model"]
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_with_dropout_is_bit_identical(
    victim: TorchOracle, tmp_path: Path, ema: float
) -> None:
    """``cnn-small`` (with dropout; what ``auto`` gives grey images) interrupted after epoch 1 and
    resumed gives exactly the weights of an uninterrupted run: every random state, and the
    moving average of the weights, travels in ``last.pt``."""
    cfg = dataclasses.replace(
        CFG, arch="cnn-small", epochs=3, batch_size=32, val_fraction=0.1, ema=ema
    )
    ref, cut = RunDir.at(tmp_path / "ref"), RunDir.at(tmp_path / "cut")
    for run in (ref, cut):
        _steal_pd(victim, run, 160)
    train_copycat(ref, config=cfg)

    class Stop(Exception):
        pass

    def stop_after_epoch_1(epoch: int, step: int, steps: int, loss: float, agree: float) -> None:
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        train_copycat(cut, config=cfg, on_step=stop_after_epoch_1)
    assert torch.load(cut.checkpoints / "last.pt", weights_only=True)["epoch"] == 0
    train_copycat(cut, config=cfg)
    a = torch.load(ref.checkpoints / "last.pt", weights_only=True)
    b = torch.load(cut.checkpoints / "last.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
        if ema:
            assert torch.equal(a["ema"][k], b["ema"][k]), k
    assert a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]
    best_a = torch.load(ref.checkpoints / "best.pt", weights_only=True)["model"]
    best_b = torch.load(cut.checkpoints / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)


def test_resume_on_other_answers_of_the_same_size_is_refused(
    victim: TorchOracle, tmp_path: Path
) -> None:
    run = RunDir.at(tmp_path)
    _steal_pd(victim, run, 200)
    cfg = dataclasses.replace(CFG, epochs=2)

    def stop(epoch: int, step: int, steps: int, loss: float, agree: float) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_copycat(run, config=cfg, on_step=stop)
    # the same number of answers, one label changed
    with AnswerStore(run.store) as store, store.conn:
        store.conn.execute("UPDATE answers SET label = (label + 1) % 10 WHERE seq = 1")
    with pytest.raises(CheckpointError, match="delete the checkpoints"):
        train_copycat(run, config=cfg)


def test_a_checkpoint_that_predates_a_field_at_its_default_resumes(
    victim: TorchOracle, tmp_path: Path
) -> None:
    """A ``last.pt`` made before a training field existed (here ``ema``) is the training the
    field's default gives, so it resumes; a value other than the default is still refused."""
    from copycat.train.checkpoint import load_checkpoint, save_checkpoint

    run = RunDir.at(tmp_path)
    _steal_pd(victim, run, 200)
    cfg = dataclasses.replace(CFG, epochs=2)
    full = train_copycat(run, config=cfg)
    last = run.checkpoints / "last.pt"
    ck = load_checkpoint(last)
    del ck["config"]["ema"]
    save_checkpoint(last, ck)
    assert train_copycat(run, config=cfg).history == full.history  # kept, nothing retrained
    with pytest.raises(CheckpointError, match="delete the checkpoints"):
        train_copycat(run, config=dataclasses.replace(cfg, ema=0.9))
    # "auto" is recorded as the architecture it gave, so a checkpoint of that name resumes
    auto = dataclasses.replace(cfg, arch="auto", epochs=1)
    other = RunDir.at(tmp_path / "auto")
    _steal_pd(victim, other, 200)
    first = train_copycat(other, config=auto)
    assert load_checkpoint(other.checkpoints / "last.pt")["config"]["arch"] == "cnn-small"
    assert '"arch": "cnn-small"' in other.copycat_card.read_text()
    named = dataclasses.replace(auto, arch="cnn-small")
    assert train_copycat(other, config=named).history == first.history


def test_resume_with_another_configuration_is_refused(victim: TorchOracle, tmp_path: Path) -> None:
    run = RunDir.at(tmp_path)
    _steal_pd(victim, run, 200)
    train_copycat(run, config=dataclasses.replace(CFG, epochs=1))
    with pytest.raises(CheckpointError, match="delete the checkpoints"):
        train_copycat(run, config=dataclasses.replace(CFG, epochs=1, lr=0.5))


@pytest.mark.parametrize(
    ("n", "balance", "epochs"), [(216, True, 5), (40, False, 3), (20, True, 1)]
)
def test_tiny_sets_train_without_crashing(n: int, balance: bool, epochs: int) -> None:
    """Fewer steps than a one-cycle warm-up needs, or fewer samples than one batch."""
    from copycat.train.fit import fit
    from copycat.train.models import init_model

    data = rule_set(n, 3, "tiny")
    model = init_model("cnn-tiny", data.images, num_classes=10, seed=0)
    cfg = TrainConfig(arch="cnn-tiny", epochs=epochs, balance=balance, device="cpu")
    res = fit(model, data.images, data.labels, config=cfg)
    assert len(res.history) == epochs
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in res.history)


def test_unset_epochs_rise_for_small_stores_to_min_steps() -> None:
    cfg = TrainConfig(min_epochs=10, min_steps=1000, batch_size=100)
    assert cfg.epochs_for(20_000) == 10  # 200 steps an epoch: 2,000 steps already
    assert cfg.epochs_for(2_000) == 50  # 20 steps an epoch
    assert cfg.epochs_for(2_050) == 50  # the last partial batch is dropped, as fit does
    assert cfg.epochs_for(50) == 1000  # one batch of 50 an epoch
    assert dataclasses.replace(cfg, epochs=3).epochs_for(50) == 3  # set epochs are exact
    assert dataclasses.replace(cfg, min_steps=0).epochs_for(50) == 10


def test_a_small_store_trains_min_steps(victim: TorchOracle, tmp_path: Path) -> None:
    run = RunDir.at(tmp_path)
    _steal_pd(victim, run, 300)  # 270 kept for training after the 10% held out: 4 steps an epoch
    cfg = dataclasses.replace(CFG, epochs=None, min_epochs=1, min_steps=10)
    res = train_copycat(run, config=cfg)
    assert len(res.history) == 3  # ceil(10 / 4)
    again = train_copycat(run, config=cfg)  # a finished run is kept, not retrained
    assert again.history == res.history


def test_mixup_draws_are_seeded_and_keep_each_mix_mostly_its_first_image() -> None:
    from copycat.train.fit import mixup_draw

    draws = [mixup_draw(64, 0.4, torch.Generator().manual_seed(s)) for s in range(20)]
    assert all(0.5 <= lam <= 1.0 for lam, _ in draws)
    assert len({round(lam, 6) for lam, _ in draws}) > 10  # drawn, not fixed
    assert all(sorted(p.tolist()) == list(range(64)) for _, p in draws)  # a partner for each
    lam, partner = mixup_draw(64, 0.4, torch.Generator().manual_seed(3))
    assert lam == draws[3][0] and torch.equal(partner, draws[3][1])


@pytest.mark.parametrize("soft", [False, True])
def test_mixup_changes_training_and_the_copycat_still_learns(
    victim: TorchOracle, test_set: LabelledSet, soft: bool
) -> None:
    from copycat.train.fit import fit
    from copycat.train.models import init_model

    data = rule_set(1500, 5, "mix")
    answer = victim.query(data.images.float().div(255.0))
    assert answer.probs is not None
    targets = answer.probs if soft else answer.labels
    histories = []
    for mixup in (0.0, 0.4):
        model = init_model("cnn-tiny", data.images, num_classes=10, seed=0)
        cfg = dataclasses.replace(CFG, mixup=mixup, val_fraction=0.0)
        histories.append(fit(model, data.images, targets, config=cfg).history)
        res = evaluate(model.eval(), test_set=test_set, oracle=victim)
        assert res.agreement >= 0.6, (mixup, res.agreement)  # chance is 0.1
    assert histories[0][-1]["train_loss"] != histories[1][-1]["train_loss"]


def test_a_moving_average_of_the_weights_is_what_is_kept_and_still_learns(
    victim: TorchOracle, test_set: LabelledSet
) -> None:
    from copycat.train.fit import fit
    from copycat.train.models import init_model

    data = rule_set(1500, 5, "ema")
    labels = victim.query(data.images.float().div(255.0)).labels
    kept = {}
    for ema in (0.0, 0.98):
        model = init_model("cnn-tiny", data.images, num_classes=10, seed=0)
        cfg = dataclasses.replace(CFG, ema=ema, val_fraction=0.0)
        fit(model, data.images, labels, config=cfg)
        res = evaluate(model.eval(), test_set=test_set, oracle=victim)
        assert res.agreement >= 0.6, (ema, res.agreement)  # chance is 0.1
        kept[ema] = {k: v.clone() for k, v in model.state_dict().items()}
    # the same steps, the same seed: only the average differs from the trained weights
    assert not torch.equal(kept[0.0]["backbone.0.weight"], kept[0.98]["backbone.0.weight"])
    # batch counts are copied, not averaged
    assert torch.equal(
        kept[0.0]["backbone.1.num_batches_tracked"],
        kept[0.98]["backbone.1.num_batches_tracked"],
    )
    with pytest.raises(ValueError, match=r"train\.ema"):
        TrainConfig(ema=1.0)


def test_a_negative_mixup_is_refused_with_the_field_named() -> None:
    with pytest.raises(ValueError, match=r"train\.mixup"):
        TrainConfig(mixup=-0.1)


def test_every_registered_architecture_returns_logits_for_grey_and_colour_inputs() -> None:
    from copycat.train.models import build_model
    from copycat.train.registry import MODELS

    for arch in MODELS.names():
        for channels, size in ((1, 28), (3, 32)):
            model = build_model(arch, in_channels=channels, num_classes=7, input_size=size).eval()
            with torch.no_grad():
                out = model(torch.rand(2, channels, size, size))
            assert out.shape == (2, 7), (arch, channels)


def test_auto_arch_is_wide_for_colour_images_and_small_for_grey_ones() -> None:
    from copycat.train.models import init_model, resolve_arch

    assert TrainConfig().arch == "auto"
    assert resolve_arch("auto", channels=3) == "cnn-wide"
    assert resolve_arch("auto", channels=1) == "cnn-small"
    assert resolve_arch("cnn-tiny", channels=3) == "cnn-tiny"  # a named one is kept
    for channels, arch in ((3, "cnn-wide"), (1, "cnn-small")):
        images = torch.randint(0, 256, (8, channels, 32, 32), dtype=torch.uint8)
        auto = init_model("auto", images, num_classes=9, seed=0).state_dict()
        named = init_model(arch, images, num_classes=9, seed=0).state_dict()
        assert auto.keys() == named.keys()
        assert all(torch.equal(auto[k], named[k]) for k in auto)


def test_auto_arch_chooses_a_grey_copy_by_held_out_agreement_and_keeps_colour_wide() -> None:
    """Grey answers: both candidates train on the answers with the copy's own held-out share,
    and the one that agrees more is kept; each score is the held-out agreement that copy
    itself reaches (a store under CHOOSE_ANSWERS). Colour, a named arch, or nothing held out:
    no training at all."""
    from copycat.evaluate.curve import fit_prefix
    from copycat.train.choose import ArchChoice, choose_arch
    from copycat.train.models import GREY_CANDIDATES

    from .conftest import rule_images

    images, labels = rule_images(300, 0)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=1e-2, device="cpu", val_fraction=0.2)
    choice = choose_arch(images, labels, num_classes=10, config=cfg)
    assert set(choice.heldout) == set(GREY_CANDIDATES)
    assert choice.heldout[choice.arch] == max(choice.heldout.values())
    for arch in GREY_CANDIDATES:
        fitted = fit_prefix(
            images, labels, num_classes=10, config=dataclasses.replace(cfg, arch=arch)
        )
        assert fitted.result.best_val_agreement == choice.heldout[arch], arch
    assert fit_prefix(images, labels, num_classes=10, config=cfg).arch == choice.arch
    colour = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    assert choose_arch(colour, labels[:40], num_classes=10, config=cfg) == ArchChoice("cnn-wide")
    named = dataclasses.replace(cfg, arch="cnn-tiny")
    assert choose_arch(images, labels, num_classes=10, config=named) == ArchChoice("cnn-tiny")
    none_held = dataclasses.replace(cfg, val_fraction=0.0)
    assert choose_arch(images, labels, num_classes=10, config=none_held).arch == "cnn-small"


def test_an_auto_arch_that_names_its_candidates_chooses_among_them_for_any_images() -> None:
    """``auto:A,B``: the named architectures are the candidates, for colour images as for
    grey ones, scored as ``auto``'s are; names are checked before anything trains."""
    from copycat.errors import ConfigError
    from copycat.evaluate.curve import fit_prefix
    from copycat.train.choose import choose_arch
    from copycat.train.models import auto_candidates, resolve_arch
    from copycat.train.registry import check_arch

    from .conftest import rule_images

    arch = "auto:cnn-tiny, cnn-small,cnn-tiny"
    assert auto_candidates(arch, channels=3) == ("cnn-tiny", "cnn-small")
    assert resolve_arch(arch, channels=1) == "cnn-tiny"  # the first, with no answers
    for bad, says in (("auto:", "names no candidate"), ("auto:cnn-x", "unknown architecture")):
        with pytest.raises(ConfigError, match=says):
            auto_candidates(bad, channels=1)
    with pytest.raises(ConfigError, match="cannot itself be auto"):
        auto_candidates("auto:auto", channels=1)
    for bad in ("cnn-x", "auto:cnn-small,cnn-x", "auto: ,"):  # the steal stage checks first
        with pytest.raises(ConfigError, match=r"unknown architecture|names no candidate"):
            check_arch(bad)
    grey, labels = rule_images(300, 0)
    colour = grey.expand(-1, 3, -1, -1).contiguous()
    cfg = TrainConfig(arch=arch, epochs=2, batch_size=64, lr=1e-2, device="cpu", val_fraction=0.2)
    for images in (grey, colour):
        choice = choose_arch(images, labels, num_classes=10, config=cfg)
        assert set(choice.heldout) == {"cnn-tiny", "cnn-small"}
        assert choice.heldout[choice.arch] == max(choice.heldout.values())
        for name in choice.heldout:
            named = dataclasses.replace(cfg, arch=name)
            fitted = fit_prefix(images, labels, num_classes=10, config=named)
            assert fitted.result.best_val_agreement == choice.heldout[name], name


def test_auto_arch_scores_its_candidates_on_the_answers_after_those_they_trained_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a store larger than CHOOSE_ANSWERS, the candidates train on the first answers and
    are scored on their held-out share and the answers after them, up to CHOOSE_SCORED; with
    nothing held out, on the answers after them alone."""
    from copycat.train import choose
    from copycat.train.fit import fit, held_out_split
    from copycat.train.models import GREY_CANDIDATES, init_model

    from .conftest import rule_images

    monkeypatch.setattr(choose, "CHOOSE_ANSWERS", 200)
    monkeypatch.setattr(choose, "CHOOSE_SCORED", 120)
    images, labels = rule_images(400, 0)
    for fraction, later_end in ((0.2, 280), (0.0, 320)):
        cfg = TrainConfig(epochs=2, batch_size=64, lr=1e-2, device="cpu", val_fraction=fraction)
        choice = choose.choose_arch(images, labels, num_classes=10, config=cfg)
        held, tr_idx = held_out_split(200, config=cfg)
        scored = torch.cat([held, torch.arange(200, later_end)])
        assert (choice.trained, choice.scored) == (len(tr_idx), 120)
        for arch in GREY_CANDIDATES:
            model = init_model(arch, images[:200], num_classes=10, seed=cfg.seed)
            val = (images[scored], labels[scored])
            result = fit(model, images[tr_idx], labels[tr_idx], config=cfg, val=val)
            assert result.best_val_agreement == choice.heldout[arch], (fraction, arch)


def test_the_train_stage_trains_and_records_the_auto_choice_and_a_rerun_keeps_it(
    victim: TorchOracle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    run = RunDir.at(tmp_path)
    _steal_pd(victim, run, 300)
    auto = dataclasses.replace(CFG, arch="auto", epochs=1)
    train_copycat(run, config=auto)
    card = json.loads(run.copycat_card.read_text())
    assert set(card["arch_choice"]) == {"cnn-small", "cnn-wide"}
    assert card["arch"] == max(card["arch_choice"], key=card["arch_choice"].get)
    assert load_copycat(run).state_dict().keys() == init_model_keys(card["arch"])
    # a rerun (or a resume) trains what was chosen, without choosing again
    with caplog.at_level("INFO", logger="copycat"):
        train_copycat(run, config=auto)
    assert "as chosen by the training" in caplog.text and "on the first" not in caplog.text
    assert json.loads(run.copycat_card.read_text()) == {**card, **_timings(run)}


def test_a_rerun_whose_auto_arch_lists_other_candidates_is_refused_before_it_trains(
    victim: TorchOracle, tmp_path: Path
) -> None:
    """A trained ``auto`` copy is resumed only under the candidates it was chosen among:
    ``--arch`` naming others refuses, naming the fix, instead of keeping the old choice."""
    import json

    from copycat.errors import StaleCheckpointError

    run = RunDir.at(tmp_path)
    _steal_pd(victim, run, 300)
    first = dataclasses.replace(CFG, arch="auto:cnn-tiny,cnn-small", epochs=1)
    done = train_copycat(run, config=first)
    record = json.loads((run.checkpoints / "choice.json").read_text())
    assert record["candidates"] == ["cnn-tiny", "cnn-small"]
    assert record["arch"] == json.loads(run.copycat_card.read_text())["arch"]
    steps: list[int] = []
    for other in ("auto:cnn-tiny,cnn-wide", "auto"):
        with pytest.raises(StaleCheckpointError, match="chosen among cnn-tiny, cnn-small"):
            train_copycat(
                run,
                config=dataclasses.replace(first, arch=other),
                on_step=lambda e, *_: steps.append(e),
            )
    assert steps == []  # refused before any training
    assert train_copycat(run, config=first).history == done.history  # the same list resumes
    # a run trained before choice.json was written: its architecture must be a candidate
    (run.checkpoints / "choice.json").unlink()
    chosen = record["arch"]
    others = [a for a in ("cnn-wide", "cnn-target") if a != chosen]
    with pytest.raises(StaleCheckpointError, match="Delete"):
        train_copycat(run, config=dataclasses.replace(first, arch="auto:" + ",".join(others)))
    again = dataclasses.replace(first, arch=f"auto:cnn-wide,{chosen}")
    assert train_copycat(run, config=again).history == done.history


def test_a_kill_while_the_copy_is_saved_leaves_the_previous_copy_whole(
    victim: TorchOracle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy's weights, card and metrics are replaced all at once: a failure at the moment
    of writing leaves the earlier files readable and byte for byte as they were."""
    import shutil

    run = RunDir.at(tmp_path)
    _steal_pd(victim, run, 300)
    cfg = dataclasses.replace(CFG, epochs=1)
    train_copycat(run, config=cfg)
    files = (run.copycat_weights, run.copycat_card, run.metrics)
    before = {f: f.read_bytes() for f in files}
    shutil.rmtree(run.checkpoints)
    rename = os.replace

    def killed(src: str, dst: str) -> None:
        if Path(dst).parent == run.root:  # the kill comes as the copy is saved
            raise KeyboardInterrupt
        rename(src, dst)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        train_copycat(run, config=dataclasses.replace(cfg, seed=1))
    monkeypatch.undo()
    assert {f: f.read_bytes() for f in files} == before
    assert not list(tmp_path.glob(".*.tmp"))
    load_copycat(run)


def test_auto_arch_on_a_small_store_keeps_the_chosen_candidate_as_the_copy(
    victim: TorchOracle, tmp_path: Path
) -> None:
    """On a store of at most CHOOSE_ANSWERS answers the chosen candidate trained exactly as
    the copy would be, so it is the copy: no third training, and the very weights a copy of
    that architecture named outright gets. Its checkpoints resume; the candidates' go."""
    import json
    import shutil

    from safetensors.torch import load_file

    run = RunDir.at(tmp_path / "auto")
    _steal_pd(victim, run, 300)
    auto = dataclasses.replace(CFG, arch="auto", epochs=2)
    steps: list[tuple[int, int]] = []
    result = train_copycat(run, config=auto, on_step=lambda e, s, *_: steps.append((e, s)))
    assert steps.count((0, 1)) == 2  # two candidates trained; the copy took no step of its own
    assert not list(run.checkpoints.glob("choose-*"))
    card = json.loads(run.copycat_card.read_text())
    named = RunDir.at(tmp_path / "named")
    named.root.mkdir(parents=True, exist_ok=True)
    shutil.copy(run.store, named.store)
    direct = train_copycat(named, config=dataclasses.replace(auto, arch=card["arch"]))
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in direct.history] == [
        {k: v for k, v in r.items() if k not in drop} for r in result.history
    ]
    ours, theirs = load_file(str(run.copycat_weights)), load_file(str(named.copycat_weights))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert train_copycat(run, config=auto).history == result.history  # resumes, at its end


def test_an_interrupted_auto_choice_resumes_its_candidates_and_retrains_stale_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from copycat.train.choose import choose_arch
    from copycat.train.models import GREY_CANDIDATES

    from .conftest import rule_images

    images, labels = rule_images(300, 0)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=1e-2, device="cpu", val_fraction=0.2)
    first = choose_arch(images, labels, num_classes=10, config=cfg, checkpoint_dir=tmp_path)
    assert first.exact is not None and first.exact[0] == tmp_path / f"choose-{first.arch}"
    for arch in GREY_CANDIDATES:  # as a kill -9 after the candidates' last epoch leaves them
        assert (tmp_path / f"choose-{arch}" / "last.pt").is_file()
    with caplog.at_level("INFO", logger="copycat"):
        again = choose_arch(images, labels, num_classes=10, config=cfg, checkpoint_dir=tmp_path)
    assert again.heldout == first.heldout
    assert caplog.text.count("resuming training at epoch 3") == len(GREY_CANDIDATES)
    assert "epoch 1/2" not in caplog.text  # nothing retrained
    caplog.clear()
    more, more_labels = rule_images(320, 0)  # the store grew: other answers, a stale cache
    with caplog.at_level("INFO", logger="copycat"):
        grown = choose_arch(more, more_labels, num_classes=10, config=cfg, checkpoint_dir=tmp_path)
    assert caplog.text.count("retraining the candidate") == len(GREY_CANDIDATES)
    assert grown.heldout == choose_arch(more, more_labels, num_classes=10, config=cfg).heldout


def test_a_full_disk_during_the_auto_choice_names_its_fix_and_retrains_nothing(
    tmp_path: Path,
) -> None:
    """A candidate's checkpoint that cannot be written is a disk error to report, not a stale
    checkpoint to delete and retrain: a process whose files may not grow past 64 KiB (as on
    a full disk) stops at the first save with the checkpoint's own message."""
    script = """
import sys, torch
from pathlib import Path
from copycat.config import TrainConfig
from copycat.errors import CheckpointError
from copycat.train.choose import choose_arch
g = torch.Generator().manual_seed(0)
images = torch.randint(0, 256, (120, 1, 28, 28), dtype=torch.uint8, generator=g)
labels = torch.randint(0, 10, (120,), generator=g)
cfg = TrainConfig(epochs=1, batch_size=64, device="cpu", val_fraction=0.2)
try:
    choose_arch(images, labels, num_classes=10, config=cfg, checkpoint_dir=Path(sys.argv[1]))
except CheckpointError as exc:
    print("ERROR", exc)
"""
    out = _on_a_full_disk(script, tmp_path)
    assert "ERROR could not write checkpoint" in out.stdout and "free disk space" in out.stdout
    assert "retraining the candidate" not in out.stderr + out.stdout


def test_a_full_disk_while_a_run_file_is_written_names_its_fix_and_keeps_the_old_file(
    tmp_path: Path,
) -> None:
    """Every file copycat writes goes through one atomic writer: on a full disk (here a process
    whose files may not grow past 64 KiB) it stops with an error naming the fix, the earlier
    file whole and no temporary file left behind."""
    card = tmp_path / "copycat.json"
    card.write_text('{"arch": "cnn-small"}\n')
    script = """
import sys
from copycat.errors import WriteError
from copycat.runs import write_atomic
try:
    write_atomic(sys.argv[1], "x" * (1 << 17))
except WriteError as exc:
    print("ERROR", exc)
"""
    out = _on_a_full_disk(script, card)
    assert f"ERROR could not write {card}" in out.stdout and "free disk space" in out.stdout
    assert card.read_text() == '{"arch": "cnn-small"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["copycat.json"]


def test_a_file_written_atomically_has_the_permissions_a_plain_write_gives(
    tmp_path: Path,
) -> None:
    """A new file gets the umask's permissions (not the temporary file's private 0600), and a
    replaced file keeps its own."""
    from copycat.runs import write_atomic

    plain, atomic = tmp_path / "plain.json", tmp_path / "atomic.json"
    plain.write_text("{}")
    write_atomic(atomic, "{}")
    assert atomic.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    atomic.chmod(0o640)
    write_atomic(atomic, '{"again": 1}')
    assert atomic.stat().st_mode & 0o777 == 0o640 and atomic.read_text() == '{"again": 1}'


def _on_a_full_disk(script: str, arg: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (with ``arg`` as sys.argv[1]) in a process whose files may not grow past
    64 KiB: a write past the limit fails there as on a full disk."""
    limit = (
        "import resource, signal\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", limit + script, str(arg)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
        timeout=300,
        check=True,
    )


def _timings(run: RunDir) -> dict[str, float]:
    import json

    card = json.loads(run.copycat_card.read_text())
    return {k: card[k] for k in ("samples_per_s", "train_seconds")}


def init_model_keys(arch: str) -> set[str]:
    from copycat.train.models import init_model

    images = torch.zeros(4, *SHAPE, dtype=torch.uint8)
    return set(init_model(arch, images, num_classes=10, seed=0).state_dict())


def test_a_steal_refuses_an_unknown_copy_architecture_before_it_opens_the_target(
    tmp_path: Path,
) -> None:
    from copycat.config import ExperimentConfig
    from copycat.errors import ConfigError
    from copycat.pipeline import steal_stage

    run = tmp_path / "run"
    cfg = ExperimentConfig(
        run_dir=str(run),
        oracle=f"torch:{tmp_path / 'no-such-target'}",
        train=TrainConfig(arch="auto:cnn-small,cnn-x"),
    )
    with pytest.raises(ConfigError, match="unknown architecture 'cnn-x'"):
        steal_stage(cfg)
    assert not run.exists()  # nothing opened, nothing queried
