"""The report's budget-curve section: the auditor's headline (queries needed to reach 0.90 and
0.95 of the target) and the table and figure of ``curve.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from copycat.report.plots import plot_budget_curve
from copycat.runs import read_json


def reach_text(curve: dict[str, Any], goal: str) -> str:
    """``5,000`` (the fewest measured answers reaching ``goal``) or ``not reached in N``."""
    n = curve.get("queries_to", {}).get(goal)
    if n is None:
        top = max((p["answers"] for p in curve["points"]), default=0)
        return f"not reached within {top:,}"
    lower = [p["answers"] for p in curve["points"] if p["answers"] < n]
    return f"{n:,}" + (f" (more than {max(lower):,})" if lower else "")


def curve_lines(root: Path) -> list[str]:
    """Markdown for ``root/curve.json`` (and its figure, drawn again); none without it."""
    path = root / "curve.json"
    if not path.is_file():
        return []
    curve = read_json(path)
    if not curve.get("points"):
        return []
    plot_budget_curve(curve, root / "curve.png")
    lines = [
        "## Budget curve",
        "",
        f"**Queries needed to reach 0.90 of the target: {reach_text(curve, '0.90')}; "
        f"0.95: {reach_text(curve, '0.95')}** (performance in accuracy on "
        f"`{curve['test_set']}`, copycats trained on the first N answers in query order).",
        "",
        "| answers | copycat accuracy | performance (acc) | performance (F1) | agreement |",
        "|--:|--:|--:|--:|--:|",
    ]
    for p in curve["points"]:
        lines.append(
            f"| {p['answers']:,} | {p['copycat_accuracy']:.4f} | "
            f"{p['performance_accuracy']:.4f} | {p['performance_macro_f1']:.4f} | "
            f"{p['agreement']:.4f} |"
        )
    return [*lines, "", "![budget curve](curve.png)", ""]
