"""Semi-supervised training on unqueried pool images, and the distillation temperature."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from copycat.cli.main import app
from copycat.config import TrainConfig
from copycat.errors import ConfigError
from copycat.pipeline import unqueried_images
from copycat.runs import RunDir
from copycat.steal.store import AnswerStore, image_id
from copycat.train.distill import distill_loss
from copycat.train.fit import fit
from copycat.train.models import init_model
from copycat.train.semi import FixMatch, strong_augment

from .conftest import SHAPE, rule_images


def test_distill_loss_is_the_soft_loss_at_t1_and_fits_the_teacher_at_any_t() -> None:
    logits = torch.randn(8, 5)
    probs = torch.softmax(torch.randn(8, 5), 1)
    plain = -(probs * F.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(distill_loss(logits, probs, 1.0), plain)
    teacher = torch.randn(8, 5, requires_grad=True)
    loss = distill_loss(teacher, torch.softmax(teacher.detach(), 1), 3.0)
    (grad,) = torch.autograd.grad(loss, teacher)
    assert grad.abs().max() < 1e-5  # the teacher's own logits are a minimum at T = 3


def test_fixmatch_trains_on_confident_pseudo_labels_only() -> None:
    images, labels = rule_images(400, 0)
    model = init_model("cnn-tiny", images, num_classes=10, seed=0)
    cfg = TrainConfig(arch="cnn-tiny", epochs=8, batch_size=32, lr=1e-2, device="cpu")
    fit(model, images, labels, config=cfg)
    unl, _ = rule_images(256, 1)
    gen = torch.Generator().manual_seed(0)
    some = FixMatch(unl, batch_size=64, threshold=0.5)
    assert float(some(model, gen, torch.device("cpu"))) > 0 and some.confident_share > 0.2
    none = FixMatch(unl, batch_size=64, threshold=1.0)
    assert float(none(model, gen, torch.device("cpu"))) == 0.0 and none.confident_share == 0.0
    x = unl[:16].float() / 255
    out = strong_augment(x, gen)
    assert out.shape == x.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.equal(out, x)


def test_semi_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="semi"):
        TrainConfig(semi="mixmatch")
    with pytest.raises(ConfigError, match="temperature"):
        TrainConfig(temperature=0.0)


def test_cli_trains_with_fixmatch_on_unqueried_pool_images(
    victim_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    runner = CliRunner()
    steal = ["steal", "--oracle", f"torch:{victim_dir}", "--pool", "noise", "--budget", "200"]
    steal += ["--selection", "random", "--run-dir", str(run), "--device", "cpu"]
    res = runner.invoke(app, steal)
    assert res.exit_code == 0, res.output
    noise = RunDir.at(run).read_config()["steal"]["pool"]
    # the store holds its budget, so a rerun with another pool draws nothing: the record of
    # the pool the answers came from stays, and the unqueried images are drawn from it
    res = runner.invoke(app, [*steal[:4], "npd:sets=strokes", *steal[5:]])
    assert res.exit_code == 0, res.output
    assert RunDir.at(run).read_config()["steal"]["pool"] == noise
    assert "noise" in str(noise) and "strokes" not in str(noise)
    free = unqueried_images(RunDir.at(run), _experiment(run), 300)
    assert free.shape == (300, *SHAPE) and free.dtype == torch.uint8
    with AnswerStore(run / "answers.sqlite") as store:
        assert not store.known([image_id(img) for img in free])  # never queried
    train = ["train", "--run-dir", str(run), "--arch", "cnn-tiny", "--epochs", "2"]
    train += ["--device", "cpu", "--semi", "fixmatch", "--unlabelled", "300"]
    res = runner.invoke(app, train)
    assert res.exit_code == 0, res.output
    assert (run / "copycat.safetensors").is_file()
    assert '"semi": "fixmatch"' in (run / "config.json").read_text()


def _experiment(run: Path):  # type: ignore[no-untyped-def]
    from copycat.config import ExperimentConfig

    return ExperimentConfig(run_dir=str(run))
