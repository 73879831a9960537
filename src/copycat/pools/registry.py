"""The pool registry: every scheme a ``--pool`` part may use, listed once.

Builders take ``(arg, *, shape, max_pixels)``: ``arg`` is what follows ``scheme:`` (empty for
schemes without one) and ``shape`` the oracle's (C, H, W).
"""

from __future__ import annotations

from copycat.registry import Registry

POOLS = Registry("pool scheme")
POOLS.add(
    "npd",
    "copycat.pools.sources:build_npd",
    usage="npd[:sets=SET,...;exclude=WORD,...;background=black|white]",
)
POOLS.add("folder", "copycat.pools.sources:build_folder", usage="folder:PATH")
POOLS.add("pd", "copycat.pools.sources:build_pd", usage="pd:NAME")
POOLS.add("noise", "copycat.pools.sources:build_noise", usage="noise")
