"""The ``copycat`` command line: each command parses, calls the library, prints.

Progress bars and colour live here only; the library logs.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from copycat.cli_http import (
    ApiKeyEnvOpt,
    ConcurrencyOpt,
    InputShapeOpt,
    LabelMapOpt,
    MaxQpsOpt,
    NumClassesOpt,
    PriceOpt,
    RequestBatchOpt,
    ResponseFormatOpt,
    RetriesOpt,
    SendAsOpt,
    TimeoutOpt,
    http_options,
    serve_cmd,
)
from copycat.config import (
    ExperimentConfig,
    PoolConfig,
    StealConfig,
    TargetConfig,
    TrainConfig,
    load_experiment,
)
from copycat.errors import CopycatError

app = typer.Typer(
    help="Measure how easily an image classifier can be stolen (Copycat CNN).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
target_app = typer.Typer(help="Train and publish targets (victims to audit).", no_args_is_help=True)
app.add_typer(target_app, name="target")
app.command("serve")(serve_cmd)
console = Console(stderr=True)

RunDirOpt = Annotated[
    Path, typer.Option("--run-dir", help="Run directory (answers, checkpoints, eval, report).")
]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]


def _command(ctx: typer.Context) -> str:
    """The running command with every option spelled out, defaults included: reproducible."""
    parts = ["copycat", *ctx.command_path.split()[1:]]
    for name, value in ctx.params.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )


@contextmanager
def _errors() -> Iterator[None]:
    """Print copycat's errors as one clear line instead of a traceback."""
    try:
        yield
    except CopycatError as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # answers paid so far were committed
            console.print(
                f"[yellow]interrupted:[/] {escape(str(exc))}; run the same command again to resume",
                soft_wrap=True,
                highlight=False,
            )
            raise typer.Exit(130) from exc
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from exc
    except KeyboardInterrupt as exc:
        console.print(
            "[yellow]interrupted:[/] every committed answer and checkpoint is kept; "
            "run the same command again to resume"
        )
        raise typer.Exit(130) from exc


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=console,
    )


def _step_bar(progress: Progress, epochs: int, label: str) -> Callable[..., None]:
    task = progress.add_task(label, total=None, info="")

    def on_step(epoch: int, step: int, steps: int, loss: float, agree: float) -> None:
        progress.update(
            task,
            total=epochs * steps,
            completed=epoch * steps + step,
            info=f"epoch {epoch + 1}/{epochs} loss {loss:.3f} agreement {agree:.3f}",
        )

    return on_step


def _table(title: str, rows: list[tuple[str, Any]]) -> None:
    t = Table(title=title, show_header=False)
    for k, v in rows:
        t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    Console().print(t)


