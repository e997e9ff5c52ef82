"""Postbacks end to end over real HTTP: a browser beacon, then the lead system's postback,
then what the fake Events API receives; authentication, answers, reloads."""

from __future__ import annotations

import hashlib
import json
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.fake_api import FakeEventsApi
from gateway.runtime import Gateway
from gateway.settings import load_settings
from tests.conftest import PIXEL, TOKEN, GatewayServer, free_port

SHOP = "http://shop.test"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
TTP = "2F7h37YkS1j57AYSKTI7IHhJPYH"
CLICK = "E.C.P.click-42"
LMS_KEY = "lms-secret-0123456789"
TREE_KEY = "tree-secret-0123456789"
API_KEY = "server-key-0123456789"
RULES = f"""
[[pixels]]
id = "{PIXEL}"
access_token = "{TOKEN}"
origins = ["{SHOP}"]

[cookies]
secrets = ["cookie-secret-0123456789abcdef"]

[server_api]
api_keys = ["{API_KEY}"]

[postbacks.sources.lms]
secret = "{LMS_KEY}"
rename = {{ payout = "price" }}

[postbacks.sources.tree]
secret = "{TREE_KEY}"
rename = {{ revenue = "price", click_ref = "lead_id" }}
triggers = {{ status = {{ "1" = "lead_sold", "0" = "form_submit" }} }}

[[postbacks.rules]]
name = "sold"
trigger = "lead_sold"
filters = {{ publisher = {{ none_of = ["blocked-pub"] }} }}
price = {{ gt = 0 }}
event = "CompleteRegistration"
fields = {{ event_id = "{{lead_id}}-{{trigger}}", value = "{{price}}", currency = "USD", \
external_id = "{{lead_id}}" }}

[[postbacks.rules]]
name = "form"
trigger = "form_submit"
event = "Lead"
fields = {{ event_id = "{{lead_id}}-form", external_id = "{{lead_id}}" }}
"""


def config(**replace: str) -> dict[str, Any]:
    text = RULES.replace(" \\\n", " ")
    for old, new in replace.items():
        text = text.replace(old, new)
    return tomllib.loads(text)


