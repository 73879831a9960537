"""``[train] ensemble``: the copy as the mean of copies trained alike on the same answers,
saved and loaded as one model, resumed member by member, and trained alike by the curve."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from copycat.config import TrainConfig
from copycat.errors import CheckpointError, ConfigError
from copycat.evaluate.curve import fit_prefix
from copycat.evaluate.evaluate import evaluate
from copycat.oracles.local import TorchOracle
from copycat.pipeline import train_copycat
from copycat.runs import RunDir
from copycat.steal.store import AnswerStore
from copycat.train.checkpoint import load_copycat
from copycat.train.models import Classifier, Ensemble

from .conftest import rule_set
from .test_train import CFG, _steal_pd

ENS = dataclasses.replace(CFG, epochs=2, ensemble=3)


def _trained(victim: TorchOracle, root: Path, answers: int, config: TrainConfig) -> RunDir:
    """A run of ``answers`` problem-domain answers and its copycat trained under ``config``."""
    run = RunDir.at(root)
    _steal_pd(victim, run, answers)
    train_copycat(run, config=config)
    return run


def _probs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x).softmax(1)


def test_an_ensemble_copy_is_the_mean_of_its_members_probabilities(
    victim: TorchOracle, tmp_path: Path
) -> None:
    """Three copies on one store: one file, a card naming them, a model whose softmax is the
    mean of theirs; the first is the copy ``ensemble = 1`` trains, bit for bit, and the others
    differ from it (their own seeds and held-out shares)."""
    one, three = RunDir.at(tmp_path / "one"), RunDir.at(tmp_path / "three")
    for run in (one, three):
        _steal_pd(victim, run, 400)
    train_copycat(one, config=dataclasses.replace(ENS, ensemble=1))
    res = train_copycat(three, config=ENS)
    card = json.loads(three.copycat_card.read_text())
    assert card["members"] == 3 and len(card["member_val_agreements"]) == 3
    assert card["val_agreement"] == card["member_val_agreements"][0] == res.best_val_agreement
    assert json.loads(one.copycat_card.read_text())["members"] == 1
    assert (three.checkpoints / "member-2" / "best.pt").is_file()
    model = load_copycat(three)
    assert isinstance(model, Ensemble) and len(model.members) == 3
    single = load_copycat(one)
    assert isinstance(single, Classifier)
    first = model.members[0].state_dict()
    assert all(torch.equal(first[k], v) for k, v in single.state_dict().items())
    second = model.members[1].state_dict()
    assert not all(torch.equal(first[k], v) for k, v in second.items())
    x = rule_set(200, 5, "rule:check").images.float() / 255.0
    members = torch.stack([_probs(m, x) for m in model.members])
    assert torch.allclose(_probs(model, x), members.mean(0), atol=1e-6)
    # the members disagree somewhere, so the mean is not any one of them
    assert (members.argmax(2) != members[0].argmax(1)).any()
    test = rule_set(600, 99, "rule:test")
    assert evaluate(model, test_set=test, oracle=victim).agreement >= 0.4  # chance is 0.1


def test_an_interrupted_ensemble_resumes_member_by_member(
    victim: TorchOracle, tmp_path: Path
) -> None:
    """A kill in the second member's training: the rerun does not train the first again,
    resumes the second at its last epoch, and ends with the weights of an uninterrupted
    run."""
    ref, cut = RunDir.at(tmp_path / "ref"), RunDir.at(tmp_path / "cut")
    for run in (ref, cut):
        _steal_pd(victim, run, 400)
    cfg = dataclasses.replace(ENS, epochs=3)
    calls: list[int] = []
    train_copycat(ref, config=cfg, on_step=lambda *a: calls.append(a[0]))
    per_member = len(calls) // 3
    steps_per_epoch = per_member // 3

    class Stop(Exception):
        pass

    seen: list[int] = []

    def stop_in_member_2_epoch_2(*a: object) -> None:
        seen.append(1)
        if len(seen) > per_member + steps_per_epoch:
            raise Stop

    with pytest.raises(Stop):
        train_copycat(cut, config=cfg, on_step=stop_in_member_2_epoch_2)
    rerun: list[int] = []
    train_copycat(cut, config=cfg, on_step=lambda *a: rerun.append(a[0]))
    # the second member's first epoch and all of the first member are not trained again
    assert len(rerun) == 2 * per_member - steps_per_epoch
    a, b = load_copycat(ref).state_dict(), load_copycat(cut).state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k


def test_a_store_above_ensemble_answers_trains_one_copy(
    victim: TorchOracle, tmp_path: Path
) -> None:
    run = _trained(victim, tmp_path, 400, dataclasses.replace(ENS, ensemble_answers=399))
    assert json.loads(run.copycat_card.read_text())["members"] == 1
    assert not (run.checkpoints / "member-1").exists()
    assert isinstance(load_copycat(run), Classifier)
    assert TrainConfig(ensemble=5).copies_for(5_000) == 5
    assert TrainConfig(ensemble=5).copies_for(5_001) == 1


def test_the_budget_curve_trains_an_ensemble_on_prefixes_up_to_ensemble_answers(
    victim: TorchOracle, tmp_path: Path
) -> None:
    run = RunDir.at(tmp_path)
    _steal_pd(victim, run, 400)
    with AnswerStore(run.store) as store:
        data = store.load()
    cfg = dataclasses.replace(ENS, ensemble=2, ensemble_answers=300)
    small = fit_prefix(data.images[:300], data.labels[:300], num_classes=10, config=cfg)
    large = fit_prefix(data.images, data.labels, num_classes=10, config=cfg)
    assert isinstance(small.model, Ensemble) and len(small.model.members) == 2
    assert isinstance(large.model, Classifier)
    # the curve's point is the ensemble the train stage would make of the same answers
    train_copycat(run, config=dataclasses.replace(cfg, ensemble_answers=400))
    x = rule_set(100, 5, "rule:check").images.float() / 255.0
    again = fit_prefix(
        data.images,
        data.labels,
        num_classes=10,
        config=dataclasses.replace(cfg, ensemble_answers=400),
    )
    assert torch.allclose(_probs(again.model, x), _probs(load_copycat(run), x), atol=1e-5)


def test_a_card_whose_members_do_not_fit_the_weights_names_the_fix(
    victim: TorchOracle, tmp_path: Path
) -> None:
    """The weights say how many copies they hold; a card that says otherwise, a card of
    another architecture, and corrupt weights are refused, naming the fix."""
    run = _trained(victim, tmp_path, 300, dataclasses.replace(ENS, ensemble=2, epochs=1))
    card = json.loads(run.copycat_card.read_text())
    for change, words in (
        ({"members": 3}, "names 3 copies but .* holds 2"),
        ({"members": 1}, "names 1 copies but .* holds 2"),
        ({"arch": "cnn-small"}, "does not fit 2 cnn-small copies"),
    ):
        run.copycat_card.write_text(json.dumps({**card, **change}))
        with pytest.raises(CheckpointError, match=words) as err:
            load_copycat(run)
        assert "copycat train --run-dir" in str(err.value)
    run.copycat_card.write_text(json.dumps(card))
    assert isinstance(load_copycat(run), Ensemble)
    run.copycat_weights.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="is corrupt"):
        load_copycat(run)


def test_an_ensemble_of_no_copies_is_refused_with_the_field_named() -> None:
    with pytest.raises(ConfigError, match=r"train\.ensemble\b"):
        TrainConfig(ensemble=0)
    with pytest.raises(ConfigError, match=r"train\.ensemble_answers"):
        TrainConfig(ensemble_answers=-1)
