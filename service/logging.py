"""JSON logs on stdout (python-json-logger) and one access line per request."""

from __future__ import annotations

import logging
import sys
from typing import Any

from flask import request
from pythonjsonlogger.orjson import OrjsonFormatter

SERVICE_NAME = "glassbox-api"
_HANDLER_MARK = "_glassbox_json"


class ContextFilter(logging.Filter):
    """Stamp every record with the service name and the current trace and span ids."""

    def __init__(self, service_name: str) -> None:
        super().__init__()
        self.service_name = service_name

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service_name
        trace_id, span_id = current_trace_ids()
        record.trace_id = trace_id
        record.span_id = span_id
        return True


def current_trace_ids() -> tuple[str, str]:
    """The active span's ids as hex, or empty strings outside a recorded span."""
    try:
        from opentelemetry import trace
    except ImportError:  # telemetry is optional at this layer
        return "", ""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return "", ""
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def json_formatter() -> logging.Formatter:
    # orjson: the access line is written for every request, so its encoding is on the hot path.
    return OrjsonFormatter(
        "%(levelname)s %(name)s %(message)s %(service)s %(trace_id)s %(span_id)s %(process)d",
        rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
        timestamp=True,  # ISO 8601, UTC
    )


def configure_logging(level: str = "INFO", service_name: str = SERVICE_NAME) -> None:
    """Route the root logger to one JSON handler on stdout; safe to call more than once."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(json_formatter())
    handler.addFilter(ContextFilter(service_name))
    root.addHandler(handler)
    root.setLevel(level)
    # The access line below replaces werkzeug's and gunicorn's own request logs.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # SQLAlchemy quiets its own loggers; the instrumented pool's logger is named after
    # its module (service.telemetry), so quiet it the same way.
    logging.getLogger("service.telemetry.InstrumentedQueuePool").setLevel(logging.WARNING)


access_log = logging.getLogger("glassbox.access")


def log_access(method: str, route: str, status: int, seconds: float) -> None:
    """One line per request; called by the request hooks in service/telemetry.py."""
    extra: dict[str, Any] = {
        "method": method,
        "route": route or None,
        "path": request.path,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "client": request.remote_addr,
    }
    access_log.info("request", extra=extra)
