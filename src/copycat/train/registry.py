"""The architecture registry: every ``--arch`` name, listed once (builders import torch lazily).

A builder takes ``(in_channels, num_classes, input_size)`` and returns the backbone; the
:class:`~copycat.train.models.Classifier` around it normalises inputs and returns logits.
"""

from __future__ import annotations

from copycat.errors import ConfigError
from copycat.registry import Registry

MODELS = Registry("architecture")
MODELS.add("cnn-tiny", "copycat.train.models:cnn_tiny")  # tests: trains in seconds
MODELS.add("cnn-small", "copycat.train.models:cnn_small")  # copycat default on CPU
MODELS.add("cnn-target", "copycat.train.models:cnn_target")  # the demo's target
MODELS.add("cnn-wide", "copycat.train.models:cnn_wide")
MODELS.add("cnn-wider", "copycat.train.models:cnn_wider")
MODELS.add("resnet18", "copycat.train.models:resnet18")
MODELS.add("vgg16", "copycat.train.models:vgg16")

# The copy's architecture chosen on the answers (copycat.train.choose): "auto", or "auto:A,B"
# to choose among the architectures named.
AUTO_ARCH = "auto"


def is_auto(arch: str) -> bool:
    """Whether ``arch`` is chosen on the answers: ``auto``, or ``auto:A,B,...``."""
    return arch == AUTO_ARCH or arch.startswith(AUTO_ARCH + ":")


def check_arch(arch: str) -> tuple[str, ...]:
    """The registered architectures ``arch`` names: itself, or the list of an ``auto:A,B,...``
    in order, without repeats (``()`` for plain ``auto``). Anything else is refused with the
    accepted names, before a run spends a query."""
    if arch == AUTO_ARCH:
        return ()
    if not is_auto(arch):
        names: tuple[str, ...] = (arch,)
    else:
        names = tuple(dict.fromkeys(n.strip() for n in arch.split(":", 1)[1].split(",")))
        names = tuple(n for n in names if n)
        if not names:
            raise ConfigError(f"arch {arch!r} names no candidate; e.g. auto:cnn-small,resnet18")
    for name in names:
        if is_auto(name):
            raise ConfigError(f"arch {arch!r}: a candidate cannot itself be auto")
        MODELS.entry(name, also=", auto or auto:A,B,...")
    return names
