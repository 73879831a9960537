"""The audit's attacks: each names what a thief queries and what it keeps (``ATTACKS``).

A builder takes the cell's experiment and returns it changed: pool, output and augmentation.
New methods (a stronger selection or query synthesis) join here under a new name.
"""

from __future__ import annotations

import dataclasses

from copycat.config import ExperimentConfig
from copycat.registry import Registry

ATTACKS = Registry("attack")
ATTACKS.add("npd-labels", "copycat.audit.attacks:npd_labels", usage="npd-labels")
ATTACKS.add("npd-probs", "copycat.audit.attacks:npd_probs", usage="npd-probs")
ATTACKS.add("pd-labels", "copycat.audit.attacks:pd_labels", usage="pd-labels")
ATTACKS.add("pd-probs", "copycat.audit.attacks:pd_probs", usage="pd-probs")
ATTACKS.add("noise-labels", "copycat.audit.attacks:noise_labels", usage="noise-labels")


def _with(cfg: ExperimentConfig, *, pool: str, output: str, augment: bool) -> ExperimentConfig:
    aug = dataclasses.replace(cfg.pool.augment, enabled=augment)
    return dataclasses.replace(
        cfg, output=output, pool=dataclasses.replace(cfg.pool, spec=pool, augment=aug)
    )


def npd_labels(cfg: ExperimentConfig, *, pd_pool: str) -> ExperimentConfig:
    """The paper's threat model: non-problem-domain images, top-1 labels only."""
    return _with(cfg, pool="npd", output="label", augment=True)


def npd_probs(cfg: ExperimentConfig, *, pd_pool: str) -> ExperimentConfig:
    """NPD images; the target reveals its probabilities (soft labels)."""
    return _with(cfg, pool="npd", output="probs", augment=True)


def pd_labels(cfg: ExperimentConfig, *, pd_pool: str) -> ExperimentConfig:
    """Problem-domain images sent as they are (no query augmentation), top-1 labels."""
    return _with(cfg, pool=pd_pool, output="label", augment=False)


def pd_probs(cfg: ExperimentConfig, *, pd_pool: str) -> ExperimentConfig:
    return _with(cfg, pool=pd_pool, output="probs", augment=False)


def noise_labels(cfg: ExperimentConfig, *, pd_pool: str) -> ExperimentConfig:
    """Uniform noise images, top-1 labels: the weakest thief, the most synthetic queries."""
    return _with(cfg, pool="noise", output="label", augment=False)
