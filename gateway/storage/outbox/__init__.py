"""Durable storage of events between acknowledgement and delivery.

`open_outbox(url)` picks the backend by URL scheme: `sqlite:///path` (embedded default, one
process per file) or `redis://host:port/db` (several replicas sharing one stream). Backends
are imported lazily so the embedded default never needs a Redis client installed.
"""

from __future__ import annotations

from gateway.core.errors import OutboxUnavailable
from gateway.settings import OutboxSettings
from gateway.storage.outbox.base import (
    Backlog,
    Claimed,
    DeadLetter,
    Outbox,
    OutboxCounts,
    PixelCounts,
    Prepared,
)


def open_outbox(
    settings: OutboxSettings, *, owner: bool = True, consumer: str | None = None
) -> Outbox:
    """Build (not yet open) the outbox its URL names.

    `owner=False` is for processes beside the gateway that owns the outbox: operator commands
    and the delivery process. They neither take the owner's lock nor release its leases.
    `consumer` names a Redis consumer that outlives one process (see RedisOutbox).
    """
    url = settings.url
    if is_redis(url):
        from gateway.storage.outbox.redis import RedisOutbox

        return RedisOutbox(url, lease_seconds=settings.lease_seconds, consumer=consumer)
    from gateway.storage.outbox.sqlite import SqliteOutbox

    return SqliteOutbox(
        sqlite_path(url),
        synchronous=settings.sqlite_synchronous,
        lease_seconds=settings.lease_seconds,
        exclusive=owner,
    )


def is_redis(url: str) -> bool:
    """Whether the outbox URL names a Redis server (which replicas share)."""
    return url.startswith(("redis://", "rediss://", "unix://"))


def sqlite_path(url: str) -> str:
    """`sqlite:///rel/path`, `sqlite:////abs/path` or a plain path → a file path."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///") :]
    if url.startswith("sqlite:"):
        return url[len("sqlite:") :]
    return url


__all__ = [
    "Backlog",
    "Claimed",
    "DeadLetter",
    "Outbox",
    "OutboxCounts",
    "OutboxUnavailable",
    "PixelCounts",
    "Prepared",
    "is_redis",
    "open_outbox",
    "sqlite_path",
]
