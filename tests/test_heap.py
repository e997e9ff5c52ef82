"""A serving process freezes its start-up heap and collects young objects seldom; garbage in
reference cycles is still collected."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc, weakref
from gateway.core import heap

class Node:
    pass

loaded = [Node() for _ in range(1000)]  # what a process loads at start
heap.for_serving()
assert gc.get_freeze_count() >= 1000, gc.get_freeze_count()
assert gc.get_threshold()[0] == heap.SERVING_THRESHOLD

# cycles made while serving: collected once enough new objects have piled up
node = Node()
node.me = node
gone = weakref.ref(node)
del node
kept = []
for _ in range(2 * heap.SERVING_THRESHOLD):
    kept.append([])
    if gone() is None:
        break
assert gone() is None, "a cycle outlived the threshold"
print("ok")
"""


def test_for_serving_freezes_and_still_collects_cycles() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
