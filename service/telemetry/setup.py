"""Set-up: this process's providers and exporters, and instrumenting one Flask app.

`configure_process` builds the tracer, meter and logger providers once per process;
`init_app` instruments an application (the API or the payments service) and calls it.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response
from opentelemetry import trace

from service import profiles
from service.config import SignalExport, otel_exports, otel_process, prometheus_multiproc_dir
from service.edge import unobserved_url_patterns
from service.metrics import metrics, metrics_response
from service.telemetry.gated import ParentGatedTracerProvider
from service.telemetry.server import observe_requests

log = logging.getLogger("service.telemetry")

DEFAULT_SAMPLE_RATIO = 0.1
SHUTDOWN_TIMEOUT_SECONDS = 5.0  # well inside gunicorn's graceful_timeout


@dataclass
class _ProcessState:
    pid: int | None = None
    tracing: bool = False  # spans are created by this module
    external: bool = False  # opentelemetry-instrument configured the SDK already
    exporting: bool = False
    contrib: bool = False  # TELEMETRY_INSTRUMENTATION=contrib
    providers: list[Any] = field(default_factory=list)
    instance_id: str = ""


process_state = _ProcessState()


def _exporters(signal: str, export: SignalExport) -> list[Any]:
    """The exporters OTEL_<SIGNAL>_EXPORTER asks for, OTLP over the configured protocol."""
    made: list[Any] = []
    for name in export.exporters:
        if name == "console":
            made.append(_console_exporter(signal))
        elif name == "otlp" and export.otlp_endpoint:
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
    if process_state.pid == os.getpid():
        return
    otel = otel_process()
    if otel.sdk_disabled:
        process_state.pid = os.getpid()
        process_state.tracing = False
        return
    exports = otel_exports()
    process_state.pid = os.getpid()

    from opentelemetry.sdk.trace import TracerProvider

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        # `opentelemetry-instrument` (the distro) got here first: use what it built.
        process_state.external = True
        process_state.tracing = True
        return

    from opentelemetry import metrics as otel_metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    process_state.instance_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    attributes: dict[str, Any] = {
        "service.version": service_version,
        "service.instance.id": process_state.instance_id,
        "process.pid": os.getpid(),
        "host.name": socket.gethostname(),
    }
    if not otel.service_name_set:
        attributes["service.name"] = service_name
    # Current semantic conventions: deployment.environment.name (deployment.environment
    # is deprecated); OTEL_RESOURCE_ATTRIBUTES may set it, as compose and k8s do.
    if not otel.environment_in_resource:
        attributes["deployment.environment.name"] = environment
    resource = Resource.create(attributes)

    sampler = None  # the SDK reads OTEL_TRACES_SAMPLER / _ARG
    if not otel.sampler_set:
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
    process_state.providers = [tracer_provider, meter_provider]
    if readers:
        metrics.enable_otel(otel_metrics.get_meter("glassbox"))
    log_exporters = _exporters("LOGS", exports["LOGS"])
    if log_exporters:
        _export_logs(resource, log_exporters)
    process_state.tracing = True
    process_state.exporting = bool(span_exporters or readers or log_exporters)
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
    process_state.providers.append(provider)


def shutdown(timeout: float = SHUTDOWN_TIMEOUT_SECONDS, *, report: bool = True) -> None:
    """Flush and stop exporters (gunicorn's worker_exit calls this on graceful shutdown).

    Bounded: a collector that hangs must not hold the worker past gunicorn's graceful
    timeout, so the flush runs in a daemon thread that is abandoned after `timeout`.
    """
    providers, process_state.providers = process_state.providers, []
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
    # Continuous profiling (Pyroscope) joins the tracer provider configure_process built.
    profiles.init_app(app, service_name=service_name)
    metrics.enable_prometheus(prometheus_multiproc_dir())
    instrumentation = app.config.get("TELEMETRY_INSTRUMENTATION", "lean")
    contrib = process_state.contrib = str(instrumentation).lower() == "contrib"
    if process_state.tracing and not process_state.external:
        _instrument_libraries()
    if contrib and process_state.tracing and not process_state.external:
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor.instrument_app(app, excluded_urls=unobserved_url_patterns())
    observe_requests(
        app, spans=process_state.tracing and not contrib and not _flask_auto_instrumented()
    )
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


def _metrics_view() -> Response:
    return metrics_response()
