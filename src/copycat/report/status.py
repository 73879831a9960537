"""Where a run directory stands: answers against the budget, what was billed and what it cost,
how skewed the stolen labels are, and which stages are done. Reads only; queries nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from copycat.errors import CopycatError
from copycat.runs import RunDir
from copycat.steal.store import AnswerStore

STAGES = ("steal", "train", "evaluate", "report")


@dataclass(frozen=True, slots=True)
class RunStatus:
    """The state of one run directory (see :func:`run_status`)."""

    run_dir: str
    oracle: str | None
    answered: int
    budget: int | None
    billed_images: int | None  # from steal.json's ledger over every run, when it kept one
    estimated_cost: float | None
    histogram: list[int]
    class_names: list[str]
    stages: dict[str, bool]
    epochs_done: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def imbalance(self) -> float | None:
        """Most over least frequent label (inf when some class was never answered)."""
        if not self.histogram or not any(self.histogram):
            return None
        lo = min(self.histogram)
        return float("inf") if lo == 0 else max(self.histogram) / lo

    @property
    def rarest(self) -> str | None:
        if not self.histogram or not any(self.histogram):
            return None
        i = min(range(len(self.histogram)), key=self.histogram.__getitem__)
        return f"{self.class_names[i]} ({self.histogram[i]})"


def _read_json(path: Any) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def run_status(run_dir: str | Any) -> RunStatus:
    """Summarise ``run_dir`` without changing it; a folder that is no run is refused."""
    run = RunDir.at(run_dir)
    if not run.root.is_dir():
        raise CopycatError(f"{run.root} does not exist; pass the --run-dir of a steal")
    cfg = run.read_config()
    steal_json = _read_json(run.root / "steal.json")
    ev = _read_json(run.eval_json)
    answered, budget, hist = 0, None, []
    ledger: dict[str, int] = {}
    if run.store.is_file():
        with AnswerStore(run.store) as store:
            meta = store.meta()
            answered = store.count()
            ledger = store.ledger_totals()  # the store's request ledger: survives any kill
            budget = int(meta["budget"]) if "budget" in meta else None
            if "num_classes" in meta:
                hist = store.label_histogram(int(meta["num_classes"]))
    elif not cfg:
        raise CopycatError(f"{run.root} holds no run (no config.json, no answers.sqlite)")
    names = list(ev.get("class_names") or [str(i) for i in range(len(hist))])
    if len(names) != len(hist):
        names = [str(i) for i in range(len(hist))]
    total = steal_json.get("total", {})
    billed = ledger.get("billed_images", total.get("billed_images"))
    cost = total.get("estimated_cost", steal_json.get("estimated_cost"))
    price = total.get("price_per_1000")
    if billed is not None and price is not None:  # priced at the last steal's rate
        cost = round(billed * float(price) / 1000.0, 6)
    epochs_done = None
    if (run.checkpoints / "last.pt").is_file() and run.metrics.is_file():
        epochs_done = max(0, len(run.metrics.read_text().splitlines()) - 1)
    stages = {
        "steal": budget is not None and answered >= budget,
        "train": run.copycat_weights.is_file(),
        "evaluate": run.eval_json.is_file(),
        "report": (run.root / "report.md").is_file(),
    }
    notes = []
    if steal_json.get("stopped") not in (None, "budget reached"):
        notes.append(f"last steal stopped: {steal_json['stopped']}")
    return RunStatus(
        run_dir=str(run.root),
        oracle=cfg.get("steal", {}).get("oracle"),
        answered=answered,
        budget=budget,
        billed_images=None if billed is None else int(billed),
        estimated_cost=None if cost is None else float(cost),
        histogram=hist,
        class_names=names,
        stages=stages,
        epochs_done=epochs_done,
        notes=notes,
    )
