"""Relay cost in CPU instructions: each relay path vs `POST /v1/events`, same events, same run.

    apt-get install valgrind
    .venv/bin/python bench/relay_cost.py [--requests 1000]

`bench/relay.py` measures events per second, which a shared, noisy machine blurs by ±10 %.
This counts instructions instead (valgrind's callgrind), which other load does not change:
one gateway (as bench/relay.py configures it) runs under callgrind and, for each case in
turn, gets `--warmup` requests (caches, first-time imports), has its counters zeroed,
serves `--requests` requests of one event each (the events of bench/relay.py) one after
another on one kept-alive connection, head and body in one write as wrk sends them, and
is dumped. Instructions per request of the serving process (the SQLite writer thread
included, the delivery process not) are printed for each case, and each relay path's
cost against `/v1/events`. `--checkout DIR` measures the gateway of another checkout (an
older commit, say) in the same run.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.beacon_cost import ROOT, callgrind_arguments, under_callgrind
from bench.common import API_KEY, PIXEL, TOKEN, child, free_port
from bench.relay import write_config

USER_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0.0.0"
PROPERTIES = {
    "value": 19.99,
    "currency": "USD",
    "contents": [{"content_id": "SKU_1", "price": 19.99, "quantity": 1}],
}
PAGE = {"url": "https://shop.example/checkout/thanks"}


def server_body(number: int) -> dict[str, Any]:
    event = {
        "event": "Purchase",
        "event_id": f"{number}-cost",
        "event_time": int(time.time()),
        "user": {
            "email": "alice@example.com",
            "phone": "+1 213 373 4253",
            "ip": "203.0.113.7",
            "user_agent": USER_AGENT,
        },
        "properties": PROPERTIES,
        "page": PAGE,
    }
    return {"pixel_id": PIXEL, "events": [event]}


def v2_body(number: int) -> dict[str, Any]:
    event = server_body(number)["events"][0]
    return {"event_source": "web", "event_source_id": PIXEL, "data": [event]}


def v1_body(number: int) -> dict[str, Any]:
    return {
        "pixel_code": PIXEL,
        "event": "Purchase",
        "event_id": f"{number}-cost",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "context": {
            "user": {"email": "alice@example.com", "phone_number": "+1 213 373 4253"},
            "ip": "203.0.113.7",
            "user_agent": USER_AGENT,
            "page": PAGE,
        },
        "properties": PROPERTIES,
    }


Case = tuple[str, dict[str, str], Callable[[int], dict[str, Any]]]
CASES: dict[str, Case] = {
    "server API": ("/v1/events", {"Authorization": f"Bearer {API_KEY}"}, server_body),
    "relay 2.0": ("/open_api/v1.3/event/track/", {"Access-Token": TOKEN}, v2_body),
    "relay 1.0": ("/open_api/v1.3/pixel/track/", {"Access-Token": TOKEN}, v1_body),
}


def instructions_per_request(
    process: subprocess.Popen[bytes], out: Path, port: int, case: Case, args: argparse.Namespace
) -> float:
    path, headers, body = case
    start = args.offset
    args.offset += args.warmup + args.requests  # every event id of the run is new
    # http.client sends the head and a bytes body in one write, as wrk does: a client that
    # sends them apart (httpx) makes the server wait for the body in some requests and not
    # in others, instructions that belong to the client's timing, not to the endpoint
    http = HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json", **headers}

    def send(number: int) -> None:
        http.request("POST", path, orjson.dumps(body(number)), headers)
        answer = http.getresponse()
        text = answer.read()
        stored = answer.status == 202 or (answer.status == 200 and orjson.loads(text)["code"] == 0)
        if not stored:
            raise RuntimeError(f"{path}: {answer.status} {text!r}")

    for number in range(start, start + args.warmup):
        send(number)
    control = ["callgrind_control", "--zero", str(process.pid)]
    subprocess.run(control, check=True, capture_output=True)
    for number in range(start + args.warmup, start + args.warmup + args.requests):
        send(number)
    before = set(out.parent.glob(out.name + ".*"))
    control[1] = "--dump"
    subprocess.run(control, check=True, capture_output=True)
    http.close()
    (dump,) = set(out.parent.glob(out.name + ".*")) - before
    found = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(errors="replace"), re.M)
    if found is None:
        raise RuntimeError(f"no totals in {dump}")
    return int(found.group(1)) / int(args.requests)


def measure(root: Path, directory: Path, api: str, args: argparse.Namespace) -> dict[str, float]:
    """Instructions per request of each case, for the gateway of the checkout at `root`."""
    port = free_port()
    config = write_config(directory, api)
    config = config.rename(config.with_name(f"gateway-{port}.toml"))
    text = config.read_text().replace("outbox.sqlite3", f"outbox-{port}.sqlite3")
    config.write_text(text)  # its own outbox file
    serve = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
    serve += ["--port", str(port), "--metrics-port", "0"]
    ready = f"http://127.0.0.1:{port}/readyz"
    results: dict[str, float] = {}
    with under_callgrind(serve, ready, directory, f"gateway-{port}", root) as (process, out):
        for name, case in CASES.items():
            results[name] = instructions_per_request(process, out, port, case, args)
    return results


def main() -> None:
    args = callgrind_arguments(__doc__)
    args.offset = 0
    with tempfile.TemporaryDirectory(prefix="bench-relay-cost-") as tmp:
        directory = Path(tmp)
        fake_port = free_port()
        api = f"http://127.0.0.1:{fake_port}"
        fake = ["fake-api", "--port", str(fake_port), "--token", TOKEN, "--no-record"]
        fake += ["--no-validate"]
        runs: dict[str, dict[str, float]] = {}
        with child(fake, f"{api}/_fake/stats", directory / "fake.log"):
            for root in [ROOT, *args.checkout]:
                name = "this checkout" if root == ROOT else str(root)
                runs[name] = measure(root, directory, api, args)
    for checkout, results in runs.items():
        print(f"{checkout}:")
        baseline = results["server API"]
        for name, cost in results.items():
            print(f"  {name:12s} {cost:12,.0f} instructions per request")
        for name in ("relay 2.0", "relay 1.0"):
            print(f"  {name} / server API: {results[name] / baseline:.3f}")


if __name__ == "__main__":
    main()
