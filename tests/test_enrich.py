"""Enrichment rules: whom to believe about the client IP, bots, click ids, locale."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.http.client_ip import ClientIpResolver
from gateway.ingest.sources.beacon.enrich import (
    _host,
    is_bot,
    is_tag_testing,
    locale_from_header,
    resolve_click_id,
)

PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        ("198.51.100.9", {"x-forwarded-for": "203.0.113.7"}, "198.51.100.9"),  # untrusted peer
        ("10.0.0.2", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),
        ("10.0.0.2", {"x-forwarded-for": "1.2.3.4, 203.0.113.7, 10.0.0.9"}, "203.0.113.7"),
        ("10.0.0.2", {"x-forwarded-for": "garbage"}, "10.0.0.2"),
        ("10.0.0.2", {}, "10.0.0.2"),
        ("10.0.0.2", {"forwarded": 'for="[2001:db8::7]:443";proto=https'}, "2001:db8::7"),
        ("10.0.0.2", {"forwarded": "for=203.0.113.8, for=10.0.0.5"}, "203.0.113.8"),
        ("fd00::1", {"x-forwarded-for": "2001:db8::1"}, "2001:db8::1"),
        ("2001:db8::99", {"x-forwarded-for": "203.0.113.7"}, "2001:db8::99"),
    ],
)
def test_forwarding_headers_count_only_from_trusted_proxies(
    peer: str, headers: dict[str, str], expected: str
) -> None:
    assert ClientIpResolver(PROXIES).resolve(peer, headers) == expected


def test_mapped_and_garbage_hops_from_a_trusted_proxy() -> None:
    """::ffff:1.2.3.4 is 1.2.3.4; a hop that is no address is skipped, counted, and the
    nearest valid untrusted hop is the client (it used to be the proxy's own address)."""
    invalid: list[int] = []
    resolver = ClientIpResolver(PROXIES, on_invalid_hop=lambda: invalid.append(1))
    assert resolver.resolve("10.0.0.2", {"x-forwarded-for": "::ffff:203.0.113.7"}) == (
        "203.0.113.7"
    )
    assert resolver.resolve("10.0.0.2", {"x-forwarded-for": "203.0.113.7, garbage"}) == (
        "203.0.113.7"
    )
    assert invalid == [1]


def test_configured_client_ip_header() -> None:
    resolver = ClientIpResolver(PROXIES, "CF-Connecting-IP")
    headers = {"cf-connecting-ip": "203.0.113.50", "x-forwarded-for": "1.1.1.1"}
    assert resolver.resolve("10.1.1.1", headers) == "203.0.113.50"
    assert resolver.resolve("198.51.100.1", headers) == "198.51.100.1"


def test_no_trusted_proxies_means_the_socket_peer() -> None:
    assert ClientIpResolver([]).resolve("127.0.0.1", {"x-forwarded-for": "9.9.9.9"}) == "127.0.0.1"


@pytest.mark.parametrize(
    ("agent", "bot"),
    [
        (CHROME, False),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", True),
        (CHROME.replace("Chrome/", "HeadlessChrome/"), True),
        ("curl/8.4.0", True),
        ("python-requests/2.31.0", True),
        ("", True),
    ],
)
def test_bots(agent: str, bot: bool) -> None:
    assert is_bot(agent) is bot


def test_locale_from_accept_language() -> None:
    assert locale_from_header("de-DE,de;q=0.9,en;q=0.8") == "de-DE"
    assert locale_from_header("*") is None
    assert locale_from_header(None) is None


PAGE = "https://shop.example/p?ttclid=E.C.P.page"


@pytest.mark.parametrize(
    ("page", "referrer", "explicit", "cookie", "expected"),
    [
        (
            PAGE,
            "https://shop.example/?ttclid=E.C.P.ref",
            "E.C.P.x",
            "E.C.P.c",
            ("E.C.P.page", "url"),
        ),
        (
            "https://shop.example/p",
            "https://shop.example/?ttclid=E.C.P.ref",
            "E.C.P.x",
            None,
            ("E.C.P.ref", "referrer"),
        ),
        (
            "https://shop.example/p",
            "https://other.example/?ttclid=E.C.P.ref",
            "E.C.P.x",
            None,
            ("E.C.P.x", "event"),
        ),
        (
            "https://shop.example/p",
            "https://other.example/?ttclid=E.C.P.ref",
            None,
            None,
            (None, "none"),
        ),
        ("https://shop.example/p", None, None, "E.C.P.c", ("E.C.P.c", "cookie")),
        ("https://shop.example/p?ttclid=<script>", None, None, None, (None, "none")),
    ],
)
def test_click_id_precedence(
    page: str,
    referrer: str | None,
    explicit: str | None,
    cookie: str | None,
    expected: tuple[str | None, str],
) -> None:
    assert resolve_click_id(page, referrer, explicit, cookie) == expected


def test_tag_testing_hosts() -> None:
    hosts = ("gtm-msr.appspot.com",)
    assert is_tag_testing("https://gtm-msr.appspot.com/render?id=1", hosts)
    assert is_tag_testing("https://x.gtm-msr.appspot.com/", hosts)
    assert not is_tag_testing("https://shop.example/", hosts)


@pytest.mark.parametrize(
    ("peer", "headers", "header", "expected"),
    [
        ("10.0.0.2", {"x-forwarded-for": "203.0.113.7:5050"}, None, "203.0.113.7"),
        ("10.0.0.2", {"x-forwarded-for": "[2001:db8::5]:443"}, None, "2001:db8::5"),
        ("10.0.0.2", {"forwarded": "for=198.51.100.7:4711"}, None, "198.51.100.7"),
        ("::ffff:10.0.0.2", {"x-forwarded-for": "203.0.113.9"}, None, "203.0.113.9"),
        # the proxy writes Forwarded: a client's own X-Forwarded-For must not win
        (
            "10.0.0.2",
            {"forwarded": "for=198.51.100.8", "x-forwarded-for": "6.6.6.6"},
            "forwarded",
            "198.51.100.8",
        ),
        # a named single-address header missing: the proxy itself, not a fallback to XFF
        ("10.0.0.2", {"x-forwarded-for": "6.6.6.6"}, "cf-connecting-ip", "10.0.0.2"),
    ],
)
def test_forwarding_header_details(
    peer: str, headers: dict[str, str], header: str | None, expected: str
) -> None:
    assert ClientIpResolver(PROXIES, header).resolve(peer, headers) == expected


def test_click_id_in_a_fragment_does_not_hide_the_query() -> None:
    from gateway.ingest.sources.beacon.enrich import click_id_from_url

    assert click_id_from_url("https://s.example/?a=1&ttclid=E.C.P.q#x?ttclid=E.C.P.f") == "E.C.P.q"
    assert click_id_from_url("https://s.example/#?ttclid=E.C.P.f") is None


_SCHEMES = st.sampled_from(["https://", "http://", "ftp://", "", "https:/", "HTTPS://"])
_HOSTS = st.sampled_from(
    [
        "shop.example",
        "A.Example",
        "u@shop.example",
        "shop.example:8080",
        "[::1]",
        "",
        "a_b.c",
        "shop.example.",
        "%41.example",
        "xn--d.e",
    ]
)
_RESTS = st.lists(st.sampled_from(["/", "?", "#", "x", "\n", " ", "ttclid=1", "@", ":"]),
                  max_size=4).map("".join)  # fmt: skip


@given(st.tuples(_SCHEMES, _HOSTS, _RESTS).map("".join))
def test_the_page_host_is_the_one_urlsplit_finds(url: str) -> None:
    """The host is found without urlsplit for plain URLs: the same answer for any URL."""
    try:
        expected = urlsplit(url).hostname
    except ValueError:
        expected = None
    assert _host(url) == (expected or None)
