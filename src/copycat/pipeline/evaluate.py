"""The evaluate and report stages, and the budget curve: the copycat scored against the oracle
on a labelled test set."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from copycat.config import ExperimentConfig
from copycat.data.datasets import load_labelled
from copycat.devices import resolve_device
from copycat.errors import CopycatError
from copycat.evaluate.curve import BudgetCurve, CurvePoint
from copycat.evaluate.evaluate import EvalResult, evaluate
from copycat.oracles.base import Oracle
from copycat.oracles.registry import parse_oracle_spec
from copycat.pipeline.steal import experiment_http, open_oracle
from copycat.pipeline.train import semi_images
from copycat.report.render import render_report
from copycat.runs import RunDir, read_json
from copycat.steal.store import AnswerStore
from copycat.train.checkpoint import load_copycat

log = logging.getLogger(__name__)


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
    card = read_json(run.copycat_card)
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
        unlabelled=semi_images(run, cfg),  # the copies train as the train stage's would
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
