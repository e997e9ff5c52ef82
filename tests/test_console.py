"""The console over HTTP: off without a password, login, session, CSRF, CSP, live stream."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from itsdangerous import URLSafeTimedSerializer

from gateway.fake_api import FakeEventsApi, Fault
from tests.conftest import PIXEL, TOKEN, GatewayServer

PASSWORD = "console-password-0123"
API_KEY = "server-key-0123456789"
RAW_EMAIL = "alice_abc@gmail.com"


@pytest.fixture
def make_console(
    serve_gateway: Callable[..., GatewayServer],
) -> Iterator[Callable[..., httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(**toml: Any) -> httpx.Client:
        toml.setdefault("console", {"admin_password": PASSWORD})
        toml.setdefault("server_api", {"api_keys": [API_KEY]})
        server = serve_gateway(**toml)
        client = httpx.Client(base_url=server.url, timeout=10)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def console(make_console: Callable[..., httpx.Client]) -> httpx.Client:
    return make_console()


def log_in(client: httpx.Client) -> str:
    """Logs in; returns the page's CSRF token."""
    answer = client.post("/console/login", data={"password": PASSWORD})
    assert answer.status_code == 303
    page = client.get("/console")
    found = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page.text)
    assert found, page.text
    return found.group(1)


def test_no_admin_password_no_console(make_console: Callable[..., httpx.Client]) -> None:
    client = make_console(console={})
    for path in ("/console", "/console/stream", "/console/assets/console.js"):
        assert client.get(path).status_code == 404
    assert client.post("/console/login", data={"password": "x"}).status_code == 404


