"""The stage commands: ``steal``, ``train``, ``evaluate``, ``report`` and ``run``.

Each parses its options into the config dataclasses, calls :mod:`copycat.pipeline` (imported
only when the command runs, so ``--help`` stays quick) and prints a table.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from copycat.cli.common import command_line, errors, progress, step_bar, table
from copycat.cli.options import (
    HTTP,
    HTTP_OPTIONS,
    POOL,
    STEAL,
    TRAIN,
    AllowOtherOracleOpt,
    ApiKeyEnvOpt,
    ArchOpt,
    AugmentOpt,
    BalanceOpt,
    BudgetOpt,
    ConcurrencyOpt,
    ConfigFileOpt,
    DefenceOpt,
    DeviceOpt,
    DryRunOpt,
    EmaOpt,
    EnsembleAnswersOpt,
    EnsembleOpt,
    EpochsOpt,
    EvalOracleOpt,
    InputShapeOpt,
    InvertOpt,
    LabelMapOpt,
    LabelsOpt,
    LrOpt,
    MaxBilledOpt,
    MaxCostOpt,
    MaxQpsOpt,
    MinStepsOpt,
    MixOpt,
    MixupOpt,
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
    ValFractionOpt,
)
from copycat.config import ExperimentConfig, PoolConfig, load_experiment
from copycat.errors import ConfigError
from copycat.oracles.registry import is_http


def http_options(oracle: str, params: dict[str, Any]) -> dict[str, Any]:
    """The HTTP oracle options among a command's ``params`` (:data:`HTTP_OPTIONS`), only for
    the HTTP schemes: other oracles take none."""
    return {k: v for k, v in params.items() if k in HTTP_OPTIONS} if is_http(oracle) else {}


def experiment(run_dir: Path, oracle: str, **sections: Any) -> ExperimentConfig:
    return dataclasses.replace(ExperimentConfig(), run_dir=str(run_dir), oracle=oracle, **sections)


def parse_mix(mix: str) -> tuple[float, ...]:
    try:
        return tuple(float(w) for w in mix.split(",")) if mix else ()
    except ValueError as exc:
        raise ConfigError(f"--mix {mix!r} is invalid; accepted: weights like 0.7,0.3") from exc


def billed_cap(max_billed: int | None, max_cost: float | None, price: float) -> int | None:
    """``--max-billed``, lowered to what ``--max-cost`` buys at ``--price-per-1000``."""
    if max_cost is None:
        return max_billed
    if price <= 0:
        raise ConfigError(
            f"--max-cost {max_cost} needs --price-per-1000 (the price of 1000 images)"
        )
    cap = math.floor(max_cost * 1000.0 / price + 1e-9)
    if cap < 1:
        raise ConfigError(f"--max-cost {max_cost} buys no image at {price} per 1000; raise it")
    return cap if max_billed is None else min(max_billed, cap)


def coverage_progress(bar: Any, task: Any, oracle: Any) -> Callable[[int, int, list[int]], None]:
    """A steal progress callback showing the label histogram, rarest class and imbalance."""
    from copycat.steal.coverage import class_coverage, class_names_of, progress_text

    names: list[str] = []

    def on_batch(done: int, total: int, hist: list[int]) -> None:
        if not names:
            names.extend(class_names_of(oracle, len(hist)))
        info = progress_text(class_coverage(hist, class_names=names))
        bar.update(task, completed=done, info=info)

    return on_batch


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
    invert: InvertOpt = None,
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
    max_billed: MaxBilledOpt = STEAL.max_billed,
    max_cost: MaxCostOpt = None,
    dry_run: DryRunOpt = False,
    defence: DefenceOpt = None,
) -> None:
    """Query the oracle with pool images under a budget; resumable at any moment."""
    from copycat.pipeline import open_oracle, steal_stage

    http = http_options(oracle, ctx.params)
    with errors():
        aug = dataclasses.replace(
            POOL.augment, enabled=augment, invert=POOL.augment.invert if invert is None else invert
        )
        cfg = experiment(
            run_dir,
            oracle,
            output=output,
            pool=PoolConfig(spec=pool, mix=parse_mix(mix), seed=seed, augment=aug),
            steal=dataclasses.replace(
                STEAL,
                budget=budget,
                batch_size=batch_size,
                selection=selection,
                max_billed=billed_cap(max_billed, max_cost, price_per_1000),
            ),
            train=dataclasses.replace(TRAIN, device=device),
            defences=tuple(defence or ()),
        )
        if dry_run:
            show_plan(cfg, price_per_1000=price_per_1000, http=http)
            return
        with progress() as bar:
            task = bar.add_task("steal", total=budget, info="")

            the_oracle = open_oracle(cfg, **http)
            on_batch = coverage_progress(bar, task, the_oracle)
            s = steal_stage(cfg, command=command_line(ctx), on_batch=on_batch, oracle=the_oracle)
    ledger = getattr(the_oracle, "ledger", None)
    cost: list[tuple[str, Any]] = []
    if ledger is not None:  # this run's HTTP counters; what was billed is the store's count
        now = ledger.as_dict()
        cost = [(f"http {k} now", now[k]) for k in ("requests", "attempts", "failures", "retries")]
        if price_per_1000 > 0:
            cost.append(("estimated cost (all runs)", round(s.billed * price_per_1000 / 1000, 4)))
    table(
        f"steal {run_dir}",
        [
            ("answered (all runs)", s.answered),
            ("billed (all runs)", s.billed),
            ("queried now", s.queried_now),
            ("billed now", s.billed_now),
            ("budget", s.budget),
            ("max billed", s.max_billed if s.max_billed is not None else "no cap"),
            ("images/s", round(s.images_per_s, 1)),
            ("skipped files", s.skipped_files or "none"),
            ("stopped", s.stopped),
            *cost,
        ],
    )


def show_plan(cfg: ExperimentConfig, *, price_per_1000: float, http: dict[str, Any]) -> None:
    """Print what ``steal`` would send and cost (``--dry-run``); nothing billable is sent."""
    from copycat.pipeline import steal_plan

    opts = {k: v for k, v in http.items() if k != "price_per_1000"}
    p = steal_plan(cfg, price_per_1000=price_per_1000, **opts)
    rows: list[tuple[str, Any]] = [
        ("would send (images)", p.would_send),
        ("already answered", p.answered),
        ("budget", p.budget),
        ("input shape", "x".join(map(str, p.input_shape))),
        ("classes", p.num_classes),
        ("pool", p.pool),
        *[(f"source {i + 1}", s) for i, s in enumerate(p.sources)],
        ("selection", p.selection),
        ("requests (at least)", p.requests if p.requests is not None else "local oracle"),
        ("estimated cost (before retries)", p.estimated_cost),
    ]
    table(f"steal --dry-run {cfg.run_dir}: nothing sent", rows)


def train_cmd(
    ctx: typer.Context,
    run_dir: RunDirOpt,
    arch: ArchOpt = TRAIN.arch,
    epochs: EpochsOpt | None = TRAIN.epochs,
    min_steps: MinStepsOpt = TRAIN.min_steps,
    batch_size: TrainBatchOpt = TRAIN.batch_size,
    lr: LrOpt = TRAIN.lr,
    labels: LabelsOpt = TRAIN.labels,
    balance: BalanceOpt = TRAIN.balance,
    augment: TrainAugmentOpt = TRAIN.augment,
    seed: SeedOpt = TRAIN.seed,
    device: DeviceOpt = TRAIN.device,
    temperature: TemperatureOpt = TRAIN.temperature,
    mixup: MixupOpt = TRAIN.mixup,
    ema: EmaOpt = TRAIN.ema,
    val_fraction: ValFractionOpt = TRAIN.val_fraction,
    semi: SemiOpt = TRAIN.semi,
    unlabelled: UnlabelledOpt = TRAIN.unlabelled,
    ensemble: EnsembleOpt = TRAIN.ensemble,
    ensemble_answers: EnsembleAnswersOpt = TRAIN.ensemble_answers,
) -> None:
    """Train a copycat on the run's fake dataset (checkpoints each epoch; resumable)."""
    from copycat.pipeline import train_stage

    with errors():
        train = dataclasses.replace(
            TRAIN,
            arch=arch,
            epochs=epochs,
            min_steps=min_steps,
            batch_size=batch_size,
            lr=lr,
            labels=labels,
            balance=balance,
            augment=augment,
            seed=seed,
            device=device,
            temperature=temperature,
            mixup=mixup,
            ema=ema,
            val_fraction=val_fraction,
            semi=semi,
            unlabelled=unlabelled,
            ensemble=ensemble,
            ensemble_answers=ensemble_answers,
        )
        cfg = experiment(run_dir, "", train=train)
        with progress() as bar:
            res = train_stage(
                cfg, command=command_line(ctx), on_step=step_bar(bar, train, "copycat")
            )
    from copycat.runs import RunDir, read_json

    copies = int(read_json(RunDir.at(run_dir).copycat_card).get("members", 1))
    first, every = (" (first copy)", " (all copies)") if copies > 1 else ("", "")
    table(
        f"train {run_dir}",
        [
            ("copies (the copycat: their mean)" if copies > 1 else "copies", copies),
            ("held-out agreement" + first, res.best_val_agreement),
            ("images/s" + first, round(res.samples_per_s, 1)),
            ("seconds" + every, round(res.seconds, 1)),
        ],
    )


