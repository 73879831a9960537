"""The stage commands: ``steal``, ``train``, ``evaluate``, ``report`` and ``run``.

Each parses its options into the config dataclasses, calls :mod:`copycat.pipeline` (imported
only when the command runs, so ``--help`` stays quick) and prints a table.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from copycat.cli.common import command_line, errors, progress, step_bar, table
from copycat.cli.options import (
    HTTP,
    POOL,
    STEAL,
    TRAIN,
    ApiKeyEnvOpt,
    ArchOpt,
    AugmentOpt,
    BalanceOpt,
    BudgetOpt,
    ConcurrencyOpt,
    ConfigFileOpt,
    DeviceOpt,
    EpochsOpt,
    InputShapeOpt,
    InvertOpt,
    LabelMapOpt,
    LabelsOpt,
    LrOpt,
    MaxQpsOpt,
    MixOpt,
    NumClassesOpt,
    OracleOpt,
    OutputOpt,
    PoolOpt,
    PoolSeedOpt,
    PriceOpt,
    QueryBatchOpt,
    RequestBatchOpt,
    ResponseFormatOpt,
    RetriesOpt,
    RunDirOpt,
    SeedOpt,
    SelectionOpt,
    SemiOpt,
    SendAsOpt,
    TemperatureOpt,
    TestSetOpt,
    TimeoutOpt,
    TrainAugmentOpt,
    TrainBatchOpt,
    UnlabelledOpt,
)
from copycat.config import ExperimentConfig, PoolConfig, load_experiment
from copycat.errors import ConfigError
from copycat.oracles.registry import is_http


def http_options(oracle: str, **options: Any) -> dict[str, Any]:
    """The HTTP oracle options, only for the HTTP schemes (other oracles take none)."""
    return options if is_http(oracle) else {}


def experiment(run_dir: Path, oracle: str, **sections: Any) -> ExperimentConfig:
    return dataclasses.replace(ExperimentConfig(), run_dir=str(run_dir), oracle=oracle, **sections)


def parse_mix(mix: str) -> tuple[float, ...]:
    try:
        return tuple(float(w) for w in mix.split(",")) if mix else ()
    except ValueError as exc:
        raise ConfigError(f"--mix {mix!r} is invalid; accepted: weights like 0.7,0.3") from exc


def steal_cmd(
    ctx: typer.Context,
    oracle: OracleOpt,
    run_dir: RunDirOpt,
    pool: PoolOpt = POOL.spec,
    budget: BudgetOpt = STEAL.budget,
    output: OutputOpt = ExperimentConfig().output,
    mix: MixOpt = "",
    batch_size: QueryBatchOpt = STEAL.batch_size,
    seed: PoolSeedOpt = POOL.seed,
    augment: AugmentOpt = POOL.augment.enabled,
    invert: InvertOpt = -1.0,
    selection: SelectionOpt = STEAL.selection,
    device: DeviceOpt = TRAIN.device,
    api_key_env: ApiKeyEnvOpt = HTTP.api_key_env,
    concurrency: ConcurrencyOpt = HTTP.concurrency,
    max_qps: MaxQpsOpt = HTTP.max_qps,
    timeout: TimeoutOpt = HTTP.timeout,
    max_retries: RetriesOpt = HTTP.max_retries,
    price_per_1000: PriceOpt = HTTP.price_per_1000,
    request_batch: RequestBatchOpt = HTTP.request_batch,
    response_format: ResponseFormatOpt = HTTP.response_format,
    label_map: LabelMapOpt = None,
    input_shape: InputShapeOpt = None,
    num_classes: NumClassesOpt = None,
    send_as: SendAsOpt = HTTP.send_as,
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
    with errors():
        aug = dataclasses.replace(
            POOL.augment, enabled=augment, invert=POOL.augment.invert if invert < 0 else invert
        )
        cfg = experiment(
            run_dir,
            oracle,
            output=output,
            pool=PoolConfig(spec=pool, mix=parse_mix(mix), seed=seed, augment=aug),
            steal=dataclasses.replace(
                STEAL, budget=budget, batch_size=batch_size, selection=selection
            ),
            train=dataclasses.replace(TRAIN, device=device),
        )
        with progress() as bar:
            task = bar.add_task("steal", total=budget, info="")

            def on_batch(done: int, total: int, hist: list[int]) -> None:
                bar.update(task, completed=done, info=f"labels {hist}")

            the_oracle = open_oracle(cfg, **http)
            s = steal_stage(cfg, command=command_line(ctx), on_batch=on_batch, oracle=the_oracle)
    ledger = getattr(the_oracle, "ledger", None)
    cost = list(ledger.as_dict().items()) if ledger is not None else []
    table(
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


def train_cmd(
    ctx: typer.Context,
    run_dir: RunDirOpt,
    arch: ArchOpt = TRAIN.arch,
    epochs: EpochsOpt = TRAIN.epochs,
    batch_size: TrainBatchOpt = TRAIN.batch_size,
    lr: LrOpt = TRAIN.lr,
    labels: LabelsOpt = TRAIN.labels,
    balance: BalanceOpt = TRAIN.balance,
    augment: TrainAugmentOpt = TRAIN.augment,
    seed: SeedOpt = TRAIN.seed,
    device: DeviceOpt = TRAIN.device,
    temperature: TemperatureOpt = TRAIN.temperature,
    semi: SemiOpt = TRAIN.semi,
    unlabelled: UnlabelledOpt = TRAIN.unlabelled,
) -> None:
    """Train a copycat on the run's fake dataset (checkpoints each epoch; resumable)."""
    from copycat.pipeline import train_stage

    with errors():
        train = dataclasses.replace(
            TRAIN,
            arch=arch,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            labels=labels,
            balance=balance,
            augment=augment,
            seed=seed,
            device=device,
            temperature=temperature,
            semi=semi,
            unlabelled=unlabelled,
        )
        cfg = experiment(run_dir, "", train=train)
        with progress() as bar:
            res = train_stage(
                cfg, command=command_line(ctx), on_step=step_bar(bar, epochs, "copycat")
            )
    table(
        f"train {run_dir}",
        [
            ("held-out agreement", res.best_val_agreement),
            ("images/s", round(res.samples_per_s, 1)),
            ("seconds", round(res.seconds, 1)),
        ],
    )


