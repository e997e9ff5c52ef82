"""The heap, set for processes that run long and allocate fast.

`settle_heap` collects once and freezes what is loaded (`gc.freeze`): start-up objects never
become garbage, so full collections stop walking them. `for_serving` also raises the young
generation's threshold (`SERVING_THRESHOLD`), since a request frees what it allocates;
reference cycles are still collected. What is frozen is never collected, so a reload leaves
at most one dropped configuration behind. It also fixes glibc's mmap threshold, so large
buffers go back to the system when freed; `give_back` returns the free pages inside the
heaps. Measurements: docs/design/heap.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc

SERVING_THRESHOLD = 10_000
"""Net new container objects between young collections (CPython's default: 700)."""
MMAP_THRESHOLD = 128 * 1024
"""Allocations from this size on get pages of their own, returned when freed (glibc's
default, which it otherwise raises to the largest block freed so far, up to 32 MiB)."""
_M_MMAP_THRESHOLD = -3  # mallopt's parameter, glibc's malloc.h
GIVE_BACK_SECONDS = 5.0
"""How often a long-running process with a bursty heap (the delivery process) calls
`give_back`: each call costs well under a millisecond."""


def settle_heap() -> None:
    """Move what is loaded now out of the collector's sight (a start-up's garbage first)."""
    gc.collect()
    gc.freeze()


def for_serving() -> None:
    """Once a server process has loaded what it serves with: freeze it, collect seldom."""
    settle_heap()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(SERVING_THRESHOLD, older, oldest)
    _fix_mmap_threshold()


def _fix_mmap_threshold() -> None:
    """Keep glibc from raising its mmap threshold: once a 2 MB buffer (a claim's column, a
    request body) was freed, the next ones came from the main heap, which fragments and does
    not shrink — 8–15 MB of growth through a million events. Not glibc: nothing to do."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)  # the process's libc


def give_back() -> None:
    """Return the whole free pages inside glibc's heaps to the system (`malloc_trim`): pages
    freed after a burst (SQLite's page cache, a claim's columns) otherwise stay resident
    wherever a live block sits above them. Not glibc: nothing to do."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None).malloc_trim(0)