def evaluate_cmd(
    ctx: typer.Context,
    run_dir: RunDirOpt,
    oracle: EvalOracleOpt = None,
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
    allow_other_oracle: AllowOtherOracleOpt = False,
    price_per_1000: PriceOpt = HTTP.price_per_1000,
    defence: DefenceOpt = None,
) -> None:
    """Score copycat and oracle on a labelled test set; writes eval.json."""
    from copycat.pipeline import evaluate_stage
    from copycat.runs import RunDir

    # the oracle defaults to the one the run's steal recorded
    recorded = RunDir.at(run_dir).read_config().get("steal", {}).get("oracle", "")
    http = http_options(oracle or recorded, ctx.params)
    with errors():
        cfg = experiment(
            run_dir,
            oracle or "",
            test_set=test_set,
            train=dataclasses.replace(TRAIN, device=device),
            defences=tuple(defence or ()),
        )
        r = evaluate_stage(
            cfg, command=command_line(ctx), allow_other_oracle=allow_other_oracle, **http
        )
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
            *[(f"test queries: {k.replace('_', ' ')}", v) for k, v in (r.cost or {}).items()],
        ],
    )


def report_cmd(run_dir: RunDirOpt) -> None:
    """Write report.md and its figures into the run directory."""
    from rich.markup import escape

    from copycat.cli.common import console
    from copycat.pipeline import report_stage

    with errors():
        path = report_stage(run_dir)
    console.print(f"report written to [bold]{escape(str(path))}[/]")


def run_cmd(ctx: typer.Context, config: ConfigFileOpt) -> None:
    """All stages in order (target if missing, steal, train, evaluate, report); resumable."""
    from copycat.pipeline import needs_target, run_all

    with errors():
        cfg = load_experiment(config)
        with progress() as bar:
            target_bar = (
                step_bar(bar, cfg.target.train, "target", metric="accuracy")
                if cfg.target is not None and needs_target(cfg)
                else None
            )
            steal_task = bar.add_task("steal", total=cfg.steal.budget, info="")
            r, path = run_all(
                cfg,
                command=command_line(ctx),
                on_target_step=target_bar,
                on_batch=coverage_progress(bar, steal_task, None),
                on_step=step_bar(bar, cfg.train, "copycat"),
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
