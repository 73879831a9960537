"""The command line end to end on a tiny configuration (a tiny IDX Fashion-MNIST stand-in)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
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
    out = _ok(
        [
            "train",
            *("--run-dir", str(run), "--arch", "cnn-tiny", "--epochs", "2", "--device", "cpu"),
            *("--mixup", "0.2", "--ema", "0.99", "--val-fraction", "0", "--ensemble", "2"),
        ]
    )
    assert "copies (the copycat: their mean)" in out
    assert json.loads((run / "copycat.json").read_text())["members"] == 2
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
    assert "mean of the probabilities of **2 copies**" in report
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
        (["train", "--run-dir", "r", "--mixup", "-1"], "train.mixup"),
        (["train", "--run-dir", "r", "--ema", "1"], "train.ema"),
        (["train", "--run-dir", "r", "--val-fraction", "0.7"], "train.val_fraction"),
        (["train", "--run-dir", "r", "--ensemble", "0"], "train.ensemble"),
        (["report", "--run-dir", "nowhere"], "copycat evaluate"),
        (["run", "--config", "missing.toml"], "not found"),
        (["steal", "--oracle", "torch:x", "--run-dir", "r", "--mix", "0.5,abc"], "--mix"),
        (["steal", "--oracle", "torch:x", "--run-dir", "r", "--mix", "0.5,0.5"], "pool.mix"),
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


COMMANDS = (
    "target",
    "steal",
    "train",
    "evaluate",
    "report",
    "run",
    "serve",
    "status",
    "verify",
    "audit",
    "curve",
)


def test_help_lists_every_command() -> None:
    """Each command is registered, listed in --help as a command row, and answers --help."""
    import typer

    registered = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert registered == set(COMMANDS)
    out = _ok(["--help"])
    for cmd in COMMANDS:
        assert re.search(rf"^\W*{cmd}\s{{2,}}\S", out, re.MULTILINE), cmd
        _ok([cmd, "--help"])


def test_version_and_verbose_after_the_command(tmp_path: Path) -> None:
    from copycat import __version__

    assert _ok(["--version"]).strip() == f"copycat {__version__}"
    res = runner.invoke(app, ["report", "--run-dir", str(tmp_path / "nowhere"), "-v"])
    assert res.exit_code == 2 and "copycat evaluate" in res.output  # -v was accepted


def test_invert_help_shows_no_placeholder() -> None:
    out = _ok(["steal", "--help"])
    assert "-1.0" not in out and "-1:" not in out


def test_target_train_logs_accuracy_without_val(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from copycat.config import TrainConfig
    from copycat.targets.publish import train_target

    from .conftest import rule_set

    cfg = TrainConfig(arch="cnn-tiny", epochs=1, batch_size=32, device="cpu", val_fraction=0.0)
    with caplog.at_level(logging.INFO, logger="copycat.train.fit"):
        train_target(rule_set(64, 0, "r"), rule_set(32, 1, "r"), out=tmp_path / "t", config=cfg)
    epoch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch")]
    assert epoch_lines and all("accuracy" in m for m in epoch_lines)
    assert not any("agreement" in m or "val" in m or "nan" in m for m in epoch_lines)


def test_status_shows_answers_budget_labels_and_stages(victim_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _ok(["steal", "--oracle", f"torch:{victim_dir}", "--pool", "noise", "--budget", "64",
         "--selection", "random", "--run-dir", str(run), "--device", "cpu"])  # fmt: skip
    out = _ok(["status", str(run)])
    for text in ("answered", "64", "budget", "billed images", "imbalance", "rarest class"):
        assert text in out, text
    assert re.search(r"billed images\s*│\s*64\b", out)  # read from the store's ledger
    assert re.search(r"steal done\s*│\s*yes", out) and re.search(r"train done\s*│\s*no", out)
    res = runner.invoke(app, ["status", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_dry_run_sends_nothing_and_writes_nothing(victim_dir: Path, tmp_path: Path) -> None:
    from .http_support import running_server

    with running_server(victim_dir, tmp_path / "srv", "--name", "victim") as srv:
        run = tmp_path / "run"
        out = _ok(["steal", "--oracle", f"oip+{srv.url}/v2/models/victim", "--pool", "noise",
                   "--budget", "1000", "--run-dir", str(run), "--price-per-1000", "2.5",
                   "--request-batch", "64", "--dry-run"])  # fmt: skip
        assert srv.served_images() == 0
    assert not run.exists()
    for text in ("would send (images)", "1000", "1x28x28", "noise", "16", "2.5"):
        assert text in out, text


def test_run_reaches_an_http_target_with_its_key_from_the_environment(
    victim_dir: Path, fmnist_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .http_support import env_with_src, running_server

    monkeypatch.setenv("RUN_KEY", "s3cret")
    env = env_with_src(RUN_KEY="s3cret")
    with running_server(
        victim_dir, tmp_path / "srv", "--name", "victim", "--api-key-env", "RUN_KEY", env=env
    ) as srv:
        cfg = tmp_path / "exp.toml"
        body = f"""
