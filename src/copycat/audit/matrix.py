"""``copycat audit``: each attack against each defence, at each budget and seed.

Every cell is a run directory under ``<out>/cells/`` made by the pipeline's own stages (steal
through the defended target, train, evaluate against the undefended target), closed by a
``cell.json``; a cell that has one is not run again, and an unfinished cell resumes where its
stages stopped. Per defence, ``<out>/defences/<name>.json`` holds its measured benign utility.
Stateful defences (PRADA) keep their state in memory: a cell resumed after an interruption
starts the detector afresh.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from copycat.audit.attacks import ATTACKS
from copycat.audit.verify import oracle_labels_fn
from copycat.config import AuditConfig, ExperimentConfig, StealConfig, to_jsonable
from copycat.data.datasets import load_labelled
from copycat.defences.base import QueryRefused
from copycat.defences.registry import NONE, defence_layers, parse_defence_spec
from copycat.defences.utility import measure
from copycat.defences.watermark import read_key, watermark_test
from copycat.devices import resolve_device
from copycat.oracles.registry import parse_oracle_spec
from copycat.pipeline import evaluate_stage, open_oracle, steal_stage, train_stage
from copycat.runs import RunDir, read_json, write_atomic
from copycat.steal.store import AnswerStore
from copycat.train.checkpoint import load_copycat
from copycat.train.fit import predict

log = logging.getLogger(__name__)

MIN_ANSWERS = 20  # fewer answers than this (a blocked thief): no copycat is trained
CellFn = Callable[[str, dict[str, Any]], None]


def pd_pool_of(cfg: AuditConfig) -> str:
    return cfg.pd_pool or "pd:" + cfg.test_set.split(":", 1)[0]


def cell_name(attack: str, defence: str, budget: int, seed: int) -> str:
    return f"{attack}__{parse_defence_spec(defence).slug}__b{budget}__s{seed}"


def cell_experiment(
    cfg: AuditConfig, attack: str, defence: str, budget: int, seed: int
) -> ExperimentConfig:
    """The experiment of one cell: the attack's pool and output against the defended target."""
    base = ExperimentConfig(
        run_dir=str(Path(cfg.out) / "cells" / cell_name(attack, defence, budget, seed)),
        oracle=cfg.oracle,
        test_set=cfg.test_set,
        steal=StealConfig(budget=budget, selection=cfg.selection),
        train=dataclasses.replace(cfg.train, seed=seed),
        defences=() if defence == NONE else (defence,),
    )
    base = dataclasses.replace(base, pool=dataclasses.replace(base.pool, seed=seed))
    exp: ExperimentConfig = ATTACKS.get(attack)(base, pd_pool=pd_pool_of(cfg))
    return exp


def run_cell(cfg: AuditConfig, attack: str, defence: str, budget: int, seed: int) -> dict[str, Any]:
    """Steal, train and evaluate one cell (or read its ``cell.json``)."""
    exp = cell_experiment(cfg, attack, defence, budget, seed)
    run = RunDir.at(exp.run_dir)
    done = run.root / "cell.json"
    if done.is_file():
        cell: dict[str, Any] = read_json(done)
        return cell
    oracle = open_oracle(exp)
    blocked: int | None = None
    try:
        steal_stage(exp, oracle=oracle)
    except QueryRefused as exc:
        blocked = exc.alarm_at
        log.info("%s: blocked after %d queries", run.root.name, exc.alarm_at)
    alarms = [a for layer in defence_layers(oracle) for a in layer.alarms().values()]
    with AnswerStore(run.store) as store:
        answers = store.count()
    cell = {
        "attack": attack,
        "defence": defence,
        "budget": budget,
        "seed": seed,
        "answers": answers,
        "blocked_at": blocked,
        "alarm_at": min(alarms) if alarms else None,
        "performance": None,
        "agreement": None,
        "copycat_accuracy": None,
    }
    if answers >= MIN_ANSWERS:
        train_stage(exp)
        undefended = parse_oracle_spec(exp.oracle, output="label", device=_device(cfg))
        res = evaluate_stage(dataclasses.replace(exp, defences=()), oracle=undefended)
        cell.update(
            performance=res.performance_accuracy,
            agreement=res.agreement,
            copycat_accuracy=res.copycat_accuracy,
            target_accuracy=res.target_accuracy,
        )
        wm = parse_defence_spec(defence)
        if wm.name == "watermark":
            cell["watermark"] = _verify_cell(cfg, run, run, wm.params)
    write_atomic(done, json.dumps(cell, indent=2) + "\n")
    return cell


