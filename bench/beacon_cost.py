"""Beacon cost in CPU instructions: the gateway's beacon vs bare Starlette and vs its durable
floor (bench/floor_app.py: bare Starlette plus the outbox's write of the same row), same run.

    apt-get install valgrind
    .venv/bin/python bench/beacon_cost.py [--requests 1000]

`bench/beacon.py` measures requests per second, which a shared, noisy machine blurs by
±10 %. This counts instructions instead (valgrind's callgrind), which other load does not
change: each server runs under callgrind, gets `--warmup` beacons (caches, first-time
imports), has its counters zeroed, serves `--requests` beacons of a returning visitor (the
same request as bench/beacon.py) one after another on one kept-alive connection, and is
dumped. Instructions per request of the serving process are printed, for bare Starlette
answering 204 and for the gateway (SQLite outbox, delivery in its own process, which is
not counted), and their ratio. `--checkout DIR` serves the gateway of another checkout
(an older commit, say) so that two versions are compared in one run; `--user-agent` sends
another (a HeadlessChrome one measures beacons dropped as bots).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.beacon import ORIGIN, USER_AGENT, visitor_cookies, write_config
from bench.common import TOKEN, child, free_port

ROOT = Path(__file__).resolve().parent.parent


def beacon_body(number: int) -> bytes:
    event = {
        "event": "AddToCart",
        "event_id": f"{number}-cost",
        "event_time": int(time.time()) * 1000,
        "properties": {
            "value": 19.99,
            "currency": "USD",
            "contents": [{"content_id": "SKU_1", "price": 19.99, "quantity": 1}],
        },
        "page": {
            "url": "https://shop.example/p/1?ttclid=E.C.P.benchclick",
            "referrer": "https://shop.example/",
        },
        "user": {"email": "alice@example.com", "locale": "en-US"},
    }
    return json.dumps(event).encode()


@contextlib.contextmanager
def under_callgrind(
    command: list[str], ready: str, directory: Path, name: str, root: Path = ROOT
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    out = directory / f"{name}.callgrind"
    log = open(directory / f"{name}.log", "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command],
        stdout=log, stderr=subprocess.STDOUT, cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited: see {directory / name}.log")
            try:
                if httpx.get(ready, timeout=5).status_code in (200, 204, 405):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready")
            time.sleep(0.5)
        yield process, out
    finally:
        process.terminate()
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def instructions_per_request(
    process: subprocess.Popen[bytes],
    out: Path,
    url: str,
    cookie: str,
    warmup: int,
    count: int,
    user_agent: str = USER_AGENT,
) -> float:
    headers = {
        "Content-Type": "text/plain",
        "Origin": ORIGIN,
        "User-Agent": user_agent,
        "Accept-Language": "en-US,en;q=0.9",
        "Cookie": cookie,
    }
    with httpx.Client(headers=headers, timeout=60) as http:

        def send(number: int) -> None:
            answer = http.post(url, content=beacon_body(number))
            if answer.status_code != 204:
                raise RuntimeError(f"{url}: {answer.status_code} {answer.text}")

        for number in range(warmup):
            send(number)
        subprocess.run(["callgrind_control", "--zero", str(process.pid)], check=True,
                       capture_output=True)  # fmt: skip
        for number in range(warmup, warmup + count):
            send(number)
        subprocess.run(["callgrind_control", "--dump", str(process.pid)], check=True,
                       capture_output=True)  # fmt: skip
    dumps = sorted(out.parent.glob(out.name + ".*"))
    text = dumps[-1].read_text(errors="replace")
    found = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no totals in {dumps[-1]}")
    return int(found.group(1)) / count


def returning_cookie(root: Path) -> str:
    """A returning visitor's cookies as the checkout at `root` signs them: a record format
    one release reads (a visitor id added) may be a first visit to another."""
    if root == ROOT:
        return visitor_cookies()["returning"]
    code = "from bench.beacon import visitor_cookies; print(visitor_cookies()['returning'])"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def measure_gateway(root: Path, config: Path, directory: Path, args: argparse.Namespace) -> float:
    """Instructions per beacon of the gateway of the checkout at `root`."""
    cookie = returning_cookie(root)
    port = free_port()
    text = config.read_text().replace("outbox-process.sqlite3", f"outbox-{port}.sqlite3")
    sources = (path.read_text() for path in (root / "gateway").rglob("*.py"))
    if not any("class RateLimitSettings" in source for source in sources):
        text = re.sub(r"\[rate_limit\]\n[^\[]*", "", text)  # a checkout before [rate_limit]
    config = config.with_name(f"gateway-{port}.toml")  # its own outbox file
    config.write_text(text)
    serve = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)]
    usage = subprocess.run(
        [*serve[:4], "--help"], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    if "--metrics-port" in usage:  # older checkouts have no metrics listener
        serve += ["--metrics-port", "0"]
    ready = f"http://127.0.0.1:{port}/readyz"
    with under_callgrind(serve, ready, directory, f"gateway-{port}", root) as (process, out):
        url = f"http://127.0.0.1:{port}/b"
        return instructions_per_request(
            process, out, url, cookie, args.warmup, args.requests, args.user_agent
        )


def callgrind_arguments(description: str | None, *, beacons: bool = False) -> argparse.Namespace:
    """The options of a callgrind benchmark (this one, bench/relay_cost.py); exits without
    valgrind."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--checkout", type=Path, action="append", default=[],
        help="also measure the gateway of this checkout (repeatable)",
    )  # fmt: skip
    if beacons:
        parser.add_argument(
            "--user-agent", default=USER_AGENT,
            help="the beacons' user agent (a HeadlessChrome one: beacons dropped as bots)",
        )  # fmt: skip
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is needed: apt-get install valgrind")
    return args


