"""The service's metrics, recorded once and exported two ways.

* OpenTelemetry instruments, pushed over OTLP to a collector (exemplars carry trace ids).
* prometheus_client metrics for the `/metrics` scrape endpoint. Under gunicorn every worker
  writes them to PROMETHEUS_MULTIPROC_DIR, so one scrape sees the whole pod.

Names and labels are the same on both paths: OpenTelemetry's `http.server.request.duration`
(unit s) becomes `http_server_request_duration_seconds` in the collector's Prometheus
exporter, which is the name prometheus_client uses here (observability/README.md).

Every label is bounded whatever clients send: the request hooks (service/telemetry/server.py)
pass the normalised method (known, else `_OTHER`), the route template or nothing, and the
scheme as http or https; `error.type` is the 5xx status code. An attribute the semantic
conventions leave out when it does not apply (no route, no error) is an empty label on the
scrape path, which Prometheus treats as absent.
"""

from __future__ import annotations

import gc
import os
import resource
import time
from collections.abc import Iterable
from typing import Any

from flask import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# Seconds: fine steps under 100 ms where an API lives, and 0.3 for the latency SLO.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.3, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_RUNTIME_REFRESH_SECONDS = 1.0


def _histogram(name: str, doc: str, labels: Iterable[str]) -> Histogram:
    return Histogram(name, doc, list(labels), buckets=DURATION_BUCKETS)


class _Prometheus:
    """prometheus_client side: module-level collectors, created once per process."""

    def __init__(self) -> None:
        self.http_duration = _histogram(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests.",
            (
                "http_request_method",
                "http_route",
                "http_response_status_code",
                "url_scheme",
                "error_type",
            ),
        )
        self.active = Gauge(
            "http_server_active_requests",
            "Requests in flight.",
            ["http_request_method"],
            multiprocess_mode="livesum",
        )
        self.db_operation = _histogram(
            "db_client_operation_duration_seconds",
            "Duration of database statements.",
            (
                "db_system_name",
                "db_namespace",
                "db_operation_name",
                "db_collection_name",
                "error_type",
            ),
        )
        self.pool_wait = _histogram(
            "db_client_connection_wait_time_seconds",
            "Time to obtain a connection from the pool.",
            ("db_client_connection_pool_name",),
        )
        self.pool_count = Gauge(
            "db_client_connection_count",
            "Pooled connections by state.",
            ["db_client_connection_state", "db_client_connection_pool_name"],
            multiprocess_mode="livesum",
        )
        self.cache = Counter("glassbox_cache_requests", "Cache lookups.", ["cache_name", "result"])
        self.ratelimit = Counter(
            "glassbox_ratelimit_rejections", "Requests refused with 429.", ["http_route"]
        )
        self.payments = _histogram(
            "glassbox_payments_duration_seconds",
            "Duration of payment authorisations, retries included.",
            ("outcome",),
        )
        self.orders_placed = Counter("glassbox_orders_placed", "Orders placed.", ["status"])
        self.redis_breaker = Counter(
            "glassbox_redis_breaker_opened", "Redis circuit breaker openings.", ["server_address"]
        )
        self.orders_cancelled = Counter("glassbox_orders_cancelled", "Orders cancelled.")
        self.revenue = Counter("glassbox_revenue", "Revenue of paid orders (EUR).")
        self.cpu = Counter(
            "process_cpu_time_seconds", "CPU time of the worker.", ["cpu_mode", "worker"]
        )
        self.memory = Gauge(
            "process_memory_usage_bytes",
            "Resident memory of the worker.",
            ["worker"],
            multiprocess_mode="livesum",
        )
        self.gc = Counter(
            "cpython_gc_collections",
            "Garbage collections.",
            ["cpython_gc_generation", "worker"],
        )


