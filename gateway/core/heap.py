"""The cyclic garbage collector, set for processes that run long and allocate fast.

`settle_heap` collects once and freezes what is loaded (`gc.freeze`): start-up objects never
become garbage, so full collections stop walking them. `for_serving` also raises the young
generation's threshold (`SERVING_THRESHOLD`), since a request frees what it allocates;
reference cycles are still collected. What is frozen is never collected, so a reload leaves
at most one dropped configuration behind. Measurements: docs/design/heap.md.
"""

from __future__ import annotations

import gc

SERVING_THRESHOLD = 10_000
"""Net new container objects between young collections (CPython's default: 700)."""


def settle_heap() -> None:
    """Move what is loaded now out of the collector's sight (a start-up's garbage first)."""
    gc.collect()
    gc.freeze()


def for_serving() -> None:
    """Once a server process has loaded what it serves with: freeze it, collect seldom."""
    settle_heap()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(SERVING_THRESHOLD, older, oldest)
