"""Rendering only: turn a run directory's JSON and CSV into ``report.md`` and PNG figures."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from copycat.errors import CopycatError
from copycat.redact import redact_text
from copycat.report.coverage import coverage_lines, source_lines
from copycat.report.curve import curve_lines
from copycat.report.plots import plot_confusions, plot_curves, plot_histogram
from copycat.runs import RunDir, read_json, write_atomic
from copycat.steal.store import AnswerStore


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def render_report(run: RunDir) -> Path:
    """Write ``report.md`` and its PNGs into the run directory; returns the report's path."""
    if not run.eval_json.is_file():
        raise CopycatError(
            f"no eval.json in {run.root}; run `copycat evaluate --run-dir {run.root} ...` first"
        )
    ev = read_json(run.eval_json)
    cfg = run.read_config()
    lines = [f"# Copycat report: `{run.root}`", ""]
    lines += _result(ev)
    lines += curve_lines(run.root)
    lines += _queries(run)
    lines += _evaluation_cost(ev)
    lines += _fake_dataset(run, ev["class_names"])
    lines += _training(run)
    lines += _per_class(run, ev)
    lines += _provenance(cfg)
    out = run.root / "report.md"
    write_atomic(out, redact_text("\n".join(lines)))
    return out


def _result(ev: dict[str, Any]) -> list[str]:
    return [
        "## Result",
        "",
        "| | target (oracle) | copycat | performance (copycat / target) |",
        "|---|---|---|---|",
        f"| accuracy | {_fmt(ev['target_accuracy'])} | {_fmt(ev['copycat_accuracy'])} | "
        f"{_fmt(ev['performance_accuracy'])} |",
        f"| macro-F1 | {_fmt(ev['target_macro_f1'])} | {_fmt(ev['copycat_macro_f1'])} | "
        f"{_fmt(ev['performance_macro_f1'])} |",
        "",
        f"Agreement (same label as the target on the {ev['test_size']} test images of "
        f"`{ev['test_set']}`): **{_fmt(ev['agreement'])}**. "
        f"Queries answered: {_fmt(ev.get('queries'))} of a budget of "
        f"{_fmt(ev.get('budget'))}.",
        "",
    ]


_QUERY_KEYS = (
    "answered",
    "billed",
    "billed_now",
    "queried_now",
    "already_answered",
    "seconds",
    "stopped",
    "skipped_files",
    "attempts",
    "failures",
    "retries",
    "estimated_cost",
)


def _queries(run: RunDir) -> list[str]:
    steal_json = run.root / "steal.json"
    st = read_json(steal_json) if steal_json.is_file() else {}
    total: dict[str, Any] = dict(st.get("total", {}))
    if run.store.is_file():  # the store's ledger is the truth, even after a killed run
        with AnswerStore(run.store) as store:
            total.update(store.ledger_totals())
        price = float(total.get("price_per_1000", 0.0))
        total["estimated_cost"] = round(total["billed_images"] * price / 1000.0, 6)
    if not st and not total:
        return []
    lines = ["## Queries", ""]
    if "billed_images" in total:
        lines += [
            f"Answered: **{total['answered']}** images; billed: **{total['billed_images']}** "
            f"(every request the server may have answered: retried replies, timeouts and "
            f"requests in flight at a kill included; {total.get('repaid_images', 0)} beyond "
            "the answers kept).",
            "",
        ]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {_fmt(st[k], 2)} |" for k in _QUERY_KEYS if k in st]
    for key, value in total.items():
        lines.append(f"| all runs: {key.replace('_', ' ')} | {_fmt(value, 2)} |")
    return [*lines, ""]


def _evaluation_cost(ev: dict[str, Any]) -> list[str]:
    """The HTTP cost ledger of the test-set queries, when the oracle kept one."""
    cost = ev.get("cost")
    lines: list[str] = []
    if ev.get("oracle_matches_run") is False:
        lines += [
            f"**Scored against another oracle** (`{ev.get('oracle')}`) than the one the "
            "answers came from (`--allow-other-oracle`).",
            "",
        ]
    if not cost:
        return lines
    lines += ["## Evaluation queries (test set)", "", "| | |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {_fmt(v, 2)} |" for k, v in cost.items()]
    return [*lines, ""]


def _fake_dataset(run: RunDir, names: list[str]) -> list[str]:
    if not run.store.is_file():
        return []
    with AnswerStore(run.store) as store:
        hist = store.label_histogram(len(names))
        rows = store.labels_and_sources()
    plot_histogram(hist, names, run.root / "labels.png")
    ratio = max(hist) / max(1, min(hist))
    return [
        "## The fake dataset",
        "",
        "![labels](labels.png)",
        "",
        f"Most to least frequent label: {max(hist)} to {min(hist)} ({ratio:.1f}:1).",
        "",
        *coverage_lines(hist, names),
        *source_lines(rows, names),
    ]


def _training(run: RunDir) -> list[str]:
    if not run.metrics.is_file():
        return []
    with run.metrics.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    plot_curves(rows, run.root / "training.png")
    return ["## Copycat training", "", *_copy_lines(run), "![training curves](training.png)", ""]


def _copy_lines(run: RunDir) -> list[str]:
    """What the card says of the copy: its architecture and, for an ensemble, its members."""
    card = read_json(run.copycat_card) if run.copycat_card.is_file() else {}
    if "arch" not in card:
        return []
    text = (
        f"`{card['arch']}` on {card.get('train_samples', '?')} answers "
        f"({card.get('labels', '?')} labels), held-out agreement "
        f"{_fmt(card.get('val_agreement'))}."
    )
    members = int(card.get("members", 1))
    if members > 1:
        each = ", ".join(_fmt(v, 3) for v in card.get("member_val_agreements", []))
        text += (
            f" The copycat is the mean of the probabilities of **{members} copies** trained "
            f"alike on these answers (`[train] ensemble`), each with its own seed and held-out "
            f"share (held-out agreement of each: {each}); the curves are the first copy's."
        )
    return [text, ""]


def _per_class(run: RunDir, ev: dict[str, Any]) -> list[str]:
    plot_confusions(ev, run.root / "confusion.png")
    lines = [
        "## Per class",
        "",
        "| class | target F1 | copycat F1 | target recall | copycat recall |",
        "|---|---|---|---|---|",
    ]
    t, c = ev["target"], ev["copycat"]
    for i, n in enumerate(ev["class_names"]):
        lines.append(
            f"| {n} | {_fmt(t['per_class_f1'][i], 3)} | {_fmt(c['per_class_f1'][i], 3)} "
            f"| {_fmt(t['per_class_recall'][i], 3)} | "
            f"{_fmt(c['per_class_recall'][i], 3)} |"
        )
    return [*lines, "", "![confusion matrices](confusion.png)", ""]


def _provenance(cfg: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    cmds = cfg.get("commands", {})
    if cmds:
        lines += ["## How this was made", "", "```"]
        lines += [cmds[k] for k in ("target", "steal", "train", "evaluate", "run") if k in cmds]
        lines += ["```", ""]
    return [
        *lines,
        "## Configuration",
        "",
        "```json",
        json.dumps({k: v for k, v in cfg.items() if k != "commands"}, indent=2),
        "```",
        "",
    ]
