"""OpenTelemetry for glassbox: traces, metrics and logs, configured by the standard OTEL_* vars.

What is built here and why (figures in docs/measurement.md, `make bench`):

* Providers are created in `create_app`, which gunicorn runs in each worker after the fork
  (no preload), so every worker has its own exporters, export threads and
  `service.instance.id`. A process configures them once; `opentelemetry-instrument` users
  keep the providers and instrumentations it set up (nothing is instrumented twice).
* Export follows the SDK's variables: OTEL_{TRACES,METRICS,LOGS}_EXPORTER (`otlp`, `console`,
  `none`) and OTEL_EXPORTER_OTLP[_<SIGNAL>]_PROTOCOL (`http/protobuf`, `grpc`); other values
  refuse the start (service/config/). OTLP needs an endpoint; without one nothing is
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

from service.telemetry.server import current_trace_id, record_exception, route_template
from service.telemetry.setup import configure_process, init_app, shutdown
from service.telemetry.sql import instrument_engine, statement_summary

__all__ = [
    "configure_process",
    "current_trace_id",
    "init_app",
    "instrument_engine",
    "record_exception",
    "route_template",
    "shutdown",
    "statement_summary",
]
