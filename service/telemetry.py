"""OpenTelemetry for glassbox: traces, metrics and logs, configured by the standard OTEL_* vars.

What is built here and why (figures in docs/measurement.md, `make bench`):

* Providers are created in `create_app`, which gunicorn runs in each worker after the fork
  (no preload), so every worker has its own exporters, export threads and
  `service.instance.id`. A process configures them once; `opentelemetry-instrument` users
  keep the providers and instrumentations it set up (nothing is instrumented twice).
* Export follows the SDK's variables: OTEL_{TRACES,METRICS,LOGS}_EXPORTER (`otlp`, `console`,
  `none`) and OTEL_EXPORTER_OTLP[_<SIGNAL>]_PROTOCOL (`http/protobuf`, `grpc`); other values
  refuse the start (service/config.py). OTLP needs an endpoint; without one nothing is
  exported over OTLP, but trace ids are still generated, logged and returned to the client.
* Sampling: the SDK's OTEL_TRACES_SAMPLER/_ARG; when unset, parent-based 10%.
* The server span and the SQL spans are this module's own, not the contrib Flask and
  SQLAlchemy instrumentors: measured here, those cost 1.6 ms per request at 100% sampling
  and 0.6-0.9 ms even unsampled (they build attributes before the sampling decision, and
  the SQLAlchemy one adds a `connect` span per checkout that cannot be turned off) — about
  40% of a cached read's throughput. `TELEMETRY_INSTRUMENTATION=contrib` switches back to
  them for comparison. Redis (cache, limiter) and requests (the payments call) use the
  contrib instrumentors as they are.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, g, request
from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.http import sanitize_method
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool

from service import logging as app_logging
from service.config import SignalExport, otel_exports
from service.edge import UNOBSERVED_PREFIXES, set_trace_headers, unobserved_path
from service.metrics import metrics

log = logging.getLogger("service.telemetry")

tracer = trace.get_tracer("glassbox")

DEFAULT_SAMPLE_RATIO = 0.1
SHUTDOWN_TIMEOUT_SECONDS = 5.0  # well inside gunicorn's graceful_timeout
_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
# A table after FROM, INTO or JOIN, or after a leading UPDATE (not `FOR UPDATE`, `DO UPDATE`).
_SQL_TABLE = re.compile(r"(?:\b(?:FROM|INTO|JOIN)|^\s*UPDATE)\s+\"?([A-Za-z_][A-Za-z0-9_]*)", re.I)
_SCHEMES = frozenset(("http", "https"))


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class _ProcessState:
    pid: int | None = None
    tracing: bool = False  # spans are created by this module
    external: bool = False  # opentelemetry-instrument configured the SDK already
    exporting: bool = False
    contrib: bool = False  # TELEMETRY_INSTRUMENTATION=contrib
    providers: list[Any] = field(default_factory=list)
    instance_id: str = ""


_state = _ProcessState()


def _otlp_endpoint_set(signal: str) -> bool:
    # glassbox's rule, not the SDK's: without an endpoint OTLP goes nowhere (the SDK would
    # try localhost), so a laptop run does not log export failures every few seconds.
    return bool(
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def _exporters(signal: str, export: SignalExport) -> list[Any]:
    """The exporters OTEL_<SIGNAL>_EXPORTER asks for, OTLP over the configured protocol."""
    made: list[Any] = []
    for name in export.exporters:
        if name == "console":
            made.append(_console_exporter(signal))
        elif name == "otlp" and _otlp_endpoint_set(signal):
            made.append(_otlp_exporter(signal, export.protocol))
    return made


def _otlp_exporter(signal: str, protocol: str) -> Any:
    # Each exporter reads its endpoint, headers, timeout and compression from OTEL_*.
    if protocol == "grpc":
        if signal == "TRACES":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter()
        if signal == "METRICS":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )

            return OTLPMetricExporter()
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter()
    if signal == "TRACES":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HTTPSpanExporter,
        )

        return HTTPSpanExporter()
    if signal == "METRICS":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HTTPMetricExporter,
        )

        return HTTPMetricExporter()
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (
        OTLPLogExporter as HTTPLogExporter,
    )

    return HTTPLogExporter()


def _console_exporter(signal: str) -> Any:
    if signal == "TRACES":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if signal == "METRICS":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter()
    from opentelemetry.sdk._logs.export import ConsoleLogExporter

    return ConsoleLogExporter()


def configure_process(service_name: str, service_version: str, environment: str) -> None:
    """Create this process's tracer, meter and logger providers (once per process).

    Refuses (ConfigError) exporter and protocol values the SDK does not define.
    """
    if _state.pid == os.getpid():
        return
    if _truthy("OTEL_SDK_DISABLED"):
        _state.pid = os.getpid()
        _state.tracing = False
        return
    exports = otel_exports()
    _state.pid = os.getpid()

    from opentelemetry.sdk.trace import TracerProvider

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        # `opentelemetry-instrument` (the distro) got here first: use what it built.
        _state.external = True
        _state.tracing = True
        return

    from opentelemetry import metrics as otel_metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    _state.instance_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    attributes: dict[str, Any] = {
        "service.version": service_version,
        "service.instance.id": _state.instance_id,
        "process.pid": os.getpid(),
        "host.name": socket.gethostname(),
    }
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = service_name
    # Current semantic conventions: deployment.environment.name (deployment.environment
    # is deprecated); OTEL_RESOURCE_ATTRIBUTES may set it, as compose and k8s do.
    if "deployment.environment.name=" not in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attributes["deployment.environment.name"] = environment
    resource = Resource.create(attributes)

    sampler = None  # the SDK reads OTEL_TRACES_SAMPLER / _ARG
    if not os.environ.get("OTEL_TRACES_SAMPLER"):
        sampler = ParentBasedTraceIdRatio(DEFAULT_SAMPLE_RATIO)
    # shutdown_on_exit=False: the SDK's own atexit flush has no time limit; ours has.
    tracer_provider = TracerProvider(resource=resource, sampler=sampler, shutdown_on_exit=False)
    span_exporters = _exporters("TRACES", exports["TRACES"])
    for exporter in span_exporters:
        # Bounded queue (OTEL_BSP_MAX_QUEUE_SIZE, default 2048): a dead collector costs
        # dropped spans, not memory or request latency.
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    readers = [
        PeriodicExportingMetricReader(exporter)
        for exporter in _exporters("METRICS", exports["METRICS"])
    ]
    meter_provider = MeterProvider(
        resource=resource, metric_readers=readers, shutdown_on_exit=False
    )
    trace.set_tracer_provider(tracer_provider)
    otel_metrics.set_meter_provider(meter_provider)
    _state.providers = [tracer_provider, meter_provider]
    if readers:
        metrics.enable_otel(otel_metrics.get_meter("glassbox"))
    log_exporters = _exporters("LOGS", exports["LOGS"])
    if log_exporters:
        _export_logs(resource, log_exporters)
    _state.tracing = True
    _state.exporting = bool(span_exporters or readers or log_exporters)
    atexit.register(shutdown, report=False)


def _export_logs(resource: Any, exporters: list[Any]) -> None:
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    for exporter in exporters:
        provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    set_logger_provider(provider)
    handler = LoggingHandler(logger_provider=provider)
    # Records carry the trace context of the span that was current when they were made.
    logging.getLogger().addHandler(handler)
    _state.providers.append(provider)


def shutdown(timeout: float = SHUTDOWN_TIMEOUT_SECONDS, *, report: bool = True) -> None:
    """Flush and stop exporters (gunicorn's worker_exit calls this on graceful shutdown).

    Bounded: a collector that hangs must not hold the worker past gunicorn's graceful
    timeout, so the flush runs in a daemon thread that is abandoned after `timeout`.
    """
    providers, _state.providers = _state.providers, []
    if not providers:
        return

    def stop_all() -> None:
        for provider in providers:
            try:
                provider.shutdown()
            except Exception:  # shutting down: report, never raise
                log.warning("telemetry shutdown failed", exc_info=True)

    worker = threading.Thread(target=stop_all, name="telemetry-shutdown", daemon=True)
    worker.start()
    worker.join(timeout)
    if not report:  # at interpreter exit the log streams may be closed already
        return
    if worker.is_alive():
        log.warning("telemetry export did not finish within %.0f s; giving up", timeout)
    else:
        log.info("telemetry flushed and stopped")


def init_app(app: Flask, *, service_name: str, service_version: str) -> None:
    """Instrument one application (the API or the payments service)."""
    if "glassbox.telemetry" in app.extensions:
        return
    app.extensions["glassbox.telemetry"] = True
    configure_process(service_name, service_version, str(app.config.get("GLASSBOX_ENV", "")))
    metrics.enable_prometheus()
    setting = app.config.get("TELEMETRY_INSTRUMENTATION") or os.environ.get(
        "TELEMETRY_INSTRUMENTATION", "lean"
    )
    contrib = _state.contrib = str(setting).lower() == "contrib"
    if _state.tracing and not _state.external:
        _instrument_libraries()
    if contrib and _state.tracing and not _state.external:
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor.instrument_app(app, excluded_urls=",".join(UNOBSERVED_PREFIXES))
    _observe_requests(app, spans=_state.tracing and not contrib and not _flask_auto_instrumented())
    app.add_url_rule("/metrics", "metrics", _metrics_view)


def _flask_auto_instrumented() -> bool:
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    return bool(FlaskInstrumentor().is_instrumented_by_opentelemetry)


def _instrument_libraries() -> None:
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    provider = ParentGatedTracerProvider(trace.get_tracer_provider())
    for instrumentor in (RedisInstrumentor(), RequestsInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)


class _ParentGatedTracer(trace.Tracer):
    """Creates client spans only under a recording parent; otherwise costs one check.

    Given to the contrib Redis and requests instrumentors: most requests are not sampled,
    and their per-call span set-up was a measurable share of a cached read. Context
    still propagates: `requests` injects the (unsampled) current span's traceparent.
    """

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> trace.Span:
        if not _parent_recording(kwargs.get("context")):
            return trace.INVALID_SPAN
        return self._tracer.start_span(name, *args, **kwargs)

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]  # same call, any context manager
        self, name: str, *args: Any, **kwargs: Any
    ) -> Any:
        if not _parent_recording(kwargs.get("context")):
            yield trace.INVALID_SPAN
            return
        with self._tracer.start_as_current_span(name, *args, **kwargs) as span:
            yield span


def _parent_recording(parent: Any) -> bool:
    return bool(trace.get_current_span(parent).is_recording())


class ParentGatedTracerProvider(trace.TracerProvider):
    def __init__(self, provider: trace.TracerProvider) -> None:
        self._provider = provider

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _ParentGatedTracer(self._provider.get_tracer(*args, **kwargs))


def _metrics_view() -> Response:
    from service.metrics import metrics_response

    return metrics_response()


# HTTP server side


_route_templates: dict[str, str] = {}


def route_template(rule: str) -> str:
    """Flask's `/products/<int(min=1):product_id>` as OpenAPI's `/products/{product_id}`."""
    template = _route_templates.get(rule)
    if template is None:
        template = _route_templates[rule] = _RULE_ARGUMENT.sub(r"{\1}", rule)
    return template


@dataclass
class _Request:
    started: float
    method: str  # as sent
    metric_method: str  # bounded: a known method or _OTHER
    route: str  # the template, "" when no route matched
    scheme: str
    observed: bool
    span: Any = None
    token: Any = None


def _observe_requests(app: Flask, *, spans: bool) -> None:
    def before() -> None:
        req = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup
        rule = req.url_rule
        scheme = req.scheme
        state = _Request(
            started=time.perf_counter(),
            method=req.method,
            # Labels stay bounded whatever a client sends (HTTP semantic conventions):
            # a made-up method is _OTHER, an unmatched path has no route.
            metric_method=sanitize_method(req.method),
            route=route_template(rule.rule) if rule is not None else "",
            scheme=scheme if scheme in _SCHEMES else "_OTHER",
            observed=not unobserved_path(req.path),
        )
        g.observed_request = state
        if not state.observed:
            return
        metrics.active_requests(state.metric_method, 1)
        if spans:
            parent = propagate.extract(req.headers) if _has_trace_headers(req.environ) else None
            method = "HTTP" if state.metric_method == "_OTHER" else state.metric_method
            name = f"{method} {state.route}" if state.route else method
            span = tracer.start_span(name, context=parent, kind=SpanKind.SERVER)
            if span.is_recording():
                span.set_attributes(_server_attributes(req, state))
            state.span = span
            state.token = context.attach(trace.set_span_in_context(span, parent))

    def after(response: Response) -> Response:
        state: _Request | None = g.get("observed_request")
        if state is None:
            return response
        seconds = time.perf_counter() - state.started
        status = response.status_code
        span = state.span or trace.get_current_span()
        span_context = span.get_span_context()
        if span_context.is_valid:
            set_trace_headers(response, span_context)
        if state.span is not None and state.span.is_recording():
            state.span.set_attribute("http.response.status_code", status)
            if status >= 500:
                state.span.set_attribute("error.type", str(status))
                state.span.set_status(Status(StatusCode.ERROR))
        if state.observed:
            # Recorded while the server span is current, so the histogram keeps its trace
            # id as an exemplar (OTLP path).
            metrics.http_request(state.metric_method, state.route, status, state.scheme, seconds)
            if status == 429:
                metrics.rate_limited(state.route)
        app_logging.log_access(state.method, state.route, status, seconds)
        return response

    def teardown(exc: BaseException | None) -> None:
        state: _Request | None = g.pop("observed_request", None)
        if state is None or not state.observed:
            return
        metrics.active_requests(state.metric_method, -1)
        if state.span is not None:
            if exc is not None and state.span.is_recording():
                state.span.record_exception(exc)
                state.span.set_status(Status(StatusCode.ERROR))
            state.span.end()
        if state.token is not None:
            context.detach(state.token)

    app.before_request(before)
    app.after_request(after)
    app.teardown_request(teardown)


_propagator_keys: tuple[str, ...] | None = None


def _has_trace_headers(environ: dict[str, Any]) -> bool:
    """Does the request carry any header the configured propagators read (OTEL_PROPAGATORS)?

    Most requests carry no context: they skip the propagators' header parsing.
    """
    global _propagator_keys  # computed once per process
    if _propagator_keys is None:
        fields = propagate.get_global_textmap().fields
        _propagator_keys = tuple("HTTP_" + f.upper().replace("-", "_") for f in fields)
    return any(key in environ for key in _propagator_keys)


def _server_attributes(req: Any, state: _Request) -> dict[str, Any]:
    environ = req.environ
    attributes: dict[str, Any] = {
        "http.request.method": state.metric_method,
        "url.path": req.path,
        "url.scheme": state.scheme,
        "server.address": req.host.split(":")[0],
        "network.protocol.version": environ.get("SERVER_PROTOCOL", "HTTP/1.1")[5:],
        "client.address": req.remote_addr or "",
        "user_agent.original": req.user_agent.string,
    }
    if state.metric_method != state.method:
        attributes["http.request.method_original"] = state.method
    if state.route:
        attributes["http.route"] = state.route
    port = environ.get("SERVER_PORT")
    if port and port.isdigit():
        attributes["server.port"] = int(port)
    return attributes


def record_exception(error: BaseException) -> None:
    """Attach a handled exception to the current span (the global error handler calls this)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))


