"""The lead-context store (see `base.py`): a table in the SQLite outbox's file, or keys with
a TTL in the Redis outbox's server, so replicas share it and it survives restarts.

    base.py     the entry, the keyed hashing, the store's queueing and sweeping
    sqlite.py   the table, written by the outbox's own writer thread
    redis.py    hashes with a TTL and an expiry index

What browser events leave behind and what backend events get from it is `ingest/leads.py`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable

from gateway.settings import Settings
from gateway.storage.leads.base import ContextStore, KeyHasher, LeadContext
from gateway.storage.outbox import Outbox, is_redis

log = logging.getLogger(__name__)


def context_key(settings: Settings) -> bytes:
    """The HMAC key: configured, else derived from the cookie secret, else made now."""
    configured = settings.postbacks.context_secrets
    if configured:
        return configured[0].reveal().encode()
    cookie = settings.cookies.secrets
    if cookie:
        return hmac.new(cookie[0].reveal().encode(), b"lead-context", hashlib.sha256).digest()
    return os.urandom(32)


def context_key_shared(settings: Settings) -> bool:
    """Whether another process (an import beside the gateway, a replica) hashes keys as this
    one does: not when the key is made at start."""
    return bool(settings.postbacks.context_secrets or settings.cookies.secrets)


def open_lead_store(
    settings: Settings, outbox: Outbox, *, clock: Callable[[], float] = time.time
) -> ContextStore:
    """The store in the outbox's backend (not yet open)."""
    postbacks = settings.postbacks
    window = postbacks.context_days * 86400.0
    bound = postbacks.context_max_entries
    store: ContextStore
    if is_redis(settings.outbox.url):
        from gateway.storage.leads.redis import RedisContextStore

        store = RedisContextStore(
            settings.outbox.url, ttl_seconds=window, max_entries=bound, clock=clock
        )
    else:
        from gateway.storage.leads.sqlite import SqliteContextStore
        from gateway.storage.outbox.sqlite import SqliteOutbox

        if not isinstance(outbox, SqliteOutbox):
            raise TypeError(f"a SQLite outbox URL with {outbox!r}")
        store = SqliteContextStore(
            lambda: outbox.writer, ttl_seconds=window, max_entries=bound, clock=clock
        )
    return store


__all__ = [
    "ContextStore",
    "KeyHasher",
    "LeadContext",
    "context_key",
    "context_key_shared",
    "open_lead_store",
]
