"""Configuration reloaded without a restart (settings/live.py): a token rotated in its file
while events flow, a bad file refused in one log line, pixels added and removed, dead
letters of a revoked token replayed after the rotation.

Each gateway here is the one `serve` runs: uvicorn on loopback, its delivery process a real
child, its token a `file:` secret mounted as Kubernetes mounts a Secret (a `..data`
symlink swapped to a new directory), watched every 0.1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import _on_sighup, create_app
from gateway.delivery.process import DeliveryProcess
from gateway.fake_api import FakeEventsApi
from gateway.runtime import Gateway
from gateway.settings import load_settings
from tests.conftest import GatewayServer, free_port, run_cli, wait_until
from tests.gateway_process import API_KEY, GatewayProcess, Sender

PIXEL = "CRELOADPIXEL01"
NEW_PIXEL = "CRELOADPIXEL02"
OLD_TOKEN = "old-token-0123456789abcdef"
NEW_TOKEN = "new-token-fedcba9876543210"
OTHER_TOKEN = "other-token-00112233445566"
SHOP, NEW_SHOP = "https://shop.example", "https://new-shop.example"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


class SecretMount:
    """A directory of secret files updated as the kubelet does: each version in a directory
    of its own, `..data` a symlink to the current one, each file a symlink through it; an
    update swaps `..data` in one rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self._versions = 0

    def path(self, name: str) -> Path:
        return self.root / name

    def write(self, **files: str) -> None:
        self._versions += 1
        version = self.root / f"..version-{self._versions}"
        version.mkdir()
        for name, text in files.items():
            (version / name).write_text(text + "\n")
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(Path("..data") / name)
        staged = self.root / "..data_tmp"
        staged.symlink_to(version.name)
        os.replace(staged, self.root / "..data")


class Reloading:
    """A served gateway whose config file and token mount the test rewrites."""

    def __init__(
        self, tmp_path: Path, fake: FakeEventsApi, *, separate_process: bool = True
    ) -> None:
        self.fake = fake
        self.secrets = SecretMount(tmp_path / "secrets")
        self.secrets.write(token=OLD_TOKEN)
        self.config = tmp_path / "gateway.toml"
        self._head = f"""
api_base = "{fake.url}"
api_timeout_seconds = 3
watch_files_seconds = 0.1
[metrics]
port = {free_port()}
[outbox]
url = "sqlite:///{tmp_path}/outbox.sqlite3"
[delivery]
linger_ms = 0
backoff_initial_seconds = 0.05
separate_process = {str(separate_process).lower()}
[server_api]
api_keys = ["{API_KEY}"]
"""
        self.write_pixels(self.pixel(PIXEL, SHOP, f"file:{self.secrets.path('token')}"))
        self.gateway = Gateway(
            load_settings(self.config, {}),
            reload=lambda: load_settings(self.config, {}),
            config_file=self.config,
        )
        self.server = GatewayServer(create_app(self.gateway), gateway=self.gateway).start()
        self.http = httpx.Client(base_url=self.server.url, timeout=10)

    @staticmethod
    def pixel(pixel_id: str, origin: str, token: str) -> str:
        return f'[[pixels]]\nid = "{pixel_id}"\naccess_token = "{token}"\norigins = ["{origin}"]\n'

    def write_pixels(self, *tables: str) -> None:
        self.config.write_text(self._head + "\n".join(tables))

    def reloaded(self, count: int) -> None:
        """Until the gateway has applied `count` reloads in all (the watcher's doing)."""
        wait_until(lambda: self.gateway.live.reloads >= count, f"reload {count} not applied")

    def server_event(self, event_id: str, pixel: str | None = None) -> httpx.Response:
        event: dict[str, Any] = {"event": "Purchase", "event_id": event_id}
        event["page"] = {"url": "https://shop.example/thanks"}
        body = {"pixel_id": pixel, "events": [event]} if pixel else event
        return self.http.post("/v1/events", json=body, headers={"X-Api-Key": API_KEY})

    def beacon(self, event_id: str, origin: str) -> httpx.Response:
        event = {"event": "ViewContent", "event_id": event_id, "page": {"url": f"{origin}/"}}
        headers = {"Origin": origin, "Content-Type": "text/plain", "User-Agent": CHROME}
        return self.http.post("/b", json=event, headers=headers)

    def relay(self, event_id: str, pixel: str, token: str) -> dict[str, Any]:
        body = {
            "event_source": "web",
            "event_source_id": pixel,
            "data": [
                {
                    "event": "Purchase",
                    "event_id": event_id,
                    "event_time": int(time.time()) - 60,
                    "page": {"url": "https://shop.example/thanks"},
                }
            ],
        }
        answer = self.http.post(
            "/open_api/v1.3/event/track/", json=body, headers={"Access-Token": token}
        )
        assert answer.status_code == 200
        envelope: dict[str, Any] = answer.json()
        return envelope

    def delivered(self) -> dict[str, list[str | None]]:
        """Each delivered event_id, with the label of the token of each request it came in."""
        found: dict[str, list[str | None]] = {}
        for request in self.fake.requests:
            if request.code == 0 and not request.fault:
                for event in request.body["data"]:
                    found.setdefault(event["event_id"], []).append(request.token_label)
        return found

    def dead_letters(self) -> int:
        counts = self.server.call(self.gateway.outbox.counts(time.time()))
        return sum(per.dead for per in counts.pixels.values())

    def close(self) -> None:
        self.http.close()
        self.server.stop()