class Metrics:
    """Facade the code records through; both backends are fed from each call."""

    def __init__(self) -> None:
        self._prom: _Prometheus | None = None
        self.multiproc_dir = ""
        self._otel: dict[str, Any] = {}
        self._worker = str(os.getpid())
        self._runtime_seen: dict[str, float] = {}
        self._runtime_next = 0.0
        self._active: dict[str, int] = {}
        self._cache: dict[tuple[str, str], int] = {}

    # set-up

    def enable_prometheus(self, multiproc_dir: str = "") -> None:
        """`multiproc_dir`: PROMETHEUS_MULTIPROC_DIR (service/config.py), "" for one process."""
        if self._prom is None:
            self._worker = str(os.getpid())  # after gunicorn's fork, not at import
            self.multiproc_dir = folder = multiproc_dir
            if folder:  # gunicorn's on_starting makes it; a CLI command may come first
                os.makedirs(folder, exist_ok=True)
            self._prom = _Prometheus()

    def enable_otel(self, meter: Any) -> None:
        if self._otel:
            return
        from opentelemetry.metrics import CallbackOptions, Observation

        self._worker = str(os.getpid())

        def runtime_cpu(_: CallbackOptions) -> list[Observation]:
            times = os.times()
            return [
                Observation(times.user, {"cpu.mode": "user", "worker": self._worker}),
                Observation(times.system, {"cpu.mode": "system", "worker": self._worker}),
            ]

        def runtime_memory(_: CallbackOptions) -> list[Observation]:
            return [Observation(_rss_bytes(), {"worker": self._worker})]

        def runtime_gc(_: CallbackOptions) -> list[Observation]:
            return [
                Observation(
                    stats["collections"],
                    {"cpython.gc.generation": str(generation), "worker": self._worker},
                )
                for generation, stats in enumerate(gc.get_stats())
            ]

        self._otel = {
            "http_duration": meter.create_histogram(
                "http.server.request.duration",
                unit="s",
                description="Duration of HTTP server requests.",
                explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
            ),
            "active": meter.create_observable_up_down_counter(
                "http.server.active_requests",
                callbacks=[self._observe_active],
                unit="{request}",
                description="Requests in flight.",
            ),
            "db_operation": meter.create_histogram(
                "db.client.operation.duration",
                unit="s",
                description="Duration of database statements.",
                explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
            ),
            "pool_wait": meter.create_histogram(
                "db.client.connection.wait_time",
                unit="s",
                description="Time to obtain a connection from the pool.",
                explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
            ),
            "pool_count": meter.create_up_down_counter(
                "db.client.connection.count",
                unit="{connection}",
                description="Pooled connections by state.",
            ),
            "cache": meter.create_observable_counter(
                "glassbox.cache.requests",
                callbacks=[self._observe_cache],
                unit="{request}",
                description="Cache lookups.",
            ),
            "ratelimit": meter.create_counter(
                "glassbox.ratelimit.rejections",
                unit="{request}",
                description="Requests refused with 429.",
            ),
            "payments": meter.create_histogram(
                "glassbox.payments.duration",
                unit="s",
                description="Duration of payment authorisations, retries included.",
                explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
            ),
            "redis_breaker": meter.create_counter(
                "glassbox.redis.breaker.opened",
                unit="{opening}",
                description="Redis circuit breaker openings.",
            ),
            "orders_placed": meter.create_counter(
                "glassbox.orders.placed", unit="{order}", description="Orders placed."
            ),
            "orders_cancelled": meter.create_counter(
                "glassbox.orders.cancelled", unit="{order}", description="Orders cancelled."
            ),
            "revenue": meter.create_counter(
                "glassbox.revenue", unit="{EUR}", description="Revenue of paid orders (EUR)."
            ),
        }
        meter.create_observable_counter(
            "process.cpu.time",
            callbacks=[runtime_cpu],
            unit="s",
            description="CPU time of the worker.",
        )
        meter.create_observable_gauge(
            "process.memory.usage",
            callbacks=[runtime_memory],
            unit="By",
            description="Resident memory of the worker.",
        )
        meter.create_observable_counter(
            "cpython.gc.collections",
            callbacks=[runtime_gc],
            unit="{collection}",
            description="Garbage collections.",
        )

    # recording

    def http_request(
        self, method: str, route: str, status: int, scheme: str, seconds: float
    ) -> None:
        """One served request; `method`, `route` and `scheme` already bounded by the caller."""
        error_type = str(status) if status >= 500 else ""
        if self._prom is not None:
            self._prom.http_duration.labels(method, route, str(status), scheme, error_type).observe(
                seconds
            )
            self._refresh_runtime()
        if self._otel:
            attributes: dict[str, str | int] = {
                "http.request.method": method,
                "http.response.status_code": status,
                "url.scheme": scheme,
            }
            if route:
                attributes["http.route"] = route
            if error_type:
                attributes["error.type"] = error_type
            self._otel["http_duration"].record(seconds, attributes)

    # Per-request counts that need no exemplar are kept in plain dicts and read by
    # observable OpenTelemetry instruments at export time: a dict update costs a fraction
    # of a synchronous instrument's add() on every request.

    def active_requests(self, method: str, delta: int) -> None:
        if self._prom is not None:
            self._prom.active.labels(method).inc(delta)
        self._active[method] = self._active.get(method, 0) + delta

    def _observe_active(self, _: Any) -> list[Any]:
        from opentelemetry.metrics import Observation

        return [
            Observation(value, {"http.request.method": method})
            for method, value in list(self._active.items())
        ]

    def db_operation(
        self,
        system: str,
        namespace: str,
        operation: str,
        collection: str,
        error_type: str,
        seconds: float,
    ) -> None:
        """One SQL statement; `collection` is empty unless it names exactly one table."""
        if self._prom is not None:
            self._prom.db_operation.labels(
                system, namespace, operation, collection, error_type
            ).observe(seconds)
        if self._otel:
            attributes = {"db.system.name": system, "db.operation.name": operation}
            if namespace:
                attributes["db.namespace"] = namespace
            if collection:
                attributes["db.collection.name"] = collection
            if error_type:
                attributes["error.type"] = error_type
            self._otel["db_operation"].record(seconds, attributes)

    def pool_wait(self, pool: str, seconds: float) -> None:
        if self._prom is not None:
            self._prom.pool_wait.labels(pool).observe(seconds)
        if self._otel:
            self._otel["pool_wait"].record(seconds, {"db.client.connection.pool.name": pool})

    def pool_connections(self, pool: str, state: str, delta: int) -> None:
        if self._prom is not None:
            self._prom.pool_count.labels(state, pool).inc(delta)
        if self._otel:
            self._otel["pool_count"].add(
                delta,
                {"db.client.connection.state": state, "db.client.connection.pool.name": pool},
            )

    def cache_lookup(self, cache_name: str, result: str) -> None:
        if self._prom is not None:
            self._prom.cache.labels(cache_name, result).inc()
        key = (cache_name, result)
        self._cache[key] = self._cache.get(key, 0) + 1

    def _observe_cache(self, _: Any) -> list[Any]:
        from opentelemetry.metrics import Observation

        return [
            Observation(count, {"cache.name": name, "result": result})
            for (name, result), count in list(self._cache.items())
        ]

    def rate_limited(self, route: str) -> None:
        if self._prom is not None:
            self._prom.ratelimit.labels(route).inc()
        if self._otel:
            self._otel["ratelimit"].add(1, {"http.route": route})

    def payment(self, outcome: str, seconds: float) -> None:
        if self._prom is not None:
            self._prom.payments.labels(outcome).observe(seconds)
        if self._otel:
            self._otel["payments"].record(seconds, {"outcome": outcome})

    def redis_breaker_opened(self, address: str) -> None:
        if self._prom is not None:
            self._prom.redis_breaker.labels(address).inc()
        if self._otel:
            self._otel["redis_breaker"].add(1, {"server.address": address})

    def order_placed(self, status: str, revenue: float) -> None:
        if self._prom is not None:
            self._prom.orders_placed.labels(status).inc()
            if revenue:
                self._prom.revenue.inc(revenue)
        if self._otel:
            self._otel["orders_placed"].add(1, {"status": status})
            if revenue:
                self._otel["revenue"].add(revenue)

    def order_cancelled(self) -> None:
        if self._prom is not None:
            self._prom.orders_cancelled.inc()
        if self._otel:
            self._otel["orders_cancelled"].add(1)

    def _refresh_runtime(self) -> None:
        """Per-worker CPU, memory and GC for the scrape path, at most once a second."""
        now = time.monotonic()
        if now < self._runtime_next or self._prom is None:
            return
        self._runtime_next = now + _RUNTIME_REFRESH_SECONDS
        times = os.times()
        current = {"user": times.user, "system": times.system}
        for generation, stats in enumerate(gc.get_stats()):
            current[f"gc{generation}"] = float(stats["collections"])
        for key, value in current.items():
            delta = value - self._runtime_seen.get(key, 0.0)
            if delta <= 0:
                continue
            if key.startswith("gc"):
                self._prom.gc.labels(key[2:], self._worker).inc(delta)
            else:
                self._prom.cpu.labels(key, self._worker).inc(delta)
            self._runtime_seen[key] = value
        self._prom.memory.labels(self._worker).set(_rss_bytes())


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except OSError:  # not Linux: peak RSS is the best the standard library offers
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


metrics = Metrics()


def metrics_response() -> Response:
    """The `/metrics` body: every worker's samples when PROMETHEUS_MULTIPROC_DIR is set."""
    if metrics.multiproc_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    return Response(
        body,
        mimetype=CONTENT_TYPE_LATEST.split(";")[0],
        headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"},
    )
