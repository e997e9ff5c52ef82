"""deploy/kubernetes/ agrees with the gateway: its TOML loads, with the Secret's files and
variables; the ports, probes, user and mounts are the ones the gateway and image use.
(The schemas themselves are checked by kubernetes-validate in .ci/run.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.http.listeners import METRICS_LISTENER_PATHS
from gateway.settings import Settings, parse_settings

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
SECRETS_DIR = "/run/secrets/tiktok-gateway/"


def _resources() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


@pytest.fixture
def resources() -> dict[str, dict[str, Any]]:
    return _resources()


@pytest.fixture
def container(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    [gateway] = resources["Deployment/tiktok-gateway"]["spec"]["template"]["spec"]["containers"]
    return dict(gateway)


@pytest.fixture
def settings(
    resources: dict[str, dict[str, Any]], container: dict[str, Any], tmp_path: Path
) -> Settings:
    """The ConfigMap's file as the pod reads it: Secret keys as files, and its variables."""
    secret = resources["Secret/tiktok-gateway"]["stringData"]
    for key, value in secret.items():
        (tmp_path / key).write_text(value)
    env = {}
    for variable in container["env"]:
        ref = variable["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "tiktok-gateway"
        env[variable["name"]] = secret[ref["key"]]
    text = resources["ConfigMap/tiktok-gateway"]["data"]["gateway.toml"]
    assert SECRETS_DIR in text
    return parse_settings(tomllib.loads(text.replace(SECRETS_DIR, f"{tmp_path}/")), env)


def test_the_configuration_loads_with_the_secret(
    settings: Settings, resources: dict[str, dict[str, Any]]
) -> None:
    secret = resources["Secret/tiktok-gateway"]["stringData"]
    assert settings.outbox.url == secret["outbox-url"]  # replicas share one Redis outbox
    assert settings.pixels[0].access_token.reveal() == secret["tiktok-access-token"]
    assert settings.log_format == "json"


def test_every_secret_file_the_configuration_names_is_mounted(
    resources: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    text = resources["ConfigMap/tiktok-gateway"]["data"]["gateway.toml"]
    named = set(re.findall(rf"file:{SECRETS_DIR}([\w-]+)", text))
    volumes = resources["Deployment/tiktok-gateway"]["spec"]["template"]["spec"]["volumes"]
    [secret_volume] = [v for v in volumes if "secret" in v]
    mounted = {item["path"] for item in secret_volume["secret"]["items"]}
    assert named and named <= mounted
    [mount] = [m for m in container["volumeMounts"] if m["name"] == secret_volume["name"]]
    assert mount["mountPath"] + "/" == SECRETS_DIR


def test_ports_and_probes_are_the_gateways(settings: Settings, container: dict[str, Any]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": settings.server.port, "metrics": settings.metrics.port}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] in METRICS_LISTENER_PATHS and check["port"] == "metrics"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_pod_runs_as_the_images_user_on_a_read_only_root(
    resources: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert user is not None
    pod = resources["Deployment/tiktok-gateway"]["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert (str(pod["runAsUser"]), str(pod["runAsGroup"])) == user.groups()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


def test_the_public_service_does_not_expose_metrics(resources: dict[str, dict[str, Any]]) -> None:
    public = resources["Service/tiktok-gateway"]["spec"]["ports"]
    assert [p["targetPort"] for p in public] == ["http"]
