"""copycat: measure how easily a deployed image classifier can be stolen (Copycat CNN)."""

from __future__ import annotations

__version__ = "0.1.0"

from copycat.config import (
    AugmentConfig,
    ExperimentConfig,
    PoolConfig,
    StealConfig,
    TrainConfig,
)
from copycat.errors import (
    CopycatError,
    OracleError,
    StoreMismatchError,
)
from copycat.oracle import (
    Answer,
    LabelOnly,
    Oracle,
    OracleWrapper,
    Rounded,
    TopK,
    parse_oracle_spec,
)

__all__ = [
    "Answer",
    "AugmentConfig",
    "CopycatError",
    "ExperimentConfig",
    "LabelOnly",
    "Oracle",
    "OracleError",
    "OracleWrapper",
    "PoolConfig",
    "Rounded",
    "StealConfig",
    "StoreMismatchError",
    "TopK",
    "TrainConfig",
    "__version__",
    "parse_oracle_spec",
]