@pytest.fixture
def fake() -> Iterator[FakeEventsApi]:
    """A fake Events API that knows the old token (labelled, so requests say which)."""
    with FakeEventsApi({}) as fake:
        fake.set_token(OLD_TOKEN, label="old")
        yield fake


@pytest.fixture
def reloading(tmp_path: Path, fake: FakeEventsApi) -> Iterator[Reloading]:
    made = Reloading(tmp_path, fake)
    yield made
    made.close()


def test_a_token_rotated_in_its_file_is_used_with_no_restart_and_no_event_lost(
    reloading: Reloading, fake: FakeEventsApi, caplog: pytest.LogCaptureFixture
) -> None:
    delivery = reloading.gateway.delivery
    assert isinstance(delivery, DeliveryProcess) and delivery.pid is not None
    delivery_pid = delivery.pid
    sender = Sender(reloading.server, per_request=5, prefix="r")
    sender.start()
    try:
        wait_until(lambda: len(reloading.delivered()) >= 50, "events before the rotation")
        fake.set_token(NEW_TOKEN, label="new")  # the user made a new token in TikTok…
        reloading.secrets.write(token=NEW_TOKEN)  # …and updated the Secret
        reloading.reloaded(1)
        after = len(sender.sent)  # ids from here on were posted after the reload
        wait_until(lambda: len(sender.acked) >= after + 50, "events after the rotation")
    finally:
        sender.stop()
    acked = set(sender.acked)
    wait_until(lambda: acked <= set(reloading.delivered()), "an acknowledged event never arrived")

    delivered = reloading.delivered()
    assert all(len(labels) == 1 for labels in delivered.values()), "an event arrived twice"
    posted_after = [i for i in sender.sent[after:] if i in acked]
    assert len(posted_after) >= 50
    assert {label for i in posted_after for label in delivered[i]} == {"new"}
    assert "old" in {label for labels in delivered.values() for label in labels}
    assert all(request.token_ok for request in fake.requests)
    assert delivery.pid == delivery_pid and delivery.restarts == 0  # no restart
    assert sender.failures == 0
    assert NEW_TOKEN not in caplog.text and OLD_TOKEN not in caplog.text