def main() -> None:
    args = callgrind_arguments(__doc__, beacons=True)
    cookie = visitor_cookies()["returning"]
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        directory = Path(tmp)
        fake_port, bare_port = free_port(), free_port()
        api = f"http://127.0.0.1:{fake_port}"
        fake = ["fake-api", "--port", str(fake_port), "--token", TOKEN, "--no-record"]
        results: dict[str, float] = {}
        with child(fake, f"{api}/_fake/stats", directory / "fake.log"):
            bare = [
                sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(bare_port),
                "--no-access-log", "--log-level", "warning", "--loop", "uvloop",
                "--http", "httptools",
            ]  # fmt: skip
            url = f"http://127.0.0.1:{bare_port}/b"
            with under_callgrind(bare, url, directory, "bare") as (process, out):
                results["bare"] = instructions_per_request(
                    process, out, url, cookie, args.warmup, args.requests, args.user_agent
                )
            floor_port = free_port()
            os.environ["FLOOR_OUTBOX"] = str(directory / "floor.sqlite3")
            floor = [*bare[:3], "bench.floor_app:app", "--port", str(floor_port), *bare[6:]]
            url = f"http://127.0.0.1:{floor_port}/b"
            with under_callgrind(floor, url, directory, "floor") as (process, out):
                results["floor"] = instructions_per_request(
                    process, out, url, cookie, args.warmup, args.requests
                )
            config = write_config(directory, api, "process", False)
            for root in [ROOT, *args.checkout]:
                name = "gateway" if root == ROOT else f"gateway at {root}"
                results[name] = measure_gateway(root, config, directory, args)
    bare_cost, floor_cost = results.pop("bare"), results.pop("floor")
    print(f"{'bare Starlette, 204':40s} {bare_cost:12,.0f} instructions per request")
    floor_name = "durable floor (bare + the stored row)"
    print(f"{floor_name:40s} {floor_cost:12,.0f} instructions per request")
    for name, cost in results.items():
        print(f"{name + ', returning visitor':40s} {cost:12,.0f} instructions per request")
    for name, cost in results.items():
        print(f"{name} / bare Starlette: {cost / bare_cost:.2f}×")
        print(f"{name} / durable floor: {cost / floor_cost:.2f}× (goal: ≤ 1.3×)")
    for name, cost in results.items():
        if name != "gateway":
            print(f"{name} / this checkout's gateway: {cost / results['gateway']:.3f}")


if __name__ == "__main__":
    main()
