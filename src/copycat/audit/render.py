"""``audit.md`` and ``audit.png``: the attack x defence matrix, the benign cost of each defence,
detection and watermark verification, from ``audit.json`` (rendering only)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from copycat.report.plots import save_figure
from copycat.runs import write_atomic


def mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def _pm(values: Sequence[float | None]) -> str:
    m, sd, n = mean_sd(values)
    if m is None:
        return "-"
    return f"{m:.3f} ± {sd:.3f}" if n > 1 else f"{m:.3f}"


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def group(cells: list[dict[str, Any]]) -> dict[tuple[int, str, str], list[dict[str, Any]]]:
    out: dict[tuple[int, str, str], list[dict[str, Any]]] = {}
    for c in cells:
        out.setdefault((c["budget"], c["attack"], c["defence"]), []).append(c)
    return out


def utility_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "| defence | benign accuracy | cost (points) | agreement with undefended | "
        "mean L1 on probs | benign answered | false alarm at |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for d, u in data["utility"].items():
        lines.append(
            f"| `{d}` | {u['accuracy']:.4f} | {100 * u['accuracy_cost']:.2f} | "
            f"{u['agreement']:.4f} | {_num(u['mean_l1'])} | {u['answered']:.3f} | "
            f"{_num(u['false_alarm_at'])} |"
        )
    return lines


def matrix_table(data: dict[str, Any], budget: int, key: str) -> list[str]:
    cfg = data["config"]
    groups = group(data["cells"])
    attacks = cfg["attacks"]
    lines = ["| defence | " + " | ".join(attacks) + " |", "| --- |" + " ---: |" * len(attacks)]
    for d in cfg["defences"]:
        row = [_pm([c[key] for c in groups.get((budget, a, d), [])]) for a in attacks]
        lines.append(f"| `{d}` | " + " | ".join(row) + " |")
    return lines


def detection_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "| budget | attack | defence | seed | answers | alarm at | blocked at |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for c in data["cells"]:
        if c["alarm_at"] is None and c["blocked_at"] is None and "prada" not in c["defence"]:
            continue
        lines.append(
            f"| {c['budget']} | {c['attack']} | `{c['defence']}` | {c['seed']} | {c['answers']} "
            f"| {_num(c['alarm_at'])} | {_num(c['blocked_at'])} |"
        )
    return lines


def watermark_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "| suspect | kind | flipped queries | matches | informative | p-value | verdict |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in data["cells"]:
        w = c.get("watermark")
        if w:
            name = f"{c['attack']} b{c['budget']} s{c['seed']}"
            lines.append(_wm_row(name, "copy (trained on watermarked answers)", w))
    for n in data.get("watermark_negatives", []):
        lines.append(_wm_row(n["suspect"], "independent (undefended answers)", n))
    return lines


def _wm_row(name: str, kind: str, w: dict[str, Any]) -> str:
    verdict = "stolen" if w["stolen"] else "not shown"
    return (
        f"| {name} | {kind} | {w['flipped']} | {w['matches']} | {w['informative']} "
        f"| {w['p_value']:.2e} | {verdict} |"
    )


def plot_matrix(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = data["config"]
    groups = group(data["cells"])
    budgets, attacks, defences = cfg["budgets"], cfg["attacks"], cfg["defences"]
    fig, axes = plt.subplots(1, len(budgets), figsize=(4 + 1.6 * len(defences), 3.6), squeeze=False)
    width = 0.8 / len(attacks)
    for ax, budget in zip(axes[0], budgets, strict=True):
        for j, a in enumerate(attacks):
            stats = [
                mean_sd([c["performance"] for c in groups.get((budget, a, d), [])])
                for d in defences
            ]
            xs = [i + (j - (len(attacks) - 1) / 2) * width for i in range(len(defences))]
            ax.bar(
                xs,
                [s[0] or 0.0 for s in stats],
                width,
                yerr=[s[1] or 0.0 for s in stats],
                label=a,
                capsize=2,
            )
        ax.set_xticks(
            range(len(defences)),
            [d.split(":")[0] for d in defences],
            rotation=30,
            ha="right",
            fontsize=8,
        )
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("copycat performance (accuracy ratio)")
        ax.set_title(f"budget {budget:,}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def render_audit(data: dict[str, Any], out: Path) -> Path:
    """Write ``audit.md`` (and ``audit.png``) into ``out``; returns the markdown path."""
    cfg = data["config"]
    plot_matrix(data, out / "audit.png")
    md = [
        "# Defence audit",
        "",
        f"Target `{cfg['oracle']}`, test set `{cfg['test_set']}`, seeds {cfg['seeds']}, "
        f"copycat `{cfg['train']['arch']}` for {cfg['train']['epochs']} epochs.",
        "",
        "## What each defence costs benign users",
        "",
        f"The first {cfg['benign_images']} test images sent in order as one client.",
        "",
        *utility_table(data),
        "",
    ]
    for budget in cfg["budgets"]:
        md += [
            f"## Copycat performance at {budget:,} queries (mean ± sd over seeds)",
            "",
            *matrix_table(data, budget, "performance"),
            "",
            f"Agreement with the undefended target at {budget:,} queries:",
            "",
            *matrix_table(data, budget, "agreement"),
            "",
        ]
    md += ["![matrix](audit.png)", "", "## Detection", "", *detection_table(data), ""]
    if any(c.get("watermark") for c in data["cells"]):
        md += ["## Watermark verification (p < 0.01: stolen)", "", *watermark_table(data), ""]
    path = out / "audit.md"
    write_atomic(path, "\n".join(md) + "\n")
    return path
