"""The budget of failed authentications on the endpoints that take keys: wrong keys, then
every request of that client refused in the endpoint's own format — the right key too —
until the budget refills; other clients, and successful requests, untouched."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.core.errors import TooManyRequests
from gateway.http.failed_auth import FailedAuthLimit
from gateway.http.rate_limit import Budget, LocalBuckets, RateLimits
from gateway.runtime import Gateway
from gateway.settings import RateLimitSettings
from tests.conftest import PIXEL, TOKEN, BackendFactory, GatewayServer, SettingsFactory

API_KEY = "server-api-key-0123456789"
SECRET = "lms-secret-0123456789"
BURST = 3
TIGHT = {"failed_auth_per_minute": 6.0, "failed_auth_burst": BURST}  # one per 10 s
ELSEWHERE = "127.0.0.2"


class FrozenClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Endpoint:
    """How to call one endpoint with a key, and how it answers success and refusals."""

    name: str
    call: Callable[[httpx.Client, str], httpx.Response]
    ok: Callable[[httpx.Response], bool]
    wrong: Callable[[httpx.Response], bool]

    def locked(self, answer: httpx.Response) -> bool:
        """Refused for too many failures, in the endpoint's format, saying when to return."""
        if int(answer.headers.get("retry-after", "0")) < 1:
            return False
        if self.name == "relay":  # TikTok's envelope: HTTP 200, code 40100
            return answer.status_code == 200 and answer.json()["code"] == 40100
        return answer.status_code == 429 and answer.json()["error"] == "rate_limited"


def _events(http: httpx.Client, key: str) -> httpx.Response:
    event = {"event": "Lead", "event_id": "s-1", "page": {"url": "https://shop.test/"}}
    return http.post("/v1/events", json=event, headers={"Authorization": f"Bearer {key}"})


def _relay(http: httpx.Client, key: str) -> httpx.Response:
    event = {"event": "Lead", "event_id": "r-1", "event_time": int(time.time())}
    event["page"] = {"url": "https://shop.test/"}
    body = {"event_source": "web", "event_source_id": PIXEL, "data": [event]}
    return http.post("/open_api/v1.3/event/track/", json=body, headers={"Access-Token": key})


def _imports(http: httpx.Client, key: str) -> httpx.Response:
    rows = f"email,event,timestamp\na@example.com,Purchase,{int(time.time()) - 60}\n"
    return http.post(
        "/v1/imports",
        params={"pixel": PIXEL, "dry_run": "true"},
        content=rows.encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "text/csv"},
    )


def _postback(http: httpx.Client, key: str) -> httpx.Response:
    query = {"key": key, "trigger": "lead_sold", "lead_id": "L-1", "dry_run": "1"}
    return http.get("/v1/postbacks/lms", params=query)


def _json_401(answer: httpx.Response) -> bool:
    return answer.status_code == 401 and answer.json()["error"] == "unauthorized"


ENDPOINTS = {
    "server_api": Endpoint("server_api", _events, lambda a: a.status_code == 202, _json_401),
    "relay": Endpoint(
        "relay",
        _relay,
        lambda a: a.status_code == 200 and a.json()["code"] == 0,
        lambda a: a.status_code == 200 and a.json()["code"] == 40105,
    ),
    "imports": Endpoint("imports", _imports, lambda a: a.status_code == 202, _json_401),
    "postback": Endpoint("postback", _postback, lambda a: a.status_code == 200, _json_401),
}
RIGHT = {"server_api": API_KEY, "relay": TOKEN, "imports": API_KEY, "postback": SECRET}


Serve = Callable[..., tuple[GatewayServer, FrozenClock]]