def evaluate_cmd(
    ctx: typer.Context,
    run_dir: RunDirOpt,
    oracle: OracleOpt,
    test_set: TestSetOpt = ExperimentConfig().test_set,
    device: DeviceOpt = TRAIN.device,
    api_key_env: ApiKeyEnvOpt = HTTP.api_key_env,
    concurrency: ConcurrencyOpt = HTTP.concurrency,
    max_qps: MaxQpsOpt = HTTP.max_qps,
    timeout: TimeoutOpt = HTTP.timeout,
    max_retries: RetriesOpt = HTTP.max_retries,
    request_batch: RequestBatchOpt = HTTP.request_batch,
    response_format: ResponseFormatOpt = HTTP.response_format,
    label_map: LabelMapOpt = None,
    input_shape: InputShapeOpt = None,
    num_classes: NumClassesOpt = None,
    send_as: SendAsOpt = HTTP.send_as,
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
    with errors():
        cfg = experiment(
            run_dir, oracle, test_set=test_set, train=dataclasses.replace(TRAIN, device=device)
        )
        r = evaluate_stage(cfg, command=command_line(ctx), **http)
    table(
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


def report_cmd(run_dir: RunDirOpt) -> None:
    """Write report.md and its figures into the run directory."""
    from copycat.cli.common import console
    from copycat.pipeline import report_stage

    with errors():
        path = report_stage(run_dir)
    console.print(f"report written to [bold]{path}[/]")


def run_cmd(ctx: typer.Context, config: ConfigFileOpt) -> None:
    """All stages in order (target if missing, steal, train, evaluate, report); resumable."""
    from copycat.pipeline import needs_target, run_all

    with errors():
        cfg = load_experiment(config)
        with progress() as bar:
            target_bar = (
                step_bar(bar, cfg.target.train.epochs, "target")
                if cfg.target is not None and needs_target(cfg)
                else None
            )
            steal_task = bar.add_task("steal", total=cfg.steal.budget, info="")
            r, path = run_all(
                cfg,
                command=command_line(ctx),
                on_target_step=target_bar,
                on_batch=lambda d, _t, h: bar.update(steal_task, completed=d, info=f"labels {h}"),
                on_step=step_bar(bar, cfg.train.epochs, "copycat"),
            )
    table(
        f"run {cfg.run_dir}",
        [
            ("target accuracy", r.target_accuracy),
            ("copycat accuracy", r.copycat_accuracy),
            ("performance (accuracy)", r.performance_accuracy),
            ("agreement", r.agreement),
            ("report", str(path)),
        ],
    )
