"""The lead-context store (see `base.py`): a table in the SQLite outbox's file, or keys with
a TTL in the Redis outbox's server, so replicas share it and it survives restarts.

    base.py     the entry, the keyed hashing, the store's queueing and sweeping
    sqlite.py   the table, written by the outbox's own writer thread
    redis.py    hashes with a TTL and an expiry index
    lead.py     what browser events leave behind; what backend events get from it
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable

from gateway.context.base import ContextStore, KeyHasher, LeadContext
from gateway.context.lead import Filled, LeadMemory, with_url
from gateway.outbox import Outbox, is_redis
from gateway.settings import Settings

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


def lead_memory(
    settings: Settings, outbox: Outbox, *, clock: Callable[[], float] = time.time
) -> LeadMemory:
    """The store in the outbox's backend (not yet open), and how events use it."""
    postbacks = settings.postbacks
    window = postbacks.context_days * 86400.0
    bound = postbacks.context_max_entries
    store: ContextStore
    if is_redis(settings.outbox.url):
        from gateway.context.redis import RedisContextStore

        store = RedisContextStore(
            settings.outbox.url, ttl_seconds=window, max_entries=bound, clock=clock
        )
    else:
        from gateway.context.sqlite import SqliteContextStore
        from gateway.outbox.sqlite import SqliteOutbox

        if not isinstance(outbox, SqliteOutbox):
            raise TypeError(f"a SQLite outbox URL with {outbox!r}")
        store = SqliteContextStore(
            lambda: outbox.writer, ttl_seconds=window, max_entries=bound, clock=clock
        )
    hasher = KeyHasher(context_key(settings))
    return LeadMemory(store, hasher, keys=postbacks.context_keys, window_seconds=window)


__all__ = [
    "ContextStore",
    "Filled",
    "KeyHasher",
    "LeadContext",
    "LeadMemory",
    "context_key_shared",
    "lead_memory",
    "with_url",
]