@pytest.fixture
def serve(make_settings: SettingsFactory, tmp_path: Any) -> Iterator[Serve]:
    """A gateway with an API key, a postback source and a frozen clock for the budget of
    failed authentications (TOML keywords are merged into `[rate_limit]` and the rest)."""
    from gateway.app import create_app

    servers: list[GatewayServer] = []

    def start(**toml: Any) -> tuple[GatewayServer, FrozenClock]:
        toml.setdefault("outbox", {"url": f"sqlite:///{tmp_path}/outbox-{len(servers)}.sqlite3"})
        toml.setdefault("delivery", {"linger_ms": 0})
        toml.setdefault("server_api", {"api_keys": [API_KEY]})
        toml.setdefault("postbacks", {"sources": {"lms": {"secret": SECRET}}})
        clock = FrozenClock()
        gateway = Gateway(make_settings(**toml), limits_clock=clock)
        server = GatewayServer(create_app(gateway), gateway=gateway).start()
        servers.append(server)
        return server, clock

    yield start
    for server in servers:
        server.stop()


def _client(url: str, address: str = "127.0.0.1", **headers: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=url, transport=transport, headers=headers, timeout=10)


@pytest.mark.parametrize("name", ENDPOINTS)
def test_wrong_keys_then_every_request_is_refused_until_the_budget_refills(
    serve: Serve, name: str
) -> None:
    endpoint, right = ENDPOINTS[name], RIGHT[name]
    server, clock = serve(rate_limit=TIGHT)
    with _client(server.url) as http, _client(server.url, ELSEWHERE) as other:
        for guess in range(BURST):
            answer = endpoint.call(http, f"guess-{guess}-0123456789")
            assert endpoint.wrong(answer), answer.text
        refused = endpoint.call(http, "guess-x-0123456789")
        assert endpoint.locked(refused), refused.text
        assert int(refused.headers["retry-after"]) == 10
        # the right key too: it is not even compared while the client is locked out
        assert endpoint.locked(endpoint.call(http, right))
        clock.now += 9
        assert endpoint.locked(endpoint.call(http, right))
        # another address with the right key is served meanwhile
        assert endpoint.ok(endpoint.call(other, right))
        clock.now += 1  # one failure's worth refilled: the right key goes through again
        answer = endpoint.call(http, right)
        assert endpoint.ok(answer), answer.text
        assert endpoint.wrong(endpoint.call(http, "guess-y-0123456789"))
        assert endpoint.locked(endpoint.call(http, "guess-z-0123456789"))


def test_one_budget_covers_all_four_endpoints_and_metrics_count_it(serve: Serve) -> None:
    server, _ = serve(rate_limit=TIGHT)
    with _client(server.url) as http:
        assert ENDPOINTS["server_api"].wrong(_events(http, "guess-0123456789"))
        assert ENDPOINTS["relay"].wrong(_relay(http, "guess-0123456789"))
        assert ENDPOINTS["postback"].wrong(_postback(http, "guess-0123456789"))
        for endpoint in ENDPOINTS.values():
            assert endpoint.locked(endpoint.call(http, RIGHT[endpoint.name]))
    metrics = httpx.get(server.metrics_url).text
    for name, count in (("server_api", 1), ("relay", 1), ("postback", 1)):
        line = f'tiktok_gateway_failed_authentications_total{{endpoint="{name}"}} {count}.0'
        assert line in metrics
    assert 'tiktok_gateway_rate_limited_total{endpoint="failed_auth"} 4.0' in metrics


@pytest.mark.parametrize("name", ENDPOINTS)
def test_successful_requests_never_use_the_budget(serve: Serve, name: str) -> None:
    endpoint, right = ENDPOINTS[name], RIGHT[name]
    server, _ = serve(rate_limit=TIGHT)
    with _client(server.url) as http:
        for _ in range(5 * BURST):
            answer = endpoint.call(http, right)
            assert endpoint.ok(answer), answer.text
        for guess in range(BURST):
            assert endpoint.wrong(endpoint.call(http, f"guess-{guess}-0123456789"))
        assert endpoint.locked(endpoint.call(http, right))


@pytest.mark.parametrize("name", ENDPOINTS)
def test_a_budget_of_zero_is_no_limit(serve: Serve, name: str) -> None:
    endpoint, right = ENDPOINTS[name], RIGHT[name]
    server, _ = serve(rate_limit={"failed_auth_per_minute": 0, "failed_auth_burst": 1})
    with _client(server.url) as http:
        for guess in range(30):
            assert endpoint.wrong(endpoint.call(http, f"guess-{guess}-0123456789"))
        assert endpoint.ok(endpoint.call(http, right))