def test_a_bad_file_keeps_the_running_configuration_and_is_logged_once(
    reloading: Reloading, fake: FakeEventsApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.settings.live")
    reloading.secrets.write(token="   ")  # an empty token: the whole file is refused
    wait_until(lambda: reloading.gateway.live.refused == 1, "the empty token was not refused")
    assert reloading.server_event("during-bad").status_code == 202
    wait_until(lambda: "during-bad" in reloading.delivered(), "the old token stopped working")
    assert reloading.delivered()["during-bad"] == ["old"]

    reloading.write_pixels(  # a later good change (the sentinel: polls ran meanwhile)
        reloading.pixel(PIXEL, SHOP, OLD_TOKEN), reloading.pixel(NEW_PIXEL, NEW_SHOP, OLD_TOKEN)
    )
    reloading.reloaded(1)
    refused = [r.getMessage() for r in caplog.records if "reload refused" in r.getMessage()]
    assert len(refused) == 1, refused
    assert refused[0] == (
        "configuration reload refused, keeping the running one: "
        f"pixels[0].access_token: {reloading.secrets.path('token')} is empty"
    )

    metrics = httpx.get(reloading.server.metrics_url).text
    assert 'tiktok_gateway_config_reloads_total{result="applied"} 1.0' in metrics
    assert 'tiktok_gateway_config_reloads_total{result="refused"} 1.0' in metrics

    reloading.config.write_text("[[pixels]\nbroken")  # not TOML at all
    assert not reloading.server.call(reloading.gateway.live.reload())
    assert reloading.server_event("still-good", NEW_PIXEL).status_code == 202


def test_a_pixel_added_by_a_reload_is_accepted_and_one_removed_is_refused(
    reloading: Reloading, fake: FakeEventsApi, tmp_path: Path
) -> None:
    fake.set_token(OTHER_TOKEN, [NEW_PIXEL], label="other")
    assert reloading.beacon("b-before", NEW_SHOP).status_code == 403
    assert reloading.server_event("s-before", NEW_PIXEL).status_code == 400
    assert reloading.relay("r-before", NEW_PIXEL, OTHER_TOKEN)["code"] == 40105

    reloading.secrets.write(token=OLD_TOKEN, other=OTHER_TOKEN)
    other = reloading.secrets.path("other")
    reloading.write_pixels(reloading.pixel(NEW_PIXEL, NEW_SHOP, f"file:{other}"))
    reloading.reloaded(1)

    assert reloading.beacon("b-after", NEW_SHOP).status_code == 204
    assert reloading.server_event("s-after", NEW_PIXEL).status_code == 202
    assert reloading.relay("r-after", NEW_PIXEL, OTHER_TOKEN)["code"] == 0
    assert reloading.server_event("s-no-pixel").status_code == 202  # the only pixel now
    wanted = {"b-after", "s-after", "r-after", "s-no-pixel"}
    wait_until(lambda: wanted <= set(reloading.delivered()), "the new pixel's events")
    assert {i: reloading.delivered()[i] for i in wanted} == {i: ["other"] for i in wanted}

    removed = reloading.server_event("s-removed", PIXEL)
    assert removed.status_code == 400 and "not a configured pixel" in removed.text
    assert reloading.beacon("b-removed", SHOP).status_code == 403
    assert reloading.relay("r-removed", PIXEL, OLD_TOKEN)["code"] == 40105
    assert httpx.get(f"{reloading.server.url}/readyz").json()["pixels"] == 1


def test_dead_letters_of_a_revoked_token_are_replayed_after_the_rotation(
    reloading: Reloading, fake: FakeEventsApi
) -> None:
    fake.revoke_token(OLD_TOKEN)  # expired before anyone rotated it
    ids = [f"revoked-{n}" for n in range(5)]
    for event_id in ids:
        assert reloading.server_event(event_id).status_code == 202
    wait_until(lambda: reloading.dead_letters() == len(ids), "the refused events")
    assert reloading.delivered() == {}

    fake.set_token(NEW_TOKEN, label="new")
    reloading.secrets.write(token=NEW_TOKEN)
    reloading.reloaded(1)
    result = run_cli("replay", "--config", str(reloading.config), "--pixel", PIXEL)
    assert result.returncode == 0, result.stderr

    wait_until(lambda: set(ids) <= set(reloading.delivered()), "the replayed events")
    assert reloading.delivered() == {i: ["new"] for i in ids}  # each once, with the new token
    assert reloading.dead_letters() == 0


def test_a_dispatcher_in_the_serving_process_takes_the_new_token_too(
    tmp_path: Path, fake: FakeEventsApi
) -> None:
    reloading = Reloading(tmp_path, fake, separate_process=False)
    try:
        assert not isinstance(reloading.gateway.delivery, DeliveryProcess)
        fake.set_token(NEW_TOKEN, label="new")
        reloading.secrets.write(token=NEW_TOKEN)
        reloading.reloaded(1)
        assert reloading.server_event("in-process").status_code == 202
        wait_until(lambda: "in-process" in reloading.delivered(), "the event")
        assert reloading.delivered() == {"in-process": ["new"]}
    finally:
        reloading.close()


def test_sighup_makes_serve_and_its_delivery_process_use_a_new_token(
    tmp_path: Path, fake: FakeEventsApi
) -> None:
    """`serve` as run in production, not watching files: SIGHUP alone reloads."""
    secrets = SecretMount(tmp_path / "secrets")
    config = _served_config(tmp_path, fake, secrets)
    log = tmp_path / "serve.log"
    gateway = GatewayProcess(config, log).start()
    try:

        def post(event_id: str) -> None:
            event = {"event": "Purchase", "event_id": event_id, "page": {"url": SHOP}}
            answer = httpx.post(f"{gateway.url}/v1/events", headers=headers, json=event)
            assert answer.status_code == 202, answer.text

        headers = {"X-Api-Key": API_KEY}
        post("h-1")
        wait_until(lambda: fake.requests, "the first event")
        fake.set_token(NEW_TOKEN, label="new")
        fake.revoke_token(OLD_TOKEN)
        secrets.write(token=NEW_TOKEN)
        # the log's level and format need a restart: neither process takes them now
        config.write_text('log_level = "debug"\nlog_format = "text"\n' + config.read_text())
        os.kill(gateway.pid, signal.SIGHUP)
        wait_until(lambda: "configuration reloaded" in log.read_text(), log.read_text())
        post("h-2")
        wait_until(lambda: len(fake.requests) == 2, "the second event")
    finally:
        gateway.stop()
    first, second = fake.requests
    assert (first.token_label, second.token_label) == ("old", "new")
    assert second.code == 0 and second.body["data"][0]["event_id"] == "h-2"
    text = log.read_text()
    assert OLD_TOKEN not in text and NEW_TOKEN not in text
    lines = text.splitlines()
    (applied,) = [line for line in lines if "delivery process: 1 pixel(s)" in line]
    (reloaded,) = [line for line in lines if "configuration reloaded" in line]
    for line in (applied, reloaded):  # both processes still log JSON, as at start
        assert json.loads(line)["level"] == "info"
    assert "log_level, log_format changed and need a restart" in reloaded
    assert '"debug"' not in text


def test_a_config_naming_a_secret_not_there_yet_is_applied_when_it_arrives(
    reloading: Reloading, fake: FakeEventsApi
) -> None:
    """Kubernetes syncs a ConfigMap and a Secret apart, up to a minute: the new pixel's
    token file may arrive well after the config naming it."""
    fake.set_token(OTHER_TOKEN, [NEW_PIXEL], label="other")
    other = reloading.secrets.path("other")
    reloading.write_pixels(
        reloading.pixel(PIXEL, SHOP, f"file:{reloading.secrets.path('token')}"),
        reloading.pixel(NEW_PIXEL, NEW_SHOP, f"file:{other}"),
    )
    wait_until(lambda: reloading.gateway.live.refused == 1, "the missing token not refused")
    reloading.secrets.write(token=OLD_TOKEN, other=OTHER_TOKEN)
    reloading.reloaded(1)
    assert reloading.beacon("b-new", NEW_SHOP).status_code == 204
    wait_until(lambda: "b-new" in reloading.delivered(), "the new pixel's event")
    assert reloading.delivered()["b-new"] == ["other"]
    assert reloading.gateway.live.refused == 1


def test_a_delivery_process_restarted_after_a_reload_keeps_the_running_outbox(
    reloading: Reloading, tmp_path: Path
) -> None:
    """A changed `[outbox] url` needs a restart of the gateway: a delivery child that
    crashes and is started again meanwhile must claim where the gateway still writes."""
    delivery = reloading.gateway.delivery
    assert isinstance(delivery, DeliveryProcess) and delivery.pid is not None
    text = reloading.config.read_text()
    moved = text.replace("outbox.sqlite3", "elsewhere.sqlite3")
    assert moved != text
    reloading.config.write_text(moved)
    reloading.reloaded(1)
    os.kill(delivery.pid, signal.SIGKILL)
    wait_until(lambda: delivery.restarts == 1 and delivery.running, "no restarted child")
    assert reloading.server_event("after-crash").status_code == 202
    wait_until(lambda: "after-crash" in reloading.delivered(), "the event was not delivered")
    assert not (tmp_path / "elsewhere.sqlite3").exists()


def _served_config(tmp_path: Path, fake: FakeEventsApi, secrets: SecretMount) -> Path:
    """The config of a `serve` that does not watch files, its token in `secrets`."""
    secrets.write(token=OLD_TOKEN)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'api_base = "{fake.url}"\nwatch_files_seconds = 0\n'
        f'[outbox]\nurl = "sqlite:///{tmp_path}/outbox.sqlite3"\n[delivery]\nlinger_ms = 0\n'
        f'[server_api]\napi_keys = ["{API_KEY}"]\n'
        + Reloading.pixel(PIXEL, SHOP, f"file:{secrets.path('token')}")
    )
    return config


