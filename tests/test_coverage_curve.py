"""Class coverage (histogram, imbalance, rarest class, the 1% warning) and the budget curve of
one run, on the tiny victim and a tiny Fashion-MNIST stand-in."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from copycat.cli.main import app
from copycat.config import ExperimentConfig, PoolConfig, StealConfig, TrainConfig
from copycat.errors import ConfigError
from copycat.evaluate.curve import CurvePoint, parse_budgets, queries_to_reach
from copycat.pipeline import curve_stage, steal_stage
from copycat.steal.coverage import class_coverage, progress_text, warn_rare


def test_coverage_numbers() -> None:
    cov = class_coverage([980, 15, 5], class_names=["bag", "coat", "shirt"])
    assert cov.total == 1000 and cov.imbalance_ratio == 196.0
    assert (cov.rarest_class, cov.rarest_name, cov.rarest_count) == (2, "shirt", 5)
    assert cov.rare == ["shirt"] and cov.missing == []  # 1.5% is not rare, 0.5% is
    assert "rarest shirt 5 (0.5%)" in progress_text(cov) and "196:1" in progress_text(cov)
    gap = class_coverage([50, 30, 0, 20])
    assert gap.imbalance_ratio is None and gap.missing == ["2"] and gap.rarest_class == 2
    assert class_coverage([10, 10]).rare == [] and class_coverage([10, 10]).imbalance_ratio == 1.0
    assert progress_text(class_coverage([0, 0])) == ""


def test_rare_classes_are_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="copycat.steal.coverage"):
        lines = warn_rare(class_coverage([995, 5, 0], class_names=["a", "b", "c"]))
    assert len(lines) == 2 and "never answered c" in caplog.text and "b 5 of 1000" in caplog.text
    assert all("npd:sets=" in line and "folder:PATH" in line for line in lines)  # the fix named
    assert warn_rare(class_coverage([50, 50])) == []


def test_budgets_parse() -> None:
    assert parse_budgets("2k, 1k,500,1k") == (500, 1000, 2000)
    for bad in ("", "1x", "0", "1.5"):
        with pytest.raises(ConfigError):
            parse_budgets(bad)
    pts = [
        CurvePoint(
            answers=a,
            copycat_accuracy=p,
            performance_accuracy=p,
            performance_macro_f1=p,
            agreement=p,
            train_seconds=0.0,
        )
        for a, p in ((1000, 0.8), (2000, 0.91), (5000, 0.93))
    ]
    assert queries_to_reach(pts, 0.90) == 2000 and queries_to_reach(pts, 0.95) is None


def _stolen_run(victim_dir: Path, tmp_path: Path) -> ExperimentConfig:
    cfg = dataclasses.replace(
        ExperimentConfig(),
        run_dir=str(tmp_path / "run"),
        oracle=f"torch:{victim_dir}",
        test_set="fashion-mnist:test",
        pool=PoolConfig(spec="pd:fashion-mnist", seed=0),
        steal=StealConfig(budget=600, batch_size=100, selection="random"),
        train=TrainConfig(arch="cnn-tiny", epochs=3, lr=1e-2, batch_size=64, device="cpu"),
    )
    steal_stage(cfg)
    return cfg


def test_steal_json_and_report_show_coverage_and_curve(
    victim_dir: Path, fmnist_env: Path, tmp_path: Path
) -> None:
    cfg = _stolen_run(victim_dir, tmp_path)
    run = Path(cfg.run_dir)
    cov = json.loads((run / "steal.json").read_text())["coverage"]
    assert sum(cov["histogram"]) == 600 and cov["class_names"] == [f"c{i}" for i in range(10)]
    assert cov["rarest_count"] == min(cov["histogram"])
    curve = curve_stage(cfg, budgets=(100, 600, 5000))  # 5000 is beyond the store: skipped
    assert [p.answers for p in curve.points] == [100, 600]
    # the rule is learnable: 600 answers must beat chance (0.1) by far, and not lose to 100
    assert curve.points[-1].agreement > 0.35
    assert curve.points[-1].agreement >= curve.points[0].agreement - 0.05
    # the held-out tenth of the answers, what a thief can check without labelled images
    assert all(0.1 < (p.heldout_agreement or 0) <= 1 for p in curve.points)
    saved = json.loads((run / "curve.json").read_text())
    assert saved["points"][-1]["heldout_agreement"] == curve.points[-1].heldout_agreement
    assert set(saved["queries_to"]) == {"0.90", "0.95"} and (run / "curve.png").stat().st_size
    res = CliRunner().invoke(
        app, ["train", "--run-dir", str(run), "--arch", "cnn-tiny", "--epochs", "1",
              "--device", "cpu"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(
        app, ["evaluate", "--run-dir", str(run), "--oracle", cfg.oracle, "--test-set",
              "fashion-mnist:test", "--device", "cpu"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["report", "--run-dir", str(run)])
    report = (run / "report.md").read_text()
    assert "Queries needed to reach 0.90 of the target" in report
    assert "Class coverage: imbalance ratio" in report and "rarest class" in report


def test_curve_command_reads_the_run(victim_dir: Path, fmnist_env: Path, tmp_path: Path) -> None:
    cfg = _stolen_run(victim_dir, tmp_path)
    args = ["curve", "--run-dir", cfg.run_dir, "--budgets", "300,600", "--arch", "cnn-tiny"]
    res = CliRunner().invoke(app, [*args, "--epochs", "1", "--device", "cpu"])
    assert res.exit_code == 2 and "--test-set" in res.output  # no evaluate ran yet
    res = CliRunner().invoke(
        app, [*args, "--epochs", "1", "--device", "cpu", "--test-set", "fashion-mnist:val"]
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "queries to reach 0.90" in res.output
    saved = json.loads((Path(cfg.run_dir) / "curve.json").read_text())
    assert saved["test_set"] == "fashion-mnist:val" and len(saved["points"]) == 2


def test_report_lists_answers_by_pool_group() -> None:
    from copycat.report.coverage import source_lines

    names = ["cat", "dog", "bird"]
    rows = [(0, "clipart/animals")] * 5 + [(1, "clipart/animals")] + [(2, "photos/a|b")] * 2
    lines = source_lines(rows, names, top=1)
    assert "| `clipart/animals` | 6 | 2 of 3 | cat (83%) |" in lines
    assert "| 1 more groups | 2 | | |" in lines  # the rest, summed
    assert source_lines([(0, "npd")] * 3, names) == []  # one group: nothing to show
    assert any("photos/a\\|b" in line for line in source_lines(rows, names))  # table-safe


def test_curve_copies_train_semi_supervised_when_the_config_says_so(
    victim_dir: Path, fmnist_env: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    from copycat.errors import CopycatError
    from copycat.evaluate.curve import fit_prefix
    from copycat.steal.store import AnswerStore

    cfg = _stolen_run(victim_dir, tmp_path)
    semi = dataclasses.replace(cfg.train, semi="fixmatch", unlabelled=200, semi_threshold=0.3)
    with caplog.at_level(logging.INFO, logger="copycat"):
        curve_stage(dataclasses.replace(cfg, train=semi), budgets=(300,))
    assert "semi-supervised (fixmatch) on 200 unqueried pool images" in caplog.text
    with AnswerStore(Path(cfg.run_dir) / "answers.sqlite") as store:
        data = store.load()
    images, labels = data.images[:300], data.labels[:300]
    with pytest.raises(CopycatError, match="needs unlabelled pool images"):
        fit_prefix(images, labels, num_classes=10, config=semi)  # never silently supervised
    plain = fit_prefix(images, labels, num_classes=10, config=cfg.train).model
    mixed = fit_prefix(
        images, labels, num_classes=10, config=semi, unlabelled=data.images[300:]
    ).model
    a, b = plain.state_dict(), mixed.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the pseudo-labels changed the copy
