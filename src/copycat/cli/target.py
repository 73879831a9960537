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
    QuickOpt,
    SeedOpt,
    SuiteOnlyOpt,
    SuiteOutOpt,
    SuiteReuseOpt,
    TargetOutOpt,
    TargetShapeOpt,
)
from copycat.errors import ConfigError

target_app = typer.Typer(help="Train and publish targets (victims to audit).", no_args_is_help=True)


@target_app.command("train")
def target_train(
    dataset: DatasetOpt = TARGET.dataset,
    out: TargetOutOpt = Path(TARGET.out),
    epochs: EpochsOpt | None = TARGET.train.epochs,
    arch: ArchOpt = TARGET.train.arch,
    seed: SeedOpt = TARGET.train.seed,
    device: DeviceOpt = TARGET.train.device,
    input_shape: TargetShapeOpt = None,
) -> None:
    """Train a target classifier and publish it (safetensors + card + ONNX)."""
    from copycat.oracles.http.formats import parse_shape
    from copycat.targets.publish import train_target_on

    cfg = dataclasses.replace(TARGET.train, epochs=epochs, arch=arch, seed=seed, device=device)
    with errors(), progress() as bar:
        shape = parse_shape(input_shape) if input_shape else None
        res = train_target_on(
            dataset,
            out=out,
            config=cfg,
            on_step=step_bar(bar, cfg, "target", metric="accuracy"),
            input_shape=shape,
        )
    table(
        f"target {out}",
        [
            ("test accuracy", res.card.test_accuracy),
            ("test macro-F1", res.card.test_macro_f1),
            ("train seconds", round(res.seconds, 1)),
        ],
    )


def parse_reuse(text: str) -> dict[str, Path]:
    """``--reuse``'s comma-separated NAME=PATH pairs."""
    out: dict[str, Path] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, path = part.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--reuse {part!r}: write NAME=PATH, e.g. fmnist=targets/fmnist")
        out[name.strip()] = Path(path.strip())
    return out


@target_app.command("suite")
def target_suite(
    out: SuiteOutOpt = Path("targets/suite"),
    only: SuiteOnlyOpt = "",
    reuse: SuiteReuseOpt = "",
    quick: QuickOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = TARGET.train.device,
) -> None:
    """Train the development suite's targets that are missing (Fashion-MNIST, digits, emoji;
    the checks fmnist-wide, emoji-small and digits-resnet only when named in --only)."""
    from copycat.targets.suite import build_suite

    names = tuple(n.strip() for n in only.split(",") if n.strip()) or None
    with errors():  # epochs differ per target: the library's log lines show progress
        sources = parse_reuse(reuse)
        cards = build_suite(out, names=names, quick=quick, device=device, seed=seed, reuse=sources)
    table(
        f"suite {out}",
        [
            (name, f"{c.arch} on {c.dataset}: test accuracy {c.test_accuracy:.4f}")
            for name, c in cards.items()
        ],
    )
