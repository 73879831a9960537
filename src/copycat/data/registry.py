"""The dataset registry: every labelled-set name ``--dataset``, ``--test-set NAME:SPLIT`` and
``pd:NAME`` accept, listed once.

A builder takes ``(split, *, input_shape)`` with ``split`` one of train, val, test and returns a
:class:`~copycat.data.datasets.LabelledSet`. ``folder:PATH`` (a user's ImageFolder tree) is
parsed beside these names by :func:`~copycat.data.datasets.load_labelled`.
"""

from __future__ import annotations

from copycat.registry import Registry

DATASETS = Registry("labelled set")
DATASETS.add(
    "fashion-mnist", "copycat.data.datasets:fashion_mnist_split", usage="fashion-mnist[:SPLIT]"
)
DATASETS.add("digits", "copycat.data.suite:digits_split", usage="digits[:SPLIT]")
DATASETS.add("emoji", "copycat.data.suite:emoji_split", usage="emoji[:SPLIT]")
