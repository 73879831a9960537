"""The steal stage wired to a run directory: the oracle (with its defences and HTTP options),
the locked query loop, ``steal.json`` (ledger, coverage) and the dry run."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from copycat.config import ExperimentConfig, to_jsonable
from copycat.devices import resolve_device
from copycat.oracles.base import Oracle
from copycat.oracles.registry import parse_oracle_spec
from copycat.pools.pool import build_pool
from copycat.redact import redact_text
from copycat.runs import RunDir, write_atomic
from copycat.steal.coverage import Coverage, class_coverage, class_names_of, warn_rare
from copycat.steal.loop import ProgressFn, StealSummary, steal
from copycat.steal.store import AnswerStore
from copycat.train.registry import check_arch

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
    """Query the oracle into ``<run_dir>/answers.sqlite`` and write ``steal.json``. The copy's
    architecture is checked first, so a typo in it costs no query."""
    check_arch(cfg.train.arch)
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
            "pool": _pool_record(run, cfg),
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
        names = class_names_of(oracle, oracle.num_classes) if summary is not None else None
        write_steal_json(run, summary, getattr(oracle, "ledger", None), class_names=names)
    return summary


def _pool_record(run: RunDir, cfg: ExperimentConfig) -> Any:
    """The pool ``config.json`` records: this run's, unless the store already holds the budget
    and so draws nothing, where the pool its answers came from stays on record (the copy's
    unqueried images are drawn from it, and the report names it)."""
    recorded = run.read_config().get("steal", {}).get("pool")
    if recorded is not None and run.store.is_file():
        with AnswerStore(run.store) as store:
            if store.count() >= cfg.steal.budget:
                return recorded
    return to_jsonable(cfg.pool)


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
            store.check_oracle(oracle.fingerprint)  # the steal itself would refuse it
            answered = store.count()
    would_send = max(0, cfg.steal.budget - answered)
    sources = [f"{name} ({share:.0%})" for name, share in pool.shares()]
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


def write_steal_json(
    run: RunDir,
    summary: StealSummary | None,
    ledger: Any,
    *,
    class_names: list[str] | None = None,
) -> Coverage | None:
    """``steal.json``: this run's summary, the class coverage of its answers (with a warning
    about rare classes) and HTTP counters (``ledger``, this process only), and ``total``: the
    store's request ledger over every run, so what was billed is counted even for runs killed
    before they could write this file. Returns the coverage when there is a summary."""
    data: dict[str, Any] = (
        {**asdict(summary), "images_per_s": summary.images_per_s}
        if summary is not None
        else {"stopped": "interrupted or failed; run the same command again to resume"}
    )
    cov = None
    if summary is not None and class_names is not None:
        cov = class_coverage(summary.label_histogram, class_names=class_names)
        warn_rare(cov)
        data["coverage"] = cov.as_dict()
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
    return cov