def current_trace_id() -> str | None:
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


# Database side


class InstrumentedQueuePool(QueuePool):
    """QueuePool that reports how long a checkout waited (db.client.connection.wait_time)."""

    def _do_get(self) -> Any:
        started = time.perf_counter()
        try:
            return super()._do_get()
        finally:
            metrics.pool_wait(_pool_name(self), time.perf_counter() - started)


def _pool_name(pool: Any) -> str:
    name: str | None = getattr(pool, "_glassbox_name", None)
    return name or "default"


def instrument_engine(engine: Engine, *, spans: bool | None = None) -> None:
    """SQL spans and metrics for every statement on `engine`, and pool usage metrics."""
    if getattr(engine, "_glassbox_instrumented", False):
        return
    engine._glassbox_instrumented = True  # type: ignore[attr-defined]
    url = engine.url
    system = engine.dialect.name
    pool_name = (
        f"{system}://{url.host or ''}{':' + str(url.port) if url.port else ''}/{url.database or ''}"
    )
    engine.pool._glassbox_name = pool_name  # type: ignore[attr-defined]
    contrib = _state.contrib
    make_spans = _state.tracing and not _state.external and not contrib if spans is None else spans
    if contrib and _state.tracing and not _state.external:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        SQLAlchemyInstrumentor().instrument(engine=engine)
    namespace = url.database or ""
    base_attributes: dict[str, Any] = {"db.system.name": system}
    if namespace:
        base_attributes["db.namespace"] = namespace
    if url.host:
        base_attributes["server.address"] = url.host
    if url.port:
        base_attributes["server.port"] = url.port

    @event.listens_for(engine, "before_cursor_execute")
    def before(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        ctx._gb_started = time.perf_counter()
        if make_spans and trace.get_current_span().is_recording():
            operation, collection = statement_summary(statement)
            name = f"{operation} {collection}" if collection else operation
            attributes = {
                **base_attributes,
                "db.operation.name": operation,
                # Bound parameters only: SQLAlchemy never inlines values into the text.
                "db.query.text": statement,
            }
            if collection:
                attributes["db.collection.name"] = collection
            ctx._gb_span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)

    @event.listens_for(engine, "after_cursor_execute")
    def after(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        started = getattr(ctx, "_gb_started", None)
        if started is not None:
            operation, collection = statement_summary(statement)
            seconds = time.perf_counter() - started
            metrics.db_operation(system, namespace, operation, collection, "", seconds)
        span = getattr(ctx, "_gb_span", None)
        if span is not None:
            span.end()
            ctx._gb_span = None

    @event.listens_for(engine, "handle_error")
    def failed(exception_context: Any) -> None:
        ctx = exception_context.execution_context
        if ctx is None:
            return
        error_type = type(exception_context.original_exception).__name__
        started = getattr(ctx, "_gb_started", None)
        statement = exception_context.statement or ""
        if started is not None:
            operation, collection = statement_summary(statement)
            seconds = time.perf_counter() - started
            metrics.db_operation(system, namespace, operation, collection, error_type, seconds)
        span = getattr(ctx, "_gb_span", None)
        if span is not None:
            span.set_attribute("error.type", error_type)
            span.record_exception(exception_context.original_exception)
            span.set_status(Status(StatusCode.ERROR, error_type))
            span.end()
            ctx._gb_span = None

    last = {"used": 0, "idle": 0}

    def report_pool(*_: Any) -> None:
        pool = engine.pool
        if not isinstance(pool, QueuePool):
            return
        current = {"used": int(pool.checkedout()), "idle": int(pool.checkedin())}
        for state, value in current.items():
            if value != last[state]:
                metrics.pool_connections(pool_name, state, value - last[state])
                last[state] = value

    for name in ("checkout", "checkin", "close", "close_detached"):
        event.listen(engine, name, report_pool)


_OPERATIONS = ("SELECT", "INSERT", "UPDATE", "DELETE")


@functools.lru_cache(maxsize=1024)
def statement_summary(statement: str) -> tuple[str, str]:
    """`db.operation.name` and `db.collection.name` ("" unless exactly one table) of a statement.

    The semantic conventions name a collection parsed from the query text only when the text
    names one. Cached: SQLAlchemy's compiled cache hands over the same few statement strings,
    and every value comes from the application's SQL, never from a client, so both are bounded.
    """
    head = statement.lstrip()[:6].upper()
    operation = head if head in _OPERATIONS else "OTHER"
    tables = set(_SQL_TABLE.findall(statement))
    return operation, tables.pop() if len(tables) == 1 else ""
