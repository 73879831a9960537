"""The architecture registry: every ``--arch`` name, listed once (builders import torch lazily).

A builder takes ``(in_channels, num_classes, input_size)`` and returns the backbone; the
:class:`~copycat.train.models.Classifier` around it normalises inputs and returns logits.
"""

from __future__ import annotations

from copycat.registry import Registry

MODELS = Registry("architecture")
MODELS.add("cnn-tiny", "copycat.train.models:cnn_tiny")  # tests: trains in seconds
MODELS.add("cnn-small", "copycat.train.models:cnn_small")  # copycat default on CPU
MODELS.add("cnn-target", "copycat.train.models:cnn_target")  # the demo's target
MODELS.add("cnn-wide", "copycat.train.models:cnn_wide")
MODELS.add("cnn-wider", "copycat.train.models:cnn_wider")
MODELS.add("resnet18", "copycat.train.models:resnet18")
MODELS.add("vgg16", "copycat.train.models:vgg16")
