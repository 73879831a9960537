"""The demo's target ships in the repository (``targets/fmnist``): it must load without
running code, be the very weights the README's figures were measured on, and classify."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from copycat.errors import CopycatError
from copycat.oracles.local import WEIGHTS_NAME, TorchOracle, file_digest

SHIPPED = Path(__file__).resolve().parents[1] / "targets" / "fmnist"
# `copycat target train --dataset fashion-mnist --out targets/fmnist` (6 epochs, seed 0) on
# this project's machine: the target of the README's demo and of the suite's Fashion-MNIST rows
SHA256 = "e2e19b2ef648088da6349c45335c2a0952bc54357dd1044ee19651c9e3f82eb3"


def test_the_shipped_demo_target_is_the_measured_one() -> None:
    weights = SHIPPED / WEIGHTS_NAME
    # a Git LFS pointer or a truncated checkout is a few hundred bytes, not 3.3 MB
    assert weights.stat().st_size > 1_000_000, "targets/fmnist/model.safetensors is not the model"
    assert file_digest(weights) == SHA256
    oracle = TorchOracle(SHIPPED)
    assert oracle.input_shape == (1, 28, 28) and oracle.num_classes == 10
    assert oracle.card.test_accuracy == pytest.approx(0.9118)


def test_the_shipped_demo_target_classifies_fashion_mnist() -> None:
    from copycat.data.datasets import load_fashion_mnist

    try:
        test = load_fashion_mnist("test")
    except CopycatError as exc:  # no IDX files on this machine
        pytest.skip(f"Fashion-MNIST is not installed ({exc})")
    images, labels = test.images[:500], test.labels[:500]
    answer = TorchOracle(SHIPPED).query(images)
    accuracy = float((answer.labels == labels).float().mean())
    assert accuracy > 0.85, accuracy
    # and not by chance: shuffled labels score near a tenth
    shuffled = labels[torch.randperm(500, generator=torch.Generator().manual_seed(0))]
    assert float((answer.labels == shuffled).float().mean()) < 0.3


def test_make_suite_reuses_the_shipped_target_as_the_suites_fmnist(tmp_path: Path) -> None:
    import json
    import shutil

    from typer.testing import CliRunner

    from copycat.cli.main import app
    from copycat.oracles.local import TargetCard
    from copycat.targets.suite import build_suite, reuse_mismatch, suite_target

    t = suite_target("fmnist")
    # the shipped card is the suite's recipe: copied, not trained (a training would take minutes)
    assert reuse_mismatch(t, TargetCard.load(SHIPPED), t.config()) is None
    cards = build_suite(tmp_path / "suite", names=("fmnist",), reuse={"fmnist": SHIPPED})
    assert cards["fmnist"].test_accuracy == pytest.approx(0.9118)
    assert file_digest(tmp_path / "suite" / "fmnist" / WEIGHTS_NAME) == SHA256
    assert TorchOracle(tmp_path / "suite" / "fmnist").num_classes == 10
    # another folder of the recipe is reused under the suite's name
    named = tmp_path / "shipped-elsewhere"
    shutil.copytree(SHIPPED, named)
    card = json.loads((named / "card.json").read_text())
    (named / "card.json").write_text(json.dumps(card | {"name": "shipped-elsewhere"}))
    build_suite(tmp_path / "suite2", names=("fmnist",), reuse={"fmnist": named})
    assert TargetCard.load(tmp_path / "suite2" / "fmnist").name == "fmnist"
    assert not list((tmp_path / "suite2" / "fmnist").glob(".*"))  # no temporary file left
    # a card of another recipe is named, not reused
    other = tmp_path / "other"
    shutil.copytree(SHIPPED, other)
    card = json.loads((other / "card.json").read_text())
    card["extra"]["epochs"] = 5
    (other / "card.json").write_text(json.dumps(card))
    assert reuse_mismatch(t, TargetCard.load(other), t.config()) == "epochs 5, not 6"
    assert reuse_mismatch(t, TargetCard.load(SHIPPED), t.config(quick=True)) == "epochs 6, not 1"
    # the command line: NAME=PATH pairs, suite names only, each refusal naming the fix
    runner = CliRunner()
    res = runner.invoke(app, ["target", "suite", "--out", str(tmp_path / "s2"), "--reuse", "x"])
    assert res.exit_code != 0 and "NAME=PATH" in res.output
    res = runner.invoke(
        app, ["target", "suite", "--out", str(tmp_path / "s2"), "--reuse", f"mnist={SHIPPED}"]
    )
    assert res.exit_code != 0 and "not suite targets" in res.output and "fmnist" in res.output
    assert not (tmp_path / "s2").exists()
    res = runner.invoke(
        app, ["target", "suite", "--out", str(tmp_path / "s2"), "--reuse", "fmnist=nowhere"]
    )
    assert res.exit_code != 0 and "no card.json in nowhere" in res.output
    assert not (tmp_path / "s2" / "fmnist").exists()
