"""Shared fixtures: a real fake Events API on loopback, settings, a delivery helper, gateways
served by uvicorn and a headless Chromium."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import settings
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from gateway.core.event import Destination, Event
from gateway.delivery.client import EventsApiClient, Outcome
from gateway.fake_api import FakeEventsApi
from gateway.ingest.parser import ParseRules, parse_event
from gateway.runtime import Gateway
from gateway.settings import OutboxSettings, Settings, parse_settings
from gateway.storage.backend import Backend, open_backend
from gateway.storage.outbox.sqlite import SqliteOutbox

T = TypeVar("T")
PIXEL = "CTESTPIXEL0001"
OTHER_PIXEL = "CTESTPIXEL0002"
TOKEN = "test-token-0123456789abcdef"
NOW = 1_732_300_000.0


# CI runs each property test on the same examples (a fixed seed, no example database), so a
# submission's result does not depend on a draw; a developer's run explores new examples
# and keeps what fails in .hypothesis/ for the next run.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake_api() -> Iterator[FakeEventsApi]:
    """A fake Events API accepting TOKEN for any pixel, on a free loopback port."""
    with FakeEventsApi({TOKEN: None}) as fake:
        yield fake


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(fake_api: FakeEventsApi) -> SettingsFactory:
    """Settings pointing at the fake API; keyword arguments are top-level TOML keys."""

    def make(**toml: Any) -> Settings:
        data: dict[str, Any] = {
            "api_base": fake_api.url,
            "api_timeout_seconds": 2.0,
            "pixels": [{"id": PIXEL, "access_token": TOKEN}],
            "metrics": {"port": free_port()},  # tests run side by side: no fixed port
        }
        data.update(toml)
        return parse_settings(data, {})

    return make


Deliver = Callable[..., Awaitable[list[dict[str, Any]]]]


@pytest.fixture
def deliver(fake_api: FakeEventsApi, make_settings: SettingsFactory) -> Deliver:
    """Parse one input event as the gateway does, send it over HTTP, return what the fake got."""

    async def run(raw: dict[str, Any], *, now: float = NOW, **toml: Any) -> list[dict[str, Any]]:
        settings = make_settings(**toml)
        pixel = settings.pixels[0]
        raw = {"page": {"url": "https://shop.example/p"}, **raw}
        parsed = parse_event(raw, pixel=pixel, rules=ParseRules.from_settings(settings), now=now)
        before = len(fake_api.requests)
        async with EventsApiClient(settings.api_base) as client:
            outcome: Outcome = await client.send(
                parsed.events[0].destination, parsed.events, pixel.access_token
            )
        assert outcome.delivered, outcome
        received = fake_api.requests[before:]
        assert len(received) == 1
        data: list[dict[str, Any]] = received[0].body["data"]
        return data

    return run


def _ephemeral_ports() -> range:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            low, high = (int(n) for n in ranges.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


_EPHEMERAL = _ephemeral_ports()
_FREE_PORTS = range(20000, 32000)


def free_port() -> int:
    """A loopback port free now, for a server that binds it a moment later.

    Chosen outside the kernel's ephemeral range: a port the kernel handed out (bind to 0)
    and freed can be handed out again to any outgoing connection — a Redis client, an
    HTTP client — before the server binds it (seen once). A port from this range is taken
    only by an explicit bind."""
    candidates = [p for p in _FREE_PORTS if p not in _EPHEMERAL and p not in _HANDED_OUT]
    candidates = candidates or list(_FREE_PORTS)
    for port in random.sample(candidates, min(50, len(candidates))):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)  # two calls in a row must not get the same port
            return port
    raise RuntimeError("no free loopback port found")


_HANDED_OUT: set[int] = set()


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m gateway` in a real child process with a clean gateway environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "GATEWAY_"))}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def wait_for_http(url: str, *, timeout: float = 15.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=1.0)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


REDIS_SERVER = "redis://127.0.0.1:6379"
REDIS_CLAIM_SECONDS = 3 * 3600
"""How long a test run's claim on its database lasts if the run dies without releasing it."""


@pytest.fixture(scope="session")
def redis_database() -> Iterator[str]:
    """A Redis database of this test run's own, emptied around each test that uses it.

    Test runs side by side (two checkouts, a developer's run beside CI) must not empty each
    other's keys, so each run claims a free database among 1–15 with a key in database 0
    (`SET … NX`, released at the end, expiring if the run dies); database 0 is left to
    gateways. GATEWAY_TEST_REDIS_URL names one explicitly instead."""
    import redis

    given = os.environ.get("GATEWAY_TEST_REDIS_URL")
    if given:
        yield given
        return
    registry = redis.Redis.from_url(f"{REDIS_SERVER}/0")
    try:
        registry.ping()
    except redis.ConnectionError:
        pytest.fail(
            "the Redis tests need a Redis server on 127.0.0.1:6379 (./scripts/test starts one)"
        )
    url, claim = claim_redis_database(registry)
    try:
        yield url
    finally:
        registry.delete(claim)
        registry.close()


def claim_redis_database(registry: Any) -> tuple[str, str]:
    """The URL of a database no other test run holds, and the key that holds it now."""
    for database in range(1, 16):
        key = f"tiktok-gateway-tests:database:{database}"
        if registry.set(key, os.getpid(), nx=True, ex=REDIS_CLAIM_SECONDS):
            return f"{REDIS_SERVER}/{database}", key
    pytest.fail("every Redis database 1–15 is claimed by another test run")


@pytest.fixture
def redis_url(redis_database: str) -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(redis_database)
    client.flushdb()
    yield redis_database
    client.flushdb()
    client.close()


