"""The client's IP address, believing forwarding headers only from trusted proxies.

Every source keys something on the client (the beacon enriches events with it, the rate
limit counts per client), so one resolver serves them all: the socket peer, unless that
peer is a configured trusted proxy — otherwise anyone could claim any IP.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache

from gateway.core.normalize import IpAddress, ip_address

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_FORWARDED_FOR = re.compile(r'for=("[^"]*"|[^;,\s]+)', re.IGNORECASE)


def _hop_ip(hop: str) -> IpAddress | None:
    """One hop of X-Forwarded-For / Forwarded: '1.2.3.4', '1.2.3.4:80', '[2001:db8::1]:443'."""
    hop = hop.strip().strip('"')
    if hop.startswith("["):
        hop = hop[1 : hop.find("]")] if "]" in hop else hop
    elif hop.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has several colons
        hop = hop.split(":", 1)[0]
    address = ip_address(hop)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped  # ::ffff:1.2.3.4 is 1.2.3.4, as for a socket peer
    return address


@lru_cache(maxsize=8192)
def _peer(text: str) -> tuple[IpAddress, str] | None:
    """A socket peer as an address (IPv4-mapped IPv6 unwrapped) and its canonical text."""
    address = ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return (address, str(address)) if address is not None else None


class ClientIpResolver:
    """Finds the client IP, believing forwarding headers only from trusted proxies.

    With `header` set, that one header is believed and nothing else: `x-forwarded-for` or
    `forwarded` as a chain of hops, any other name (e.g. `cf-connecting-ip`) as one address.
    Without it, X-Forwarded-For is read, else Forwarded.
    """

    def __init__(
        self,
        trusted_proxies: Iterable[IpNetwork],
        header: str | None = None,
        *,
        on_invalid_hop: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_invalid_hop` counts hops that are not addresses (skipped, not silently)."""
        self._trusted = tuple(trusted_proxies)
        self._header = header.lower() if header else None
        self._on_invalid_hop = on_invalid_hop

    def _is_trusted(self, address: IpAddress) -> bool:
        return any(address in network for network in self._trusted)

    def resolve(self, peer: str | None, headers: Mapping[str, str]) -> str | None:
        known = _peer(peer) if peer else None
        if known is None:
            return None
        address, text = known
        if not self._trusted or not self._is_trusted(address):
            return text
        if self._header == "forwarded" or (
            self._header is None and "x-forwarded-for" not in headers
        ):
            hops = _FORWARDED_FOR.findall(_every_line(headers, "forwarded"))
        elif self._header in (None, "x-forwarded-for"):
            hops = _every_line(headers, "x-forwarded-for").split(",")
        else:
            named = _hop_ip(_last_line(headers, self._header))
            return str(named) if named is not None else str(address)
        # walk from the nearest hop outwards; the first valid one we do not trust is the
        # client (a hop that is no address is skipped, and counted)
        for hop in reversed(hops):
            hop_address = _hop_ip(hop)
            if hop_address is None:
                self._on_invalid_hop()
                continue
            address = hop_address
            if not self._is_trusted(hop_address):
                break
        return str(address)


def _every_line(headers: Mapping[str, str], name: str) -> str:
    """A header sent on several lines as one list, in order: a proxy that appends adds its
    own line after the client's, so reading only the first would believe the client."""
    getlist = getattr(headers, "getlist", None)
    return ",".join(getlist(name)) if getlist is not None else headers.get(name, "")


def _last_line(headers: Mapping[str, str], name: str) -> str:
    """A one-address header (`cf-connecting-ip`): the line nearest to us, if sent twice."""
    getlist = getattr(headers, "getlist", None)
    lines = getlist(name) if getlist is not None else [headers.get(name, "")]
    return lines[-1] if lines else ""
