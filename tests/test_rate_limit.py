"""Per-client rate limits: the bucket's arithmetic, replicas sharing it through Redis, and a
flood from one address refused while another address is served."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gateway.core.errors import TooManyRequests
from gateway.fake_api import FakeEventsApi
from gateway.http.rate_limit import Budget, LocalBuckets, RateLimit, RateLimits, client_key
from gateway.settings import RateLimitSettings
from tests.conftest import PIXEL, TOKEN, BackendFactory, GatewayServer

SHOP = "http://shop.test"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
API_KEY = "server-api-key-0123456789"


class FrozenClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_admitted_then_one_request_per_interval() -> None:
    clock = FrozenClock()
    buckets = LocalBuckets(Budget(per_second=2, burst=3), clock=clock)
    assert [buckets.wait("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.wait("a") == pytest.approx(0.5)  # the 4th waits one interval
    assert buckets.wait("b") == 0.0  # another client has its own bucket
    clock.now += 0.5
    assert buckets.wait("a") == 0.0
    assert buckets.wait("a") == pytest.approx(0.5)
    clock.now += 10  # a quiet client gets its whole burst back, no more
    assert [buckets.wait("a") for _ in range(4)][-2:] == [0.0, pytest.approx(0.5)]


def test_refused_requests_do_not_use_up_the_budget() -> None:
    clock = FrozenClock()
    buckets = LocalBuckets(Budget(per_second=1, burst=1), clock=clock)
    assert buckets.wait("a") == 0.0
    for _ in range(100):  # hammering while refused does not push the next slot away
        assert buckets.wait("a") > 0
    clock.now += 1
    assert buckets.wait("a") == 0.0


def test_memory_stays_bounded_in_a_flood_from_many_addresses() -> None:
    clock = FrozenClock()
    buckets = LocalBuckets(Budget(per_second=1, burst=5), max_clients=100, clock=clock)
    for number in range(10_000):
        assert buckets.wait(f"10.0.{number // 256}.{number % 256}") == 0.0
    assert len(buckets) <= 100


def test_an_ipv6_client_is_its_prefix() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("2001:db8:1:2::1", ipv6_prefix=128) != client_key("2001:db8:1:2::2")
    assert client_key("192.0.2.1") == "192.0.2.1"


async def _admitted(limit: RateLimit, ip: str, attempts: int) -> int:
    admitted = 0
    for _ in range(attempts):
        try:
            await limit.admit(ip)
            admitted += 1
        except TooManyRequests as exc:
            assert exc.status_code == 429 and int(exc.headers["Retry-After"]) >= 1
    return admitted


@pytest.mark.anyio
async def test_replicas_share_one_budget_through_redis(
    redis_url: str, make_backend: BackendFactory
) -> None:
    settings = RateLimitSettings(beacon_per_second=0.01, beacon_burst=5)
    refused: list[str] = []
    replicas = [
        RateLimits(
            settings, on_refused=refused.append, redis=make_backend(redis_url).shared_buckets()
        )
        for _ in range(2)
    ]
    # each replica alone would admit 5; together they admit 5 in all
    first = await _admitted(replicas[0].beacon, "192.0.2.7", 3)
    second = await _admitted(replicas[1].beacon, "192.0.2.7", 10)
    assert (first, second) == (3, 2)
    assert refused == ["beacon"] * 8
    assert await _admitted(replicas[1].beacon, "192.0.2.8", 1) == 1


@pytest.mark.anyio
async def test_without_redis_the_local_limit_still_holds(make_backend: BackendFactory) -> None:
    settings = RateLimitSettings(beacon_per_second=0.01, beacon_burst=3)
    unreachable = make_backend("redis://127.0.0.1:1/0").shared_buckets()
    limits = RateLimits(settings, on_refused=lambda _: None, redis=unreachable)
    assert await _admitted(limits.beacon, "192.0.2.9", 10) == 3


def _beacon(number: int) -> bytes:
    page = {"url": "http://shop.test/product/1", "referrer": "http://shop.test/"}
    return json.dumps({"event": "ViewContent", "event_id": f"f-{number}", "page": page}).encode()


async def _flood(url: str, seconds: float) -> tuple[list[httpx.Response], list[int]]:
    """Beacons from 127.0.0.1 as fast as 8 connections go; one per 100 ms from 127.0.0.2."""
    headers = {"Origin": SHOP, "Content-Type": "text/plain", "User-Agent": CHROME}
    refused: list[httpx.Response] = []
    statuses = {"flood": [0, 0], "visitor": []}  # type: dict[str, list[int]]
    deadline = time.monotonic() + seconds
    counter = iter(range(10**9))

    def client(address: str) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=address)
        return httpx.AsyncClient(base_url=url, transport=transport, headers=headers, timeout=10)

    async def flooder(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            answer = await http.post("/b", content=_beacon(next(counter)))
            statuses["flood"][answer.status_code == 429] += 1
            if answer.status_code == 429 and len(refused) < 10:
                refused.append(answer)
            else:
                assert answer.status_code in (204, 429), answer.text

    async def visitor(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            answer = await http.post("/b", content=_beacon(next(counter)))
            statuses["visitor"].append(answer.status_code)
            await asyncio.sleep(0.1)

    async with client("127.0.0.1") as attacker, client("127.0.0.2") as person:
        await asyncio.gather(*(flooder(attacker) for _ in range(8)), visitor(person))
    return refused, [*statuses["flood"], *statuses["visitor"]]


def test_a_flood_from_one_address_is_refused_while_another_is_served(
    serve_gateway: Callable[..., GatewayServer], fake_api: FakeEventsApi
) -> None:
    """20 s of beacons beyond the (default) limit from one IP: 429s; another IP: all 204."""
    pixels = [{"id": PIXEL, "access_token": TOKEN, "origins": [SHOP]}]
    server = serve_gateway(pixels=pixels)
    started = time.monotonic()
    refused, statuses = asyncio.run(_flood(server.url, 20.0))
    elapsed = time.monotonic() - started
    flood_accepted, flood_refused, visitor = statuses[0], statuses[1], statuses[2:]

    budget = RateLimitSettings()
    assert flood_refused > flood_accepted  # a flood, mostly refused
    assert flood_accepted <= budget.beacon_burst + budget.beacon_per_second * elapsed + 1
    assert len(visitor) >= 100 and set(visitor) == {204}
    for answer in refused:
        assert answer.json()["error"] == "rate_limited"
        assert int(answer.headers["retry-after"]) >= 1
        assert answer.headers["access-control-allow-origin"] == SHOP  # the page can read it

    metrics = httpx.get(server.metrics_url).text
    assert f'tiktok_gateway_rate_limited_total{{endpoint="beacon"}} {flood_refused}.0' in metrics
    # what was refused was not stored: exactly the admitted beacons reach TikTok
    admitted = flood_accepted + len(visitor)
    deadline = time.monotonic() + 30
    while fake_api.events_accepted < admitted:
        assert time.monotonic() < deadline, "admitted beacons not delivered"
        time.sleep(0.05)
    assert fake_api.events_accepted == admitted


def test_the_server_api_limit_applies_before_the_key_is_checked(
    serve_gateway: Callable[..., GatewayServer],
) -> None:
    server = serve_gateway(
        server_api={"api_keys": [API_KEY]},
        rate_limit={"server_api_per_second": 0.01, "server_api_burst": 2},
    )
    event: dict[str, Any] = {"event": "Lead", "event_id": "s-1", "page": {"url": SHOP + "/"}}
    good = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=server.url) as http:
        assert http.post("/v1/events", json=event, headers=good).status_code == 202
        wrong = http.post("/v1/events", json=event, headers={"X-Api-Key": "guess"})
        assert wrong.status_code == 401
        third = http.post("/v1/events", json=event, headers=good)
    assert third.status_code == 429 and third.json()["error"] == "rate_limited"
    assert int(third.headers["retry-after"]) >= 1


def test_the_relay_counts_against_the_server_api_limit_before_the_token(
    serve_gateway: Callable[..., GatewayServer],
) -> None:
    """TikTok's paths accept the gateway's API keys too: guessing there is limited alike,
    answered in TikTok's envelope (40100, HTTP 200 as TikTok does) with a Retry-After."""
    server = serve_gateway(
        server_api={"api_keys": [API_KEY]},
        rate_limit={"server_api_per_second": 0.01, "server_api_burst": 2},
    )
    event = {"event": "Lead", "event_id": "r-1", "event_time": int(time.time())}
    event["page"] = {"url": SHOP + "/"}
    body = {"event_source": "web", "event_source_id": PIXEL, "data": [event]}
    path = "/open_api/v1.3/event/track/"
    with httpx.Client(base_url=server.url) as http:
        wrong = http.post(path, json=body, headers={"Access-Token": "guess-0123456789"})
        assert wrong.json()["code"] == 40105
        assert http.post(path, json=body, headers={"Access-Token": TOKEN}).json()["code"] == 0
        third = http.post(path, json=body, headers={"Access-Token": TOKEN})
    assert third.status_code == 200 and third.json()["code"] == 40100, third.text
    assert int(third.headers["retry-after"]) >= 1


def test_a_limit_of_zero_is_no_limit(serve_gateway: Callable[..., GatewayServer]) -> None:
    server = serve_gateway(
        pixels=[{"id": PIXEL, "access_token": TOKEN, "origins": [SHOP]}],
        rate_limit={"beacon_per_second": 0},
    )
    headers = {"Origin": SHOP, "Content-Type": "text/plain", "User-Agent": CHROME}
    with httpx.Client(base_url=server.url, headers=headers) as http:
        answers = {http.post("/b", content=_beacon(n)).status_code for n in range(300)}
    assert answers == {204}
