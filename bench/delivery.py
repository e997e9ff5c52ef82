"""Delivery benchmark: batched gateway vs a naive one-request-per-event relay, same run.

    .venv/bin/python bench/delivery.py [--events 200000] [--memory-events 1000000] [--delay 0.05]

1. The fake Events API runs in its own process and answers every request after `--delay`
   seconds, to model the network between a gateway and TikTok.
2. Naive relay: what a browser tag or a simple webhook relay does, one Events API request per
   event, `--naive-concurrency` requests in flight, for `--naive-seconds`.
3. Gateway delivery rate: the SQLite outbox is filled with `--events` events, a gateway
   process is started on it, and the time from the first batch the fake accepts to the last
   is measured (from the gateway's start too, printed beside it). `--no-validate`: the fake
   counts events without checking them (it checks every event otherwise, ~9 µs each, on the
   same cores as the gateway it measures).
4. Memory: `--memory-events` events are posted to a fresh gateway's /v1/events (1000 per
   request) while it delivers them; the resident memory of the gateway and its children
   (the delivery process, the resource tracker) is sampled throughout, summed. The run
   FAILS (exit status 1) when it grew by more than `--max-growth-mb` from the first tenth
   of the samples to the last, or peaked at `--max-peak-mb` or more: memory stays flat.
Figures are printed; the ratio batched / naive is what counts on a shared, noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import API_KEY, PIXEL, TOKEN, child, free_port, tree_rss_mb
from gateway.core.event import Destination, Event
from gateway.storage.outbox.sqlite import SqliteOutbox

EMAIL_HASH = "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"


def one_event(number: int, now: int) -> dict[str, object]:
    return {
        "event": "Purchase",
        "event_time": now,
        "event_id": f"bench-{number}",
        "user": {"email": [EMAIL_HASH], "ip": "203.0.113.7", "user_agent": "Mozilla/5.0 bench"},
        "properties": {"value": 19.99, "currency": "USD"},
        "page": {"url": "https://shop.example/checkout/thanks"},
    }


async def naive_relay(api: str, seconds: float, concurrency: int) -> float:
    """One request per event, `concurrency` at a time, for `seconds`: events per second."""
    sent = 0
    deadline = time.monotonic() + seconds
    now = int(time.time())
    async with httpx.AsyncClient(
        timeout=30, limits=httpx.Limits(max_connections=concurrency)
    ) as client:

        async def worker(offset: int) -> None:
            nonlocal sent
            number = offset
            while time.monotonic() < deadline:
                body = {
                    "event_source": "web",
                    "event_source_id": PIXEL,
                    "data": [one_event(number, now)],
                }
                response = await client.post(
                    f"{api}/open_api/v1.3/event/track/", json=body, headers={"Access-Token": TOKEN}
                )
                if response.json()["code"] == 0:
                    sent += 1
                number += concurrency

        started = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return sent / (time.monotonic() - started)


async def prefill(path: Path, count: int) -> None:
    outbox = SqliteOutbox(str(path))
    await outbox.open()
    now = int(time.time())
    destination = Destination("web", PIXEL)
    for start in range(0, count, 1000):
        await outbox.add(
            [
                Event(destination=destination, **{k: v for k, v in one_event(i, now).items()})  # type: ignore[arg-type]
                for i in range(start, min(count, start + 1000))
            ]
        )
    await outbox.close()


def fake_stats(api: str) -> dict[str, int]:
    stats: dict[str, int] = httpx.get(f"{api}/_fake/stats", timeout=5).json()
    return stats


def wait_accepted(api: str, target: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while fake_stats(api)["events_accepted"] < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {fake_stats(api)['events_accepted']} of {target} delivered")
        time.sleep(0.05)
    return time.monotonic()


def write_config(directory: Path, api: str, outbox: Path, concurrency: int) -> Path:
    config = directory / f"{outbox.stem}.toml"
    config.write_text(
        f"""
