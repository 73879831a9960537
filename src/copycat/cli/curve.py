"""``copycat curve``: the budget curve of one run (copycats trained on prefixes of its answers),
with the auditor's headline: the queries needed to reach 0.90 and 0.95 of the target."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from copycat.cli.common import command_line, errors, progress, table
from copycat.cli.options import (
    TRAIN,
    ArchOpt,
    BudgetsOpt,
    CurveOracleOpt,
    CurveTestSetOpt,
    DeviceOpt,
    EnsembleOpt,
    EpochsOpt,
    MinStepsOpt,
    RunDirOpt,
    SeedOpt,
)
from copycat.errors import ConfigError
from copycat.runs import read_json

DEFAULT_BUDGETS = "1k,2k,5k,10k,20k"


def _run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.json"
    return read_json(path) if path.is_file() else {}


def curve_cmd(
    ctx: typer.Context,
    run_dir: RunDirOpt,
    budgets: BudgetsOpt = DEFAULT_BUDGETS,
    oracle: CurveOracleOpt = None,
    test_set: CurveTestSetOpt = None,
    arch: ArchOpt | None = None,
    epochs: EpochsOpt | None = None,
    min_steps: MinStepsOpt | None = None,
    ensemble: EnsembleOpt | None = None,
    seed: SeedOpt = TRAIN.seed,
    device: DeviceOpt = TRAIN.device,
) -> None:
    """Train copycats on the first 1k, 2k, ... answers of a run and score each against the
    oracle: writes curve.json and curve.png; `copycat report` shows them."""
    from copycat.config import ExperimentConfig, TrainConfig, from_dict
    from copycat.evaluate.curve import CurvePoint, parse_budgets
    from copycat.pipeline import curve_stage
    from copycat.report.curve import reach_text

    with errors():
        ran = _run_config(run_dir)
        # the run's steal and evaluate stages, else its last curve
        last = ran.get("curve", {})
        the_oracle = oracle or ran.get("steal", {}).get("oracle") or last.get("oracle")
        the_test = test_set or ran.get("evaluate", {}).get("test_set") or last.get("test_set")
        if not the_oracle or not the_test:
            raise ConfigError(
                f"{run_dir} records no {'oracle' if not the_oracle else 'test set'}; "
                "pass --oracle and --test-set (e.g. --test-set fashion-mnist:val)"
            )
        train = from_dict(TrainConfig, ran["train"]) if "train" in ran else TRAIN
        train = dataclasses.replace(
            train,
            arch=arch or train.arch,
            epochs=epochs or train.epochs,
            min_steps=train.min_steps if min_steps is None else min_steps,
            ensemble=train.ensemble if ensemble is None else ensemble,
            seed=seed,
            device=device,
        )
        steps = parse_budgets(budgets)
        cfg = dataclasses.replace(
            ExperimentConfig(),
            run_dir=str(run_dir),
            oracle=the_oracle,
            test_set=the_test,
            train=train,
        )
        with progress() as bar:
            task = bar.add_task("curve", total=len(steps), info="")

            def on_point(p: CurvePoint) -> None:
                info = f"{p.answers} answers: performance {p.performance_accuracy:.3f}"
                bar.update(task, advance=1, info=info)

            curve = curve_stage(cfg, budgets=steps, command=command_line(ctx), on_point=on_point)
    data = read_json(run_dir / "curve.json")
    rows: list[tuple[str, Any]] = [
        (f"{p.answers:,} answers", f"{p.performance_accuracy:.4f} (agreement {p.agreement:.4f})")
        for p in curve.points
    ]
    rows += [
        ("queries to reach 0.90", reach_text(data, "0.90")),
        ("queries to reach 0.95", reach_text(data, "0.95")),
        ("written", str(run_dir / "curve.json")),
    ]
    table(f"budget curve {run_dir} (performance, accuracy)", rows)
