"""The service's metrics, recorded once and exported two ways.

* OpenTelemetry instruments, pushed over OTLP to a collector (exemplars carry trace ids).
* prometheus_client metrics for the `/metrics` scrape endpoint. Under gunicorn every worker
  writes them to PROMETHEUS_MULTIPROC_DIR, so one scrape sees the whole pod.

Names and labels are the same on both paths: OpenTelemetry's `http.server.request.duration`
(unit s) becomes `http_server_request_duration_seconds` in the collector's Prometheus
exporter, which is the name prometheus_client uses here (observability/README.md).

Every label is bounded whatever clients send: the request hooks (service/telemetry/server.py)
pass the normalised method (known, else `_OTHER`), the route template or nothing, and the
scheme as http or https; `error.type` is the 5xx status code; `synthetic` is true or false
(a load generator's request or not). An attribute the semantic conventions leave out when
it does not apply (no route, no error) is an empty label on the scrape path, which
Prometheus treats as absent.
"""

from __future__ import annotations

import gc
import os
import resource
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import Response

# An empty PROMETHEUS_MULTIPROC_DIR= (as in .env.example, where empty means the default) is
# unset: prometheus_client takes the variable's presence, whatever its value, as multiprocess
# mode when it is imported, and would write its .db files into the current directory.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == "":
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]

from prometheus_client import (  # after the variable is settled
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
_MAX_SERIES = 10_000


@dataclass(frozen=True)
class Instrument:
    """One metric, declared once: OpenTelemetry's name and attributes, Prometheus's derived.

    `http.server.request.duration` (unit s) is `http_server_request_duration_seconds` on the
    scrape path, as the collector's Prometheus exporter names it; attributes become labels
    with underscores. An attribute in `optional` is left out of the OTLP point when empty
    (the semantic conventions omit what does not apply); the scrape label is "" then.
    `observed`: the OTLP side is an observable instrument read by a callback at export time.
    """

    name: str
    kind: str  # histogram, counter, updown (up-down counter) or gauge
    unit: str
    description: str
    attributes: tuple[str, ...] = ()
    optional: frozenset[str] = frozenset()
    observed: bool = False

    @property
    def prometheus_name(self) -> str:
        return self.name.replace(".", "_") + {"s": "_seconds", "By": "_bytes"}.get(self.unit, "")

    @property
    def labels(self) -> list[str]:
        return [attribute.replace(".", "_") for attribute in self.attributes]


HTTP_DURATION = Instrument(
    "http.server.request.duration",
    "histogram",
    "s",
    "Duration of HTTP server requests.",
    (
        "http.request.method",
        "http.route",
        "http.response.status_code",
        "url.scheme",
        "error.type",
        "synthetic",  # "true" for a load generator's request (baggage synthetic_request=true)
    ),
    optional=frozenset(("http.route", "error.type")),
)
# Per-request counts that need no exemplar are kept in plain dicts and read by observable
# OpenTelemetry instruments at export time: a dict update costs a fraction of a
# synchronous instrument's add() on every request.
ACTIVE_REQUESTS = Instrument(
    "http.server.active_requests",
    "updown",
    "{request}",
    "Requests in flight.",
    ("http.request.method",),
    observed=True,
)
DB_OPERATION = Instrument(
    "db.client.operation.duration",
    "histogram",
    "s",
    "Duration of database statements.",
    ("db.system.name", "db.namespace", "db.operation.name", "db.collection.name", "error.type"),
    optional=frozenset(("db.namespace", "db.collection.name", "error.type")),
)
POOL_WAIT = Instrument(
    "db.client.connection.wait_time",
    "histogram",
    "s",
    "Time to obtain a connection from the pool.",
    ("db.client.connection.pool.name",),
)
POOL_COUNT = Instrument(
    "db.client.connection.count",
    "updown",
    "{connection}",
    "Pooled connections by state.",
    ("db.client.connection.state", "db.client.connection.pool.name"),
)
# The pool's ceiling (pool_size + max_overflow), added once by each pool: summed like
# db.client.connection.count, so "in use / max" is the pod's (or instance's) saturation.
POOL_MAX = Instrument(
    "db.client.connection.max",
    "updown",
    "{connection}",
    "The maximum number of open connections allowed.",
    ("db.client.connection.pool.name",),
)
CACHE_REQUESTS = Instrument(
    "glassbox.cache.requests",
    "counter",
    "{request}",
    "Cache lookups.",
    ("cache.name", "result"),
    observed=True,
)
RATE_LIMITED = Instrument(
    "glassbox.ratelimit.rejections",
    "counter",
    "{request}",
    "Requests refused with 429.",
    ("http.route",),
)
PAYMENTS = Instrument(
    "glassbox.payments.duration",
    "histogram",
    "s",
    "Duration of payment authorisations, retries included.",
    ("outcome",),
)
ORDERS_PLACED = Instrument(
    "glassbox.orders.placed", "counter", "{order}", "Orders placed.", ("status",)
)
REDIS_BREAKER = Instrument(
    "glassbox.redis.breaker.opened",
    "counter",
    "{opening}",
    "Redis circuit breaker openings.",
    ("server.address",),
)
ORDERS_CANCELLED = Instrument(
    "glassbox.orders.cancelled", "counter", "{order}", "Orders cancelled."
)
REVENUE = Instrument("glassbox.revenue", "counter", "{EUR}", "Revenue of paid orders (EUR).")
# Per worker, for the scrape path too (opentelemetry-instrumentation-system-metrics would
# cover the OTLP side only, and adds a psutil dependency for three callbacks).
CPU_TIME = Instrument(
    "process.cpu.time",
    "counter",
    "s",
    "CPU time of the worker.",
    ("cpu.mode", "worker"),
    observed=True,
)
MEMORY = Instrument(
    "process.memory.usage",
    "gauge",
    "By",
    "Resident memory of the worker.",
    ("worker",),
    observed=True,
)
GC_COLLECTIONS = Instrument(
    "cpython.gc.collections",
    "counter",
    "{collection}",
    "Garbage collections.",
    ("cpython.gc.generation", "worker"),
    observed=True,
)
INSTRUMENTS = (
    HTTP_DURATION,
    ACTIVE_REQUESTS,
    DB_OPERATION,
    POOL_WAIT,
    POOL_COUNT,
    POOL_MAX,
    CACHE_REQUESTS,
    RATE_LIMITED,
    PAYMENTS,
    ORDERS_PLACED,
    REDIS_BREAKER,
    ORDERS_CANCELLED,
    REVENUE,
    CPU_TIME,
    MEMORY,
    GC_COLLECTIONS,
)


def _prometheus(instrument: Instrument) -> Any:
    name, doc, labels = instrument.prometheus_name, instrument.description, instrument.labels
    if instrument.kind == "histogram":
        return Histogram(name, doc, labels, buckets=DURATION_BUCKETS)
    if instrument.kind == "counter":
        return Counter(name, doc, labels)
    return Gauge(name, doc, labels, multiprocess_mode="livesum")


def _otel(meter: Any, instrument: Instrument, callback: Any = None) -> Any:
    common = {"unit": instrument.unit, "description": instrument.description}
    if instrument.observed:
        create = {
            "counter": meter.create_observable_counter,
            "updown": meter.create_observable_up_down_counter,
            "gauge": meter.create_observable_gauge,
        }[instrument.kind]
        return create(instrument.name, callbacks=[callback], **common)
    if instrument.kind == "histogram":
        return meter.create_histogram(
            instrument.name, explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS), **common
        )
    if instrument.kind == "counter":
        return meter.create_counter(instrument.name, **common)
    return meter.create_up_down_counter(instrument.name, **common)


