"""How many connections the process can hold: `max_connections`, lowered to the open-files limit.

Each connection is a file descriptor; past the soft `RLIMIT_NOFILE` the server can accept no
one, not even to refuse them. The bound keeps `RESERVED` descriptors for everything else the
process opens (listeners, the outbox, Redis, the delivery process, logs, imports), and says
so when it lowers the configured figure. Why: docs/design/connection-limits.md.
"""

from __future__ import annotations

import resource

RESERVED = 64
"""Descriptors left for what is not a client connection (half the limit when it is tiny)."""


def open_files_limit() -> int | None:
    """The soft limit on open files, or None when there is none."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def connection_bound(max_connections: int, limit: int | None = None) -> tuple[int, str | None]:
    """The connections to allow, and a warning when the open-files limit lowered them."""
    limit = open_files_limit() if limit is None else limit
    if limit is None:
        return max_connections, None
    room = max(1, limit - RESERVED if limit > 2 * RESERVED else limit // 2)
    if room >= max_connections:
        return max_connections, None
    return room, (
        f"[server] max_connections = {max_connections}, but the open-files limit "
        f"(ulimit -n) is {limit}: at most {room} connections are accepted (raise the "
        "limit, e.g. LimitNOFILE= or ulimit -n, to accept more)"
    )
