"""Logout ends a console session for good: on every replica (SQLite and Redis backends), after a
restart, for a live stream already open, and never unchecked while Redis is down; and logout
itself needs the CSRF token."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis.asyncio

from gateway.settings import OutboxSettings
from gateway.storage.backend import open_backend
from gateway.storage.revoked_sessions import FRESH_SECONDS, RevokedSessions
from tests.conftest import BackendFactory, GatewayServer, wait_until
from tests.redis_proxy import RedisProxy
from tests.test_console import API_KEY, PASSWORD, log_in

Serve = Callable[[], GatewayServer]
SESSION_ROUTES = [
    ("GET", "/console/dead-letters"),
    ("GET", "/console/overview"),
    ("GET", "/console/postbacks"),
    ("GET", "/console/search?q=ev-1"),
    ("GET", "/console/event?pixel=p&event=Purchase&id=ev-1"),
    ("GET", "/console/stream"),
    ("POST", "/console/replay"),
    ("POST", "/console/send-test"),
]


@pytest.fixture(params=["sqlite", "redis"])
def serve(
    request: pytest.FixtureRequest,
    serve_gateway: Callable[..., GatewayServer],
    tmp_path: object,
) -> Serve:
    """Gateways on one storage backend: each new one on the same SQLite file (after the last
    one stopped: the file has one owner) or on the same Redis database (replicas)."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
    else:
        url = f"sqlite:///{tmp_path}/outbox.sqlite3"
    served: list[GatewayServer] = []

    def start() -> GatewayServer:
        if served and request.param == "sqlite":
            served[-1].stop()
        served.append(
            serve_gateway(
                outbox={"url": url},
                console={"admin_password": PASSWORD},
                server_api={"api_keys": [API_KEY]},
            )
        )
        return served[-1]

    return start


@pytest.fixture
def clients() -> Iterator[Callable[[GatewayServer], httpx.Client]]:
    made: list[httpx.Client] = []

    def make(server: GatewayServer) -> httpx.Client:
        made.append(httpx.Client(base_url=server.url, timeout=10))
        return made[-1]

    yield make
    for client in made:
        client.close()


def _refused(client: httpx.Client, csrf: str) -> dict[str, int]:
    """Each session route's status for `client`'s cookie (200-class: accepted)."""
    headers = {"X-CSRF-Token": csrf}
    statuses = {}
    for method, path in SESSION_ROUTES:
        with client.stream(method, path, headers=headers, json={}) as answer:
            statuses[path] = answer.status_code
    return statuses


def _log_out(client: httpx.Client, csrf: str) -> httpx.Response:
    """As the page's form does it: the token in a hidden field."""
    return client.post("/console/logout", data={"csrf": csrf})


def test_the_logout_form_carries_the_csrf_token(
    serve: Serve, clients: Callable[[GatewayServer], httpx.Client]
) -> None:
    operator = clients(serve())
    csrf = log_in(operator)
    page = operator.get("/console").text
    assert f'<input type="hidden" name="csrf" value="{csrf}">' in page


def test_a_logged_out_cookie_is_refused_by_every_route_and_every_gateway(
    serve: Serve, clients: Callable[[GatewayServer], httpx.Client]
) -> None:
    first = serve()
    operator = clients(first)
    csrf = log_in(operator)
    stolen = dict(operator.cookies)  # what a copied cookie would replay
    thief = clients(first)
    thief.cookies.update(stolen)
    assert thief.post("/console/replay", json={}, headers={"X-CSRF-Token": csrf}).json() == {
        "replayed": 0
    }
    logged_out = _log_out(operator, csrf)
    assert logged_out.status_code == 303
    assert "Max-Age=0" in logged_out.headers["set-cookie"]
    assert "ttgw_console" not in operator.cookies
    assert set(_refused(thief, csrf).values()) == {401}
    assert 'name="password"' in thief.get("/console").text  # the login page, not the app
    # a replica on the same Redis, or the gateway restarted on the same SQLite file
    other = clients(serve())
    other.cookies.update(stolen)
    assert set(_refused(other, csrf).values()) == {401}
    assert 'name="password"' in other.get("/console").text


def test_a_replica_that_accepted_the_cookie_refuses_it_within_a_second(
    serve_gateway: Callable[..., GatewayServer],
    redis_url: str,
    clients: Callable[[GatewayServer], httpx.Client],
) -> None:
    a, b = (
        serve_gateway(outbox={"url": redis_url}, console={"admin_password": PASSWORD})
        for _ in range(2)
    )
    operator = clients(a)
    csrf = log_in(operator)
    on_b = clients(b)
    on_b.cookies.update(dict(operator.cookies))
    assert on_b.get("/console/dead-letters").status_code == 200  # B now trusts it for 1 s
    assert _log_out(operator, csrf).status_code == 303
    since = time.monotonic()
    wait_until(
        lambda: on_b.get("/console/dead-letters").status_code == 401,
        "replica B still accepts a session A revoked",
        within=FRESH_SECONDS + 1.0,
    )
    assert time.monotonic() - since < FRESH_SECONDS + 1.0


