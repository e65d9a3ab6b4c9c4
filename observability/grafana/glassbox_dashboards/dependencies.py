"""Dependencies: database, cache, payments, rate limiting."""

from __future__ import annotations

from typing import Any

from observability.grafana.glassbox_dashboards.common import (
    HTTP_COUNT,
    SELECTOR,
    graph,
    new_dashboard,
    quantile,
    ratio_or_zero,
    variables,
)

db_selector = SELECTOR
# In use over the ceiling, per instance and pool; the runbook's "pool saturated" check.
POOL_SATURATION = (
    "sum by (instance, db_client_connection_pool_name) "
    '(db_client_connection_count{{{selector}, db_client_connection_state="used"}}) '
    "/ sum by (instance, db_client_connection_pool_name) "
    "(db_client_connection_max{{{selector}}})"
)
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


def _panels_1() -> list[Any]:
    return [
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
            width=8,
        ),
        graph(
            "Database pool saturation",
            "Connections in use over the pool's maximum (DATABASE_POOL_SIZE plus as many "
            "overflow connections, db_client_connection_max), per instance: at 100% a "
            "checkout waits, up to DATABASE_POOL_TIMEOUT, then fails with 503.",
            "percentunit",
            [
                (
                    POOL_SATURATION.format(selector=db_selector),
                    "{{instance}}",
                )
            ],
            lines=[0.8],
            width=8,
        ),
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
                    quantile(0.95, "db_client_connection_wait_time_seconds_bucket", db_selector),
                    "p95",
                ),
            ],
            width=8,
        ),
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
        ),
        graph(
            "Database operations per second and error ratio",
            "Statements per second by operation, and the share that failed (right axis; "
            "IntegrityError, a designed answer, left out as GlassboxDatabaseErrors does).",
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
                        f'{{{db_selector}, error_type!="", error_type!~".*IntegrityError"}}'
                        "[$__rate_interval]))",
                        "sum(rate(db_client_operation_duration_seconds_count"
                        f"{{{db_selector}}}[$__rate_interval]))",
                        by="",
                    ),
                    "error ratio",
                ),
            ],
            shares=["error ratio"],
        ),
    ]


def _panels_2() -> list[Any]:
    return [
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
        ),
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
        ),
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
        ),
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
            shares=["failure ratio"],
        ),
    ]


def _panels_3() -> list[Any]:
    return [
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
        ),
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
        ),
        graph(
            "Redis breaker openings",
            "Times the Redis circuit breaker opened (Redis did not answer: cache bypassed, "
            "rate limiter open) per Redis address; GlassboxRedisBreakerOpening opens a ticket.",
            "short",
            [
                (
                    "sum by (server_address) (increase(glassbox_redis_breaker_opened_total"
                    f"{{{SELECTOR}}}[$__rate_interval])) or vector(0)",
                    "{{server_address}}",
                )
            ],
            width=24,
        ),
    ]


def dependencies() -> Any:
    board = new_dashboard(
        "glassbox-dependencies",
        "glassbox: dependencies",
        "Database pool and query latency, cache hit ratio, payments latency and outcomes, "
        "rate-limit rejections.",
        ["dependencies"],
    ).variables(variables())
    for panel in [*_panels_1(), *_panels_2(), *_panels_3()]:
        board = board.with_panel(panel)
    return board
