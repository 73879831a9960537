"""Devices are explicit (``auto``, ``cpu``, ``cuda``, ``cuda:N``) and resolved once, at the edge."""

from __future__ import annotations

import torch

from copycat.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; an explicit ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(name)
