"""Durable storage of events between acknowledgement and delivery.

Two implementations of one contract (`base.py`): `sqlite.py` (the embedded default, one
process per file) and `redis.py` (several replicas sharing one stream). Which one a URL
names, and the connection it runs on, is the storage backend's choice (`storage/backend.py`).
"""

from __future__ import annotations

from gateway.core.errors import OutboxUnavailable
from gateway.storage.outbox.base import (
    Backlog,
    Claimed,
    ClaimedBatch,
    DeadLetter,
    Outbox,
    OutboxCounts,
    PixelCounts,
    Prepared,
)

__all__ = [
    "Backlog",
    "Claimed",
    "ClaimedBatch",
    "DeadLetter",
    "Outbox",
    "OutboxCounts",
    "OutboxUnavailable",
    "PixelCounts",
    "Prepared",
]
