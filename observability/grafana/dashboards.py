"""Generate glassbox's Grafana dashboards as JSON, with grafana-foundation-sdk (Grafana 11.6).

Run `.venv/bin/python observability/grafana/dashboards.py` after a change; it rewrites the JSON
under provisioning/dashboards/glassbox/. tests/observability/test_dashboards.py fails when the
committed JSON and this script's output differ, and evaluates every query against a real
Prometheus (test_promql_live.py). Metric names and labels: observability/README.md.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)

OUTPUT = Path(__file__).resolve().parent / "provisioning" / "dashboards" / "glassbox"

# Fixed UIDs of provisioning/datasources/datasources.yaml.
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="prometheus")

# Every query is narrowed by the template variables; the environment and instance variables are
# required on every dashboard, the service variable separates the api from payments.
SELECTOR = 'deployment_environment=~"$env", job=~"$service", instance=~"$instance"'
# What the SLOs count: user traffic, not probes and scrapes.
USER_TRAFFIC = SELECTOR + ', http_route!~"/health/.*|/metrics"'
HTTP_COUNT = "http_server_request_duration_seconds_count"
HTTP_BUCKET = "http_server_request_duration_seconds_bucket"

# SLOs (rules/slo.yml): 99.9% without 5xx; 99% within 300 ms.
AVAILABILITY_BUDGET = 0.001
LATENCY_BUDGET = 0.01


def variables(metric: str = HTTP_COUNT) -> list[dashboard_builders.QueryVariable]:
    """Environment, service (Prometheus job) and instance, each narrowing the next."""

    def query_variable(name: str, label: str, query: str) -> dashboard_builders.QueryVariable:
        return (
            dashboard_builders.QueryVariable(name)
            .label(label)
            .datasource(PROMETHEUS)
            .query(query)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
        )

    return [
        query_variable("env", "Environment", f"label_values({metric}, deployment_environment)"),
        query_variable(
            "service",
            "Service",
            f'label_values({metric}{{deployment_environment=~"$env"}}, job)',
        )
        .multi(True)
        .include_all(True)
        .all_value(".*"),
        query_variable(
            "instance",
            "Instance",
            f'label_values({metric}{{deployment_environment=~"$env", job=~"$service"}}, instance)',
        )
        .multi(True)
        .include_all(True)
        .all_value(".*"),
    ]


def query(expr: str, legend: str = "", ref: str = "A", exemplar: bool = False) -> Any:
    target = (
        prometheus.Dataquery()
        .datasource(PROMETHEUS)
        .expr(expr)
        .ref_id(ref)
        .range()
        .exemplar(exemplar)
    )
    return target.legend_format(legend) if legend else target


def graph(
    title: str,
    description: str,
    unit: str,
    targets: Iterable[tuple[str, str]],
    *,
    width: int = 12,
    exemplar: bool = False,
    stacked: bool = False,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .span(width)
        .height(8)
        .fill_opacity(10)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
    )
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    for index, (expr, legend) in enumerate(targets):
        panel = panel.with_target(query(expr, legend, chr(ord("A") + index), exemplar))
    return panel


def single(
    title: str,
    description: str,
    unit: str,
    expr: str,
    *,
    thresholds: list[tuple[float | None, str]] | None = None,
    width: int = 6,
    decimals: int | None = None,
) -> stat.Panel:
    steps = thresholds or [(None, "green")]
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .span(width)
        .height(5)
        .graph_mode(common.BigValueGraphMode.AREA)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(
            dashboard_builders.ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=value, color=color) for value, color in steps])
        )
        .with_target(query(expr))
    )
    return panel.decimals(decimals) if decimals is not None else panel


def quantile(q: float, bucket: str, selector: str, by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return (
        f"histogram_quantile({q}, sum by ({group}) "
        f"(rate({bucket}{{{selector}}}[$__rate_interval])))"
    )


def ratio_or_zero(part: str, whole: str, by: str) -> str:
    """part / whole per group, 0 (not "no data") for groups where `part` has no series."""
    return f"({part} or {whole} * 0) / {whole}" if by else f"({part} or vector(0)) / {whole}"


def new_dashboard(uid: str, title: str, description: str, tags: list[str]) -> Any:
    return (
        dashboard_builders.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["glassbox", *tags])
        .readonly()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .link(
            dashboard_builders.DashboardLink("glassbox")
            .type("dashboards")
            .tags(["glassbox"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )


def service_overview() -> Any:
    by_route = "http_route, http_request_method"
    errors_5xx = f'{HTTP_COUNT}{{{SELECTOR}, http_response_status_code=~"5.."}}'
    board = new_dashboard(
        "glassbox-overview",
        "glassbox: service overview",
        "Rate, errors and duration per route; latency quantiles with exemplars (click one to "
        "open its trace in Jaeger); SLO burn rates and error budget left.",
        ["red", "slo"],
    ).variables(variables())
    rate_all = f"sum(rate({HTTP_COUNT}{{{SELECTOR}}}[$__rate_interval]))"
    error_ratio = ratio_or_zero(f"sum(rate({errors_5xx}[$__rate_interval]))", rate_all, by="")
    budget_window = "30d"
    errors_30d = ratio_or_zero(
        f'sum(increase({HTTP_COUNT}{{{USER_TRAFFIC}, http_response_status_code=~"5.."}}'
        f"[{budget_window}]))",
        f"sum(increase({HTTP_COUNT}{{{USER_TRAFFIC}}}[{budget_window}]))",
        by="",
    )
    availability_left = f"1 - ({errors_30d}) / {AVAILABILITY_BUDGET}"
    latency_left = (
        f'1 - (1 - sum(increase({HTTP_BUCKET}{{{USER_TRAFFIC}, le="0.3"}}[{budget_window}])) '
        f"/ sum(increase({HTTP_COUNT}{{{USER_TRAFFIC}}}[{budget_window}]))) / {LATENCY_BUDGET}"
    )
    budget_colours: list[tuple[float | None, str]] = [
        (None, "red"),
        (0.25, "orange"),
        (0.5, "green"),
    ]
    slo_selector = 'deployment_environment=~"$env", job=~"$service"'
    return (
        board.with_panel(
            single("Requests per second", "All routes of the selected services.", "reqps", rate_all)
        )
        .with_panel(
            single(
                "5xx ratio",
                "Share of requests answered with a 5xx.",
                "percentunit",
                error_ratio,
                thresholds=[(None, "green"), (0.001, "orange"), (0.01, "red")],
                decimals=3,
            )
        )
        .with_panel(
            single(
                "Availability error budget left (30 days)",
                "Objective 99.9% of user requests without 5xx over 30 days; 100% = untouched, "
                "0% = spent.",
                "percentunit",
                availability_left,
                thresholds=budget_colours,
                decimals=1,
            )
        )
        .with_panel(
            single(
                "Latency error budget left (30 days)",
                "Objective 99% of user requests within 300 ms over 30 days; 100% = untouched, "
                "0% = spent.",
                "percentunit",
                latency_left,
                thresholds=budget_colours,
                decimals=1,
            )
        )
        .with_panel(
            graph(
                "Requests per second by route",
                "Rate: requests per second per route template and method.",
                "reqps",
                [
                    (
                        f"sum by ({by_route}) (rate({HTTP_COUNT}{{{SELECTOR}}}[$__rate_interval]))",
                        "{{http_request_method}} {{http_route}}",
                    )
                ],
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Errors per second by route and status",
                "Errors: 4xx (client mistakes, 404, 429) and 5xx (ours) per route.",
                "reqps",
                [
                    (
                        f"sum by ({by_route}, http_response_status_code) (rate({HTTP_COUNT}"
                        f'{{{SELECTOR}, http_response_status_code=~"4..|5.."}}[$__rate_interval]))',
                        "{{http_response_status_code}} {{http_request_method}} {{http_route}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Latency quantiles (exemplars link to Jaeger)",
                "Duration: p50, p95 and p99 of all requests; the dots are exemplars from the "
                "OTLP path, each a trace in Jaeger. The SLO line is 300 ms.",
                "s",
                [
                    (quantile(0.5, HTTP_BUCKET, SELECTOR), "p50"),
                    (quantile(0.95, HTTP_BUCKET, SELECTOR), "p95"),
                    (quantile(0.99, HTTP_BUCKET, SELECTOR), "p99"),
                ],
                exemplar=True,
            )
        )
        .with_panel(
            graph(
                "p95 latency by route",
                "Duration: the 95th percentile per route template.",
                "s",
                [
                    (
                        quantile(0.95, HTTP_BUCKET, SELECTOR, by_route),
                        "{{http_request_method}} {{http_route}}",
                    )
                ],
                exemplar=True,
            )
        )
        .with_panel(
            graph(
                "5xx ratio by route",
                "Share of each route's requests answered with a 5xx.",
                "percentunit",
                [
                    (
                        ratio_or_zero(
                            f"sum by ({by_route}) (rate({errors_5xx}[$__rate_interval]))",
                            f"sum by ({by_route}) (rate({HTTP_COUNT}{{{SELECTOR}}}"
                            "[$__rate_interval]))",
                            by=by_route,
                        ),
                        "{{http_request_method}} {{http_route}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Requests in flight",
                "Requests being served right now, per instance.",
                "short",
                [
                    (
                        f"sum by (instance) (http_server_active_requests{{{SELECTOR}}})",
                        "{{instance}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Availability burn rate",
                "How fast the 0.1% error budget burns (1 = exactly on budget for 30 days). "
                "The fast-burn page fires above 14.4 on both 1h and 5m (or 6 on 6h and 30m).",
                "short",
                [
                    (
                        f"job:slo_errors_per_request:ratio_rate{window}{{{slo_selector}}} "
                        f"/ {AVAILABILITY_BUDGET}",
                        f"{{{{job}}}} {window}",
                    )
                    for window in ("5m", "1h", "6h")
                ],
            )
        )
        .with_panel(
            graph(
                "Latency burn rate",
                "How fast the 1% budget of requests slower than 300 ms burns (1 = on budget).",
                "short",
                [
                    (
                        f"job:slo_slow_requests:ratio_rate{window}{{{slo_selector}}} "
                        f"/ {LATENCY_BUDGET}",
                        f"{{{{job}}}} {window}",
                    )
                    for window in ("5m", "1h", "6h")
                ],
            )
        )
    )


def dependencies() -> Any:
    db_selector = SELECTOR
    board = new_dashboard(
        "glassbox-dependencies",
        "glassbox: dependencies",
        "Database pool and query latency, cache hit ratio, payments latency and outcomes, "
        "rate-limit rejections.",
        ["dependencies"],
    ).variables(variables())
    cache_all = (
        f"sum by (cache_name) (rate(glassbox_cache_requests_total{{{SELECTOR}}}[$__rate_interval]))"
    )
    cache_hits = (
        f'sum by (cache_name) (rate(glassbox_cache_requests_total{{{SELECTOR}, result="hit"}}'
        "[$__rate_interval]))"
    )
    payments_all = (
        f"sum(rate(glassbox_payments_duration_seconds_count{{{SELECTOR}}}[$__rate_interval]))"
    )
    payments_failed = (
        "sum(rate(glassbox_payments_duration_seconds_count"
        f'{{{SELECTOR}, outcome=~"error|timeout"}}[$__rate_interval]))'
    )
    return (
        board.with_panel(
            graph(
                "Database connections by state",
                "Pooled connections in use and idle, per instance (each worker has its own pool).",
                "short",
                [
                    (
                        "sum by (instance, db_client_connection_state) "
                        f"(db_client_connection_count{{{db_selector}}})",
                        "{{instance}} {{db_client_connection_state}}",
                    )
                ],
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Database connection wait",
                "Time to check a connection out of the pool: mean and p95. Long waits mean "
                "the pool is too small for the load (DATABASE_POOL_SIZE).",
                "s",
                [
                    (
                        f"sum(rate(db_client_connection_wait_time_seconds_sum{{{db_selector}}}"
                        "[$__rate_interval])) / sum(rate("
                        f"db_client_connection_wait_time_seconds_count{{{db_selector}}}"
                        "[$__rate_interval]))",
                        "mean",
                    ),
                    (
                        quantile(
                            0.95, "db_client_connection_wait_time_seconds_bucket", db_selector
                        ),
                        "p95",
                    ),
                ],
            )
        )
        .with_panel(
            graph(
                "Database query p95 by operation",
                "95th percentile of statement duration per operation.",
                "s",
                [
                    (
                        quantile(
                            0.95,
                            "db_client_operation_duration_seconds_bucket",
                            db_selector,
                            "db_operation_name",
                        ),
                        "{{db_operation_name}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Database operations per second and error ratio",
                "Statements per second by operation, and the share that failed.",
                "short",
                [
                    (
                        "sum by (db_operation_name) (rate("
                        f"db_client_operation_duration_seconds_count{{{db_selector}}}"
                        "[$__rate_interval]))",
                        "{{db_operation_name}} per second",
                    ),
                    (
                        ratio_or_zero(
                            "sum(rate(db_client_operation_duration_seconds_count"
                            f'{{{db_selector}, error_type!=""}}[$__rate_interval]))',
                            "sum(rate(db_client_operation_duration_seconds_count"
                            f"{{{db_selector}}}[$__rate_interval]))",
                            by="",
                        ),
                        "error ratio",
                    ),
                ],
            )
        )
        .with_panel(
            graph(
                "Cache hit ratio",
                "Share of cache lookups that hit, per cache.",
                "percentunit",
                [
                    (
                        ratio_or_zero(cache_hits, cache_all, by="cache_name"),
                        "{{cache_name}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Cache lookups by result",
                "Hits, misses and errors (Redis unreachable: counted as misses by the app, "
                "shown here as errors) per second.",
                "short",
                [
                    (
                        "sum by (cache_name, result) (rate(glassbox_cache_requests_total"
                        f"{{{SELECTOR}}}[$__rate_interval]))",
                        "{{cache_name}} {{result}}",
                    )
                ],
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Payments latency",
                "Duration of payment authorisations, retries included: p50, p95, p99.",
                "s",
                [
                    (quantile(0.5, "glassbox_payments_duration_seconds_bucket", SELECTOR), "p50"),
                    (quantile(0.95, "glassbox_payments_duration_seconds_bucket", SELECTOR), "p95"),
                    (quantile(0.99, "glassbox_payments_duration_seconds_bucket", SELECTOR), "p99"),
                ],
                exemplar=True,
            )
        )
        .with_panel(
            graph(
                "Payments by outcome",
                "Authorisations per second: approved, declined (a business answer), error and "
                "timeout (failures); and the failure ratio the GlassboxPaymentsFailing alert "
                "watches.",
                "short",
                [
                    (
                        "sum by (outcome) (rate(glassbox_payments_duration_seconds_count"
                        f"{{{SELECTOR}}}[$__rate_interval]))",
                        "{{outcome}}",
                    ),
                    (ratio_or_zero(payments_failed, payments_all, by=""), "failure ratio"),
                ],
            )
        )
        .with_panel(
            graph(
                "Rate-limit rejections by route",
                "Requests refused with 429 per second, per route.",
                "reqps",
                [
                    (
                        "sum by (http_route) (rate(glassbox_ratelimit_rejections_total"
                        f"{{{SELECTOR}}}[$__rate_interval]))",
                        "{{http_route}}",
                    )
                ],
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Share of requests rate limited",
                "429s as a share of all requests (the surge alert fires above 5%).",
                "percentunit",
                [
                    (
                        ratio_or_zero(
                            "sum(rate(glassbox_ratelimit_rejections_total"
                            f"{{{SELECTOR}}}[$__rate_interval]))",
                            f"sum(rate({HTTP_COUNT}{{{SELECTOR}}}[$__rate_interval]))",
                            by="",
                        ),
                        "rejected",
                    )
                ],
            )
        )
    )


def business() -> Any:
    board = new_dashboard(
        "glassbox-business",
        "glassbox: business",
        "Orders, revenue and cancellations, as the api counts them when they happen.",
        ["business"],
    ).variables(variables())
    orders_paid = f'glassbox_orders_placed_total{{{SELECTOR}, status="paid"}}'
    return (
        board.with_panel(
            single(
                "Orders placed",
                "Orders placed in the selected time range: paid, or cancelled because the payment "
                "was declined.",
                "short",
                f"sum(increase(glassbox_orders_placed_total{{{SELECTOR}}}[$__range]))",
                decimals=0,
            )
        )
        .with_panel(
            single(
                "Revenue",
                "Value of orders paid in the selected time range (later cancellations are not "
                "subtracted).",
                "currencyEUR",
                f"sum(increase(glassbox_revenue_total{{{SELECTOR}}}[$__range]))",
                decimals=2,
            )
        )
        .with_panel(
            single(
                "Average order value",
                "Revenue divided by paid orders in the selected time range.",
                "currencyEUR",
                f"sum(increase(glassbox_revenue_total{{{SELECTOR}}}[$__range])) "
                f"/ sum(increase({orders_paid}[$__range]))",
                decimals=2,
            )
        )
        .with_panel(
            single(
                "Cancellations",
                "Orders cancelled in the selected time range: by the customer, or because the "
                "payment was declined.",
                "short",
                f"sum(increase(glassbox_orders_cancelled_total{{{SELECTOR}}}[$__range]))",
                decimals=0,
            )
        )
        .with_panel(
            graph(
                "Orders per minute by status",
                "Orders placed per minute: paid, or cancelled because the payment was declined.",
                "short",
                [
                    (
                        "sum by (status) (rate(glassbox_orders_placed_total"
                        f"{{{SELECTOR}}}[$__rate_interval])) * 60",
                        "{{status}}",
                    )
                ],
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Revenue per minute",
                "EUR of paid orders per minute.",
                "currencyEUR",
                [
                    (
                        f"sum(rate(glassbox_revenue_total{{{SELECTOR}}}[$__rate_interval])) * 60",
                        "revenue",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Cancellations per minute",
                "Orders cancelled per minute (by customers or declined payments), and as a share "
                "of the orders placed.",
                "short",
                [
                    (
                        "sum(rate(glassbox_orders_cancelled_total"
                        f"{{{SELECTOR}}}[$__rate_interval])) * 60",
                        "cancelled per minute",
                    ),
                    (
                        "sum(rate(glassbox_orders_cancelled_total"
                        f"{{{SELECTOR}}}[$__rate_interval])) "
                        "/ sum(rate(glassbox_orders_placed_total"
                        f"{{{SELECTOR}}}[$__rate_interval]))",
                        "share of orders placed",
                    ),
                ],
                width=24,
            )
        )
    )


def runtime() -> Any:
    board = new_dashboard(
        "glassbox-runtime",
        "glassbox: runtime",
        "CPU, memory and garbage collection per gunicorn worker (label worker = its pid).",
        ["runtime"],
    ).variables(variables())
    return (
        board.with_panel(
            graph(
                "CPU per worker",
                "CPU seconds per second (1 = one core) of each worker process.",
                "percentunit",
                [
                    (
                        "sum by (instance, worker) (rate(process_cpu_time_seconds_total"
                        f"{{{SELECTOR}}}[$__rate_interval]))",
                        "{{instance}} worker {{worker}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "CPU by mode",
                "User and system CPU of all selected workers.",
                "percentunit",
                [
                    (
                        "sum by (cpu_mode) (rate(process_cpu_time_seconds_total"
                        f"{{{SELECTOR}}}[$__rate_interval]))",
                        "{{cpu_mode}}",
                    )
                ],
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Memory per worker",
                "Resident memory of each worker process.",
                "bytes",
                [
                    (
                        f"sum by (instance, worker) (process_memory_usage_bytes{{{SELECTOR}}})",
                        "{{instance}} worker {{worker}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "GC collections per worker and generation",
                "CPython garbage collections per second; generation 2 runs are the costly ones.",
                "short",
                [
                    (
                        "sum by (instance, worker, cpython_gc_generation) (rate("
                        f"cpython_gc_collections_total{{{SELECTOR}}}[$__rate_interval]))",
                        "{{instance}} worker {{worker}} gen {{cpython_gc_generation}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Requests in flight per instance",
                "Sync workers serve one request each: in-flight equal to the worker count means "
                "requests are queueing.",
                "short",
                [
                    (
                        f"sum by (instance) (http_server_active_requests{{{SELECTOR}}})",
                        "{{instance}}",
                    )
                ],
                width=24,
            )
        )
    )


DASHBOARDS = {
    "service-overview.json": service_overview,
    "dependencies.json": dependencies,
    "business.json": business,
    "runtime.json": runtime,
}


def render(builder: Any) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model, panels numbered in order."""
    model: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    for number, panel in enumerate(model.get("panels", []), start=1):
        panel["id"] = number
    return model


def to_text(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for name, build in DASHBOARDS.items():
        (OUTPUT / name).write_text(to_text(render(build())))
        print(f"wrote {OUTPUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
