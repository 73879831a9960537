"""The stages wired to a run directory: what ``copycat steal|train|evaluate|report|run`` call.

Each function reads the run directory, does one stage and writes its outputs back, so every
stage can be re-run or resumed alone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from copycat.config import ExperimentConfig, to_jsonable
from copycat.datasets import load_labelled
from copycat.evaluate import EvalResult, evaluate
from copycat.oracle import Oracle, parse_oracle_spec
from copycat.pool import build_pool
from copycat.report import render_report
from copycat.runs import RunDir, load_copycat, train_copycat
from copycat.steal import ProgressFn, StealSummary, steal
from copycat.store import AnswerStore
from copycat.train import FitResult, StepFn, resolve_device

log = logging.getLogger(__name__)


def open_oracle(cfg: ExperimentConfig, **http_options: Any) -> Oracle:
    device = str(resolve_device(cfg.train.device))
    return parse_oracle_spec(cfg.oracle, output=cfg.output, device=device, **http_options)


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
    oracle = oracle or open_oracle(cfg, **http_options)
    pool = build_pool(cfg.pool, shape=oracle.input_shape)
    run.record(
        "steal",
        {
            "oracle": cfg.oracle,
            "output": cfg.output,
            "pool": to_jsonable(cfg.pool),
            "steal": to_jsonable(cfg.steal),
        },
        command,
    )
    selector = None
    if cfg.steal.selection == "balanced":
        from copycat.selection import BalancedSelector

        selector = BalancedSelector(
            config=cfg.steal, train=cfg.train, num_classes=oracle.num_classes
        )
    summary: StealSummary | None = None
    try:
        with AnswerStore(run.store) as store:
            summary = steal(
                oracle, pool, store, config=cfg.steal, on_batch=on_batch, selector=selector
            )
    finally:  # an interrupted or failed run paid for queries too: its ledger is kept
        write_steal_json(run, summary, getattr(oracle, "ledger", None))
    return summary


LEDGER_SUMS = (
    "queries",
    "requests",
    "attempts",
    "failures",
    "retries",
    "billed_images",
    "estimated_cost",
)


def write_steal_json(run: RunDir, summary: StealSummary | None, ledger: Any) -> None:
    """``steal.json``: this run's summary and cost ledger, plus the ledger summed over every
    run of the directory (``total``), so a resumed steal reports what it cost in all."""
    path = run.root / "steal.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    data: dict[str, Any] = (
        {**asdict(summary), "images_per_s": summary.images_per_s}
        if summary is not None
        else {"stopped": "interrupted or failed; run the same command again to resume"}
    )
    if ledger is not None:
        now = ledger.as_dict()
        data.update(now)
        total = dict(previous.get("total", {}))
        for key in LEDGER_SUMS:
            total[key] = round(total.get(key, 0) + now.get(key, 0), 6)
        data["total"] = total
    path.write_text(json.dumps(data, indent=2) + "\n")


def train_stage(
    cfg: ExperimentConfig, *, command: str | None = None, on_step: StepFn | None = None
) -> FitResult:
    run = RunDir.at(cfg.run_dir)
    result = train_copycat(run, config=cfg.train, on_step=on_step)
    run.record("train", to_jsonable(cfg.train), command)
    return result


def evaluate_stage(
    cfg: ExperimentConfig,
    *,
    command: str | None = None,
    oracle: Oracle | None = None,
    **http_options: Any,
) -> EvalResult:
    """Score the run's copycat against the oracle on ``cfg.test_set``; writes ``eval.json``."""
    run = RunDir.at(cfg.run_dir)
    oracle = oracle or parse_oracle_spec(cfg.oracle, output="label", **http_options)
    copycat = load_copycat(run)
    test = load_labelled(cfg.test_set, input_shape=oracle.input_shape)
    budget = queries = None
    if run.store.is_file():
        with AnswerStore(run.store) as store:
            queries = store.count()
            meta = store.meta()
            budget = int(meta["budget"]) if "budget" in meta else None
    res = evaluate(
        copycat,
        test_set=test,
        oracle=oracle,
        budget=budget,
        queries=queries,
        device=resolve_device(cfg.train.device),
    )
    res.save(run.eval_json)
    run.record("evaluate", {"oracle": cfg.oracle, "test_set": cfg.test_set}, command)
    return res


def report_stage(run_dir: str | Path) -> Path:
    return render_report(RunDir.at(run_dir))
