"""``copycat evaluate``: scores against the oracle the run stole from (recorded, fingerprint
checked), keeps the HTTP cost of the test-set queries, and refuses bad input in one line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from copycat.cli.main import app
from copycat.config import AugmentConfig, ExperimentConfig, PoolConfig, StealConfig, TrainConfig
from copycat.pipeline import steal_stage, train_stage

from .http_support import running_server

runner = CliRunner()
TINY = TrainConfig(arch="cnn-tiny", epochs=1, batch_size=32, device="cpu")


def _stolen_run(run: Path, oracle: str, **http: object) -> Path:
    """A run directory with answers from ``oracle`` and a trained copycat."""
    cfg = ExperimentConfig(
        run_dir=str(run),
        oracle=oracle,
        pool=PoolConfig(spec="noise", augment=AugmentConfig(enabled=False)),
        steal=StealConfig(budget=96, batch_size=32, selection="random"),
        train=TINY,
    )
    steal_stage(cfg, **http)
    train_stage(cfg)
    return run


def _evaluate(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["evaluate", "--device", "cpu", *args])
    return res.exit_code, res.output + ("" if res.exception is None else repr(res.exception))


def test_evaluate_defaults_to_the_recorded_oracle_and_refuses_another(
    victim_dir: Path, fmnist_env: Path, tmp_path: Path
) -> None:
    run = _stolen_run(tmp_path / "run", f"torch:{victim_dir}")
    code, out = _evaluate("--run-dir", str(run))  # no --oracle: the recorded one
    assert code == 0, out
    ev = json.loads((run / "eval.json").read_text())
    assert ev["oracle"] == f"torch:{victim_dir}" and ev["oracle_matches_run"] is True

    other = tmp_path / "other"
    shutil.copytree(victim_dir, other)
    code, out = _evaluate("--run-dir", str(run), "--oracle", f"torch:{other}")
    assert code == 2 and "--allow-other-oracle" in out and "Traceback" not in out
    code, out = _evaluate(
        "--run-dir", str(run), "--oracle", f"torch:{other}", "--allow-other-oracle"
    )
    assert code == 0, out


def test_evaluate_refuses_a_target_that_changed_since_the_steal(
    victim_dir: Path, fmnist_env: Path, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    shutil.copytree(victim_dir, target)
    run = _stolen_run(tmp_path / "run", f"torch:{target}")
    weights = load_file(str(target / "model.safetensors"))
    name = next(k for k in weights if k.endswith("weight"))
    weights[name] = weights[name] + 0.01  # the owner retrained the target
    save_file(weights, str(target / "model.safetensors"))
    code, out = _evaluate("--run-dir", str(run))
    assert code == 2 and "target changed since the steal" in out and "Traceback" not in out
    assert not (run / "eval.json").exists()
    code, out = _evaluate("--run-dir", str(run), "--allow-other-oracle")
    assert code == 0, out
    assert json.loads((run / "eval.json").read_text())["oracle_matches_run"] is False


def test_evaluate_keeps_the_http_cost_of_the_test_queries(
    victim_dir: Path, fmnist_env: Path, tmp_path: Path
) -> None:
    with running_server(victim_dir, tmp_path / "srv", "--name", "victim") as srv:
        spec = f"oip+{srv.url}/v2/models/victim"
        run = _stolen_run(tmp_path / "run", spec, price_per_1000=2.0)
        before = srv.served_images()
        code, out = _evaluate("--run-dir", str(run), "--price-per-1000", "2.0")
        served = srv.served_images() - before
    assert code == 0, out
    cost = json.loads((run / "eval.json").read_text())["cost"]
    assert cost["billed_images"] == served == 400  # the tiny Fashion-MNIST test split
    assert cost["estimated_cost"] == pytest.approx(0.8)
    assert "test queries: billed images" in out
    assert runner.invoke(app, ["report", "--run-dir", str(run)]).exit_code == 0
    assert "Evaluation queries" in (run / "report.md").read_text()
    status = runner.invoke(app, ["status", str(run)]).output  # the steal's ledger: 96 billed
    assert re.search(r"billed images\s*│\s*96\b", status), status
    assert re.search(r"estimated cost\s*│\s*0\.19", status), status


def _folder_set(root: Path, classes: int, *, images: bool = True) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        if images:
            for i in range(2):
                arr = rng.integers(0, 256, (28, 28), dtype=np.uint8)
                Image.fromarray(arr).save(root / f"c{c}" / f"{i}.png")
    return root


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("three-classes", "has 3 classes, the oracle 10"),
        ("empty-folders", "no readable images"),
        ("no-folder", "does not exist"),
        ("other-shape", "holds images of shape (1, 28, 28), the oracle takes (3, 16, 16)"),
    ],
)
def test_bad_test_sets_are_one_clear_line(
    kind: str, message: str, victim_dir: Path, fmnist_env: Path, tmp_path: Path
) -> None:
    oracle = f"torch:{victim_dir}"
    test_set = "fashion-mnist:test"
    if kind == "three-classes":
        test_set = f"folder:{_folder_set(tmp_path / 'three', 3)}"
    elif kind == "empty-folders":
        test_set = f"folder:{_folder_set(tmp_path / 'empty', 10, images=False)}"
    elif kind == "no-folder":
        test_set = f"folder:{tmp_path / 'nowhere'}"
    else:
        oracle = f"torch:{_rgb_target(tmp_path / 'rgb')}"
    run = _stolen_run(tmp_path / "run", oracle)
    code, out = _evaluate("--run-dir", str(run), "--test-set", test_set)
    assert code == 2, out
    assert message in out and "Traceback" not in out and "ValueError" not in out


def _rgb_target(out: Path) -> Path:
    """A 3x16x16 target: Fashion-MNIST's test split does not fit it."""
    import torch

    from copycat.data.datasets import LabelledSet
    from copycat.targets.publish import train_target

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 16, 16), generator=g, dtype=torch.uint8)
    labels = torch.arange(64) % 10
    data = LabelledSet(images, labels, tuple(f"c{i}" for i in range(10)), "rgb")
    cfg = TrainConfig(arch="cnn-tiny", epochs=1, batch_size=32, device="cpu", val_fraction=0.0)
    train_target(data, data, out=out, config=cfg)
    return out
