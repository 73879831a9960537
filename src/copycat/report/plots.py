"""The report's figures: label histogram, training curves, confusion matrices (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from copycat.runs import save_atomic


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    """Write ``fig`` as a PNG at ``path``, atomically (as every file copycat writes); close it."""
    try:
        save_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        _plt().close(fig)


def plot_histogram(hist: list[int], names: list[str], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(range(len(hist)), hist, color="#4477aa")
    ax.set_xticks(range(len(hist)), names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("answers")
    ax.set_title("Labels the oracle gave to the fake dataset")
    fig.tight_layout()
    save_figure(fig, path)


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
    save_figure(fig, path)


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
    save_figure(fig, path)


def plot_budget_curve(curve: dict[str, Any], path: Path) -> None:
    """Performance and agreement against answers (``curve.json``), with the 0.90 / 0.95 goals."""
    plt = _plt()
    pts = curve["points"]
    xs = [p["answers"] for p in pts]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(xs, [p["performance_accuracy"] for p in pts], marker="o", label="performance (acc)")
    ax.plot(xs, [p["agreement"] for p in pts], marker="s", label="agreement")
    for goal, style in ((0.90, ":"), (0.95, "--")):
        ax.axhline(goal, color="grey", linestyle=style, linewidth=0.8)
    if len(xs) > 1 and min(xs) > 0:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(xs, [f"{x:,}" for x in xs], fontsize=8)
    ax.set_xlabel("answers (queries), in query order")
    ax.set_ylabel("copycat vs target")
    ax.set_title("Budget curve")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
