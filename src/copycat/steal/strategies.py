"""Builders of the ``--selection`` strategies listed in :mod:`copycat.steal.registry`.

Strategies that need an interim copycat all start with the random seed share of the budget
(``seed_fraction``); each builder fixes how many candidates it scores and how often it refits
(``steal.refits`` overrides the latter).
"""

from __future__ import annotations

from typing import Any

from copycat.steal.registry import SELECTIONS
from copycat.steal.selection import BalancedSelector, InterimSelector
from copycat.steal.synthesis import ActiveSelector, JacobianSelector, MixupSelector


def build_random(**_: Any) -> None:
    return None


def build_balanced(**kw: Any) -> InterimSelector:
    return BalancedSelector(**kw)


def build_wide(**kw: Any) -> InterimSelector:
    # candidates are free: score 4x more of them, and refit often (warm, so refits stay cheap)
    return BalancedSelector(oversample=20, refits=6, warm=True, **kw)


def build_active(**kw: Any) -> InterimSelector:
    return ActiveSelector(refits=4, warm=True, **kw)


def build_jacobian(**kw: Any) -> InterimSelector:
    # 8 refits, not 4: ahead on Fashion-MNIST and emoji at 5,000 and 20,000 queries, a little
    # behind on digits at both (docs/suite.md, "More frequent refits")
    return JacobianSelector(refits=8, warm=True, **kw)


def build_boundary(**kw: Any) -> InterimSelector:
    return JacobianSelector(refits=4, warm=True, toward="boundary", **kw)


def build_mixup(**kw: Any) -> InterimSelector:
    return MixupSelector(refits=4, warm=True, **kw)


def build_adaptive(**kw: Any) -> InterimSelector:
    from copycat.steal.adaptive import AdaptiveSelector

    return AdaptiveSelector(**kw)


def build_selector(name: str, **kw: Any) -> InterimSelector | None:
    """The selector of strategy ``name``; an unknown name is refused with the list."""
    selector: InterimSelector | None = SELECTIONS.get(name)(**kw)
    return selector