class Lead:
    """The browser, the lead system and TikTok around one gateway."""

    def __init__(self, server: GatewayServer, fake: FakeEventsApi) -> None:
        self.server, self.fake = server, fake
        self.http = httpx.Client(base_url=server.url, timeout=10)

    def browse(self, lead_id: str, *, url: str = f"{SHOP}/landing?ttclid={CLICK}") -> None:
        body = {"event": "ViewContent", "event_id": f"view-{lead_id}", "page": {"url": url}}
        body["user"] = {"external_id": lead_id}
        headers = {
            "Origin": SHOP,
            "Content-Type": "text/plain",
            "User-Agent": CHROME,
            "Cookie": f"_ttp={TTP}",
        }
        response = self.http.post("/b", content=json.dumps(body), headers=headers)
        assert response.status_code == 204 and response.headers["x-accepted"] == "1"

    def delivered(self, count: int, within: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        while len(self.fake.accepted_events()) < count:
            assert time.monotonic() < deadline, "events not delivered"
            time.sleep(0.02)
        return self.fake.accepted_events()

    def delivered_event(self, event_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while True:
            found = [e for e in self.fake.accepted_events() if e["event_id"] == event_id]
            if found:
                return found[-1]
            assert time.monotonic() < deadline, f"{event_id} not delivered"
            time.sleep(0.02)


@pytest.fixture
def lead(serve_gateway: Callable[..., GatewayServer], fake_api: FakeEventsApi) -> Iterator[Lead]:
    made = Lead(serve_gateway(**config()), fake_api)
    yield made
    made.http.close()


def assert_browser_context(event: dict[str, Any]) -> None:
    user = event["user"]
    assert user["ttclid"] == CLICK
    assert user["ttp"] == TTP
    assert user["ip"] == "127.0.0.1"
    assert user["user_agent"] == CHROME
    assert event["page"]["url"] == f"{SHOP}/landing?ttclid={CLICK}"


def test_a_get_postback_gets_the_browsers_click_id_and_context(lead: Lead) -> None:
    lead.browse("lead-42")
    answer = lead.http.get(
        "/v1/postbacks/lms",
        params={
            "key": LMS_KEY,
            "trigger": "lead_sold",
            "lead_id": "lead-42",
            "payout": "37.5",
            "publisher": "pub-1",
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["stored"] == 1 and body["ttclid"] == "context"
    assert body["fired"] == [
        {
            "rule": "sold",
            "events": [
                {"event": "CompleteRegistration", "event_id": "lead-42-lead_sold", "pixel": PIXEL}
            ],
        }
    ]
    assert body["not_fired"] == [
        {"rule": "form", "reason": "trigger: 'lead_sold' is not form_submit"}
    ]
    event = lead.delivered_event("lead-42-lead_sold")
    assert event["event"] == "CompleteRegistration"
    assert event["properties"] == {"value": 37.5, "currency": "USD"}
    assert_browser_context(event)


def test_a_form_post_and_a_json_post_work_the_same(lead: Lead) -> None:
    lead.browse("lead-7")
    form = lead.http.post(
        f"/v1/postbacks/tree?key={TREE_KEY}",
        data={"status": "1", "click_ref": "lead-7", "revenue": "12"},
    )
    assert form.status_code == 200, form.text
    assert form.json()["fired"][0]["events"][0]["event_id"] == "lead-7-lead_sold"
    as_json = lead.http.post(
        "/v1/postbacks/tree",
        json={"status": 0, "click_ref": "lead-7"},
        headers={"X-Api-Key": TREE_KEY},
    )
    assert as_json.status_code == 200, as_json.text
    assert as_json.json()["fired"][0]["events"][0]["event_id"] == "lead-7-form"
    sold = lead.delivered_event("lead-7-lead_sold")
    assert sold["properties"]["value"] == 12
    assert_browser_context(sold)
    assert_browser_context(lead.delivered_event("lead-7-form"))


def test_a_retried_postback_gives_the_same_event_id(lead: Lead) -> None:
    lead.browse("L-1")
    params = {"key": LMS_KEY, "trigger": "lead_sold", "lead_id": "L-1", "payout": "5"}
    first = lead.http.get("/v1/postbacks/lms", params=params).json()
    again = lead.http.get("/v1/postbacks/lms", params=params).json()
    assert first["stored"] == again["stored"] == 1
    assert first["fired"] == again["fired"]
    assert first["fired"][0]["events"][0]["event_id"] == "L-1-lead_sold"


def test_a_lead_the_browser_never_showed_is_flagged_and_a_web_event_needs_a_page(
    lead: Lead,
) -> None:
    params = {"key": LMS_KEY, "trigger": "lead_sold", "lead_id": "never-seen", "payout": "5"}
    body = lead.http.get("/v1/postbacks/lms", params=params).json()
    assert body["ttclid"] == "missing"
    assert {"rule": "sold", "reason": "page.url: is required for web events"} in body["not_fired"]
    with_page = {**params, "url": "https://shop.example/thanks"}
    assert lead.http.get("/v1/postbacks/lms", params=with_page).json()["stored"] == 1


def test_a_filtered_out_publisher_sends_nothing_and_says_why(lead: Lead) -> None:
    lead.browse("lead-9")
    answer = lead.http.get(
        "/v1/postbacks/lms",
        params={
            "key": LMS_KEY,
            "trigger": "lead_sold",
            "lead_id": "lead-9",
            "payout": "5",
            "publisher": "blocked-pub",
        },
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["stored"] == 0 and body["fired"] == []
    assert {"rule": "sold", "reason": "publisher: 'blocked-pub' is excluded (none of)"} in body[
        "not_fired"
    ]
    # a sentinel postback sent after it is delivered, and nothing else for lead-9 is
    lead.browse("sentinel")
    sentinel = {"key": LMS_KEY, "trigger": "lead_sold", "lead_id": "sentinel", "payout": "1"}
    assert lead.http.get("/v1/postbacks/lms", params=sentinel).json()["stored"] == 1
    lead.delivered_event("sentinel-lead_sold")
    assert not [e for e in lead.fake.accepted_events() if e["event_id"].startswith("lead-9-")]


@pytest.mark.parametrize(
    ("path", "params", "headers"),
    [
        ("/v1/postbacks/lms", {"key": "wrong-secret-0123456789"}, {}),
        ("/v1/postbacks/lms", {}, {}),
        ("/v1/postbacks/lms", {"key": TREE_KEY}, {}),
        ("/v1/postbacks/nope", {"key": LMS_KEY}, {}),
        ("/v1/postbacks/lms", {}, {"X-Api-Key": "wrong-secret-0123456789"}),
    ],
)
def test_a_wrong_secret_is_401_json(
    lead: Lead, path: str, params: dict[str, str], headers: dict[str, str]
) -> None:
    answer = lead.http.get(path, params={**params, "trigger": "lead_sold"}, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized"


def test_the_api_key_in_a_header_is_accepted_too(lead: Lead) -> None:
    answer = lead.http.get(
        "/v1/postbacks/lms",
        params={"trigger": "form_submit", "lead_id": "x", "url": "https://shop.example/"},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert answer.status_code == 200 and answer.json()["fired"][0]["rule"] == "form"


def test_a_price_that_is_no_number_is_400_naming_the_senders_field(lead: Lead) -> None:
    answer = lead.http.get(
        "/v1/postbacks/lms",
        params={"key": LMS_KEY, "trigger": "lead_sold", "lead_id": "x", "payout": "lots"},
    )
    assert answer.status_code == 400
    assert answer.json()["field"] == "payout"
    unfilled = lead.http.get(  # the platform's macro left as written: no price at all
        "/v1/postbacks/lms",
        params={"key": LMS_KEY, "trigger": "lead_sold", "lead_id": "x", "payout": "#price#"},
    )
    assert unfilled.status_code == 200 and not unfilled.json()["fired"]


def test_a_dry_run_shows_the_events_api_json_and_stores_nothing(lead: Lead) -> None:
    answer = lead.http.get(
        "/v1/postbacks/lms",
        params={
            "key": LMS_KEY,
            "trigger": "lead_sold",
            "lead_id": "dry",
            "payout": "3",
            "email": "Alice@Example.com",
            "url": "https://shop.example/",
            "dry_run": "1",
        },
    )
    body = answer.json()
    assert body["stored"] == 0
    (request,) = body["requests"]
    assert request["event_source_id"] == PIXEL
    user = request["data"][0]["user"]
    assert user["email"] == ["ff8d9819fc…"]  # shortened, as the console shows digests
    assert "Alice" not in answer.text


def test_a_dry_run_never_hands_the_lead_context_back(lead: Lead) -> None:
    """A postback key is not a key to visitors' context (issue 21.7): a dry run shows where
    each value came from and masks it as the console does."""
    lead.browse("dry-ctx")
    answer = lead.http.get(
        "/v1/postbacks/lms",
        params={"key": LMS_KEY, "trigger": "lead_sold", "lead_id": "dry-ctx", "payout": "3",
                "dry_run": "1"},
    )  # fmt: skip
    body = answer.json()
    assert body["from"] == {
        "ip": "lead context", "user_agent": "lead context", "ttp": "lead context",
        "ttclid": "lead context", "page.url": "lead context",
    }  # fmt: skip
    for raw in ("127.0.0.1", CHROME, CLICK, TTP):
        assert raw not in answer.text, raw
    user = body["requests"][0]["data"][0]["user"]
    assert user["ip"] == "127.0.0.x"


def test_postbacks_are_rate_limited_per_client(
    serve_gateway: Callable[..., GatewayServer], fake_api: FakeEventsApi
) -> None:
    data = config()
    data["rate_limit"] = {"postback_per_second": 0.001, "postback_burst": 2}
    server = serve_gateway(**data)
    with httpx.Client(base_url=server.url) as http:
        codes = [
            http.get("/v1/postbacks/lms", params={"key": LMS_KEY}).status_code for _ in range(3)
        ]
    assert codes == [200, 200, 429]


def test_lead_context_is_counted_in_metrics(lead: Lead) -> None:
    lead.browse("lead-m")
    for lead_id in ("lead-m", "unknown"):
        lead.http.get(
            "/v1/postbacks/lms",
            params={"key": LMS_KEY, "trigger": "form_submit", "lead_id": lead_id},
        )
    metrics = httpx.get(lead.server.metrics_url).text
    assert "tiktok_gateway_lead_context_hits_total 1.0" in metrics
    assert "tiktok_gateway_lead_context_misses_total 1.0" in metrics
    assert 'tiktok_gateway_postbacks_total{result="fired",source="lms"} 1.0' in metrics
    assert 'tiktok_gateway_postbacks_total{result="none",source="lms"} 1.0' in metrics
    assert 'tiktok_gateway_postback_rules_skipped_total{source="lms"} 1.0' in metrics


@pytest.fixture
def reloadable(tmp_path: Path, fake_api: FakeEventsApi) -> Iterator[tuple[Lead, Path, Gateway]]:
    path = tmp_path / "gateway.toml"
    text = RULES.replace(" \\\n", " ")
    extra = (
        f'api_base = "{fake_api.url}"\n[metrics]\nport = {free_port()}\n'
        f'[outbox]\nurl = "sqlite:///{tmp_path}/outbox.sqlite3"\n[delivery]\nlinger_ms = 0\n'
    )
    path.write_text(extra + text)
    gateway = Gateway(load_settings(path, {}), reload=lambda: load_settings(path, {}))
    server = GatewayServer(create_app(gateway), gateway=gateway).start()
    made = Lead(server, fake_api)
    yield made, path, gateway
    made.http.close()
    server.stop()


def test_rules_reload_without_a_restart_and_a_broken_file_keeps_the_old_ones(
    reloadable: tuple[Lead, Path, Gateway], caplog: pytest.LogCaptureFixture
) -> None:
    lead, path, gateway = reloadable
    params = {"key": LMS_KEY, "trigger": "lead_sold", "lead_id": "r", "payout": "1", "url": SHOP}
    assert (
        lead.http.get("/v1/postbacks/lms", params=params).json()["fired"][0]["events"][0]["event"]
        == "CompleteRegistration"
    )

    path.write_text(
        path.read_text().replace('event = "CompleteRegistration"', 'event = "Purchase"')
    )
    assert lead.server.call(gateway.live.reload())
    fired = lead.http.get("/v1/postbacks/lms", params=params).json()["fired"]
    assert fired[0]["events"][0]["event"] == "Purchase"

    path.write_text(path.read_text().replace("{lead_id}-{trigger}", "{leadid}-{trigger}"))
    caplog.clear()
    assert not lead.server.call(gateway.live.reload())
    refusals = [r.getMessage() for r in caplog.records if "reload refused" in r.getMessage()]
    assert len(refusals) == 1 and "{leadid} names no known or configured field" in refusals[0]
    fired = lead.http.get("/v1/postbacks/lms", params=params).json()["fired"]
    assert fired[0]["events"][0] == {"event": "Purchase", "event_id": "r-lead_sold", "pixel": PIXEL}


def test_postback_url_prints_the_url_to_paste(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    path = tmp_path / "gateway.toml"
    path.write_text(RULES.replace(" \\\n", " "))
    result = run_cli("postback-url", "tree", "--config", str(path), "--base", "https://t.shop")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"https://t.shop/v1/postbacks/tree?key={TREE_KEY}&status={{status}}"
        "&publisher={publisher}&revenue={revenue}&click_ref={click_ref}"
    )
    unknown = run_cli("postback-url", "nope", "--config", str(path))
    assert unknown.returncode == 1 and "no postback source 'nope'" in unknown.stderr


def test_a_server_event_for_a_lead_gets_the_browser_context_and_its_own_values_win(
    lead: Lead,
) -> None:
    lead.browse("lead-s")
    event = {
        "event": "Purchase",
        "event_id": "order-s",
        "user": {"external_id": "lead-s", "ip": "203.0.113.9"},
    }
    answer = lead.http.post(
        "/v1/events", json=event, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert answer.status_code == 202, answer.text
    delivered = lead.delivered_event("order-s")
    assert delivered["user"]["ip"] == "203.0.113.9"  # the sender's own value wins
    assert delivered["user"]["ttclid"] == CLICK and delivered["user"]["ttp"] == TTP
    assert delivered["user"]["user_agent"] == CHROME
    assert delivered["page"]["url"] == f"{SHOP}/landing?ttclid={CLICK}"


def test_an_uploaded_file_row_for_a_lead_gets_the_browser_context(lead: Lead) -> None:
    """A CRM export uploaded to /v1/imports: the row names the lead, the browser context
    completes it (here even the page URL a web event needs)."""
    lead.browse("lead-f")
    header = "email,external_id,event,event_id,timestamp"
    rows = f"{header}\nf@example.com,lead-f,Purchase,row-f,{int(time.time())}\n"
    answer = lead.http.post(
        "/v1/imports",
        params={"pixel": PIXEL},
        content=rows,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "text/csv"},
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["summary"]["lead_context_filled"] == 1
    assert_browser_context(lead.delivered_event("row-f"))


def test_a_relayed_event_for_a_lead_gets_the_browser_context(lead: Lead) -> None:
    """The TikTok-compatible relay fills in the same context as the server API."""
    lead.browse("lead-r")
    event = {
        "event": "CompletePayment",
        "event_id": "order-r",
        "event_time": int(time.time()),
        "user": {"external_id": "lead-r"},
    }
    body = {"event_source": "web", "event_source_id": PIXEL, "data": [event]}
    answer = lead.http.post(
        "/open_api/v1.3/event/track/", json=body, headers={"Access-Token": TOKEN}
    )
    assert answer.json()["code"] == 0, answer.text
    delivered = lead.delivered_event("order-r")
    assert delivered["user"]["ttclid"] == CLICK and delivered["user"]["ttp"] == TTP
    assert delivered["user"]["user_agent"] == CHROME
    assert delivered["page"]["url"] == f"{SHOP}/landing?ttclid={CLICK}"


def write_config(path: Path, **top: str) -> Path:
    extra = "".join(f"{key} = {value}\n" for key, value in top.items())
    path.write_text(extra + RULES.replace(" \\\n", " "))
    return path


def test_the_postback_log_shows_what_each_postback_became(lead: Lead, tmp_path: Path) -> None:
    from tests.conftest import run_cli

    lead.browse("lead-log")
    sold = {
        "key": LMS_KEY,
        "trigger": "lead_sold",
        "lead_id": "lead-log",
        "payout": "9",
        "email": "Alice@Example.com",
    }
    lead.http.get("/v1/postbacks/lms", params=sold)
    lead.http.get(
        "/v1/postbacks/lms",
        params={"key": LMS_KEY, "trigger": "lead_return", "lead_id": "lead-log", "ttclid": "x"},
    )
    lead.delivered_event("lead-log-lead_sold")
    assert lead.server.gateway is not None
    lead.server.call(lead.server.gateway.postback_log.flush())
    url = lead.server.gateway.settings.outbox.url
    config = write_config(tmp_path / "gateway.toml", api_base='"http://127.0.0.1:9"')
    config.write_text(config.read_text() + f'\n[outbox]\nurl = "{url}"\n')
    result = run_cli("postbacks", "lms", "--last", "20", "--config", str(config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("lead_sold  ttclid: context")
    assert lines[1] == ("    fired sold: CompleteRegistration lead-log-lead_sold  [delivered]")
    assert "lead_return  ttclid: malformed" in result.stdout
    assert "    nothing fired" in result.stdout
    assert "    not sold: trigger: 'lead_return' is not lead_sold" in result.stdout
    as_json = run_cli("postbacks", "lms", "--json", "--config", str(config)).stdout
    entry = json.loads(as_json.splitlines()[0])
    assert entry["fields"]["email"] == (
        "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976"
    )
    assert "Alice" not in as_json and LMS_KEY not in as_json
    # the rules send lead_id as external_id: the log keeps it hashed, like one
    assert entry["fields"]["lead_id"] == hashlib.sha256(b"lead-log").hexdigest()


def test_postback_test_shows_matched_and_unmatched_rules_and_the_json(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    config = write_config(tmp_path / "gateway.toml")
    query = "trigger=lead_sold&lead_id=L1&payout=5&url=https://shop.example/&email=a@b.example"
    result = run_cli("postback-test", "lms", query, "--config", str(config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "matched  sold: CompleteRegistration (event_id L1-lead_sold)"
    assert lines[1] == "no match form: trigger: 'lead_sold' is not form_submit"
    body = json.loads(result.stdout[result.stdout.index("[") :])
    assert body[0]["data"][0]["properties"] == {"value": 5, "currency": "USD"}
    assert "a@b.example" not in result.stdout
    filtered = run_cli(
        "postback-test", "lms", f"{query}&publisher=blocked-pub", "--config", str(config)
    )
    assert "no match sold: publisher: 'blocked-pub' is excluded (none of)" in filtered.stdout
    assert "nothing would be sent" in filtered.stdout


def test_postback_test_sends_with_the_test_event_code(
    tmp_path: Path, fake_api: FakeEventsApi
) -> None:
    from tests.conftest import run_cli

    config = write_config(tmp_path / "gateway.toml", api_base=f'"{fake_api.url}"')
    query = "trigger=form_submit&lead_id=L2&url=https://shop.example/"
    result = run_cli(
        "postback-test",
        "lms",
        query,
        "--send",
        "--test-event-code",
        "TEST123",
        "--config",
        str(config),
    )
    assert result.returncode == 0, result.stderr
    assert 'TikTok answered: {"code": 0' in result.stdout
    (request,) = fake_api.requests
    assert request.body["test_event_code"] == "TEST123"
    assert request.body["data"][0]["event_id"] == "L2-form"


def test_sighup_reloads_the_rules_of_a_running_gateway(
    tmp_path: Path, fake_api: FakeEventsApi
) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import wait_for_http

    port = free_port()
    config = write_config(tmp_path / "gateway.toml", api_base=f'"{fake_api.url}"')
    original = config.read_text() + f'\n[outbox]\nurl = "sqlite:///{tmp_path}/o.sqlite3"\n'
    config.write_text(original)
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "GATEWAY_"))}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
             str(port), "--metrics-port", "0"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/healthz", timeout=30)
        params = {"key": LMS_KEY, "trigger": "lead_sold", "lead_id": "h", "payout": "1",
                  "url": SHOP, "dry_run": "1"}  # fmt: skip

        def event_name() -> str:
            fired = httpx.get(f"{base}/v1/postbacks/lms", params=params).json()["fired"]
            name: str = fired[0]["events"][0]["event"]
            return name

        def wait_until(condition: Callable[[], bool]) -> None:
            deadline = time.monotonic() + 15
            while not condition():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)

        assert event_name() == "CompleteRegistration"
        config.write_text(original.replace('event = "CompleteRegistration"', 'event = "Purchase"'))
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: event_name() == "Purchase")
        config.write_text("[[postbacks.rules]]\nbroken = true\n")
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in log.read_text())
        assert event_name() == "Purchase"
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(30)
    refused = [line for line in log.read_text().splitlines() if "reload refused" in line]
    assert len(refused) == 1


def test_with_a_redis_outbox_replicas_share_the_lead_context(
    serve_gateway: Callable[..., GatewayServer], fake_api: FakeEventsApi, redis_url: str
) -> None:
    data = config()
    data["outbox"] = {"url": redis_url}
    browser_side = Lead(serve_gateway(**data), fake_api)
    other_replica = Lead(serve_gateway(**data), fake_api)
    try:
        browser_side.browse("lead-r")
        gateway = browser_side.server.gateway
        assert gateway is not None  # its queue is written at once, by its own task:
        deadline = time.monotonic() + 10  # another replica sees it after that write
        while gateway.leads.store.stats.written < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        answer = other_replica.http.get(
            "/v1/postbacks/lms",
            params={"key": LMS_KEY, "trigger": "lead_sold", "lead_id": "lead-r", "payout": "4"},
        )
        assert answer.json()["ttclid"] == "context", answer.text
        assert_browser_context(other_replica.delivered_event("lead-r-lead_sold"))
    finally:
        browser_side.http.close()
        other_replica.http.close()


def test_a_reload_says_which_changes_need_a_restart(
    reloadable: tuple[Lead, Path, Gateway], caplog: pytest.LogCaptureFixture
) -> None:
    lead, path, gateway = reloadable
    lms = "[postbacks.sources.lms]"
    text = path.read_text().replace(lms, f"[postbacks]\ncontext_days = 7\n{lms}", 1)
    assert text != path.read_text()
    path.write_text("max_event_age_days = 3\n" + text)
    caplog.set_level("INFO", logger="gateway.settings.live")
    assert lead.server.call(gateway.live.reload())
    (line,) = [r.getMessage() for r in caplog.records if "reloaded" in r.getMessage()]
    assert line == (
        "configuration reloaded: pixels, postbacks.sources, postbacks.rules, "
        "postbacks.max_body_bytes applied; max_event_age_days, postbacks.context_days changed "
        "and need a restart"
    )


def test_a_blank_parameter_name_is_ignored_and_a_long_value_named(lead: Lead) -> None:
    base = f"/v1/postbacks/lms?key={LMS_KEY}&trigger=form_submit&lead_id=b&url={SHOP}"
    assert lead.http.get(f"{base}&=x&&").json()["stored"] == 1
    answer = lead.http.get(f"{base}&publisher={'p' * 3000}")
    assert answer.status_code == 400
    assert answer.json()["field"] == "publisher"


def test_a_secret_with_url_characters_gives_a_url_that_works(
    serve_gateway: Callable[..., GatewayServer],
) -> None:
    """postback-url printed the key unencoded: `+ / =` in a secret gave a 401 (issue 21.10)."""
    from gateway.ingest.sources.postback.endpoint import postback_url

    data = config()
    data["postbacks"]["sources"]["lms"]["secret"] = "ping+tree/secret=0123456789"
    server = serve_gateway(**data)
    assert server.gateway is not None
    source = server.gateway.settings.postbacks.sources["lms"]
    url = postback_url(server.url, source, {"trigger": "form_submit", "lead_id": "u-1"})
    assert "key=ping%2Btree%2Fsecret%3D0123456789" in url
    answer = httpx.get(url + "&url=https://shop.example/")
    assert answer.status_code == 200, answer.text


def test_the_postback_log_keeps_a_senders_free_fields_by_name_only(lead: Lead) -> None:
    """Free fields (a customer's name) are personal data no scrubber recognises; fields the
    rules read are kept with phones and emails scrubbed (issue 21.13)."""
    lead.http.get(
        "/v1/postbacks/lms",
        params={"key": LMS_KEY, "trigger": "form_submit", "lead_id": "free-1",
                "url": SHOP, "customer": "Jane Doe", "name": "Jane",
                "click_id": "+1 213 373 4253", "publisher": "p1"},
    )  # fmt: skip
    gateway = lead.server.gateway
    assert gateway is not None
    lead.server.call(gateway.postback_log.flush())
    [entry] = lead.server.call(gateway.postback_log.backend.last("lms", 1))
    fields = entry["fields"]
    assert fields["customer"] == fields["name"] == "(not kept)"
    assert "213" not in fields["click_id"] and fields["publisher"] == "p1"