def test_the_default_budget_is_on(serve: Serve) -> None:
    defaults = RateLimitSettings()
    assert defaults.failed_auth_per_minute > 0
    server, _ = serve()
    endpoint = ENDPOINTS["server_api"]
    with _client(server.url) as http:
        for guess in range(defaults.failed_auth_burst):
            assert endpoint.wrong(endpoint.call(http, f"guess-{guess}-0123456789"))
        assert endpoint.locked(endpoint.call(http, API_KEY))


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget(serve: Serve) -> None:
    server, _ = serve(rate_limit=TIGHT, browser={"trusted_proxies": ["127.0.0.0/8"]})
    endpoint = ENDPOINTS["server_api"]
    guesser = _client(server.url, **{"X-Forwarded-For": "198.51.100.1"})
    customer = _client(server.url, **{"X-Forwarded-For": "198.51.100.2"})
    with guesser, customer:
        for guess in range(BURST):
            assert endpoint.wrong(endpoint.call(guesser, f"guess-{guess}-0123456789"))
        assert endpoint.locked(endpoint.call(guesser, API_KEY))
        # the same proxy, another client behind it: served, and its own guesses count apart
        assert endpoint.ok(endpoint.call(customer, API_KEY))
        assert endpoint.wrong(endpoint.call(customer, "guess-0123456789"))
        assert endpoint.ok(endpoint.call(customer, API_KEY))


@pytest.mark.parametrize("name", ENDPOINTS)
def test_forged_forwarded_lines_before_the_proxys_own_do_not_escape_the_budget(
    serve: Serve, name: str
) -> None:
    """A proxy that appends (`option forwardfor`) adds its own X-Forwarded-For line after
    whatever the client sent: the nearest line is believed, not the first (issue 21.6)."""
    server, _ = serve(rate_limit=TIGHT, network={"trusted_proxies": ["127.0.0.0/8"]})
    endpoint, right = ENDPOINTS[name], RIGHT[name]
    for guess in range(BURST + 1):
        lines = [("X-Forwarded-For", f"203.0.113.{guess}"), ("X-Forwarded-For", "198.51.100.9")]
        with httpx.Client(base_url=server.url, headers=lines, timeout=10) as http:
            answer = endpoint.call(http, right if guess == BURST else f"guess-{guess}-012345678")
        assert (endpoint.wrong if guess < BURST else endpoint.locked)(answer), answer.text


def test_a_forged_forwarded_for_does_not_escape_the_budget(serve: Serve) -> None:
    """From a peer that is no trusted proxy, X-Forwarded-For is ignored: one budget."""
    server, _ = serve(rate_limit=TIGHT)
    endpoint = ENDPOINTS["server_api"]
    for guess in range(BURST + 2):
        forged = {"X-Forwarded-For": f"198.51.100.{guess}"}
        with _client(server.url, **forged) as http:
            answer = endpoint.call(http, f"guess-{guess}-0123456789")
        assert (endpoint.wrong if guess < BURST else endpoint.locked)(answer), answer.text


def test_replicas_share_the_count_through_redis(
    serve_gateway: Callable[..., GatewayServer], redis_url: str
) -> None:
    """Redis's clock decides there, so the budget is tiny (one failure per 100 s)."""
    config: dict[str, Any] = {
        "outbox": {"url": redis_url},
        "server_api": {"api_keys": [API_KEY]},
        "rate_limit": {"failed_auth_per_minute": 0.6, "failed_auth_burst": BURST},
    }
    first, second, third = (serve_gateway(**config) for _ in range(3))
    endpoint = ENDPOINTS["server_api"]
    with _client(first.url) as a, _client(second.url) as b, _client(third.url) as c:
        for guess in range(BURST - 1):
            assert endpoint.wrong(endpoint.call(a, f"guess-a{guess}-0123456789"))
        assert endpoint.wrong(endpoint.call(b, "guess-b-0123456789"))
        # the budget is spent across both: each refuses now, the right key too
        assert endpoint.locked(endpoint.call(b, "guess-b2-0123456789"))
        assert endpoint.locked(endpoint.call(b, API_KEY))
        assert endpoint.locked(endpoint.call(a, API_KEY))
        # a replica that never saw this client fail counts its first guess in Redis
        assert endpoint.locked(endpoint.call(c, "guess-c-0123456789"))
        assert endpoint.locked(endpoint.call(c, API_KEY))
        with _client(first.url, ELSEWHERE) as other:
            assert endpoint.ok(endpoint.call(other, API_KEY))


