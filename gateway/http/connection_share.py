"""Each client address's share of the open connections, so one address cannot take them all.

An address at its share (`max_connections_per_client`) is refused its next connection. When
every connection is taken, the address holding the most gives up its oldest one to a
newcomer that holds fewer; only a newcomer from the heaviest address is refused. Trusted
proxies speak for many clients and have no share. Refusals are counted (a metric) and
logged at most once per `LOG_EVERY` seconds. Why: docs/design/connection-limits.md.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from typing import Protocol

log = logging.getLogger("gateway.http.connections")
LOG_EVERY = 10.0
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Connection(Hashable, Protocol):
    def evict(self) -> None:
        """Close this connection to make room for another client's."""


class ConnectionShares:
    """Open connections by client address; `admit` decides, `leave` forgets."""

    def __init__(
        self,
        *,
        max_connections: int,
        per_client: int,
        exempt: Iterable[Network] = (),
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.per_client = min(per_client, max_connections)
        self._exempt = tuple(exempt)
        self._exempt_seen: dict[str, bool] = {}
        self._on_refused = on_refused
        self._open: dict[str, dict[Connection, None]] = {}  # oldest first
        self._address: dict[Connection, str] = {}
        self.refused: Counter[str] = Counter()
        self._unlogged: Counter[str] = Counter()
        self._log_after = 0.0

    def admit(self, connection: Connection, address: str, total: int, now: float) -> str | None:
        """None: admitted (maybe at another's expense); else why it is refused."""
        mine = self._open.get(address)
        held = len(mine) if mine else 0
        exempt = self._is_exempt(address)
        if held >= self.per_client and not exempt:
            return self._refuse("per_client", address, now)
        if total > self.max_connections and not self._evict_for(held, address, now):
            return self._refuse("full", address, now)
        if mine is None:
            mine = self._open[address] = {}
        mine[connection] = None
        self._address[connection] = address
        return None

    def leave(self, connection: Connection) -> None:
        address = self._address.pop(connection, None)
        if address is None:
            return
        mine = self._open[address]
        mine.pop(connection, None)
        if not mine:
            del self._open[address]

    def held_by(self, address: str) -> int:
        return len(self._open.get(address, ()))

    def _evict_for(self, held: int, newcomer: str, now: float) -> bool:
        """Close the oldest connection of the heaviest address, if it holds more than `held` + 1."""
        candidates = [(len(c), a) for a, c in self._open.items() if not self._is_exempt(a)]
        if not candidates:
            return False
        most, address = max(candidates)
        if address == newcomer or most <= held + 1:
            return False
        victim = next(iter(self._open[address]))
        self.leave(victim)
        self._refuse("evicted", address, now)
        victim.evict()
        return True

    def _is_exempt(self, address: str) -> bool:
        if not self._exempt:
            return False
        known = self._exempt_seen.get(address)
        if known is None:
            if len(self._exempt_seen) > 4096:
                self._exempt_seen.clear()
            try:
                ip = ipaddress.ip_address(address)
                known = any(ip in network for network in self._exempt)
            except ValueError:
                known = False
            self._exempt_seen[address] = known
        return known

    def _refuse(self, reason: str, address: str, now: float) -> str:
        self.refused[reason] += 1
        self._unlogged[reason] += 1
        if self._on_refused is not None:
            self._on_refused(reason)
        if now >= self._log_after:
            counts = ", ".join(f"{n} {why}" for why, n in sorted(self._unlogged.items()))
            log.warning(
                "connections refused since the last such line: %s (the latest from %s, "
                "which holds %d; %d addresses hold connections)",
                counts,
                address,
                self.held_by(address),
                len(self._open),
            )
            self._unlogged.clear()
            self._log_after = now + LOG_EVERY
        return reason
