"""The cyclic garbage collector, set for processes that run long and allocate fast.

CPython's defaults suit short scripts. Under a flood of beacons the serving process spent
about 5 % of its CPU in full collections (measured: ~13 every 8 s, ~35 ms each, a pause
every time), and each walked everything loaded at start — modules, the phone-number
metadata, the app — although none of it ever becomes garbage. And a young collection ran
every 700 net new container objects, ~200 a second, each walking the requests in flight.

`settle_heap` collects once and freezes what is loaded (`gc.freeze`: it leaves the
collector's sight; refcounting still frees it). `for_serving` also raises the young
generation's threshold: a request leaves almost nothing behind (what it allocates it
frees), so the net growth that triggers a collection then comes rarely. Garbage in
reference cycles still is collected: a young cycle once `SERVING_THRESHOLD` new objects
have piled up, an older one at the older generations' (unchanged) pace.

What is frozen is never collected: a reference cycle in the start-up configuration that a
reload (SIGHUP) drops stays in memory — once per reload at most, and settings are trees.
Measured on CPython 3.11 (3.13 and later collect differently; the freeze still holds).
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
