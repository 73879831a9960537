"""The C allocator's settings for CPU training and scoring, set once per process at start.

glibc's ``malloc`` serves a block above a threshold (128 KiB at first, raised as blocks are
freed, to 32 MiB at most) with a fresh ``mmap``, gives it back on ``free``, and trims the
heap's free top past twice that threshold. Scoring at a batch of 1,024 (the architecture's
choice each epoch, the steal's selection) makes activations of 100-270 MB, so every batch
faulted its memory in anew, page by page: ``make demo`` on 2 cores spent 201 s in the kernel
(19 s with the settings), and scoring ran 1.8-2.3x slower than with the memory kept
(``python benchmarks/allocator.py``). :func:`tune_allocator` raises both thresholds, so freed
blocks stay in the heap for the next batch. It changes where memory comes from, never a
computed value: runs give the same answers and copies to the last digit. The cost is memory:
a process keeps up to :data:`TRIM_THRESHOLD` of freed heap instead of returning it (a steal
of 5,000 queries peaked 0.3-0.6 GB higher).

The CLI and the benchmark scripts call it at start; a program using the library calls it
itself if it wants the speed. ``COPYCAT_MALLOC_TUNING=off`` turns it off, and glibc's own
settings (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``) are left
to win. Elsewhere (musl, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

log = logging.getLogger(__name__)

# Blocks up to this size come from the heap and are reused (above the largest activation of
# the suite's models at a scoring batch of 1,024; larger ones, such as a decoded pool, are
# still mapped and returned at once).
MMAP_THRESHOLD = 512 << 20
# The heap's free top is returned to the system past this size.
TRIM_THRESHOLD = 1 << 30

ENV_SWITCH = "COPYCAT_MALLOC_TUNING"
_GLIBC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
# mallopt's parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def tune_allocator() -> str:
    """Raise glibc's mmap and trim thresholds for this process (once; later calls return the
    first's outcome). Returns what was done, for a log or a table: ``"tuned"``, or why not
    (``"off"``, ``"glibc settings from the environment"``, ``"not glibc"``, ``"refused"``)."""
    outcome = _tune()
    log.debug("C allocator: %s", outcome)
    return outcome


def _tune() -> str:
    if os.environ.get(ENV_SWITCH, "").strip().lower() in ("0", "off", "no", "false"):
        return "off"
    if any(os.environ.get(name) for name in _GLIBC_ENV):
        return "glibc settings from the environment"
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        glibc = None
    if not glibc:
        return "not glibc"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    except (OSError, AttributeError):
        return "not glibc"
    return "tuned" if ok else "refused"