def _spawned(pid: int) -> list[int]:
    """The delivery children of `pid` (multiprocessing's spawn), started or starting."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread or a child that just ended
            for child in (task / "children").read_text().split():
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
    return found


def test_sighup_while_serve_starts_or_sent_to_its_delivery_process_stops_nothing(
    tmp_path: Path, fake: FakeEventsApi
) -> None:
    """A logrotate `kill -HUP`, a `systemctl reload` or a hang-up of the process group
    may come at any moment: before the gateway handles it, it is ignored, not fatal."""
    config = _served_config(tmp_path, fake, SecretMount(tmp_path / "secrets"))
    log = tmp_path / "serve.log"
    gateway = GatewayProcess(config, log)
    failed: list[BaseException] = []

    def start() -> None:
        try:
            gateway.start()
        except BaseException as exc:  # reported by the test's own thread
            failed.append(exc)

    starting = threading.Thread(target=start)
    starting.start()
    try:
        # its delivery process is starting: the gateway's lifespan has not begun yet
        wait_until(lambda: gateway.process is not None and _spawned(gateway.pid), "no child")
        os.kill(gateway.pid, signal.SIGHUP)
        starting.join()
        assert not failed, failed
        first = gateway.delivery_pid  # started before SIGHUP had a handler: it inherits…
        os.kill(first, signal.SIGKILL)  # …so a child restarted later is the one to check
        wait_until(lambda: _spawned(gateway.pid) not in ([], [first]), "no restarted child")
        wait_until(lambda: httpx.get(f"{gateway.url}/readyz").status_code == 200, "not ready")
        child = gateway.delivery_pid
        os.kill(child, signal.SIGHUP)  # as `kill -HUP -<pgid>` does to every process
        event = {"event": "Purchase", "event_id": "after-hup", "page": {"url": SHOP}}
        answer = httpx.post(f"{gateway.url}/v1/events", headers={"X-Api-Key": API_KEY}, json=event)
        assert answer.status_code == 202, answer.text
        wait_until(lambda: fake.requests, "the event was not delivered")
        assert gateway.delivery_pid == child, log.read_text()  # the same process delivered
    finally:
        starting.join()
        gateway.stop()
    assert "Application shutdown complete" in log.read_text()  # stopped by SIGTERM alone


def test_the_gateway_stopping_puts_back_what_sighup_did_before_it_ran() -> None:
    """`serve` ignores SIGHUP outside the app's lifespan: stopping must not leave the
    default action (death) while the gateway drains its delivery process."""
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as `serve` does

    async def started_then_stopping() -> object:
        stop = _on_sighup(lambda: None)
        assert signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN
        stop()
        return signal.getsignal(signal.SIGHUP)

    try:
        assert asyncio.run(started_then_stopping()) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


LMS_KEY = "lms-key-0123456789abcdef"
SALE_RULE = """
[postbacks.sources.lms]
secret = "{key}"
[[postbacks.rules]]
name = "sale"
trigger = "lead_sold"
event = "Purchase"
pixel = "{pixel}"
fields = {{ event_id = "{{lead_id}}-sale", external_id = "{{lead_id}}" }}
"""


def test_a_postback_under_way_during_a_reload_is_judged_by_one_configuration(
    reloading: Reloading,
) -> None:
    """A reload moves rule `sale` to a new pixel and removes the old one while a slow
    sender's body arrives: the postback started under the old rules, and its pixel is
    looked up in the old table too, so its conversion is stored, not skipped."""
    token = f"file:{reloading.secrets.path('token')}"
    reloading.write_pixels(
        reloading.pixel(PIXEL, SHOP, token), SALE_RULE.format(key=LMS_KEY, pixel=PIXEL)
    )
    reloading.reloaded(1)
    reloaded = threading.Event()
    answers: list[httpx.Response] = []

    def body() -> Iterator[bytes]:
        yield b"trigger=lead_sold&lead_id=L1&"
        reloaded.wait(20)
        yield b"url=https%3A%2F%2Fshop.example%2Fthanks"

    def post() -> None:
        with httpx.Client(base_url=reloading.server.url, timeout=30) as client:
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            url = f"/v1/postbacks/lms?key={LMS_KEY}"
            answers.append(client.post(url, content=body(), headers=form))

    posting = threading.Thread(target=post)
    posting.start()
    try:
        requests = reloading.server._server.server_state.tasks  # uvicorn's running requests
        wait_until(lambda: len(requests) == 1, "the postback did not reach the gateway")
        reloading.write_pixels(
            reloading.pixel(NEW_PIXEL, NEW_SHOP, OTHER_TOKEN),
            SALE_RULE.format(key=LMS_KEY, pixel=NEW_PIXEL),
        )
        reloading.reloaded(2)
    finally:
        reloaded.set()
        posting.join()
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    outcome = answer.json()
    assert outcome["not_fired"] == [] and outcome["stored"] == 1, outcome
    assert outcome["fired"][0]["events"][0]["pixel"] == PIXEL  # the old rule, whole