def _device(cfg: AuditConfig) -> str:
    return str(resolve_device(cfg.train.device))


def _verify_cell(
    cfg: AuditConfig, suspect: RunDir, queried: RunDir, params: dict[str, str]
) -> dict[str, Any]:
    """The watermark test of ``suspect``'s copycat on the queries of run ``queried``."""
    from copycat.defences.watermark import DEFAULT_KEY_ENV

    with AnswerStore(queried.store) as store:
        images = store.load().images
    target = parse_oracle_spec(cfg.oracle, output="probs", device=_device(cfg))
    dev = torch.device(_device(cfg))
    model = load_copycat(suspect)
    verdict = watermark_test(
        images,
        target_labels=oracle_labels_fn(target)(images),
        suspect_labels=predict(model.to(dev), images, device=dev).argmax(1),
        key=read_key(params.get("key_env", DEFAULT_KEY_ENV)),
        rate=float(params.get("rate", 0.01)),
        num_classes=target.num_classes,
    )
    return {**dataclasses.asdict(verdict), "stolen": verdict.stolen}


def defence_utility(cfg: AuditConfig, defence: str) -> dict[str, Any]:
    """The benign utility of ``defence`` (cached in ``<out>/defences/``)."""
    path = Path(cfg.out) / "defences" / f"{parse_defence_spec(defence).slug}.json"
    if path.is_file():
        cached: dict[str, Any] = read_json(path)
        return cached
    device = _device(cfg)
    exp = ExperimentConfig(
        oracle=cfg.oracle,
        output="probs",
        defences=() if defence == NONE else (defence,),
        train=dataclasses.replace(cfg.train, device=device),
    )
    defended = open_oracle(exp)
    undefended = parse_oracle_spec(cfg.oracle, output="probs", device=device)
    test = load_labelled(cfg.test_set, input_shape=undefended.input_shape)
    util = measure(defended, undefended, test, limit=cfg.benign_images).as_dict()
    util["defence"] = defence
    write_atomic(path, json.dumps(util, indent=2) + "\n")
    return util


def watermark_negatives(cfg: AuditConfig, cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each watermark cell's queries tested on the copycats that never saw the mark (every
    attack and seed against the undefended target, at the same budget): false positives."""
    out = []
    for wm in (c for c in cells if c.get("watermark")):
        params = parse_defence_spec(wm["defence"]).params
        queried = RunDir.at(
            Path(cfg.out)
            / "cells"
            / cell_name(wm["attack"], wm["defence"], wm["budget"], wm["seed"])
        )
        for neg in cells:
            if (neg["defence"], neg["budget"]) != (NONE, wm["budget"]):
                continue
            if neg["performance"] is None:
                continue
            suspect = RunDir.at(
                Path(cfg.out) / "cells" / cell_name(neg["attack"], NONE, neg["budget"], neg["seed"])
            )
            verdict = _verify_cell(cfg, suspect, queried, params)
            out.append(
                {"watermark_cell": queried.root.name, "suspect": suspect.root.name, **verdict}
            )
    return out


def run_audit(cfg: AuditConfig, *, on_cell: CellFn | None = None) -> dict[str, Any]:
    """Every cell of the matrix, the benign utility of every defence; writes ``audit.json``
    (the caller renders ``audit.md``)."""
    for attack in cfg.attacks:
        ATTACKS.get(attack)  # refuse unknown attacks before any work
    for defence in cfg.defences:
        parse_defence_spec(defence)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    utility = {d: defence_utility(cfg, d) for d in cfg.defences}
    cells = []
    for budget in cfg.budgets:
        for attack in cfg.attacks:
            for defence in cfg.defences:
                for seed in cfg.seeds:
                    name = cell_name(attack, defence, budget, seed)
                    if on_cell is not None:
                        on_cell(name, {})
                    cell = run_cell(cfg, attack, defence, budget, seed)
                    cells.append(cell)
                    if on_cell is not None:
                        on_cell(name, cell)
    data = {
        "config": to_jsonable(cfg),
        "utility": utility,
        "cells": cells,
        "watermark_negatives": watermark_negatives(cfg, cells),
    }
    write_atomic(out / "audit.json", json.dumps(data, indent=2) + "\n")
    return data
