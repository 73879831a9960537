"""The command line end to end on a tiny configuration (a tiny IDX Fashion-MNIST stand-in)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from copycat.cli.main import app

runner = CliRunner()


def _ok(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


def test_cli_end_to_end(fmnist_env: Path, tmp_path: Path, png_folder: Path) -> None:
    target = tmp_path / "targets" / "tiny"
    run = tmp_path / "runs" / "demo"
    _ok(
        [
            "target",
            "train",
            "--out",
            str(target),
            "--epochs",
            "1",
            "--arch",
            "cnn-tiny",
            "--device",
            "cpu",
        ]
    )
    assert {"model.safetensors", "card.json", "model.onnx"} <= {p.name for p in target.iterdir()}
    _ok(
        [
            "steal",
            "--oracle",
            f"torch:{target}",
            "--pool",
            f"pd:fashion-mnist+folder:{png_folder}",
            "--mix",
            "0.8,0.2",
            "--budget",
            "300",
            "--run-dir",
            str(run),
            "--device",
            "cpu",
        ]
    )
    _ok(
        [
            "steal",
            "--oracle",
            f"onnx:{target}/model.onnx",
            "--pool",
            "noise",
            "--budget",
            "50",
            "--run-dir",
            str(tmp_path / "runs" / "onnx"),
        ]
    )
    _ok(["train", "--run-dir", str(run), "--arch", "cnn-tiny", "--epochs", "2", "--device", "cpu"])
    _ok(
        [
            "evaluate",
            "--run-dir",
            str(run),
            "--oracle",
            f"torch:{target}",
            "--test-set",
            "fashion-mnist:test",
            "--device",
            "cpu",
        ]
    )
    _ok(["report", "--run-dir", str(run)])
    ev = json.loads((run / "eval.json").read_text())
    for key in (
        "target_accuracy",
        "copycat_accuracy",
        "performance_accuracy",
        "target_macro_f1",
        "copycat_macro_f1",
        "performance_macro_f1",
        "agreement",
        "budget",
        "queries",
    ):
        assert key in ev
    assert ev["queries"] == 300 and ev["budget"] == 300
    report = (run / "report.md").read_text()
    assert "performance" in report and "copycat steal" in report
    for png in ("labels.png", "training.png", "confusion.png"):
        assert (run / png).stat().st_size > 1000


def test_run_command_with_a_config(fmnist_env: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "exp.toml"
    cfg.write_text(f"""
run_dir = "{tmp_path / "run"}"
oracle = "torch:{tmp_path / "target"}"
test_set = "fashion-mnist:test"

[target]
dataset = "fashion-mnist"
out = "{tmp_path / "target"}"
[target.train]
arch = "cnn-tiny"
epochs = 1
device = "cpu"

[pool]
spec = "pd:fashion-mnist"

[steal]
budget = 200

[train]
arch = "cnn-tiny"
epochs = 1
device = "cpu"
""")
    _ok(["run", "--config", str(cfg)])
    assert (tmp_path / "run" / "report.md").is_file()
    # every stage is resumable: a second run pays for nothing and retrains nothing
    _ok(["run", "--config", str(cfg)])
    steal = json.loads((tmp_path / "run" / "steal.json").read_text())
    assert steal["queried_now"] == 0 and steal["answered"] == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["steal", "--oracle", "tourch:x", "--run-dir", "r"], "unknown oracle scheme"),
        (["steal", "--oracle", "torch:nowhere", "--run-dir", "r"], "copycat target train"),
        (["train", "--run-dir", "nowhere"], "copycat steal"),
        (["report", "--run-dir", "nowhere"], "copycat evaluate"),
        (["run", "--config", "missing.toml"], "not found"),
    ],
)
def test_errors_are_one_clear_line(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output


def test_help_lists_every_command() -> None:
    out = _ok(["--help"])
    for cmd in ("target", "steal", "train", "evaluate", "report", "run"):
        assert cmd in out
