"""What only the server sees: the user agent, the click id, the locale (the client IP is
resolved by `http/client_ip.py`, which every source shares).

User-agent parsing costs about a millisecond, so its verdict is cached.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import unquote_plus, urlsplit

import crawleruseragents
import user_agents
from crawlerdetect import CrawlerDetect

_MAX_USER_AGENT = 1024
_LOCALE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_CLICK_ID = re.compile(r"[A-Za-z0-9._~-]{1,512}")
_HEADLESS = re.compile(r"headless|phantomjs", re.IGNORECASE)
_NOT_A_BROWSER = re.compile(
    r"bot\b|spider|crawl|slurp|lighthouse|pagespeed|gtmetrix|"
    r"^curl/|^wget/|python-|^go-http-client|^java/|^okhttp|^axios/|^node-fetch|^httpx",
    re.IGNORECASE,
)
BOT_RULES = (
    "user agent missing or oversized",
    "headless",
    "crawler pattern",
    "crawler-user-agents list",
    "ua-parser",
)
"""Which check of `bot_rule` caught a user agent, cheapest first (what the console shows)."""


_CRAWLER_DETECT = CrawlerDetect()


def is_bot(user_agent: str) -> bool:
    """Crawlers, headless browsers and HTTP libraries: not a person, not a conversion."""
    return bot_rule(user_agent) is not None


@lru_cache(maxsize=4096)
def bot_rule(user_agent: str) -> str | None:
    """Which rule of `BOT_RULES` finds `user_agent` not a person's browser, or None.

    Cheapest first: our own short patterns (headless browsers, then crawlers and HTTP
    libraries, with CrawlerDetect's patterns), then the crawler-user-agents list, then
    ua-parser's device family. ua-parser alone missed a third of a published crawler list;
    together they miss none of it and flag no browser of a published sample
    (tests/test_bots.py). A few hundred microseconds for a new user agent, nothing for one
    seen before: the verdict is cached.
    """
    if not 10 <= len(user_agent) <= _MAX_USER_AGENT:
        return BOT_RULES[0]  # no real browser sends none, or kilobytes (parsing those is slow)
    if _HEADLESS.search(user_agent):
        return BOT_RULES[1]
    if _NOT_A_BROWSER.search(user_agent) or _CRAWLER_DETECT.isCrawler(user_agent):
        return BOT_RULES[2]
    if crawleruseragents.is_crawler(user_agent):
        return BOT_RULES[3]
    return BOT_RULES[4] if user_agents.parse(user_agent).is_bot else None


@lru_cache(maxsize=1024)
def locale_from_header(accept_language: str | None) -> str | None:
    """The first language tag of Accept-Language, e.g. 'en-US' (cached: a visitor sends the
    same header with every beacon, and so do most visitors of a site)."""
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


_PLAIN_HOST = re.compile(r"https?://([a-z0-9.-]+)(?:[/?#]|\Z)")
"""The host of a URL as most pages carry it: no userinfo, port, upper case or escapes to
undo (one match in C; anything else goes through `urlsplit`)."""


def _host(url: str | None) -> str | None:
    """The URL's host, as `urlsplit(url).hostname` finds it (None when it has none)."""
    if not url:
        return None
    plain = _PLAIN_HOST.match(url)
    if plain is not None:  # the common URL without urlsplit, which costs a few microseconds
        return plain.group(1)
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
    return _tag_testing_host(host, hosts if isinstance(hosts, tuple) else tuple(hosts))


@lru_cache(maxsize=4096)
def _tag_testing_host(host: str, hosts: tuple[str, ...]) -> bool:
    """Cached: a site's pages have a handful of hosts, and every beacon names one."""
    return any(host == h or host.endswith("." + h) for h in hosts)