def test_login_sets_a_strict_httponly_session_cookie(console: httpx.Client) -> None:
    first = console.get("/console")
    assert first.status_code == 200 and 'name="password"' in first.text
    answer = console.post("/console/login", data={"password": PASSWORD})
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("ttgw_console=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    page = console.get("/console")
    assert 'id="events"' in page.text


def test_wrong_password_is_401_then_rate_limited(console: httpx.Client) -> None:
    statuses = [
        console.post("/console/login", data={"password": "wrong"}).status_code for _ in range(6)
    ]
    assert statuses == [401] * 5 + [429]
    refused = console.post("/console/login", data={"password": PASSWORD})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "ttgw_console" not in refused.headers.get("set-cookie", "")


def test_actions_need_their_csrf_token(console: httpx.Client) -> None:
    csrf = log_in(console)
    for path in ("/console/replay", "/console/send-test"):
        assert console.post(path, json={}).status_code == 403
        assert console.post(path, json={}, headers={"X-CSRF-Token": "0" * 64}).status_code == 403
    answer = console.post("/console/replay", json={}, headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 200 and answer.json() == {"replayed": 0}


def test_a_cookie_signed_with_another_key_gets_the_login_page(console: httpx.Client) -> None:
    forged = URLSafeTimedSerializer("another-key", salt="console-session").dumps({"sid": "x"})
    console.cookies.set("ttgw_console", forged)
    page = console.get("/console")
    assert page.status_code == 200 and 'name="password"' in page.text
    assert 'id="events"' not in page.text
    assert console.get("/console/dead-letters").status_code == 401
    assert console.get("/console/stream").status_code == 401


def test_strict_csp_and_no_inline_script(console: httpx.Client) -> None:
    log_in(console)
    page = console.get("/console")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert re.search(r"<script(?![^>]*\bsrc=)", page.text) is None
    assert " style=" not in page.text
    script = console.get("/console/assets/console.js")
    assert script.status_code == 200 and "EventSource" in script.text
    assert console.get("/console/assets/../gw.js").status_code == 404


def _stream_until(
    client: httpx.Client,
    done: Callable[[dict[str, Any]], bool],
    *,
    when_watching: Callable[[], object] = lambda: None,
) -> list[Any]:
    """Reads the live stream until a row satisfies `done`; returns every row read.
    `when_watching` runs once the console listens (what it causes is new to the stream)."""
    rows: list[Any] = []
    with client.stream("GET", "/console/stream", timeout=15) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line == ": watching":
                when_watching()
            elif line.startswith("data: "):
                rows.append(orjson.loads(line[6:]))
                if done(rows[-1]):
                    return rows
    raise AssertionError("the stream ended")


def test_live_stream_shows_keys_score_and_tiktoks_answer(
    console: httpx.Client, fake_api: FakeEventsApi
) -> None:
    log_in(console)
    event = {
        "event": "Purchase",
        "event_id": "live-1",
        "page": {"url": "https://shop.example/"},
        "user": {"email": RAW_EMAIL, "ttclid": "E.C.P.abc", "ip": "203.0.113.9"},
    }

    def send() -> None:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        assert console.post("/v1/events", json=event, headers=headers).status_code == 202

    rows = _stream_until(
        console,
        lambda r: r["event_id"] == "live-1" and r["state"] == "delivered",
        when_watching=send,
    )
    accepted = next(r for r in rows if r["event_id"] == "live-1")
    assert accepted["keys"] == ["ttclid", "email"]
    assert accepted["score"] == 5
    assert accepted["source"] == "server"
    delivered = rows[-1]
    assert delivered["steps"][-1]["code"] == 0
    assert delivered["steps"][-1]["request_id"]

    shown = console.get(
        "/console/event", params={"pixel": PIXEL, "event": "Purchase", "id": "live-1"}
    )
    assert shown.status_code == 200
    detail = shown.json()
    assert detail["request"]["event_source_id"] == PIXEL
    assert detail["request"]["data"][0]["user"]["ip"] == "203.0.113.x"
    assert detail["response"]["code"] == 0
    text = shown.text + "".join(orjson.dumps(r).decode() for r in rows)
    assert RAW_EMAIL not in text and TOKEN not in text


def test_dead_letters_are_listed_and_replayed(
    console: httpx.Client, fake_api: FakeEventsApi
) -> None:
    csrf = log_in(console)
    fake_api.add_fault(Fault(code=40002, message="bad event", pixel=PIXEL, times=None))
    event = {"event": "Purchase", "event_id": "dead-1", "page": {"url": "https://shop.example/"}}
    sent = httpx.post(
        str(console.base_url) + "/v1/events",
        json=event,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert sent.status_code == 202
    rows = _stream_until(
        console, lambda r: r["event_id"] == "dead-1" and r["state"] == "dead_lettered"
    )
    assert rows[-1]["steps"][-1]["code"] == 40002
    refused = [r.request_id for r in fake_api.requests if r.code == 40002]
    assert rows[-1]["steps"][-1]["request_id"] == refused[-1]
    letters = console.get("/console/dead-letters").json()
    assert letters["groups"] == [{"pixel": PIXEL, "code": 40002, "count": 1}]
    [letter] = letters["letters"]
    assert (letter["event_id"], letter["request_id"]) == ("dead-1", refused[-1])
    fake_api.clear_faults()
    replayed = console.post(
        "/console/replay", json={"pixel": PIXEL, "code": 40002}, headers={"X-CSRF-Token": csrf}
    )
    assert replayed.json() == {"replayed": 1}
    _stream_until(console, lambda r: r["event_id"] == "dead-1" and r["state"] == "delivered")


def test_send_test_form_shows_the_body_the_answer_and_the_score(
    console: httpx.Client, fake_api: FakeEventsApi
) -> None:
    csrf = log_in(console)
    answer = console.post(
        "/console/send-test",
        json={
            "event": "Purchase",
            "email": RAW_EMAIL,
            "url": "https://shop.example/",
            "value": "20",
            "currency": "EUR",
        },
        headers={"X-CSRF-Token": csrf},
    )
    assert answer.status_code == 200
    result = answer.json()
    assert result["answer"]["code"] == 0
    assert result["score"] == 2
    assert result["request"]["data"][0]["user"]["email"] == ["848a771458…"]  # shortened
    assert RAW_EMAIL not in answer.text and TOKEN not in answer.text
    assert fake_api.accepted_events()[-1]["event"] == "Purchase"


def test_rows_say_where_server_side_values_came_from(
    make_console: Callable[..., httpx.Client],
) -> None:
    shop = "http://shop.test"
    client = make_console(
        pixels=[{"id": PIXEL, "access_token": TOKEN, "origins": [shop]}],
        browser={"trusted_proxies": ["127.0.0.0/8"]},
        cookies={"secrets": ["cookie-secret-0123456789abcdef"]},
    )
    log_in(client)
    beacon = {
        "event": "ViewContent",
        "event_id": "p-1",
        "page": {"url": f"{shop}/p?ttclid=E.C.P.click1"},
    }
    headers = {
        "Origin": shop,
        "Content-Type": "text/plain",
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0 Safari/537.36",
        "X-Forwarded-For": "203.0.113.7",
        "Cookie": "_ttp=2F7h37YkS1j57AYSKTI7IHhJPYH",
    }

    def send() -> None:
        assert client.post("/b", content=orjson.dumps(beacon), headers=headers).status_code == 204

    rows = _stream_until(client, lambda r: r["event_id"] == "p-1", when_watching=send)
    assert rows[-1]["source"] == "browser"
    assert rows[-1]["from"] == {"ip": "proxy header", "ttclid": "url", "ttp": "cookie"}
    assert rows[-1]["keys"] == ["ttclid", "ttp", "ip_user_agent"]
    assert rows[-1]["score"] == 5


def test_a_console_path_over_the_beacon_is_a_configuration_error() -> None:
    from gateway.core.errors import ConfigError
    from gateway.settings import parse_settings

    pixel = {"id": PIXEL, "access_token": TOKEN}
    console = {"admin_password": PASSWORD, "path": "/b"}
    with pytest.raises(ConfigError, match="console: path /b would hide"):
        parse_settings({"pixels": [pixel], "console": console}, {})
    parse_settings({"pixels": [pixel], "console": {**console, "path": "/ops"}}, {})


def test_behind_a_trusted_proxy_each_visitor_has_its_own_login_budget(
    make_console: Callable[..., httpx.Client],
) -> None:
    client = make_console(browser={"trusted_proxies": ["127.0.0.0/8"]})

    def attempt(visitor: str) -> int:
        headers = {"X-Forwarded-For": visitor}
        return client.post("/console/login", data={"password": "x"}, headers=headers).status_code

    assert [attempt("203.0.113.1") for _ in range(6)] == [401] * 5 + [429]
    assert attempt("203.0.113.2") == 401  # another visitor, not the proxy's shared budget


def test_forged_forwarded_lines_cannot_lock_the_operator_out(
    make_console: Callable[..., httpx.Client],
) -> None:
    """Behind a proxy that appends its own X-Forwarded-For line, a forged first line naming
    the operator's address spends the attacker's budget, not the operator's (issue 21.6)."""
    client = make_console(network={"trusted_proxies": ["127.0.0.0/8"]})
    forged = [("X-Forwarded-For", "198.51.100.7"), ("X-Forwarded-For", "203.0.113.66")]
    statuses = [
        client.post("/console/login", data={"password": "x"}, headers=forged).status_code
        for _ in range(6)
    ]
    assert statuses == [401] * 5 + [429]  # the attacker (the proxy's line) is locked out
    operator = {"X-Forwarded-For": "198.51.100.7"}
    answer = client.post("/console/login", data={"password": PASSWORD}, headers=operator)
    assert answer.status_code in (200, 303), answer.text
