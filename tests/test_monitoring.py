"""deploy/monitoring/ against a running gateway and Prometheus's own checker.

Every metric and label the dashboard or an alert names must be on a real gateway's /metrics
(a renamed metric would leave a panel empty and an alert silent, with no error anywhere);
the rules pass `promtool check rules` and each alert fires on its condition and on nothing
else (`promtool test rules`); the committed dashboard and PrometheusRule are what
generate.py makes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.fake_api import FakeEventsApi, Fault
from tests.conftest import OTHER_PIXEL, PIXEL, TOKEN, wait_until
from tests.gateway_process import API_KEY, GatewayProcess

MONITORING = Path(__file__).resolve().parent.parent / "deploy" / "monitoring"
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
"""Labels Prometheus adds to every scraped series: the gateway does not export them."""
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan"}  # fmt: skip
GRAFANA = {"$__rate_interval": "5m", "$__range": "6h", "$job": ".*"}
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _expressions() -> dict[str, str]:
    """Every PromQL expression, by where it is; Grafana's variables given values."""
    found = {f"alert {rule['alert']}": rule["expr"] for rule in _alerts()}
    board = json.loads((MONITORING / "dashboard.json").read_text())
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":  # label_values(metric, label)
            values = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"])
            assert values, variable["query"]
            found[f"variable {variable['name']}"] = f"count by ({values[2]}) ({values[1]})"
    for where, expr in found.items():
        for macro, value in GRAFANA.items():
            expr = expr.replace(macro, value)
        found[where] = expr
    return found


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("these tests need promtool (./scripts/test installs Debian's prometheus)")
    return path


def _references(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """(metric → label names it is matched on, label names grouped by) of an expression."""
    grouped = {
        label.strip()
        for labels in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr)
        for label in labels.split(",")
        if label.strip()
    }
    bare = re.sub(r'"[^"]*"', "", expr)  # string literals
    bare = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", bare)
    matched: dict[str, set[str]] = {}
    for metric, braces in re.findall(r"([A-Za-z_:][\w:]*)\s*(\{[^}]*\})", bare):
        matched.setdefault(metric, set()).update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", braces))
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", bare)  # matchers, ranges
    for name in re.findall(r"\b([A-Za-z_:][\w:]*)\b(?!\s*\()", bare):
        if name not in KEYWORDS and not re.fullmatch(r"\d\w*", name):
            matched.setdefault(name, set())
    return matched, grouped


def test_the_committed_files_are_what_generate_py_makes() -> None:
    checked = subprocess.run(
        [sys.executable, str(MONITORING / "generate.py"), "--check"], capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert rule["spec"] == yaml.safe_load((MONITORING / "alerts.yaml").read_text())


def test_the_alert_rules_and_every_dashboard_query_pass_promtool(tmp_path: Path) -> None:
    """Dashboard queries, as recording rules, get Prometheus's own parser too."""
    promtool = _promtool()
    queries = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": expr}
                    for n, (where, expr) in enumerate(_expressions().items())
                    if where.startswith(("panel", "variable"))
                ],
            }
        ]
    }
    (tmp_path / "queries.yaml").write_text(yaml.safe_dump(queries))
    for rules in (MONITORING / "alerts.yaml", tmp_path / "queries.yaml"):
        checked = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True,
                                 text=True, timeout=60)  # fmt: skip
        assert checked.returncode == 0, checked.stdout + checked.stderr


# series per alert: (values of each series over 1-minute steps), and the minute it is checked
_FIRING: dict[str, tuple[dict[str, str], int]] = {
    "TikTokGatewayDeliveryFailing": (
        {"tiktok_gateway_delivery_retried_total": "0+50x40",
         "tiktok_gateway_delivery_delivered_total": "100x40"}, 30),
    "TikTokGatewayBacklogOld": ({"tiktok_gateway_outbox_oldest_age_seconds": "0+120x40"}, 40),
    "TikTokGatewayBacklogVeryOld": (
        {"tiktok_gateway_outbox_oldest_age_seconds": "90000+60x20"}, 10),
    "TikTokGatewayDeadLettersGrowing": (
        {"tiktok_gateway_delivery_dead_lettered_total": "0x10 3x10"}, 15),
    "TikTokGatewayShedding": ({"tiktok_gateway_shedding": "0x5 1x10"}, 10),
    "TikTokGatewayTokenRefused": ({"tiktok_gateway_delivery_token_refused_total": "0x5 7x5"}, 8),
    "TikTokGatewayConfigReloadRefused": (
        {'tiktok_gateway_config_reloads_total{result="refused"}': "0x5 1x5",
         'tiktok_gateway_config_reloads_total{result="applied"}': "0+1x10"}, 8),
}  # fmt: skip
_HEALTHY = {
    "tiktok_gateway_delivery_retried_total": "0+5x40",  # some retries, and deliveries
    "tiktok_gateway_delivery_delivered_total": "0+500x40",
    "tiktok_gateway_outbox_oldest_age_seconds": "30x40",
    "tiktok_gateway_delivery_dead_lettered_total": "2x40",  # old dead letters, no new ones
    "tiktok_gateway_shedding": "0x40",
    "tiktok_gateway_delivery_token_refused_total": "0x40",
    'tiktok_gateway_config_reloads_total{result="refused"}': "1x40",
    'tiktok_gateway_config_reloads_total{result="applied"}': "0+1x40",
}
_TARGET = 'job="tiktok-gateway-metrics", namespace="shop", instance="10.0.0.1:9464"'


