"""Beacon benchmark: the gateway's beacon endpoint vs bare Starlette on uvicorn, same run.

    apt-get install wrk      # the load generator, a second process
    .venv/bin/python bench/beacon.py [--seconds 10] [--connections 32] [--rounds 2]

(a) bare Starlette on uvicorn (uvloop, httptools, no access log) answering 204 to the POST;
(b) the gateway on the same server settings with everything on: origin check, JSON parsing,
    enrichment (IP, cached user-agent verdict, cookies, click id), hashing, a durable write
    to the SQLite outbox (synchronous=FULL, group commit) before each 204, and its
    dispatcher delivering to the fake Events API (its own process, 50 ms answers).
Two visitors are modelled: a returning one (the `_ttp`, `ttclid` and signed `_ttgw` cookies a
previous beacon set; the steady state of a site) and a first visit (no gateway cookie yet:
the answer signs and sets cookies). The gateway runs as `serve` does, delivering from its
own process; the returning visitor is also measured with delivery inline (in the serving
process) for comparison. With `--backlog N`, the returning visitor is measured once more in
both designs while N stored events drain (as after an outage). With `--console`, the
returning visitor is measured once more with the live console open and streaming every
event (a client logged in and reading `/console/stream`). Each round runs (a) then (b)
with wrk, (b)'s configurations in reverse order every other round; the best round of each
is compared. Figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PIXEL, TOKEN, child, free_port, run_wrk
from gateway.core.event import Destination, Event
from gateway.ingest.sources.beacon.cookies import VisitorCookies, VisitorRecord
from gateway.settings import CookieSettings, Secret
from gateway.storage.outbox.sqlite import SqliteOutbox

ORIGIN = "https://shop.example"
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
WRK_SCRIPT = """
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "text/plain"
wrk.headers["Origin"] = "%(origin)s"
wrk.headers["User-Agent"] = "%(ua)s"
wrk.headers["Accept-Language"] = "en-US,en;q=0.9"
wrk.headers["Cookie"] = "%(cookie)s"
request = function()
  counter = counter + 1
  local body = '{"event":"AddToCart","event_id":"' .. counter .. '-' .. math.random(1e9) .. '",'
    .. '"event_time":' .. os.time() * 1000 .. ','
    .. '"properties":{"value":19.99,"currency":"USD","contents":[{"content_id":"SKU_1",'
    .. '"price":19.99,"quantity":1}]},'
    .. '"page":{"url":"https://shop.example/p/1?ttclid=E.C.P.benchclick",'
    .. '"referrer":"https://shop.example/"},'
    .. '"user":{"email":"alice@example.com","locale":"en-US"}}'
  return wrk.format(nil, nil, nil, body)
end
"""


SECRET = "bench-cookie-secret-0123456789"


def visitor_cookies() -> dict[str, str]:
    """Cookie headers of a returning visitor (signed as the gateway would) and a first visit."""
    jar = VisitorCookies(CookieSettings(secrets=(Secret(SECRET),)))
    now = int(time.time())
    record = VisitorRecord("E.C.P.benchclick", now - 3600, now // 86400, "bench-visitor-01")
    base = "_ttp=2F7h37YkS1j57AYSKTI7IHhJPYH; ttclid=E.C.P.benchclick"
    return {"returning": f"{base}; _ttgw={jar.signed_value(record)}", "first visit": base}


CONSOLE_PASSWORD = "bench-console-password"


def write_config(
    directory: Path, api: str, delivery: str, backlog: bool, console: bool = False
) -> Path:
    name = f"{delivery}-backlog" if backlog else delivery
    name += "-console" if console else ""
    path = directory / f"gateway-{name}.toml"
    console_table = f'[console]\nadmin_password = "{CONSOLE_PASSWORD}"\n' if console else ""
    path.write_text(
        f"""
