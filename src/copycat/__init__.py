"""copycat: measure how easily a deployed image classifier can be stolen (Copycat CNN).

The public names below are imported on first use (PEP 562), so ``import copycat`` and the
command line's ``--help`` do not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "AugmentConfig": "copycat.config",
    "ExperimentConfig": "copycat.config",
    "PoolConfig": "copycat.config",
    "StealConfig": "copycat.config",
    "TrainConfig": "copycat.config",
    "CopycatError": "copycat.errors",
    "OracleError": "copycat.errors",
    "StoreMismatchError": "copycat.errors",
    "Answer": "copycat.oracles.base",
    "Oracle": "copycat.oracles.base",
    "OracleWrapper": "copycat.oracles.base",
    "LabelOnly": "copycat.oracles.outputs",
    "Rounded": "copycat.oracles.outputs",
    "TopK": "copycat.oracles.outputs",
    "parse_oracle_spec": "copycat.oracles.registry",
    "tune_allocator": "copycat.allocator",
}

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
    "tune_allocator",
]

if TYPE_CHECKING:
    from copycat.allocator import tune_allocator
    from copycat.config import (
        AugmentConfig,
        ExperimentConfig,
        PoolConfig,
        StealConfig,
        TrainConfig,
    )
    from copycat.errors import CopycatError, OracleError, StoreMismatchError
    from copycat.oracles.base import Answer, Oracle, OracleWrapper
    from copycat.oracles.outputs import LabelOnly, Rounded, TopK
    from copycat.oracles.registry import parse_oracle_spec


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'copycat' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
