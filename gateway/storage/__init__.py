"""Storage: where the gateway keeps what it must not lose or must share between replicas.

One backend (`backend.py`), chosen by `[outbox] url` (a SQLite file or a Redis server), owns
every connection and hands out the outbox, the lead store, the postback log, the console's
revoked sessions and, with Redis, what the rate limits, the per-minute counts and the
console share.
"""
