"""What only the server sees: the client IP, the user agent, the click id, the locale.

The client IP is the socket peer unless that peer is a configured trusted proxy; only then
are X-Forwarded-For, Forwarded or a configured header believed — otherwise anyone could
claim any IP. User-agent parsing costs about a millisecond, so its verdict is cached.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from urllib.parse import unquote_plus, urlsplit

import crawleruseragents
import user_agents
from crawlerdetect import CrawlerDetect

from gateway.core.normalize import IpAddress, ip_address

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_FORWARDED_FOR = re.compile(r'for=("[^"]*"|[^;,\s]+)', re.IGNORECASE)
_MAX_USER_AGENT = 1024
_LOCALE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_CLICK_ID = re.compile(r"[A-Za-z0-9._~-]{1,512}")
_NOT_A_BROWSER = re.compile(
    r"headless|phantomjs|bot\b|spider|crawl|slurp|lighthouse|pagespeed|gtmetrix|"
    r"^curl/|^wget/|python-|^go-http-client|^java/|^okhttp|^axios/|^node-fetch|^httpx",
    re.IGNORECASE,
)


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
            hops = _FORWARDED_FOR.findall(headers.get("forwarded", ""))
        elif self._header in (None, "x-forwarded-for"):
            hops = headers.get("x-forwarded-for", "").split(",")
        else:
            named = _hop_ip(headers.get(self._header, ""))
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


_CRAWLER_DETECT = CrawlerDetect()


@lru_cache(maxsize=4096)
def is_bot(user_agent: str) -> bool:
    """Crawlers, headless browsers and HTTP libraries: not a person, not a conversion.

    Cheapest first: our own short pattern, then two maintained crawler lists (CrawlerDetect's
    patterns; the crawler-user-agents list), then ua-parser's device family. ua-parser alone
    missed a third of a published crawler list; together they miss none of it and flag no
    browser of a published sample (tests/test_bots.py). A few hundred microseconds for a new
    user agent, nothing for one seen before: the verdict is cached.
    """
    if not 10 <= len(user_agent) <= _MAX_USER_AGENT or _NOT_A_BROWSER.search(user_agent):
        return True  # no real browser sends none, or kilobytes (and parsing those is slow)
    if _CRAWLER_DETECT.isCrawler(user_agent) or crawleruseragents.is_crawler(user_agent):
        return True
    return bool(user_agents.parse(user_agent).is_bot)


def locale_from_header(accept_language: str | None) -> str | None:
    """The first language tag of Accept-Language, e.g. 'en-US'."""
    if not accept_language:
        return None
    first = accept_language.split(",", 1)[0].split(";", 1)[0].strip()
    return first if _LOCALE.fullmatch(first) else None


def click_id_from_url(url: str | None) -> str | None:
    if not url:
        return None
    url = url.split("#", 1)[0]  # a fragment is not part of the query
    start = url.find("?ttclid=")
    if start < 0:
        start = url.find("&ttclid=")
    if start < 0:
        return None
    start += len("?ttclid=")
    end = url.find("&", start)
    value = url[start:] if end < 0 else url[start:end]
    return valid_token(unquote_plus(value) if "%" in value or "+" in value else value)


def valid_token(value: object) -> str | None:
    return value if isinstance(value, str) and _CLICK_ID.fullmatch(value) else None


def _host(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def resolve_click_id(
    page_url: str | None, referrer: str | None, explicit: object, cookie: str | None
) -> tuple[str | None, str]:
    """ttclid by the spec's precedence; returns (value, where it came from).

    Page URL → same-host referrer → explicit field → cookie. A referrer on another host is
    never used: it would credit a click the visitor made on someone else's site.
    """
    from_page = click_id_from_url(page_url)
    if from_page:
        return from_page, "url"
    if referrer and _host(referrer) == _host(page_url):
        from_referrer = click_id_from_url(referrer)
        if from_referrer:
            return from_referrer, "referrer"
    given = valid_token(explicit)
    if given:
        return given, "event"
    if cookie and valid_token(cookie):
        return cookie, "cookie"
    return None, "none"


def is_tag_testing(page_url: str | None, hosts: Iterable[str]) -> bool:
    host = _host(page_url)
    if not host:
        return False
    return any(host == h or host.endswith("." + h) for h in hosts)
