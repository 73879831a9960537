"""The selection registry: every ``--selection`` strategy, listed once.

A builder (in :mod:`copycat.steal.strategies`, imported on use so ``--help`` stays light) takes
``(*, config, train, num_classes)`` and returns the selector the query loop calls (``None`` for
``random``: candidates are sent in pool order).
"""

from __future__ import annotations

from copycat.registry import Registry

SELECTIONS = Registry("selection")
SELECTIONS.add("random", "copycat.steal.strategies:build_random")
SELECTIONS.add("balanced", "copycat.steal.strategies:build_balanced")
SELECTIONS.add("wide", "copycat.steal.strategies:build_wide")
SELECTIONS.add("active", "copycat.steal.strategies:build_active")
SELECTIONS.add("jacobian", "copycat.steal.strategies:build_jacobian")
SELECTIONS.add("boundary", "copycat.steal.strategies:build_boundary")
SELECTIONS.add("mixup", "copycat.steal.strategies:build_mixup")
SELECTIONS.add("adaptive", "copycat.steal.strategies:build_adaptive")

HELP = (
    "random (pool order); balanced (an interim copycat picks, among 5x candidates, those that "
    "fill rare classes); wide (balanced over 20x candidates, 6 warm refits); active (rare-class "
    "and uncertain candidates spread out by k-center); jacobian (pool images pushed toward rare "
    "classes by gradient steps on the interim copycat, at most half of each batch once "
    "steal.synth_from answers are in, 8 warm refits); boundary (jacobian with 4 refits, but an "
    "image already in its class is pushed across its nearest boundary); mixup "
    "(mixes of answers from different classes, at most half of each batch); adaptive (Knockoff "
    "Nets' bandit over the pool's folders, rewarded by rare labels, then balanced picks)"
)
