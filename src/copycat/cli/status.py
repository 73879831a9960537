"""``copycat status RUN``: where a run stands (answers, budget, billed, cost, labels, stages)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from copycat.cli.common import errors, table

RunArg = Annotated[Path, typer.Argument(help="Run directory.", show_default=False)]


def status_cmd(run_dir: RunArg) -> None:
    """Where a run stands: answered vs budget, billed and cost, label skew, stages done."""
    from copycat.report.status import STAGES, run_status

    with errors():
        st = run_status(run_dir)
    ratio = st.imbalance
    rows: list[tuple[str, Any]] = [
        ("oracle", st.oracle or "-"),
        ("answered", st.answered),
        ("budget", st.budget if st.budget is not None else "-"),
        ("billed images", st.billed_images if st.billed_images is not None else "no ledger"),
        ("estimated cost", st.estimated_cost if st.estimated_cost is not None else "no ledger"),
        ("labels", " ".join(f"{n}:{c}" for n, c in zip(st.class_names, st.histogram, strict=True))),
        ("imbalance (most/least)", "-" if ratio is None else f"{ratio:.1f}:1"),
        ("rarest class", st.rarest or "-"),
        ("epochs done", st.epochs_done if st.epochs_done is not None else "-"),
        *[(f"{s} done", "yes" if st.stages[s] else "no") for s in STAGES],
        *[("note", n) for n in st.notes],
    ]
    table(f"status {st.run_dir}", rows)