run_dir = "{tmp_path / "run"}"
oracle = "oip+{srv.url}/v2/models/victim"
test_set = "fashion-mnist:test"
[pool]
spec = "noise"
[steal]
budget = 64
selection = "random"
[train]
arch = "cnn-tiny"
epochs = 1
device = "cpu"
[http]
api_key_env = "RUN_KEY"
price_per_1000 = 3.0
request_batch = 32
"""
        cfg.write_text(body)
        _ok(["run", "--config", str(cfg)])
        assert srv.served_images() == 64 + 400  # the steal, then the test split
        cfg.write_text(body + 'api_key = "s3cret"\n')
        res = runner.invoke(app, ["run", "--config", str(cfg)])
    assert res.exit_code == 2 and "api_key_env" in res.output and "s3cret" not in res.output
    steal = json.loads((tmp_path / "run" / "steal.json").read_text())
    assert steal["total"]["billed_images"] == 64
    assert steal["total"]["estimated_cost"] == pytest.approx(0.192)


def test_http_options_name_fields_of_the_http_config_and_skip_local_oracles() -> None:
    import dataclasses

    from copycat.cli.options import HTTP_OPTIONS
    from copycat.cli.stages import http_options
    from copycat.config import HttpOracleConfig

    assert set(HTTP_OPTIONS) <= {f.name for f in dataclasses.fields(HttpOracleConfig)}
    params = {"seed": 7, "timeout": 5.0, "concurrency": 2, "budget": 10}
    assert http_options("oip+http://127.0.0.1:1/v2/models/m", params) == {
        "timeout": 5.0,
        "concurrency": 2,
    }
    assert http_options("torch:targets/x", params) == {}


def test_a_config_value_of_the_wrong_type_is_refused_in_words() -> None:
    from copycat.config import TrainConfig, from_dict
    from copycat.errors import ConfigError

    with pytest.raises(ConfigError, match="epochs='ten' is invalid; accepted: an integer"):
        from_dict(TrainConfig, {"epochs": "ten"})
    assert from_dict(TrainConfig, {"epochs": None}).epochs is None  # unset: min_steps decide


def test_tables_and_errors_print_names_as_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    """A dataset "emoji:train:" is not the ":train:" emoji code, a path "[x]" not markup."""
    from copycat.cli.common import errors, table
    from copycat.errors import ConfigError

    table("suite [t]", [("emoji-small", "on emoji:train: test accuracy"), ("f", 0.5)])
    out = capsys.readouterr().out
    assert "on emoji:train: test accuracy" in out and "suite [t]" in out and "0.5000" in out
    with pytest.raises(typer.Exit), errors():
        raise ConfigError("no images under /data/[2024]/emoji:train:")
    assert "/data/[2024]/emoji:train:" in capsys.readouterr().err
