"""deploy/compose.yaml's topology as processes: Redis, three gateway replicas and HAProxy on
loopback, started from the very files in deploy/ (no container engine runs here).

Only what must differ outside containers is rewritten, and each rewrite must find its text
(so the files cannot drift away from the test): addresses and ports (Redis, the replicas,
HAProxy's, the proxy's address the gateways trust), paths (secrets, certificate), and the
lease, shortened so a killed replica's batch is taken over within the test. The client
connects from 127.0.0.2 and HAProxy reaches the replicas from 127.0.0.1, so the address
TikTok receives tells whose it is.
"""

from __future__ import annotations

import re
import shutil
import signal
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from gateway.fake_api import FakeEventsApi, Fault
from tests.conftest import TOKEN, free_port
from tests.gateway_process import GatewayProcess, Sender
from tests.test_fault_tolerance import assert_nothing_lost, delivered_ids, wait_for

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
CLIENT_IP = "127.0.0.2"
PROXY_IP = "127.0.0.1"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
METRICS_TOKEN = "metrics-token-0123456789"
REPLICAS = ("gateway-1", "gateway-2", "gateway-3")


def templated(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"{old!r} is no longer in the deploy file"
        text = text.replace(old, new)
    return text


@dataclass
class Topology:
    proxy_url: str
    replicas: list[GatewayProcess]
    tls: ssl.SSLContext
    api_key: str
    redis_url: str
    pixel: str

    @property
    def url(self) -> str:  # for the Sender
        return self.proxy_url

    def client(self) -> httpx.Client:
        """A client whose connections come from CLIENT_IP, trusting the deploy certificate."""
        transport = httpx.HTTPTransport(local_address=CLIENT_IP, verify=self.tls)
        return httpx.Client(base_url=self.proxy_url, transport=transport, timeout=10)


def _compose() -> dict[str, object]:
    compose: dict[str, object] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return compose


@pytest.fixture
def deploy_files(tmp_path: Path) -> Path:
    """What setup.sh makes (certificate, keys, the Redis password), in tmp_path."""
    subprocess.run([str(DEPLOY / "setup.sh"), str(tmp_path)], check=True, capture_output=True)
    (tmp_path / "secrets" / "tiktok_access_token").write_text(TOKEN + "\n")
    return tmp_path


def _outbox_url(deploy_files: Path) -> str:
    """The replicas' GATEWAY_OUTBOX_URL, as compose passes it from secrets/outbox.env."""
    assert "./secrets/outbox.env" in str(_compose()["x-gateway"])
    [line] = (deploy_files / "secrets" / "outbox.env").read_text().splitlines()
    name, url = line.split("=", 1)
    assert name == "GATEWAY_OUTBOX_URL" and "@redis:6379/0" in url
    return url


@pytest.fixture
def redis_server(tmp_path: Path, deploy_files: Path) -> Iterator[str]:
    """A Redis of its own, started with compose's command (append-only, the password from
    the config file setup.sh wrote) on a free port; the URL with the password."""
    services = _compose()["services"]
    assert isinstance(services, dict)
    command = [
        str(deploy_files / "secrets" / "redis.conf") if arg == "/run/secrets/redis.conf" else arg
        for arg in services["redis"]["command"]
    ]
    assert "--appendonly" in command and str(deploy_files / "secrets" / "redis.conf") in command
    port = free_port()
    (tmp_path / "redis").mkdir()
    process = subprocess.Popen(
        [*command, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path / "redis"),
         "--save", ""],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = _outbox_url(deploy_files).replace("@redis:6379/", f"@127.0.0.1:{port}/")
    client = redis.Redis.from_url(url)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_for(answers, 10, "redis-server")
    client.close()
    with pytest.raises(redis.AuthenticationError):  # no password, no events
        redis.Redis(port=port).ping()
    yield url
    process.send_signal(signal.SIGTERM)
    process.wait(10)


@pytest.fixture
def topology(tmp_path: Path, redis_server: str, fake_api: FakeEventsApi) -> Iterator[Topology]:
    if shutil.which("haproxy") is None:
        pytest.fail("the deployment test needs HAProxy (./scripts/test installs Debian's haproxy)")
    services = _compose()["services"]
    assert isinstance(services, dict)
    proxy_address = services["proxy"]["networks"]["gateway"]["ipv4_address"]
    redis_port = redis_server.rsplit(":", 1)[1].split("/")[0]
    config = tmp_path / "gateway.toml"
    config.write_text(
        templated(
            (DEPLOY / "gateway.toml").read_text(),
            {
                "redis://redis:6379/0": f"redis://127.0.0.1:{redis_port}/0",
                f'"{proxy_address}/32"': f'"{PROXY_IP}/32"',
                "/run/secrets/": f"{tmp_path}/secrets/",
                "lease_seconds = 60": "lease_seconds = 3",
            },
        )
    )
    pixel = re.search(r'^id = "(\w+)"', config.read_text(), re.M)
    assert pixel is not None
    env = {
        "GATEWAY_OUTBOX_URL": redis_server,  # compose's env_file, the address changed
        "TIKTOK_API_BASE": fake_api.url,
        "GATEWAY_METRICS_HOST": "127.0.0.1",
        "GATEWAY_METRICS_TOKEN": METRICS_TOKEN,  # the gateway would serve /metrics publicly
    }
    replicas: list[GatewayProcess] = []
    proxy: subprocess.Popen[bytes] | None = None
    try:
        for name in REPLICAS:
            assert services[name]["command"][-1] == "/etc/tiktok-gateway/gateway.toml"
            replica = GatewayProcess(
                config, tmp_path / f"{name}.log", args=("--host", "127.0.0.1"), env=env
            )
            replicas.append(replica.start())
        proxy_port = free_port()
        replacements = {
            "bind :8443": f"bind 127.0.0.1:{proxy_port}",
            "/etc/haproxy/tls/": f"{tmp_path}/tls/",
        }
        for name, replica in zip(REPLICAS, replicas, strict=True):
            replacements[f"{name}:8080"] = f"127.0.0.1:{replica.port}"
        haproxy_cfg = tmp_path / "haproxy.cfg"
        haproxy_cfg.write_text(templated((DEPLOY / "haproxy.cfg").read_text(), replacements))
        with open(tmp_path / "haproxy.log", "wb") as log:
            proxy = subprocess.Popen(
                ["haproxy", "-f", str(haproxy_cfg), "-db"], stdout=log, stderr=subprocess.STDOUT
            )
        tls = ssl.create_default_context(cafile=str(tmp_path / "tls" / "gateway.pem"))
        topology = Topology(
            proxy_url=f"https://127.0.0.1:{proxy_port}",
            replicas=replicas,
            tls=tls,
            api_key=(tmp_path / "secrets" / "gateway_api_key").read_text().strip(),
            redis_url=redis_server,
            pixel=pixel.group(1),
        )

        def proxy_answers() -> bool:
            assert proxy is not None
            assert proxy.poll() is None, (tmp_path / "haproxy.log").read_text()
            try:
                with topology.client() as client:
                    return client.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(proxy_answers, 15, "HAProxy")
        yield topology
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(10)
        for replica in replicas:
            replica.stop()


def _received(replica: GatewayProcess) -> float:
    text = httpx.get(replica.metrics_url, timeout=5).text
    found = re.findall(r"^tiktok_gateway_events_received_total\{[^}]*\} (\S+)$", text, re.M)
    return sum(float(value) for value in found)


def test_the_proxy_balances_forwards_the_client_ip_and_loses_nothing_when_a_replica_dies(
    topology: Topology, fake_api: FakeEventsApi
) -> None:
    fake_api.add_fault(Fault(delay=0.5, drop=True, times=None))  # every batch hangs, fails
    beacons = [f"beacon-{n}" for n in range(30)]
    with topology.client() as client:
        for event_id in beacons:
            answer = client.post(
                "/b",
                json={"event": "AddToCart", "event_id": event_id,
                      "page": {"url": "https://shop.example/p"}},
                headers={"Origin": "https://shop.example", "User-Agent": CHROME,
                         "X-Forwarded-For": "203.0.113.66"},  # a client's claim: replaced
            )  # fmt: skip
            assert answer.status_code == 204, answer.text
            assert answer.headers["x-accepted"] == "1"
    sender = Sender(topology, verify=topology.tls, api_key=topology.api_key, prefix="s")
    sender.start()
    try:
        wait_for(lambda: len(sender.acked) >= 300, 30, "server events through the proxy")
        served = [_received(replica) for replica in topology.replicas]
        assert all(count > 0 for count in served), served

        victim = topology.replicas[1]
        store = redis.Redis.from_url(topology.redis_url, decode_responses=True)

        def victim_holds_a_batch() -> bool:
            consumers = store.xinfo_consumers("tiktok-gateway:stream", "dispatchers")
            return any(f"-{victim.pid}-" in c["name"] and c["pending"] > 0 for c in consumers)

        wait_for(victim_holds_a_batch, 15, "the victim to hold a batch in flight")
        victim.kill9()  # its batch is in its pending list: another replica must take it over
        acked_at_kill = len(sender.acked)
        wait_for(lambda: len(sender.acked) >= acked_at_kill + 200, 30, "the two left to serve")
    finally:
        sender.stop()
    fake_api.clear_faults()
    expected = set(sender.acked) | set(beacons)
    wait_for(lambda: expected <= set(delivered_ids(fake_api)), 30, "every acknowledged event")
    sender.acked.extend(beacons)
    sender.sent.extend(beacons)
    assert_nothing_lost(sender, fake_api)
    assert not victim_holds_a_batch()
    store.close()

    by_id = {e["event_id"]: e for e in fake_api.accepted_events()}
    assert {by_id[b]["user"]["ip"] for b in beacons} == {CLIENT_IP}  # not HAProxy's, not claimed


def test_metrics_are_not_routed_from_the_public_side(topology: Topology) -> None:
    """The replicas would answer /metrics to the bearer token; the proxy never asks them."""
    bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    direct = httpx.get(f"{topology.replicas[0].url}/metrics", headers=bearer)
    assert direct.status_code == 200 and "tiktok_gateway_" in direct.text
    with topology.client() as client:
        for path in ("/metrics", "/%6detrics", "/metrics?x=1"):
            answer = client.get(path, headers=bearer)
            assert answer.status_code == 404, path
            assert "tiktok_gateway_" not in answer.text
        assert client.get("/healthz").status_code == 200
