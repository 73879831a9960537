"""The one place that sequences the stages: each wired to a run directory, as
``copycat steal|train|evaluate|report|run`` call them.

Each function reads the run directory, does one stage and writes its outputs back, so every
stage can be re-run or resumed alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from copycat.config import ExperimentConfig, TrainConfig, to_jsonable
from copycat.data.datasets import load_labelled
from copycat.devices import resolve_device
from copycat.errors import CopycatError
from copycat.evaluate.curve import BudgetCurve, CurvePoint
from copycat.evaluate.evaluate import EvalResult, evaluate
from copycat.oracles.base import Oracle
from copycat.oracles.registry import parse_oracle_spec
from copycat.pools.pool import build_pool
from copycat.redact import redact_text
from copycat.report.render import render_report
from copycat.runs import RunDir, write_atomic
from copycat.steal.coverage import Coverage, class_coverage, class_names_of, warn_rare
from copycat.steal.loop import ProgressFn, StealSummary, steal
from copycat.steal.store import AnswerStore, image_id
from copycat.train.checkpoint import load_checkpoint, load_copycat, write_metrics
from copycat.train.fit import ExtraLoss, FitResult, StepFn, fit
from copycat.train.models import init_model

log = logging.getLogger(__name__)


def open_oracle(cfg: ExperimentConfig, **http_options: Any) -> Oracle:
    device = str(resolve_device(cfg.train.device))
    if cfg.defences:  # the target behind its defences, then the output restriction
        from copycat.defences.registry import open_defended

        return open_defended(cfg.oracle, cfg.defences, output=cfg.output, device=device)
    http = experiment_http(cfg.oracle, cfg, http_options)
    return parse_oracle_spec(cfg.oracle, output=cfg.output, device=device, **http)


def experiment_http(spec: str, cfg: ExperimentConfig, given: dict[str, Any]) -> dict[str, Any]:
    """HTTP options for ``spec``: the experiment's ``[http]`` section, overridden by ``given``
    (the command line); none for oracles that do not speak HTTP."""
    from copycat.oracles.registry import is_http

    if not is_http(spec):
        return given
    return {**asdict(cfg.http), **given}


def redacted_oracle(cfg: ExperimentConfig) -> str:
    """The oracle spec as files and logs may show it: credentials in its URL masked."""
    return redact_text(cfg.oracle)


def steal_stage(
    cfg: ExperimentConfig,
    *,
    command: str | None = None,
    on_batch: ProgressFn | None = None,
    oracle: Oracle | None = None,
    **http_options: Any,
) -> StealSummary:
    """Query the oracle into ``<run_dir>/answers.sqlite`` and write ``steal.json``."""
    run = RunDir.at(cfg.run_dir)
    with run.lock("steal"):  # one steal per run directory: two would spend one budget twice
        return _steal_locked(run, cfg, command, on_batch, oracle, http_options)


def _steal_locked(
    run: RunDir,
    cfg: ExperimentConfig,
    command: str | None,
    on_batch: ProgressFn | None,
    oracle: Oracle | None,
    http_options: dict[str, Any],
) -> StealSummary:
    oracle = oracle or open_oracle(cfg, **http_options)
    pool = build_pool(cfg.pool, shape=oracle.input_shape)
    run.record(
        "steal",
        {
            "oracle": redacted_oracle(cfg),
            "output": cfg.output,
            "defences": list(cfg.defences),
            "pool": to_jsonable(cfg.pool),
            "steal": to_jsonable(cfg.steal),
        },
        command,
    )
    from copycat.steal.strategies import build_selector

    selector = build_selector(
        cfg.steal.selection, config=cfg.steal, train=cfg.train, num_classes=oracle.num_classes
    )
    summary: StealSummary | None = None
    try:
        with AnswerStore(run.store) as store:
            summary = steal(
                oracle, pool, store, config=cfg.steal, on_batch=on_batch, selector=selector
            )
    finally:  # an interrupted or failed run paid for queries too: the ledger says so
        write_steal_json(run, summary, getattr(oracle, "ledger", None))
    write_coverage(run, summary, class_names=class_names_of(oracle, oracle.num_classes))
    return summary


@dataclass(frozen=True, slots=True)
class StealPlan:
    """What ``steal`` would send and cost (``copycat steal --dry-run``)."""

    would_send: int
    answered: int
    budget: int
    input_shape: tuple[int, int, int]
    num_classes: int
    pool: str
    sources: list[str]
    selection: str
    requests: int | None  # HTTP requests at the least (retries come on top); None if local
    estimated_cost: float


def steal_plan(
    cfg: ExperimentConfig,
    *,
    oracle: Oracle | None = None,
    price_per_1000: float = 0.0,
    **http_options: Any,
) -> StealPlan:
    """Build the oracle's description and the pool as ``steal_stage`` would, and say what it
    would send; no billable query is sent and the run directory is not written.

    An HTTP oracle is asked only for its metadata (OIP) or nothing at all (plain JSON).
    """
    run = RunDir.at(cfg.run_dir)
    oracle = oracle or open_oracle(cfg, **http_options)
    shape = oracle.input_shape
    pool = build_pool(cfg.pool, shape=shape)
    answered = 0
    if run.store.is_file():
        with AnswerStore(run.store) as store:
            answered, stored = store.count(), store.meta().get("fingerprint")
        if stored is not None and stored != oracle.fingerprint:
            raise CopycatError(
                f"{run.store} holds answers of oracle {stored}, not {oracle.fingerprint}; "
                "the steal would be refused: use the same oracle and output, or a new --run-dir"
            )
    would_send = max(0, cfg.steal.budget - answered)
    weights = list(pool.weights)
    total_w = sum(weights) or 1.0
    sources = [f"{s.name} ({w / total_w:.0%})" for s, w in zip(pool.sources, weights, strict=True)]
    batch = int(getattr(getattr(oracle, "config", None), "request_batch", 0) or 0)
    return StealPlan(
        would_send=would_send,
        answered=answered,
        budget=cfg.steal.budget,
        input_shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        num_classes=oracle.num_classes,
        pool=pool.describe(),
        sources=sources,
        selection=cfg.steal.selection,
        requests=-(-would_send // batch) if batch else None,
        estimated_cost=round(would_send / 1000 * price_per_1000, 6),
    )


def write_coverage(run: RunDir, summary: StealSummary, *, class_names: list[str]) -> Coverage:
    """Add the class coverage of the answers to ``steal.json``; warn about rare classes."""
    cov = class_coverage(summary.label_histogram, class_names=class_names)
    warn_rare(cov)
    path = run.root / "steal.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data["coverage"] = cov.as_dict()
    write_atomic(path, json.dumps(data, indent=2) + "\n")
    return cov


def write_steal_json(run: RunDir, summary: StealSummary | None, ledger: Any) -> None:
    """``steal.json``: this run's summary and HTTP counters (``ledger``, this process only),
    and ``total``: the store's request ledger over every run, so what was billed is counted
    even for runs killed before they could write this file."""
    data: dict[str, Any] = (
        {**asdict(summary), "images_per_s": summary.images_per_s}
        if summary is not None
        else {"stopped": "interrupted or failed; run the same command again to resume"}
    )
    price = 0.0
    if ledger is not None:
        now = ledger.as_dict()
        price = float(now.get("price_per_1000", 0.0))
        data.update(now)
    total: dict[str, Any] = {}
    if run.store.is_file():
        with AnswerStore(run.store) as store:
            total = dict(store.ledger_totals())
    if total:
        total["queries"] = total["answered"]  # the name earlier versions used
        total["price_per_1000"] = price
        total["estimated_cost"] = round(total["billed_images"] * price / 1000.0, 6)
        data["total"] = total
    write_atomic(run.root / "steal.json", json.dumps(data, indent=2) + "\n")


def unqueried_images(run: RunDir, cfg: ExperimentConfig, n: int) -> torch.Tensor:
    """``n`` pool images (n, C, H, W) uint8 the oracle was never asked about: the steal's pool
    (as recorded in ``config.json``, else ``cfg.pool``) on another seed, answered images out."""
    from copycat.config import PoolConfig, from_dict

    recorded = run.read_config().get("steal", {}).get("pool")
    pool_cfg = from_dict(PoolConfig, recorded) if recorded else cfg.pool
    pool_cfg = replace(pool_cfg, seed=pool_cfg.seed + 1_000_003)
    with AnswerStore(run.store) as store:
        shape = tuple(json.loads(store.meta()["input_shape"]))
        pool = build_pool(pool_cfg, shape=(int(shape[0]), int(shape[1]), int(shape[2])))
        out: list[torch.Tensor] = []
        got = 0
        for cand in pool.batches(1024):
            ids = [image_id(img) for img in cand.images]
            known = store.known(ids)
            keep = [j for j, h in enumerate(ids) if h not in known]
            out.append(cand.images[keep])
            got += len(keep)
            if got >= n:
                break
    return torch.cat(out)[:n]


def train_copycat(
    run: RunDir,
    *,
    config: TrainConfig,
    on_step: StepFn | None = None,
    unlabelled: torch.Tensor | None = None,
) -> FitResult:
    """Train a copycat on the run's fake dataset and save it beside the store.

    A held-out share (``config.val_fraction``) of the answers scores agreement each epoch; the
    best epoch is the copycat kept. Soft labels are used when ``labels`` is ``soft``, or
    ``auto`` and every answer carried probabilities. With ``config.semi == "fixmatch"``,
    ``unlabelled`` (M, C, H, W) uint8 pool images also train it (see copycat.train.semi).
    """
    if not run.store.is_file():
        raise CopycatError(f"no answers in {run.root}; run `copycat steal --run-dir {run.root}`")
    with AnswerStore(run.store) as store:
        data = store.load()
        num_classes = int(store.meta()["num_classes"])
    if config.labels == "soft" and data.probs is None:
        raise CopycatError("labels='soft' but the oracle gave labels only; use --labels hard")
    soft = data.probs is not None and config.labels in ("auto", "soft")
    gen = torch.Generator().manual_seed(config.seed)
    perm = torch.randperm(len(data), generator=gen)
    n_val = int(len(data) * config.val_fraction)
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    targets = data.probs[tr_idx] if soft and data.probs is not None else data.labels[tr_idx]
    shape = tuple(data.images.shape[1:])
    model = init_model(config.arch, data.images, num_classes=num_classes, seed=config.seed)
    log.info(
        "training %s on %d answers (%s labels), %d held out",
        config.arch,
        len(tr_idx),
        "soft" if soft else "hard",
        n_val,
    )
    result = fit(
        model,
        data.images[tr_idx],
        targets,
        config=config,
        val=(data.images[val_idx], data.labels[val_idx]) if n_val else None,
        checkpoint_dir=run.checkpoints,
        on_step=on_step,
        extra_loss=_semi_loss(config, unlabelled),
    )
    best = load_checkpoint(run.checkpoints / "best.pt")
    save_file({k: v.contiguous() for k, v in best["model"].items()}, str(run.copycat_weights))
    card = {
        "arch": config.arch,
        "input_shape": list(shape),
        "num_classes": num_classes,
        "mean": model.normalize.mean.flatten().tolist(),
        "std": model.normalize.std.flatten().tolist(),
        "labels": "soft" if soft else "hard",
        "best_epoch": int(best["epoch"]) + 1,
        "train_samples": len(tr_idx),
        "val_agreement": result.best_val_agreement,
        "samples_per_s": result.samples_per_s,
        "train_seconds": result.seconds,
    }
    run.copycat_card.write_text(json.dumps(card, indent=2) + "\n")
    write_metrics(run.metrics, result.history)
    run.record("train", asdict(config))
    return result


def _semi_loss(config: TrainConfig, unlabelled: torch.Tensor | None) -> ExtraLoss | None:
    if config.semi == "none":
        return None
    if unlabelled is None or not len(unlabelled):
        raise CopycatError("train.semi='fixmatch' needs unlabelled pool images; none were given")
    from copycat.train.semi import FixMatch

    log.info("semi-supervised (%s) on %d unqueried pool images", config.semi, len(unlabelled))
    return FixMatch(
        unlabelled,
        batch_size=config.batch_size,
        threshold=config.semi_threshold,
        weight=config.semi_weight,
    )


def train_stage(
    cfg: ExperimentConfig, *, command: str | None = None, on_step: StepFn | None = None
) -> FitResult:
    run = RunDir.at(cfg.run_dir)
    unlabelled = None
    if cfg.train.semi != "none" and run.store.is_file():
        unlabelled = unqueried_images(run, cfg, cfg.train.unlabelled)
    result = train_copycat(run, config=cfg.train, on_step=on_step, unlabelled=unlabelled)
    run.record("train", to_jsonable(cfg.train), command)
    return result


def evaluate_stage(
    cfg: ExperimentConfig,
    *,
    command: str | None = None,
    oracle: Oracle | None = None,
    allow_other_oracle: bool = False,
    **http_options: Any,
) -> EvalResult:
    """Score the run's copycat against the oracle on ``cfg.test_set``; writes ``eval.json``.

    An empty ``cfg.oracle`` means the oracle the run's steal recorded in ``config.json``;
    another oracle, or one whose fingerprint differs from the answers', is refused unless
    ``allow_other_oracle``. The HTTP cost ledger of the test-set queries goes into
    ``eval.json``.
    """
    from copycat.evaluate.provenance import check_fingerprint, check_test_set, choose_oracle

    run = RunDir.at(cfg.run_dir)
    recorded = run.read_config().get("steal", {}).get("oracle")
    spec = choose_oracle(cfg.oracle, recorded, run=str(run.root), allow_other=allow_other_oracle)
    copycat = load_copycat(run)  # before any query: no copycat, nothing to pay for
    device = resolve_device(cfg.train.device)
    http = experiment_http(spec, cfg, http_options)
    if oracle is None and cfg.defences:  # scored against what the thief could reach
        oracle = open_oracle(dataclasses.replace(cfg, oracle=spec, output="label"))
    oracle = oracle or parse_oracle_spec(spec, output="label", device=str(device), **http)
    budget = queries = None
    matches: bool | None = None
    if run.store.is_file():
        with AnswerStore(run.store) as store:
            queries = store.count()
            meta = store.meta()
        budget = int(meta["budget"]) if "budget" in meta else None
        matches = check_fingerprint(
            oracle.fingerprint,
            meta.get("fingerprint"),
            spec=spec,
            store=str(run.store),
            allow_other=allow_other_oracle,
        )
    test = load_labelled(cfg.test_set, input_shape=oracle.input_shape)
    card = json.loads(run.copycat_card.read_text())
    check_test_set(
        test,
        input_shape=oracle.input_shape,
        num_classes=oracle.num_classes,
        copycat_shape=tuple(card["input_shape"]),
        copycat_classes=int(card["num_classes"]),
    )
    res = evaluate(
        copycat, test_set=test, oracle=oracle, budget=budget, queries=queries, device=device
    )
    res = replace(res, oracle=spec, oracle_matches_run=matches)
    res.save(run.eval_json)
    run.record("evaluate", {"oracle": spec, "test_set": cfg.test_set}, command)
    return res


def report_stage(run_dir: str | Path) -> Path:
    return render_report(RunDir.at(run_dir))


def needs_target(cfg: ExperimentConfig) -> bool:
    """Whether the experiment names a target to train that is not there yet."""
    return cfg.target is not None and not (Path(cfg.target.out) / "card.json").is_file()


def run_all(
    cfg: ExperimentConfig,
    *,
    command: str | None = None,
    on_target_step: StepFn | None = None,
    on_batch: ProgressFn | None = None,
    on_step: StepFn | None = None,
) -> tuple[EvalResult, Path]:
    """Every stage in order (the target if missing, steal, train, evaluate, report)."""
    from copycat.targets.publish import train_target_on

    if cfg.target is not None and needs_target(cfg):
        t = cfg.target
        train_target_on(t.dataset, out=t.out, config=t.train, on_step=on_target_step)
    steal_stage(cfg, command=command, on_batch=on_batch)
    train_stage(cfg, command=command, on_step=on_step)
    result = evaluate_stage(cfg, command=command)
    return result, report_stage(cfg.run_dir)


def curve_stage(
    cfg: ExperimentConfig,
    *,
    budgets: tuple[int, ...],
    command: str | None = None,
    oracle: Oracle | None = None,
    on_point: Callable[[CurvePoint], None] | None = None,
    **http_options: Any,
) -> BudgetCurve:
    """The budget curve of the run: copycats trained (``cfg.train``) on prefixes of its answers
    in query order, scored against the oracle on ``cfg.test_set``; writes ``curve.json`` and
    ``curve.png``."""
    from copycat.evaluate.curve import budget_curve
    from copycat.report.plots import plot_budget_curve

    run = RunDir.at(cfg.run_dir)
    if not run.store.is_file():
        raise CopycatError(f"no answers in {run.root}; run `copycat steal --run-dir {run.root}`")
    oracle = oracle or parse_oracle_spec(cfg.oracle, output="label", **http_options)
    with AnswerStore(run.store) as store:
        data = store.load()
        num_classes = int(store.meta()["num_classes"])
    if cfg.train.labels == "soft" and data.probs is None:
        raise CopycatError("labels='soft' but the oracle gave labels only; use --labels hard")
    soft = data.probs is not None and cfg.train.labels in ("auto", "soft")
    targets = data.probs if soft and data.probs is not None else data.labels
    test = load_labelled(cfg.test_set, input_shape=oracle.input_shape)
    curve = budget_curve(
        data.images,
        targets,
        num_classes=num_classes,
        budgets=budgets,
        test_set=test,
        oracle=oracle,
        config=cfg.train,
        on_point=on_point,
    )
    curve.save(run.root / "curve.json")
    plot_budget_curve(curve_dict(curve), run.root / "curve.png")
    run.record(
        "curve",
        {"oracle": cfg.oracle, "test_set": cfg.test_set, "budgets": list(budgets)},
        command,
    )
    return curve


def curve_dict(curve: BudgetCurve) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(curve)))