api_base = "{api}"
[outbox]
url = "sqlite:///{directory}/outbox-{name}.sqlite3"
[delivery]
separate_process = {"true" if delivery == "process" else "false"}
[cookies]
secrets = ["{SECRET}"]
[rate_limit]
beacon_per_second = 1000000     # counted, as in production, but never refusing wrk
[[pixels]]
id = "{PIXEL}"
access_token = "{TOKEN}"
origins = ["{ORIGIN}"]
"""
        + console_table
    )
    return path


def preload(path: Path, count: int) -> None:
    """Store `count` events in a new outbox file, as an outage would leave them."""

    async def fill() -> None:
        outbox = SqliteOutbox(str(path), synchronous="OFF")
        await outbox.open()
        destination, now = Destination("web", PIXEL), int(time.time())
        page = {"url": "https://shop.example/p/1"}
        for start in range(0, count, 5000):
            ids = range(start, min(count, start + 5000))
            await outbox.add(
                [Event(destination, "ViewContent", now, f"backlog-{i}", page=page) for i in ids]
            )
        await outbox.close()

    path.unlink(missing_ok=True)
    asyncio.run(fill())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--console", action="store_true",
        help="also measure the returning visitor with the console open and streaming",
    )  # fmt: skip
    parser.add_argument(
        "--backlog", type=int, default=0, metavar="N",
        help="also measure while N stored events drain (as after an outage), both designs",
    )  # fmt: skip
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    with tempfile.TemporaryDirectory(prefix="bench-beacon-") as tmp:
        directory = Path(tmp)
        scripts = {}
        for visitor, cookie in visitor_cookies().items():
            scripts[visitor] = directory / f"{visitor.replace(' ', '-')}.lua"
            scripts[visitor].write_text(
                WRK_SCRIPT % {"origin": ORIGIN, "ua": USER_AGENT, "cookie": cookie}
            )
        fake_port, bare_port, gateway_port = free_port(), free_port(), free_port()
        api = f"http://127.0.0.1:{fake_port}"
        configs = {
            (delivery, backlog): write_config(directory, api, delivery, backlog)
            for delivery in ("process", "inline")
            for backlog in ((False, True) if args.backlog else (False,))
        }
        if args.console:
            configs[("console", False)] = write_config(
                directory, api, "process", False, console=True
            )
        bare_cmd = [
            sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(bare_port),
            "--no-access-log", "--log-level", "warning", "--loop", "uvloop", "--http", "httptools",
        ]  # fmt: skip
        fake_args = [
            "fake-api",
            "--port",
            str(fake_port),
            "--token",
            TOKEN,
            "--no-record",
            "--no-validate",
        ]
        fake_args += ["--delay", "0.05"]
        best: dict[str, dict[str, float]] = {}

        def keep(name: str, result: dict[str, float]) -> None:
            if result["rate"] > best.get(name, {"rate": 0.0})["rate"]:
                best[name] = result

        with child(fake_args, f"{api}/_fake/stats", directory / "fake.log"):
            for round_number in range(args.rounds):
                bare = subprocess.Popen(bare_cmd, cwd=Path(__file__).resolve().parent.parent)
                try:
                    _wait(f"http://127.0.0.1:{bare_port}/b", bare)
                    url = f"http://127.0.0.1:{bare_port}/b"
                    keep("bare", run_wrk(url, scripts["returning"], args.seconds, args.connections))
                finally:
                    bare.terminate()
                    bare.wait()
                # every other round the gateway's configurations run in reverse order, so
                # that a machine slowing down (or warming up) over a round favours none
                order = list(configs.items())
                for (delivery, backlog), config in order[:: -1 if round_number % 2 else 1]:
                    if backlog:  # a fresh file holding an outage's worth of events
                        preload(directory / f"outbox-{delivery}-backlog.sqlite3", args.backlog)
                    serve = [
                        "serve",
                        "--config",
                        str(config),
                        "--port",
                        str(gateway_port),
                        "--metrics-port",
                        "0",
                    ]
                    ready = f"http://127.0.0.1:{gateway_port}/readyz"
                    with (
                        child(serve, ready, directory / "gw.log"),
                        watching(f"http://127.0.0.1:{gateway_port}", delivery == "console"),
                    ):
                        url = f"http://127.0.0.1:{gateway_port}/b"
                        for visitor, script in scripts.items():
                            if delivery == "console":
                                if visitor == "returning":
                                    result = run_wrk(url, script, args.seconds, args.connections)
                                    keep("returning, console", result)
                                continue
                            if visitor == "returning" or (delivery, backlog) == ("process", False):
                                result = run_wrk(url, script, args.seconds, args.connections)
                                name = f"{visitor}, {delivery}" + (", backlog" if backlog else "")
                                keep(name, result)
        labels = {
            "bare": "bare Starlette, 204",
            "returning, process": "gateway, returning visitor",
            "first visit, process": "gateway, first visit",
            "returning, inline": "gateway, returning, inline delivery",
        }
        if args.console:
            labels["returning, console"] = "  … with the console streaming"
        if args.backlog:
            labels["returning, process, backlog"] = "  … while a backlog drains"
            labels["returning, inline, backlog"] = "  … inline, while a backlog drains"
        for name, label in labels.items():
            r = best[name]
            print(
                f"{label:36s} {r['rate']:8,.0f} req/s  p50 {r.get('p50_ms', 0):6.2f} ms  "
                f"p99 {r.get('p99_ms', 0):6.2f} ms  non-2xx {r['non_2xx']:.0f}"
            )
        for name, label in labels.items():
            if name != "bare":
                print(f"{label} / bare Starlette: {best[name]['rate'] / best['bare']['rate']:.0%}")


@contextlib.contextmanager
def watching(base: str, on: bool) -> Iterator[None]:
    """A console page's stream, read in a thread for as long as the block runs."""
    if not on:
        yield
        return
    import httpx

    rows = [0]
    client = httpx.Client(base_url=base, timeout=None)
    assert client.post("/console/login", data={"password": CONSOLE_PASSWORD}).status_code == 303
    opened = threading.Event()

    def read() -> None:
        with contextlib.suppress(httpx.HTTPError), client.stream("GET", "/console/stream") as s:
            for line in s.iter_lines():
                if line == ": watching":
                    opened.set()
                elif line.startswith("data: {"):  # a row (not the sampling notice)
                    rows[0] += 1

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    opened.wait(10)
    try:
        yield
    finally:
        client.close()
        print(f"(the console stream delivered {rows[0]:,} rows)")


def _wait(url: str, process: subprocess.Popen[bytes]) -> None:
    import time

    import httpx

    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError("baseline server exited")
        try:
            httpx.post(url, content=b"{}", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError("baseline server not ready")


if __name__ == "__main__":
    main()