@pytest.mark.anyio
async def test_without_redis_the_local_budget_still_holds(make_backend: BackendFactory) -> None:
    """Redis unreachable: the local bucket decides alone (fail open to the local limit)."""
    settings = RateLimitSettings(failed_auth_per_minute=1.0, failed_auth_burst=BURST)
    unreachable = make_backend("redis://127.0.0.1:1/0").shared_buckets()
    limits = RateLimits(settings, on_refused=lambda _: None, redis=unreachable)
    refused: list[str] = []
    failed = FailedAuthLimit.of(
        settings, limits, on_refused=lambda: refused.append("x"), on_failed=lambda _: None
    )
    for _ in range(BURST):
        await failed.check("192.0.2.1")
        await failed.failed("192.0.2.1", "server_api")
    with pytest.raises(TooManyRequests):
        await failed.check("192.0.2.1")
    await failed.check("192.0.2.2")
    assert refused == ["x"]


def test_a_peek_never_counts_and_agrees_with_the_next_request() -> None:
    clock = FrozenClock()
    buckets = LocalBuckets(Budget(per_second=1, burst=2), clock=clock)
    for _ in range(100):
        assert buckets.peek("a") == 0.0
    assert not buckets.any_waiting()  # nothing remembered: the hot path looks nobody up
    assert buckets.wait("a") == buckets.peek("a") == 0.0
    assert buckets.wait("a") == 0.0
    assert buckets.peek("a") == pytest.approx(1.0) == buckets.wait("a")
    clock.now += 2  # full again: forgotten by the peek
    assert buckets.peek("a") == 0.0 and not buckets.any_waiting()
    buckets.hold("b", 5.0)  # another replica's count, copied here
    assert buckets.peek("b") == pytest.approx(5.0) == buckets.wait("b")
    clock.now += 3
    assert buckets.any_waiting() and buckets.peek("b") == pytest.approx(2.0)
    buckets.wait("c")
    assert buckets.any_waiting() and len(buckets) == 2
    clock.now += 4  # every bucket full again: all forgotten, nobody looked up any more
    assert not buckets.any_waiting() and len(buckets) == 0


@pytest.mark.anyio
async def test_a_refusal_learnt_from_redis_is_kept_locally(
    redis_url: str, make_backend: BackendFactory
) -> None:
    """A replica refused by the shared count remembers it: later requests are refused here
    without asking Redis (even if Redis has lost the key since)."""
    import redis

    settings = RateLimitSettings(failed_auth_per_minute=0.6, failed_auth_burst=BURST)
    replicas = [
        RateLimits(
            settings, on_refused=lambda _: None, redis=make_backend(redis_url).shared_buckets()
        )
        for _ in "ab"
    ]
    first, second = (
        FailedAuthLimit.of(settings, r, on_refused=lambda: None, on_failed=lambda _: None)
        for r in replicas
    )
    for _ in range(BURST):
        await first.failed("192.0.2.3", "relay")
    with pytest.raises(TooManyRequests):
        await second.failed("192.0.2.3", "relay")  # its first, but the budget is spent
    lost = redis.Redis.from_url(redis_url)
    lost.flushdb()
    lost.close()
    with pytest.raises(TooManyRequests) as refused:
        await second.check("192.0.2.3")
    assert refused.value.retry_after_seconds > 90