@target_app.command("train")
def target_train(
    ctx: typer.Context,
    dataset: Annotated[
        str, typer.Option(help="Labelled dataset: fashion-mnist.")
    ] = "fashion-mnist",
    out: Annotated[
        Path, typer.Option(help="Folder for model.safetensors, card.json, model.onnx.")
    ] = Path("targets/fmnist"),
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = TargetConfig().train.epochs,
    arch: Annotated[str, typer.Option(help="Architecture.")] = TargetConfig().train.arch,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Train a target classifier and publish it (safetensors + card + ONNX)."""
    from copycat.target import train_target_on

    cfg = dataclasses.replace(
        TargetConfig().train, epochs=epochs, arch=arch, seed=seed, device=device
    )
    with _errors(), _progress() as progress:
        res = train_target_on(
            dataset, out=out, config=cfg, on_step=_step_bar(progress, epochs, "target")
        )
    _table(
        f"target {out}",
        [
            ("test accuracy", res.card.test_accuracy),
            ("test macro-F1", res.card.test_macro_f1),
            ("train seconds", round(res.seconds, 1)),
        ],
    )


def _experiment(run_dir: Path, oracle: str, **sections: Any) -> ExperimentConfig:
    base = ExperimentConfig()
    return dataclasses.replace(base, run_dir=str(run_dir), oracle=oracle, **sections)


@app.command("steal")
def steal_cmd(
    ctx: typer.Context,
    oracle: Annotated[
        str,
        typer.Option(
            help="torch:DIR, onnx:FILE, oip+http://HOST/v2/models/NAME or http(s)://HOST/PATH"
        ),
    ],
    run_dir: RunDirOpt,
    pool: Annotated[
        str, typer.Option(help="npd, folder:PATH, pd:fashion-mnist, noise, or a '+'-joined mix.")
    ] = "npd",
    budget: Annotated[int, typer.Option(help="Answered images to pay for, in all runs.")] = 20_000,
    output: Annotated[
        str, typer.Option(help="What the oracle reveals: label, probs, topk:K, rounded:D.")
    ] = "label",
    mix: Annotated[str, typer.Option(help="Weights of the pool parts, e.g. 0.7,0.3.")] = "",
    batch_size: Annotated[int, typer.Option(help="Images per query batch.")] = 256,
    seed: Annotated[int, typer.Option(help="Pool seed (same seed = resumable).")] = 0,
    augment: Annotated[bool, typer.Option(help="Query-time augmentation.")] = True,
    invert: Annotated[float, typer.Option(help="Probability of inverting an image.")] = -1.0,
    selection: Annotated[
        str,
        typer.Option(
            help="balanced (label-aware: an interim copycat picks the images "
            "that fill rare classes) or random."
        ),
    ] = StealConfig().selection,
    device: DeviceOpt = "auto",
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = 4,
    max_qps: MaxQpsOpt = None,
    timeout: TimeoutOpt = 30.0,
    max_retries: RetriesOpt = 6,
    price_per_1000: PriceOpt = 0.0,
    request_batch: RequestBatchOpt = 64,
    response_format: ResponseFormatOpt = "label-score",
    label_map: LabelMapOpt = None,
    input_shape: InputShapeOpt = None,
    num_classes: NumClassesOpt = None,
    send_as: SendAsOpt = "auto",
) -> None:
    """Query the oracle with pool images under a budget; resumable at any moment."""
    from copycat.pipeline import open_oracle, steal_stage

    http = http_options(
        oracle,
        api_key_env=api_key_env,
        concurrency=concurrency,
        max_qps=max_qps,
        timeout=timeout,
        max_retries=max_retries,
        price_per_1000=price_per_1000,
        request_batch=request_batch,
        response_format=response_format,
        label_map=label_map,
        input_shape=input_shape,
        num_classes=num_classes,
        send_as=send_as,
    )

    with _errors():
        aug = PoolConfig().augment
        aug = dataclasses.replace(aug, enabled=augment, invert=aug.invert if invert < 0 else invert)
        weights = tuple(float(w) for w in mix.split(",")) if mix else ()
        cfg = _experiment(
            run_dir,
            oracle,
            output=output,
            pool=PoolConfig(spec=pool, mix=weights, seed=seed, augment=aug),
            steal=dataclasses.replace(
                StealConfig(), budget=budget, batch_size=batch_size, selection=selection
            ),
            train=dataclasses.replace(TrainConfig(), device=device),
        )
        with _progress() as progress:
            task = progress.add_task("steal", total=budget, info="")

            def on_batch(done: int, total: int, hist: list[int]) -> None:
                progress.update(task, completed=done, info=f"labels {hist}")

            the_oracle = open_oracle(cfg, **http)
            s = steal_stage(cfg, command=_command(ctx), on_batch=on_batch, oracle=the_oracle)
    ledger = getattr(the_oracle, "ledger", None)
    cost = list(ledger.as_dict().items()) if ledger is not None else []
    _table(
        f"steal {run_dir}",
        [
            ("answered (all runs)", s.answered),
            ("queried now", s.queried_now),
            ("budget", s.budget),
            ("images/s", round(s.images_per_s, 1)),
            ("skipped files", s.skipped_files or "none"),
            ("stopped", s.stopped),
            *cost,
        ],
    )


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    run_dir: RunDirOpt,
    arch: Annotated[
        str, typer.Option(help="cnn-small, cnn-wide, resnet18, vgg16, ...")
    ] = TrainConfig().arch,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = TrainConfig().epochs,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = TrainConfig().batch_size,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = TrainConfig().lr,
    labels: Annotated[str, typer.Option(help="auto, hard or soft.")] = "auto",
    balance: Annotated[bool, typer.Option(help="Class-balanced sampling.")] = True,
    augment: Annotated[
        bool, typer.Option(help="Shift and flip the answers while training.")
    ] = TrainConfig().augment,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Train a copycat on the run's fake dataset (checkpoints each epoch; resumable)."""
    from copycat.pipeline import train_stage

    with _errors():
        cfg = _experiment(
            run_dir,
            "",
            train=dataclasses.replace(
                TrainConfig(),
                arch=arch,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                labels=labels,
                balance=balance,
                augment=augment,
                seed=seed,
                device=device,
            ),
        )
        with _progress() as progress:
            res = train_stage(
                cfg, command=_command(ctx), on_step=_step_bar(progress, epochs, "copycat")
            )
    _table(
        f"train {run_dir}",
        [
            ("held-out agreement", res.best_val_agreement),
            ("images/s", round(res.samples_per_s, 1)),
            ("seconds", round(res.seconds, 1)),
        ],
    )


@app.command("evaluate")
def evaluate_cmd(
    ctx: typer.Context,
    run_dir: RunDirOpt,
    oracle: Annotated[str, typer.Option(help="The oracle to compare against.")],
    test_set: Annotated[
        str, typer.Option(help="fashion-mnist:test or folder:PATH (ImageFolder layout).")
    ] = "fashion-mnist:test",
    device: DeviceOpt = "auto",
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = 4,
    max_qps: MaxQpsOpt = None,
    timeout: TimeoutOpt = 30.0,
    max_retries: RetriesOpt = 6,
    request_batch: RequestBatchOpt = 64,
    response_format: ResponseFormatOpt = "label-score",
    label_map: LabelMapOpt = None,
    input_shape: InputShapeOpt = None,
    num_classes: NumClassesOpt = None,
    send_as: SendAsOpt = "auto",
) -> None:
    """Score copycat and oracle on a labelled test set; writes eval.json."""
    from copycat.pipeline import evaluate_stage

    http = http_options(
        oracle,
        api_key_env=api_key_env,
        concurrency=concurrency,
        max_qps=max_qps,
        timeout=timeout,
        max_retries=max_retries,
        request_batch=request_batch,
        response_format=response_format,
        label_map=label_map,
        input_shape=input_shape,
        num_classes=num_classes,
        send_as=send_as,
    )

    with _errors():
        cfg = _experiment(
            run_dir,
            oracle,
            test_set=test_set,
            train=dataclasses.replace(TrainConfig(), device=device),
        )
        r = evaluate_stage(cfg, command=_command(ctx), **http)
    _table(
        f"evaluate {run_dir}",
        [
            ("target accuracy", r.target_accuracy),
            ("copycat accuracy", r.copycat_accuracy),
            ("performance (accuracy)", r.performance_accuracy),
            ("target macro-F1", r.target_macro_f1),
            ("copycat macro-F1", r.copycat_macro_f1),
            ("performance (macro-F1)", r.performance_macro_f1),
            ("agreement", r.agreement),
        ],
    )


@app.command("report")
def report_cmd(run_dir: RunDirOpt) -> None:
    """Write report.md and its figures into the run directory."""
    from copycat.pipeline import report_stage

    with _errors():
        path = report_stage(run_dir)
    console.print(f"report written to [bold]{path}[/]")


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    config: Annotated[Path, typer.Option(help="Experiment TOML (see configs/).")],
) -> None:
    """All stages in order (target if missing, steal, train, evaluate, report); resumable."""
    from copycat.pipeline import evaluate_stage, report_stage, steal_stage, train_stage
    from copycat.target import train_target_on

    with _errors():
        cfg = load_experiment(config)
        cmd = _command(ctx)
        with _progress() as progress:
            if cfg.target is not None and not (Path(cfg.target.out) / "card.json").is_file():
                t = cfg.target
                train_target_on(
                    t.dataset,
                    out=t.out,
                    config=t.train,
                    on_step=_step_bar(progress, t.train.epochs, "target"),
                )
            task = progress.add_task("steal", total=cfg.steal.budget, info="")
            steal_stage(
                cfg,
                command=cmd,
                on_batch=lambda d, _t, h: progress.update(task, completed=d, info=f"labels {h}"),
            )
            train_stage(cfg, command=cmd, on_step=_step_bar(progress, cfg.train.epochs, "copycat"))
        r = evaluate_stage(cfg, command=cmd)
        path = report_stage(cfg.run_dir)
    _table(
        f"run {cfg.run_dir}",
        [
            ("target accuracy", r.target_accuracy),
            ("copycat accuracy", r.copycat_accuracy),
            ("performance (accuracy)", r.performance_accuracy),
            ("agreement", r.agreement),
            ("report", str(path)),
        ],
    )


if __name__ == "__main__":  # pragma: no cover
    app()
