"""The service overview: rate, errors, duration, SLO budgets and burn rates."""

from __future__ import annotations

from typing import Any

from observability.grafana.glassbox_dashboards.common import (
    AVAILABILITY_BUDGET,
    HTTP_BUCKET,
    HTTP_COUNT,
    LATENCY_BUDGET,
    LOG_SELECTOR,
    SELECTOR,
    graph,
    logs_panel,
    new_dashboard,
    quantile,
    ratio_or_zero,
    single,
    variables,
)

by_route = "http_route, http_request_method"
errors_5xx = f'{HTTP_COUNT}{{{SELECTOR}, http_response_status_code=~"5.."}}'
rate_all = f"sum(rate({HTTP_COUNT}{{{SELECTOR}}}[$__rate_interval]))"
error_ratio = ratio_or_zero(f"sum(rate({errors_5xx}[$__rate_interval]))", rate_all, by="")
# The budget left over the 30-day window, as rules/slo_budget.yml records it once per
# evaluation (a raw 30-day increase() per panel refresh would outrun retention and the server).
BUDGET_LEFT = 'slo:error_budget_remaining:ratio{deployment_environment=~"$env", job=~"$service"'
availability_left = f'min({BUDGET_LEFT}, slo="availability"}})'
latency_left = f'min({BUDGET_LEFT}, slo="latency"}})'
budget_colours: list[tuple[float | None, str]] = [
    (None, "red"),
    (0.25, "orange"),
    (0.5, "green"),
]
slo_selector = 'deployment_environment=~"$env", job=~"$service"'


def _panels_1() -> list[Any]:
    return [
        single("Requests per second", "All routes of the selected services.", "reqps", rate_all),
        single(
            "5xx ratio",
            "Share of requests answered with a 5xx.",
            "percentunit",
            error_ratio,
            thresholds=[(None, "green"), (0.001, "orange"), (0.01, "red")],
            decimals=3,
        ),
        single(
            "Availability error budget left (30 days)",
            "Objective 99.9% of user requests without 5xx over 30 days; 100% = untouched, "
            "0% = spent.",
            "percentunit",
            availability_left,
            thresholds=budget_colours,
            decimals=1,
        ),
        single(
            "Latency error budget left (30 days)",
            "Objective 99% of user requests within 300 ms over 30 days; 100% = untouched, "
            "0% = spent.",
            "percentunit",
            latency_left,
            thresholds=budget_colours,
            decimals=1,
        ),
    ]


def _panels_2() -> list[Any]:
    return [
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
        ),
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
        ),
        graph(
            "Latency quantiles (exemplars link to Jaeger)",
            "Duration: p50, p95 and p99 of all requests; the dots are exemplars from the "
            "OTLP path, each a trace in Jaeger. The dashed line is the SLO's 300 ms.",
            "s",
            [
                (quantile(0.5, HTTP_BUCKET, SELECTOR), "p50"),
                (quantile(0.95, HTTP_BUCKET, SELECTOR), "p95"),
                (quantile(0.99, HTTP_BUCKET, SELECTOR), "p99"),
            ],
            exemplar=True,
            lines=[0.3],
        ),
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
        ),
    ]


def _panels_3() -> list[Any]:
    return [
        graph(
            "5xx ratio by route",
            "Share of each route's requests answered with a 5xx.",
            "percentunit",
            [
                (
                    ratio_or_zero(
                        f"sum by ({by_route}) (rate({errors_5xx}[$__rate_interval]))",
                        f"sum by ({by_route}) (rate({HTTP_COUNT}{{{SELECTOR}}}[$__rate_interval]))",
                        by=by_route,
                    ),
                    "{{http_request_method}} {{http_route}}",
                )
            ],
        ),
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
        ),
        graph(
            "Availability burn rate",
            "How fast the 0.1% error budget burns (1 = exactly on budget for 30 days). "
            "The fast-burn page fires above 14.4 on both 1h and 5m (or 6 on 6h and 30m); "
            "dashed lines at 14.4, 6 and 1.",
            "short",
            [
                (
                    f"job:slo_errors_per_request:ratio_rate{window}{{{slo_selector}}} "
                    f"/ {AVAILABILITY_BUDGET}",
                    f"{{{{job}}}} {window}",
                )
                for window in ("5m", "1h", "6h")
            ],
            lines=[1, 6, 14.4],
        ),
        graph(
            "Latency burn rate",
            "How fast the 1% budget of requests slower than 300 ms burns (1 = on budget). "
            "Dashed: 14.4 and 6 (pages), 1 (on budget).",
            "short",
            [
                (
                    f"job:slo_slow_requests:ratio_rate{window}{{{slo_selector}}} "
                    f"/ {LATENCY_BUDGET}",
                    f"{{{{job}}}} {window}",
                )
                for window in ("5m", "1h", "6h")
            ],
            lines=[1, 6, 14.4],
        ),
    ]


def _logs() -> list[Any]:
    return [
        logs_panel(
            "Logs: 5xx and warnings",
            "Log lines of the selected services at WARNING or above (Loki, over OTLP). Each "
            "line's trace_id opens its trace in Jaeger.",
            f'{{{LOG_SELECTOR}}} | severity_text=~"WARN.*|ERROR|CRITICAL"',
        )
    ]


def service_overview() -> Any:
    board = new_dashboard(
        "glassbox-overview",
        "glassbox: service overview",
        "Rate, errors and duration per route; latency quantiles with exemplars (click one to "
        "open its trace in Jaeger); SLO burn rates and error budget left.",
        ["red", "slo"],
    ).variables(variables())
    for panel in [*_panels_1(), *_panels_2(), *_panels_3(), *_logs()]:
        board = board.with_panel(panel)
    return board