api_base = "{api}"
api_timeout_seconds = 30
[outbox]
url = "sqlite:///{outbox}"
[delivery]
batch_size = 1000
linger_ms = 20
concurrency = {concurrency}
[server_api]
api_keys = ["{API_KEY}"]
max_body_bytes = 8388608
[[pixels]]
id = "{PIXEL}"
access_token = "{TOKEN}"
"""
    )
    return config


def gateway_delivery_rate(
    directory: Path, api: str, events: int, concurrency: int
) -> tuple[float, float]:
    """(events/s from the first delivered batch to the last, events/s from the gateway's
    start): the second adds starting two interpreters, which takes seconds on a busy host."""
    outbox = directory / "prefilled.sqlite3"
    asyncio.run(prefill(outbox, events))
    before = fake_stats(api)["events_accepted"]
    port = free_port()
    config = write_config(directory, api, outbox, concurrency)
    started = time.monotonic()
    with child(
        ["serve", "--config", str(config), "--port", str(port), "--metrics-port", "0"],
        f"http://127.0.0.1:{port}/readyz",
        directory / "gateway.log",
    ):
        first = wait_accepted(api, before + 1, timeout=600)
        first_batch = fake_stats(api)["events_accepted"] - before
        finished = wait_accepted(api, before + events, timeout=600)
    return (events - first_batch) / (finished - first), events / (finished - started)


def memory_run(directory: Path, api: str, events: int, concurrency: int) -> dict[str, float]:
    """Post `events` through /v1/events while the gateway delivers; sample its memory."""
    outbox = directory / "memory.sqlite3"
    before = fake_stats(api)["events_accepted"]
    port = free_port()
    config = write_config(directory, api, outbox, concurrency)
    now = int(time.time())
    samples: list[float] = []
    with child(
        ["serve", "--config", str(config), "--port", str(port), "--metrics-port", "0"],
        f"http://127.0.0.1:{port}/readyz",
        directory / "gateway.log",
    ) as process:
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append(tree_rss_mb(process.pid))
                time.sleep(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        asyncio.run(_ingest(f"http://127.0.0.1:{port}/v1/events", events, now))
        ingested = time.monotonic()
        finished = wait_accepted(api, before + events, timeout=1200)
        stop.set()
        sampler.join()
    tenth = max(1, len(samples) // 10)
    return {
        "ingest_rate": events / (ingested - started),
        "end_to_end_rate": events / (finished - started),
        "rss_first_10pct_mb": max(samples[:tenth]),
        "rss_last_10pct_mb": max(samples[-tenth:]),
        "peak_rss_mb": max(samples),
    }


async def _ingest(url: str, events: int, now: int) -> None:
    template = json.dumps({"events": [one_event(i, now) for i in range(1000)]})
    async with httpx.AsyncClient(
        timeout=60, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as client:
        queue = list(range(0, events, 1000))

        async def worker() -> None:
            while queue:
                start = queue.pop()
                body = template.replace('"bench-', f'"m{start}-')
                response = await client.post(
                    url, content=body, headers={"Content-Type": "application/json"}
                )
                if response.status_code != 202:
                    raise RuntimeError(
                        f"ingest failed: {response.status_code} {response.text[:200]}"
                    )

        await asyncio.gather(*(worker() for _ in range(2)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--memory-events", type=int, default=1_000_000)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--naive-seconds", type=float, default=10.0)
    parser.add_argument("--naive-concurrency", type=int, default=8)
    parser.add_argument("--no-validate", action="store_true")
    parser.add_argument("--max-growth-mb", type=float, default=5.0)
    parser.add_argument("--max-peak-mb", type=float, default=160.0)
    args = parser.parse_args()
    failures: list[str] = []

    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        directory = Path(tmp)
        port = free_port()
        api = f"http://127.0.0.1:{port}"
        fake_args = [
            "fake-api",
            "--port",
            str(port),
            "--token",
            TOKEN,
            "--delay",
            str(args.delay),
            "--no-record",
            *(["--no-validate"] if args.no_validate else []),
        ]
        with child(fake_args, f"{api}/_fake/stats", directory / "fake.log"):
            print(f"fake Events API answering after {args.delay * 1000:.0f} ms")
            naive = asyncio.run(naive_relay(api, args.naive_seconds, args.naive_concurrency))
            print(
                f"naive relay (1 event/request, {args.naive_concurrency} in flight): "
                f"{naive:,.0f} events/s"
            )
            batched, with_start = gateway_delivery_rate(
                directory, api, args.events, args.concurrency
            )
            print(
                f"gateway, SQLite outbox, batches of 1000, {args.concurrency} in flight: "
                f"{batched:,.0f} events/s delivered ({args.events:,} events; "
                f"{with_start:,.0f} events/s counting the gateway's start)"
            )
            print(f"ratio gateway / naive relay: {batched / naive:,.1f}x")
            if args.memory_events:
                memory = memory_run(directory, api, args.memory_events, args.concurrency)
                print(
                    f"{args.memory_events:,} events through /v1/events: "
                    f"ingest {memory['ingest_rate']:,.0f} events/s, "
                    f"end to end {memory['end_to_end_rate']:,.0f} events/s"
                )
                growth = memory["rss_last_10pct_mb"] - memory["rss_first_10pct_mb"]
                print(
                    f"gateway memory: max RSS in first 10% {memory['rss_first_10pct_mb']:.0f} MB, "
                    f"in last 10% {memory['rss_last_10pct_mb']:.0f} MB "
                    f"(growth {growth:+.1f} MB), peak {memory['peak_rss_mb']:.0f} MB"
                )
                if growth > args.max_growth_mb:
                    failures.append(f"memory grew {growth:.1f} MB (budget {args.max_growth_mb})")
                if memory["peak_rss_mb"] >= args.max_peak_mb:
                    failures.append(
                        f"memory peaked at {memory['peak_rss_mb']:.0f} MB "
                        f"(budget: below {args.max_peak_mb:.0f})"
                    )
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
