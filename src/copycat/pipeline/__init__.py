"""The one place that sequences the stages, each wired to a run directory as
``copycat steal|train|evaluate|report|run|curve`` call them: :mod:`.steal`, :mod:`.train`,
:mod:`.evaluate` and :mod:`.run` (all stages in order)."""

from __future__ import annotations

from copycat.pipeline.evaluate import curve_dict, curve_stage, evaluate_stage, report_stage
from copycat.pipeline.run import needs_target, run_all
from copycat.pipeline.steal import (
    StealPlan,
    experiment_http,
    open_oracle,
    redacted_oracle,
    steal_plan,
    steal_stage,
    write_steal_json,
)
from copycat.pipeline.train import train_copycat, train_stage, unqueried_images

__all__ = [
    "StealPlan",
    "curve_dict",
    "curve_stage",
    "evaluate_stage",
    "experiment_http",
    "needs_target",
    "open_oracle",
    "redacted_oracle",
    "report_stage",
    "run_all",
    "steal_plan",
    "steal_stage",
    "train_copycat",
    "train_stage",
    "unqueried_images",
    "write_steal_json",
]
