"""All stages in order, as ``copycat run`` runs them."""

from __future__ import annotations

import logging
from pathlib import Path

from copycat.config import ExperimentConfig
from copycat.evaluate.evaluate import EvalResult
from copycat.pipeline.evaluate import evaluate_stage, report_stage
from copycat.pipeline.steal import steal_stage
from copycat.pipeline.train import train_stage
from copycat.steal.loop import ProgressFn
from copycat.train.fit import StepFn

log = logging.getLogger(__name__)


def needs_target(cfg: ExperimentConfig) -> bool:
    """Whether the experiment names a target to train that is not there yet."""
    return cfg.target is not None and not (Path(cfg.target.out) / "card.json").is_file()


def run_all(
    cfg: ExperimentConfig,
    *,
    command: str | None = None,
    on_target_step: StepFn | None = None,
    on_batch: ProgressFn | None = None,
    on_step: StepFn | None = None,
) -> tuple[EvalResult, Path]:
    """Every stage in order (the target if missing, steal, train, evaluate, report)."""
    from copycat.targets.publish import train_target_on

    if cfg.target is not None and needs_target(cfg):
        t = cfg.target
        train_target_on(t.dataset, out=t.out, config=t.train, on_step=on_target_step)
    steal_stage(cfg, command=command, on_batch=on_batch)
    train_stage(cfg, command=command, on_step=on_step)
    result = evaluate_stage(cfg, command=command)
    return result, report_stage(cfg.run_dir)