@pytest.fixture(params=["sqlite", "redis"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """Each storage backend's URL in turn: a SQLite file of the test's own, then this run's
    Redis database (flushed)."""
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    return f"sqlite:///{tmp_path}/outbox.sqlite3"


BackendFactory = Callable[..., Backend]


@pytest.fixture
async def make_backend() -> AsyncIterator[BackendFactory]:
    """Storage backends of a URL (`open_backend`'s keyword options, and `lease_seconds`),
    each closed after the test with every client it made."""
    made: list[Backend] = []

    def make(url: str, *, lease_seconds: float = 300.0, **options: Any) -> Backend:
        settings = OutboxSettings(url=url, lease_seconds=lease_seconds)
        made.append(open_backend(settings, **options))
        return made[-1]

    yield make
    for backend in made:
        await backend.close()


def make_event(
    number: int,
    *,
    pixel: str = PIXEL,
    source: str = "web",
    test_code: str | None = None,
    event_time: int | None = None,
) -> Event:
    """A ready-to-send event with a recognisable id."""
    return Event(
        destination=Destination(source, pixel, test_code),
        event="Purchase",
        event_time=event_time or int(time.time()) - 60,
        event_id=f"ev-{pixel}-{number}",
        user={"email": ["848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"]},
        page={"url": "https://shop.example/"} if source == "web" else {},
    )


class GatewayServer:
    """The gateway app served by a real uvicorn on loopback, in a background thread."""

    def __init__(
        self, app: Any, port: int | None = None, *, gateway: Gateway | None = None
    ) -> None:
        import uvicorn

        from gateway.http.listeners import listening_sockets
        from gateway.http.server import uvicorn_config

        self.app = app
        self.gateway = gateway
        self.port = port or free_port()
        self.metrics_port = gateway.settings.metrics.port if gateway is not None else 0
        self._sockets: list[socket.socket] | None = None
        if gateway is not None:  # exactly as `serve` runs it, on free loopback ports
            server = dataclasses.replace(gateway.settings.server, host="127.0.0.1", port=self.port)
            settings = dataclasses.replace(gateway.settings, server=server)
            config = uvicorn_config(
                self.app, settings, on_refused=gateway.metrics.connection_refused
            )
            self._sockets = listening_sockets(settings)
        else:
            config = uvicorn.Config(
                self.app, host="127.0.0.1", port=self.port, log_config=None, lifespan="on"
            )
        self._server = uvicorn.Server(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """`/metrics` on the metrics listener (the public port does not serve it)."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def _run(self) -> None:
        self._loop.run_until_complete(self._server.serve(self._sockets))

    def start(self) -> GatewayServer:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.02)
        return self

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's event loop (to reach its outbox, say)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def fill_the_disk(self) -> None:
        """Make the gateway's SQLite outbox unable to grow, as a full disk would."""
        assert self.gateway is not None
        outbox = self.gateway.outbox
        assert isinstance(outbox, SqliteOutbox)
        self.call(outbox._db.statement(lambda conn: conn.execute("PRAGMA max_page_count = 1")))

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(20)
        self._loop.close()


@pytest.fixture
def serve_gateway(
    make_settings: SettingsFactory, tmp_path: Any
) -> Iterator[Callable[..., GatewayServer]]:
    """Start gateways for settings built from TOML keywords; each gets its own SQLite outbox."""
    from gateway.app import create_app

    servers: list[GatewayServer] = []

    def start(*, transport: httpx.AsyncBaseTransport | None = None, **toml: Any) -> GatewayServer:
        toml.setdefault("outbox", {"url": f"sqlite:///{tmp_path}/outbox-{len(servers)}.sqlite3"})
        toml.setdefault("delivery", {"linger_ms": 0})
        gateway = Gateway(make_settings(**toml), transport=transport)
        server = GatewayServer(create_app(gateway), gateway=gateway).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


CHROME_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for one test module: a running Playwright owns an event loop in this thread,
    which the async tests of later modules could not run beside."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail(
            "Debian's chromium is needed for the browser tests (./scripts/test installs it)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROME_ARGS
        )
        yield launched
        launched.close()


class Site:
    """A shop page server, the gateway it sends to, and a fresh browser context."""

    def __init__(self, server: GatewayServer, gateway: GatewayServer, context: BrowserContext):
        self.server, self.gateway, self.context = server, gateway, context

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def make_site(
    browser: Browser, serve_gateway: Callable[..., GatewayServer]
) -> Iterator[Callable[[Callable[[str], Any]], Site]]:
    """Serve a site (an app built from the gateway's URL) whose origin the gateway accepts."""
    made: list[Site] = []

    def make(app: Callable[[str], Any]) -> Site:
        port = free_port()
        gateway = serve_gateway(
            pixels=[{"id": PIXEL, "access_token": TOKEN, "origins": [f"http://127.0.0.1:{port}"]}],
            cookies={"secrets": ["browser-test-secret-0123456789"], "ttclid_max_age_days": 30},
        )
        server = GatewayServer(app(gateway.url), port=port).start()
        made.append(Site(server, gateway, browser.new_context(user_agent=USER_AGENT)))
        return made[-1]

    yield make
    for site in made:
        site.context.close()
        site.server.stop()


def wait_until(condition: Callable[[], bool], what: str, within: float = 20.0) -> None:
    """Poll `condition` until it holds; fail naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def wait_for_events(fake: FakeEventsApi, count: int, within: float = 20.0) -> list[dict[str, Any]]:
    wait_until(
        lambda: len(fake.accepted_events()) >= count,
        f"fewer than {count} events arrived",
        within,
    )
    return fake.accepted_events()


def open_page(context: BrowserContext, url: str) -> Page:
    page = context.new_page()
    page.goto(url)
    page.wait_for_function("window.ttgw && !window.ttgw.q")  # the real script replaced the stub
    return page