def _series(name: str) -> str:
    if "{" in name:
        return name.replace("{", "{" + _TARGET + ", ")
    return f"{name}{{{_TARGET}}}"


def test_each_alert_fires_on_its_condition_and_none_when_healthy(tmp_path: Path) -> None:
    alerts = {rule["alert"]: rule for rule in _alerts()}
    assert set(_FIRING) == set(alerts), "every alert needs a case here"
    tests: list[dict[str, Any]] = []
    for name, (series, minute) in _FIRING.items():
        rule = alerts[name]
        fired = [{"exp_labels": {**rule["labels"], "namespace": "shop",
                                 "job": "tiktok-gateway-metrics"},
                  "exp_annotations": rule["annotations"]}]  # fmt: skip
        tests.append({
            "interval": "1m",
            "input_series": [{"series": _series(s), "values": v} for s, v in series.items()],
            "alert_rule_test": [
                {"eval_time": f"{minute}m", "alertname": name, "exp_alerts": fired},
                {"eval_time": "0m", "alertname": name, "exp_alerts": []},
            ],
        })  # fmt: skip
    tests.append({
        "interval": "1m",
        "input_series": [{"series": _series(s), "values": v} for s, v in _HEALTHY.items()],
        "alert_rule_test": [
            {"eval_time": f"{minute}m", "alertname": name, "exp_alerts": []}
            for name in alerts for minute in (10, 20, 39)
        ],
    })  # fmt: skip
    suite = tmp_path / "alerts_test.yaml"
    suite.write_text(
        yaml.safe_dump({"rule_files": [str(MONITORING / "alerts.yaml")], "tests": tests})
    )
    ran = subprocess.run([_promtool(), "test", "rules", str(suite)], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr


@pytest.fixture
def exported(tmp_path: Path, fake_api: FakeEventsApi) -> Iterator[dict[str, set[str]]]:
    """A gateway that has stored, dropped, retried and dead-lettered events (one pixel's
    token refused): every sample name on its /metrics, with its label names."""
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
api_base = "{fake_api.url}"
[delivery]
linger_ms = 10
backoff_initial_seconds = 0.05
backoff_max_seconds = 0.2
[server_api]
api_keys = ["{API_KEY}"]
[[pixels]]
id = "{PIXEL}"
access_token = "{TOKEN}"
origins = ["https://shop.example"]
[[pixels]]
id = "{OTHER_PIXEL}"
access_token = "a-token-tiktok-refuses-0123"
""")  # fmt: skip
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()

    def scrape() -> dict[str, dict[str, float]]:
        """sample name → {label names, sorted and joined: value}"""
        found: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families(httpx.get(gateway.metrics_url).text):
            for sample in family.samples:
                found.setdefault(sample.name, {})[",".join(sorted(sample.labels))] = sample.value
        return found

    def value(name: str) -> float:
        return sum(scrape().get(name, {}).values())

    try:
        refused = ["refused-1", "refused-2", "refused-3"]
        server = httpx.post(
            f"{gateway.url}/v1/events",
            json={"pixel_id": OTHER_PIXEL, "events": [
                {"event": "Lead", "event_id": e, "page": {"url": "https://shop.example/"}}
                for e in refused]},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )  # fmt: skip
        assert server.status_code == 202, server.text
        wait_until(lambda: value("tiktok_gateway_delivery_token_refused_total") > 0, "40105")
        assert value("tiktok_gateway_delivery_token_refused_total") == len(refused)
        fake_api.add_fault(Fault(status=503, pixel=PIXEL, times=None))  # now everything waits
        for user_agent, event_id in ((CHROME, "b-1"), (BOT, "b-bot")):
            beacon = httpx.post(
                f"{gateway.url}/b",
                json={"pixel_id": PIXEL, "event": "AddToCart", "event_id": event_id,
                      "pixel_copy": "blocked", "page": {"url": "https://shop.example/p"}},
                headers={"Origin": "https://shop.example", "User-Agent": user_agent},
            )  # fmt: skip
            assert beacon.status_code == 204, beacon.text
        wait_until(lambda: value("tiktok_gateway_delivery_retried_total") > 0, "a retry")
        wait_until(lambda: "tiktok_gateway_outbox_oldest_age_seconds" in scrape(), "a backlog")
        yield {name: {n for key in by for n in key.split(",") if n}
               for name, by in scrape().items()}  # fmt: skip
    finally:
        gateway.stop()


def test_the_dashboard_and_alerts_name_only_what_a_gateway_exports(
    exported: dict[str, set[str]],
) -> None:
    assert exported["tiktok_gateway_events_dropped_total"] >= {"reason"}  # traffic made them
    assert "pixel_copy" in exported["tiktok_gateway_browser_events_by_pixel_copy_total"]
    problems = []
    for where, expr in _expressions().items():
        matched, grouped = _references(expr)
        for metric, labels in matched.items():
            if metric not in exported:
                problems.append(f"{where}: no metric {metric}")
            elif missing := labels - exported[metric] - TARGET_LABELS:
                problems.append(f"{where}: {metric} has no label {missing}")
        known = set().union(*(exported.get(m, set()) for m in matched)) | TARGET_LABELS
        if grouped - known:
            problems.append(f"{where}: no metric in it has the labels {grouped - known}")
    assert not problems, "\n".join(problems)
