"""``copycat target``: train and publish targets (the victims an audit steals from)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from copycat.cli.common import errors, progress, step_bar, table
from copycat.cli.options import (
    TARGET,
    ArchOpt,
    DatasetOpt,
    DeviceOpt,
    EpochsOpt,
    SeedOpt,
    TargetOutOpt,
)

target_app = typer.Typer(help="Train and publish targets (victims to audit).", no_args_is_help=True)


@target_app.command("train")
def target_train(
    dataset: DatasetOpt = TARGET.dataset,
    out: TargetOutOpt = Path(TARGET.out),
    epochs: EpochsOpt = TARGET.train.epochs,
    arch: ArchOpt = TARGET.train.arch,
    seed: SeedOpt = TARGET.train.seed,
    device: DeviceOpt = TARGET.train.device,
) -> None:
    """Train a target classifier and publish it (safetensors + card + ONNX)."""
    from copycat.targets.publish import train_target_on

    cfg = dataclasses.replace(TARGET.train, epochs=epochs, arch=arch, seed=seed, device=device)
    with errors(), progress() as bar:
        res = train_target_on(
            dataset, out=out, config=cfg, on_step=step_bar(bar, epochs, "target", metric="accuracy")
        )
    table(
        f"target {out}",
        [
            ("test accuracy", res.card.test_accuracy),
            ("test macro-F1", res.card.test_macro_f1),
            ("train seconds", round(res.seconds, 1)),
        ],
    )
