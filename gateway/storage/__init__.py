"""Storage: where the gateway keeps what it must not lose or must share between replicas.

One backend, chosen by `[outbox] url` (a SQLite file or a Redis server), holds the outbox,
the lead store and the postback log.
"""