class Metrics:
    """Facade the code records through; both backends are fed from each call."""

    def __init__(self) -> None:
        self._prom: dict[str, Any] = {}
        self._otel: dict[str, Any] = {}
        self.multiproc_dir = ""
        self._worker = str(os.getpid())
        self._runtime_seen: dict[str, float] = {}
        self._runtime_next = 0.0
        self._active: dict[str, int] = {}
        self._cache: dict[tuple[str, str], int] = {}
        # gunicorn's threaded workers update these from several threads at once.
        self._counts_lock = threading.Lock()
        # Per series (instrument and label values): the Prometheus child and the OTLP
        # attributes, made once. `labels()` and building the attribute dict on every call
        # were ≈ 2% of a cached read (py-spy); labels are bounded, so this stays small.
        self._series: dict[tuple[str, tuple[Any, ...]], tuple[Any, dict[str, Any]]] = {}

    # set-up

    def enable_prometheus(self, multiproc_dir: str = "") -> None:
        """`multiproc_dir`: PROMETHEUS_MULTIPROC_DIR (service/config/), "" for one process."""
        if not self._prom:
            self._worker = str(os.getpid())  # after gunicorn's fork, not at import
            self.multiproc_dir = folder = multiproc_dir
            if folder:  # gunicorn's on_starting makes it; a CLI command may come first
                os.makedirs(folder, exist_ok=True)
            self._prom = {i.name: _prometheus(i) for i in INSTRUMENTS}
            self._series.clear()

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

        callbacks = {
            ACTIVE_REQUESTS.name: self._observe_active,
            CACHE_REQUESTS.name: self._observe_cache,
            CPU_TIME.name: runtime_cpu,
            MEMORY.name: runtime_memory,
            GC_COLLECTIONS.name: runtime_gc,
        }
        self._otel = {i.name: _otel(meter, i, callbacks.get(i.name)) for i in INSTRUMENTS}
        self._series.clear()

    # recording

    def _record(self, instrument: Instrument, amount: float, *values: Any) -> None:
        """`values` in the order of the instrument's attributes."""
        child, attributes = self._series_of(instrument, values)
        if child is not None:
            if instrument.kind == "histogram":
                child.observe(amount)
            else:
                child.inc(amount)
        otel = self._otel.get(instrument.name)
        if otel is not None:
            if instrument.kind == "histogram":
                otel.record(amount, attributes)
            else:
                otel.add(amount, attributes)

    def _series_of(
        self, instrument: Instrument, values: tuple[Any, ...]
    ) -> tuple[Any, dict[str, Any]]:
        """The Prometheus child (None without Prometheus) and OTLP attributes of a series."""
        series = self._series.get((instrument.name, values))
        if series is not None:
            return series
        child = self._prom.get(instrument.name)
        if child is not None and values:
            child = child.labels(*[str(value) for value in values])
        attributes = {
            name: value
            for name, value in zip(instrument.attributes, values, strict=True)
            if value != "" or name not in instrument.optional
        }
        if len(self._series) < _MAX_SERIES:  # a bound in case a caller ever passes free text
            self._series[instrument.name, values] = (child, attributes)
        return child, attributes

    def http_request(
        self,
        method: str,
        route: str,
        status: int,
        scheme: str,
        seconds: float,
        synthetic: bool = False,
    ) -> None:
        """One served request; `method`, `route` and `scheme` already bounded by the caller."""
        error_type = str(status) if status >= 500 else ""
        marked = "true" if synthetic else "false"
        self._record(HTTP_DURATION, seconds, method, route, status, scheme, error_type, marked)
        self._refresh_runtime()

    def active_requests(self, method: str, delta: int) -> None:
        if self._prom:
            self._series_of(ACTIVE_REQUESTS, (method,))[0].inc(delta)
        with self._counts_lock:
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
        self._record(DB_OPERATION, seconds, system, namespace, operation, collection, error_type)

    def pool_wait(self, pool: str, seconds: float) -> None:
        self._record(POOL_WAIT, seconds, pool)

    def pool_connections(self, pool: str, state: str, delta: int) -> None:
        self._record(POOL_COUNT, delta, state, pool)

    def pool_maximum(self, pool: str, connections: int) -> None:
        """Once per pool, when it is created: its size plus its overflow."""
        self._record(POOL_MAX, connections, pool)

    def cache_lookup(self, cache_name: str, result: str) -> None:
        if self._prom:
            self._series_of(CACHE_REQUESTS, (cache_name, result))[0].inc()
        key = (cache_name, result)
        with self._counts_lock:
            self._cache[key] = self._cache.get(key, 0) + 1

    def _observe_cache(self, _: Any) -> list[Any]:
        from opentelemetry.metrics import Observation

        return [
            Observation(count, {"cache.name": name, "result": result})
            for (name, result), count in list(self._cache.items())
        ]

    def rate_limited(self, route: str) -> None:
        self._record(RATE_LIMITED, 1, route)

    def payment(self, outcome: str, seconds: float) -> None:
        self._record(PAYMENTS, seconds, outcome)

    def redis_breaker_opened(self, address: str) -> None:
        self._record(REDIS_BREAKER, 1, address)

    def order_placed(self, status: str, revenue: float) -> None:
        self._record(ORDERS_PLACED, 1, status)
        if revenue:
            self._record(REVENUE, revenue)

    def order_cancelled(self) -> None:
        self._record(ORDERS_CANCELLED, 1)

    def _refresh_runtime(self) -> None:
        """Per-worker CPU, memory and GC for the scrape path, at most once a second."""
        now = time.monotonic()
        if now < self._runtime_next or not self._prom:
            return
        # One thread at a time: two would both add the same delta.
        if not self._counts_lock.acquire(blocking=False):
            return
        try:
            if now >= self._runtime_next:
                self._runtime_next = now + _RUNTIME_REFRESH_SECONDS
                self._record_runtime()
        finally:
            self._counts_lock.release()

    def _record_runtime(self) -> None:
        times = os.times()
        current = {"user": times.user, "system": times.system}
        for generation, stats in enumerate(gc.get_stats()):
            current[f"gc{generation}"] = float(stats["collections"])
        for key, value in current.items():
            delta = value - self._runtime_seen.get(key, 0.0)
            if delta <= 0:
                continue
            if key.startswith("gc"):
                self._prom[GC_COLLECTIONS.name].labels(key[2:], self._worker).inc(delta)
            else:
                self._prom[CPU_TIME.name].labels(key, self._worker).inc(delta)
            self._runtime_seen[key] = value
        self._prom[MEMORY.name].labels(self._worker).set(_rss_bytes())


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
