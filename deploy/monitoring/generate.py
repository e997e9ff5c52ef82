"""Writes what deploy/monitoring/ derives: the Grafana dashboard (with Grafana's own SDK) and
the Prometheus Operator's PrometheusRule (alerts.yaml, wrapped).

Usage: python deploy/monitoring/generate.py [--check]
--check writes nothing and exits 1 if a committed file differs from what it would write.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import DataSourceRef

HERE = Path(__file__).resolve().parent
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB = 'job=~"$job"'
RATE = "$__rate_interval"
RECOVERED = 'pixel_copy=~"blocked|absent"'


_ids = itertools.count(1)


def _query(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref)


def _series(title: str, unit: str, description: str, *queries: tuple[str, str]) -> Any:
    panel = timeseries.Panel().id(next(_ids)).title(title).description(description).unit(unit)
    panel = panel.datasource(PROMETHEUS).height(8).span(12).fill_opacity(10)
    panel = panel.legend(
        common.VizLegendOptions()
        .display_mode(LegendDisplayMode.LIST)
        .placement(LegendPlacement.BOTTOM)
        .show_legend(True)
    ).tooltip(common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.NONE))
    for ref, (expr, legend) in zip("ABCDEF", queries, strict=False):
        panel = panel.with_target(_query(expr, legend, ref))
    return panel


def _stat(title: str, unit: str, description: str, expr: str) -> Any:
    panel = stat.Panel().id(next(_ids)).title(title).description(description).unit(unit)
    panel = panel.reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
    return panel.datasource(PROMETHEUS).height(4).span(6).with_target(_query(expr))


def build_dashboard() -> dict[str, Any]:
    received = f"tiktok_gateway_events_received_total{{{JOB}}}"
    copies = f"tiktok_gateway_browser_events_by_pixel_copy_total{{{JOB}}}"
    recovered = f"tiktok_gateway_browser_events_by_pixel_copy_total{{{JOB}, {RECOVERED}}}"
    score = "tiktok_gateway_match_key_score"
    board = (
        dashboard.Dashboard("TikTok gateway")
        .uid("tiktok-gateway")
        .tags(["tiktok-gateway"])
        .refresh("30s")
        .time("now-6h", "now")
        .with_variable(dashboard.DatasourceVariable("datasource").type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("job")
            .label("Job")
            .datasource(PROMETHEUS)
            .query("label_values(tiktok_gateway_events_received_total, job)")
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_row(dashboard.Row("Events").id(next(_ids)))
        .with_panel(
            _series("Received", "reqps", "Events stored in the outbox per second, by source.",
                    (f"sum by (source) (rate({received}[{RATE}]))", "{{source}}"))
        )
        .with_panel(
            _series("Dropped, by reason", "reqps",
                    "Events seen but not forwarded per second (bots, no consent, too old…).",
                    (f"sum by (reason) (rate(tiktok_gateway_events_dropped_total{{{JOB}}}"
                           f"[{RATE}]))", "{{reason}}"))
        )
        .with_panel(
            _series("Recovered conversions", "reqps",
                    "Browser events whose TikTok pixel copy was blocked or absent, per second: "
                    "conversions TikTok would not have seen without the gateway.",
                    (f"sum by (pixel) (rate({recovered}[{RATE}]))", "{{pixel}}"))
        )
        .with_panel(
            _series("Match-key score", "none",
                    "Average local 0–10 estimate of how well TikTok can match stored events.",
                    (f"sum by (pixel) (rate({score}_sum{{{JOB}}}[{RATE}])) / "
                           f"sum by (pixel) (rate({score}_count{{{JOB}}}[{RATE}]))",
                           "average {{pixel}}"),
                    (f"histogram_quantile(0.5, sum by (le, pixel) "
                           f"(rate({score}_bucket{{{JOB}}}[{RATE}])))", "median {{pixel}}"))
        )
        .with_row(dashboard.Row("Delivery").id(next(_ids)))
        .with_panel(
            _series("Delivered, retried, dead-lettered", "reqps",
                    "Events per second by what TikTok's answer made of them.",
                    (f"sum(rate(tiktok_gateway_delivery_delivered_total{{{JOB}}}[{RATE}]))",
                           "delivered"),
                    (f"sum(rate(tiktok_gateway_delivery_retried_total{{{JOB}}}[{RATE}]))",
                           "retried"),
                    (f"sum(rate(tiktok_gateway_delivery_dead_lettered_total{{{JOB}}}"
                           f"[{RATE}]))", "dead-lettered"))
        )
        .with_panel(
            _series("Oldest undelivered event", "s",
                    "Age of the oldest event in the outbox: how far behind delivery is.",
                    (f"max(tiktok_gateway_outbox_oldest_age_seconds{{{JOB}}})", "age"))
        )
        .with_panel(
            _stat("Dead letters", "short", "Events dead-lettered in the time range.",
                  f"sum(increase(tiktok_gateway_delivery_dead_lettered_total{{{JOB}}}[$__range]))")
        )
        .with_panel(
            _stat("Token refused", "short",
                  "Events dead-lettered because TikTok refused the access token.",
                  f"sum(increase(tiktok_gateway_delivery_token_refused_total{{{JOB}}}"
                  "[$__range]))")
        )
        .with_panel(
            _stat("Recovered share", "percentunit",
                  "Share of browser events whose pixel copy was lost, in the time range.",
                  f"sum(increase({recovered}[$__range])) / sum(increase({copies}[$__range]))")
        )
        .with_panel(
            _stat("Shedding", "none", "1 while browser events are refused (backlog too large).",
                  f"max(tiktok_gateway_shedding{{{JOB}}})")
        )
        .with_row(dashboard.Row("Outbox").id(next(_ids)))
        .with_panel(
            _series("Outbox size and room", "bytes",
                    "What the outbox holds, and the room left where it grows.",
                    (f"max(tiktok_gateway_outbox_stored_bytes{{{JOB}}})", "stored"),
                    (f"min(tiktok_gateway_outbox_free_bytes{{{JOB}}})", "free"))
        )
    )  # fmt: skip
    built: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(board.build()))
    return built


def build_prometheus_rule() -> dict[str, Any]:
    rules = yaml.safe_load((HERE / "alerts.yaml").read_text())
    labels = {"app.kubernetes.io/name": "tiktok-gateway"}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "tiktok-gateway", "labels": labels},
        "spec": rules,
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as literal blocks, as they are written in alerts.yaml."""


_Dumper.add_representer(
    str,
    lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None),
)


def outputs() -> dict[Path, str]:
    rule = yaml.dump(build_prometheus_rule(), Dumper=_Dumper, sort_keys=False, width=100)
    return {
        HERE / "dashboard.json": json.dumps(build_dashboard(), indent=2, sort_keys=True) + "\n",
        HERE / "prometheusrule.yaml": "# Made by generate.py from alerts.yaml: edit that.\n" + rule,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args()
    stale = []
    for path, text in outputs().items():
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python {Path(__file__)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