def test_logout_without_its_csrf_token_is_refused_and_ends_nothing(
    serve: Serve, clients: Callable[[GatewayServer], httpx.Client]
) -> None:
    operator = clients(serve())
    csrf = log_in(operator)
    for forged in ({}, {"csrf": "0" * 64}, {"csrf": csrf[:-1]}):
        refused = operator.post("/console/logout", data=forged)
        assert refused.status_code == 403, forged
        assert refused.json() == {"error": "forbidden", "message": "missing or wrong CSRF token"}
        assert "set-cookie" not in refused.headers
    assert operator.get("/console/dead-letters").status_code == 200
    assert 'id="events"' in operator.get("/console").text
    by_header = operator.post("/console/logout", headers={"X-CSRF-Token": csrf})
    assert by_header.status_code == 303
    assert operator.get("/console/dead-letters").status_code == 401


def test_an_open_live_stream_ends_when_its_session_is_logged_out(
    serve: Serve, clients: Callable[[GatewayServer], httpx.Client]
) -> None:
    server = serve()
    watcher = clients(server)
    csrf = log_in(watcher)
    other_tab = clients(server)
    other_tab.cookies.update(dict(watcher.cookies))
    lines = []
    timeout = httpx.Timeout(10, read=5)  # heartbeats come every 15 s: a stream left open fails
    with watcher.stream("GET", "/console/stream", timeout=timeout) as stream:
        for line in stream.iter_lines():
            lines.append(line)
            if line == ": watching":
                assert _log_out(other_tab, csrf).status_code == 303
    assert "event: ended" in lines  # the stream closed itself, so the page reloads


@pytest.mark.anyio
async def test_revocations_are_stored_until_the_session_expires(
    make_backend: BackendFactory, redis_url: str, tmp_path: object
) -> None:
    """The record lives as long as the cookie could: the Redis key's TTL, the SQLite row's
    expiry; and a second backend on the same Redis trusts its "not revoked" for at most
    `fresh_seconds`."""
    now = time.time()
    clock = [100.0]
    a_backend = make_backend(redis_url)
    b_backend = make_backend(redis_url)
    a = a_backend.revoked_sessions()
    b = RevokedSessions(b_backend.revoked_sessions().store, monotonic=lambda: clock[0])
    await a.open()
    await b.open()
    assert not await b.revoked("sid-1")
    await a.revoke("sid-1", now + 3600)
    assert await a.revoked("sid-1")
    assert not await b.revoked("sid-1")  # B asked less than a second ago
    clock[0] += FRESH_SECONDS
    assert await b.revoked("sid-1")
    async with redis.asyncio.Redis.from_url(redis_url) as client:
        [key] = await client.keys("tiktok-gateway:console:revoked:*")
        assert b"sid-1" not in key  # a digest, not the session id
        assert 3590_000 < await client.pttl(key) <= 3600_000

    sqlite = open_backend(OutboxSettings(url=f"sqlite:///{tmp_path}/r.sqlite3"))
    try:
        await sqlite.outbox.open()
        kept = sqlite.revoked_sessions()
        await kept.open()
        await kept.revoke("sid-2", now + 60)
        await kept.revoke("sid-3", now - 1)  # already expired: nothing to keep
        again = sqlite.revoked_sessions()  # as after a restart: nothing in memory
        assert await again.revoked("sid-2")
        assert not await again.revoked("sid-3")
    finally:
        await sqlite.close()


def test_while_redis_is_down_no_session_is_accepted_unchecked(
    serve_gateway: Callable[..., GatewayServer],
    redis_url: str,
    clients: Callable[[GatewayServer], httpx.Client],
) -> None:
    """Redis down: the console answers 503 rather than accept a session it cannot check; a
    logout then ends the session on its replica at once and says it must be repeated, and
    repeated once Redis is back, it reaches every replica."""
    proxy = RedisProxy(redis_url)
    try:
        a = serve_gateway(outbox={"url": proxy.url}, console={"admin_password": PASSWORD})
        operator = clients(a)
        csrf = log_in(operator)
        stolen = dict(operator.cookies)
        path = "/console/event?pixel=p&event=Purchase&id=none"
        assert operator.get(path).status_code == 404  # signed in: the event is not buffered
        proxy.down()
        wait_until(
            lambda: operator.get(path).status_code == 503,
            "a session was accepted while Redis could not say whether it was revoked",
            within=FRESH_SECONDS + 5,
        )
        assert int(operator.get(path).headers["retry-after"]) >= 1
        partial = _log_out(operator, csrf)
        assert partial.status_code == 503 and "log out again" in partial.json()["message"]
        assert "set-cookie" not in partial.headers  # kept, to log out again
        assert operator.get(path).status_code == 401  # this replica refuses it already
        proxy.up()
        assert _log_out(operator, csrf).status_code == 303
        b = clients(serve_gateway(outbox={"url": redis_url}, console={"admin_password": PASSWORD}))
        b.cookies.update(stolen)
        assert b.get(path).status_code == 401
    finally:
        proxy.close()
