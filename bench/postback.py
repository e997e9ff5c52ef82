"""Postback benchmark: lead-system postbacks vs `POST /v1/events` with the same events.

    apt-get install wrk      # the load generator, a second process
    .venv/bin/python bench/postback.py [--seconds 10] [--connections 32] [--rounds 2]

One gateway, run as `serve` runs it (SQLite outbox, synchronous=FULL, delivery in its own
process to the fake Events API answering after 50 ms), with three tracking rules and the
lead context filled beforehand: 1,000 leads, each shown by a browser beacon carrying its
`external_id` on a landing URL with a `ttclid`. Then, per round, wrk sends for 10 s:

(a) `GET /v1/postbacks/lms?key=…&trigger=lead_sold&lead_id=lead-N&payout=…&publisher=…`:
    three rules evaluated (one fires, one fails its filter, one its trigger), the lead
    context looked up (the page URL, ttclid, _ttp, IP and user agent come from it), one
    event parsed and stored durably before the 200;
(b) `POST /v1/events` with the event that postback becomes (same name, event_id, value,
    external_id; the page URL and match keys again from the lead context), with the API key.

The best round of each is compared; the postback path should reach 70 % of the server API.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import API_KEY, PIXEL, TOKEN, child, free_port, run_wrk

ORIGIN = "https://shop.example"
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
LMS_KEY = "bench-lms-secret-0123456789"
LEADS = 1000
RULES = """
[postbacks.sources.lms]
secret = "%(key)s"
rename = { payout = "price" }

[[postbacks.rules]]
name = "sold"
trigger = "lead_sold"
filters = { publisher = { none_of = ["blocked"] } }
price = { gt = 0 }
event = "CompleteRegistration"
fields = { event_id = "{lead_id}-{trigger}", value = "{price}", currency = "USD", \
external_id = "{lead_id}" }

[[postbacks.rules]]
name = "big buyers"
trigger = "lead_sold"
filters = { buyer = ["b-gold"] }
event = "Purchase"
fields = { event_id = "{lead_id}-purchase", value = "{price}", currency = "USD" }

[[postbacks.rules]]
name = "returns"
trigger = "lead_return"
event = "LeadReturned"
"""
POSTBACK_SCRIPT = """
local counter = 0
request = function()
  counter = counter + 1
  local lead = counter %% %(leads)d
  local path = "/v1/postbacks/lms?key=%(key)s&trigger=lead_sold&lead_id=lead-" .. lead
    .. "&payout=37.50&publisher=pub-1&buyer=b-1"
  return wrk.format("GET", path)
end
"""
EVENTS_SCRIPT = """
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(api_key)s"
request = function()
  counter = counter + 1
  local lead = counter %% %(leads)d
  local body = '{"event":"CompleteRegistration","event_id":"lead-' .. lead .. '-lead_sold",'
    .. '"user":{"external_id":"lead-' .. lead .. '"},'
    .. '"properties":{"value":"37.50","currency":"USD"}}'
  return wrk.format(nil, "/v1/events", nil, body)
end
"""


def write_config(directory: Path, api: str) -> Path:
    path = directory / "gateway.toml"
    rules = (RULES % {"key": LMS_KEY}).replace(" \\\n", " ")
    path.write_text(
        f"""
api_base = "{api}"
[outbox]
url = "sqlite:///{directory}/outbox.sqlite3"
[cookies]
secrets = ["bench-cookie-secret-0123456789"]
[server_api]
api_keys = ["{API_KEY}"]
[rate_limit]
beacon_per_second = 0
postback_per_second = 0
[postbacks]
context_new_per_minute = 0  # the 1,000 leads are all shown from one address
[[pixels]]
id = "{PIXEL}"
access_token = "{TOKEN}"
origins = ["{ORIGIN}"]
{rules}
"""
    )
    return path


def show_leads(base: str) -> None:
    """What the browser path leaves for each lead: its click id, _ttp, IP, user agent, URL."""
    headers = {
        "Origin": ORIGIN,
        "Content-Type": "text/plain",
        "User-Agent": USER_AGENT,
        "Cookie": "_ttp=2F7h37YkS1j57AYSKTI7IHhJPYH",
    }
    with httpx.Client(base_url=base, timeout=10) as http:
        for lead in range(LEADS):
            body = {
                "event": "ViewContent",
                "event_id": f"view-{lead}",
                "page": {"url": f"{ORIGIN}/landing?ttclid=E.C.P.bench{lead}"},
                "user": {"external_id": f"lead-{lead}"},
            }
            response = http.post("/b", content=json.dumps(body), headers=headers)
            response.raise_for_status()
        check = http.get(
            "/v1/postbacks/lms",
            params={"key": LMS_KEY, "trigger": "lead_sold", "lead_id": "lead-7", "payout": "1",
                    "dry_run": "1"},
        ).json()  # fmt: skip
        event = check["requests"][0]["data"][0]  # masked as the console shows it
        assert event["user"]["ttclid"].startswith("E.C.P."), event
        assert check["ttclid"] == "context", check


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    with tempfile.TemporaryDirectory(prefix="bench-postback-") as tmp:
        directory = Path(tmp)
        scripts = {
            "postback": directory / "postback.lua",
            "server API": directory / "events.lua",
        }
        values = {"key": LMS_KEY, "leads": LEADS, "api_key": API_KEY}
        scripts["postback"].write_text(POSTBACK_SCRIPT % values)
        scripts["server API"].write_text(EVENTS_SCRIPT % values)
        fake_port, gateway_port = free_port(), free_port()
        api = f"http://127.0.0.1:{fake_port}"
        config = write_config(directory, api)
        fake = ["fake-api", "--port", str(fake_port), "--token", TOKEN, "--no-record"]
        fake += ["--no-validate", "--delay", "0.05"]
        serve = ["serve", "--config", str(config), "--port", str(gateway_port)]
        serve += ["--metrics-port", "0"]
        base = f"http://127.0.0.1:{gateway_port}"
        best: dict[str, dict[str, float]] = {}
        with (
            child(fake, f"{api}/_fake/stats", directory / "fake.log"),
            child(serve, f"{base}/readyz", directory / "gw.log"),
        ):
            show_leads(base)
            for _ in range(args.rounds):
                for name, script in scripts.items():
                    result = run_wrk(base, script, args.seconds, args.connections)
                    if result["rate"] > best.get(name, {"rate": 0.0})["rate"]:
                        best[name] = result
        for name, r in best.items():
            print(
                f"{name:12s} {r['rate']:8,.0f} req/s  p50 {r.get('p50_ms', 0):6.2f} ms  "
                f"p99 {r.get('p99_ms', 0):6.2f} ms  non-2xx {r['non_2xx']:.0f}"
            )
        ratio = best["postback"]["rate"] / best["server API"]["rate"]
        print(f"postbacks / POST /v1/events: {ratio:.0%} (target: 70 %)")


if __name__ == "__main__":
    main()
