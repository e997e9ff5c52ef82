"""The lead-context store (see `base.py`): a table in the SQLite outbox's file, or keys with
a TTL in the Redis outbox's server, so replicas share it and it survives restarts. The
storage backend (`storage/backend.py`) builds the one its URL names.

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

from gateway.settings import Settings
from gateway.storage.leads.base import ContextStore, KeyHasher, LeadContext

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


__all__ = [
    "ContextStore",
    "KeyHasher",
    "LeadContext",
    "context_key",
    "context_key_shared",
]
