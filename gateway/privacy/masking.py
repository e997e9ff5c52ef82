"""What an operator may see of an event: digests, click ids and the IP shortened.

Enough to compare two rows, not to look anything up: digests and click ids keep their first
characters, the IP loses its host part, URLs keep no query values. The console, the
replicas' feed and every answer that shows context back use these, and nothing else.
"""

from __future__ import annotations

import ipaddress
from typing import Any

_DIGEST_KEYS = frozenset({"email", "phone", "external_id", "first_name", "last_name", "zip_code"})
_TOKEN_KEYS = frozenset({"ttclid", "ttp"})
_URL_KEYS = frozenset({"url", "referrer"})


def short(value: str, keep: int = 10) -> str:
    return value if len(value) <= keep + 2 else f"{value[:keep]}…"


def masked_ip(ip: str) -> str:
    """The network, not the host: 203.0.113.x (the /24), 2001:db8:0:1:… (the /64).

    Parsed, not cut from the text: a compressed IPv6 address (`2001:db8::5`) has fewer
    than four groups before its host part, and an IPv4-mapped one is an IPv4 host. What is
    not an address (or is masked already: a page shows what another replica masked) is
    never shown as it came."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip if ip.endswith((".x", ":…")) and "::" not in ip else "…"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return ".".join(str(address).split(".")[:3]) + ".x"
    groups = address.exploded.split(":")[:4]
    return ":".join(g.lstrip("0") or "0" for g in groups) + ":…"


def shown_url(url: str) -> str:
    """A page URL with each query value shortened like a click id (a `ttclid` rides in the
    landing page's query) and no fragment: where the visitor was, not who they are."""
    base, _, query = url.partition("#")[0].partition("?")
    if not query:
        return base
    parts = []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        parts.append(f"{name}{eq}{short(value, 14)}")
    return f"{base}?{'&'.join(parts)}"


def shown_element(element: dict[str, Any]) -> dict[str, Any]:
    """One `data` element as the page shows it: digests, click ids and the IP shortened,
    URLs without their query values. What another replica publishes for its page is this
    too (`replicas.py`), so nothing crosses Redis that the page would not show."""
    shown = dict(element)
    if "user" in shown:
        shown["user"] = shown_user(shown["user"])
    page = shown.get("page")
    if page:
        shown["page"] = {
            k: shown_url(v) if k in _URL_KEYS and isinstance(v, str) else v for k, v in page.items()
        }
    ad = shown.get("ad")
    if isinstance(ad, dict) and isinstance(ad.get("callback"), str):
        shown["ad"] = {**ad, "callback": short(ad["callback"], 14)}
    return shown


def shown_user(user: dict[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for key, value in user.items():
        if key in _DIGEST_KEYS:
            values = value if isinstance(value, list) else [value]
            shown[key] = [short(str(v)) for v in values]
        elif key in _TOKEN_KEYS:
            shown[key] = short(str(value), 14)
        elif key == "ip":
            shown[key] = masked_ip(str(value))
        else:
            shown[key] = value
    return shown
