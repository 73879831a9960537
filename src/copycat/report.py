"""Rendering only: turn a run directory's JSON and CSV into ``report.md`` and PNG figures."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from copycat.errors import CopycatError
from copycat.runs import RunDir
from copycat.store import AnswerStore


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def plot_histogram(hist: list[int], names: list[str], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(range(len(hist)), hist, color="#4477aa")
    ax.set_xticks(range(len(hist)), names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("answers")
    ax.set_title("Labels the oracle gave to the fake dataset")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(rows: list[dict[str, str]], path: Path) -> None:
    plt = _plt()
    ep = [int(r["epoch"]) for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3))
    a1.plot(ep, [float(r["train_loss"]) for r in rows], marker="o")
    a1.set_xlabel("epoch")
    a1.set_ylabel("training loss")
    a2.plot(ep, [float(r["train_agreement"]) for r in rows], marker="o", label="train")
    a2.plot(ep, [float(r["val_agreement"]) for r in rows], marker="o", label="held out")
    a2.set_xlabel("epoch")
    a2.set_ylabel("agreement with the oracle")
    a2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusions(ev: dict[str, Any], path: Path) -> None:
    plt = _plt()
    names = ev["class_names"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, who in zip(axes, ("target", "copycat"), strict=True):
        cm = ev[who]["confusion"]
        ax.imshow(cm, cmap="Blues")
        ax.set_title(f"{who}: accuracy {ev[who]['accuracy']:.3f}")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i, row in enumerate(cm):
            for j, v in enumerate(row):
                if v:
                    ax.text(
                        j,
                        i,
                        v,
                        ha="center",
                        va="center",
                        fontsize=5,
                        color="white" if v > max(map(max, cm)) / 2 else "black",
                    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_report(run: RunDir) -> Path:
    """Write ``report.md`` and its PNGs into the run directory; returns the report's path."""
    if not run.eval_json.is_file():
        raise CopycatError(
            f"no eval.json in {run.root}; run `copycat evaluate --run-dir {run.root} ...` first"
        )
    ev = json.loads(run.eval_json.read_text())
    names = ev["class_names"]
    cfg = run.read_config()
    lines = [f"# Copycat report: `{run.root}`", ""]
    lines += [
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
    steal_json = run.root / "steal.json"
    if steal_json.is_file():
        st = json.loads(steal_json.read_text())
        lines += ["## Queries", "", "| | |", "|---|---|"]
        for key in (
            "answered",
            "queried_now",
            "already_answered",
            "seconds",
            "stopped",
            "skipped_files",
            "attempts",
            "failures",
            "retries",
            "estimated_cost",
        ):
            if key in st:
                lines.append(f"| {key.replace('_', ' ')} | {_fmt(st[key], 2)} |")
        for key, value in st.get("total", {}).items():
            lines.append(f"| all runs: {key.replace('_', ' ')} | {_fmt(value, 2)} |")
        lines.append("")
    if run.store.is_file():
        with AnswerStore(run.store) as store:
            hist = store.label_histogram(len(names))
        plot_histogram(hist, names, run.root / "labels.png")
        ratio = max(hist) / max(1, min(hist))
        lines += [
            "## The fake dataset",
            "",
            "![labels](labels.png)",
            "",
            f"Most to least frequent label: {max(hist)} to {min(hist)} ({ratio:.1f}:1).",
            "",
        ]
    if run.metrics.is_file():
        with run.metrics.open() as f:
            rows = list(csv.DictReader(f))
        if rows:
            plot_curves(rows, run.root / "training.png")
            lines += ["## Copycat training", "", "![training curves](training.png)", ""]
    plot_confusions(ev, run.root / "confusion.png")
    lines += [
        "## Per class",
        "",
        "| class | target F1 | copycat F1 | target recall | copycat recall |",
        "|---|---|---|---|---|",
    ]
    for i, n in enumerate(names):
        t, c = ev["target"], ev["copycat"]
        lines.append(
            f"| {n} | {_fmt(t['per_class_f1'][i], 3)} | {_fmt(c['per_class_f1'][i], 3)} "
            f"| {_fmt(t['per_class_recall'][i], 3)} | "
            f"{_fmt(c['per_class_recall'][i], 3)} |"
        )
    lines += ["", "![confusion matrices](confusion.png)", ""]
    cmds = cfg.get("commands", {})
    if cmds:
        lines += ["## How this was made", "", "```"]
        lines += [cmds[k] for k in ("target", "steal", "train", "evaluate", "run") if k in cmds]
        lines += ["```", ""]
    lines += [
        "## Configuration",
        "",
        "```json",
        json.dumps({k: v for k, v in cfg.items() if k != "commands"}, indent=2),
        "```",
        "",
    ]
    out = run.root / "report.md"
    out.write_text("\n".join(lines))
    return out
