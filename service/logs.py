"""Logs on stdout and one access line per request.

JSON lines (python-json-logger) for log collectors: in production, under gunicorn, when
stdout is not a terminal, or with LOG_FORMAT=json. A readable one-line-per-record console
format on a development terminal, or with LOG_FORMAT=console.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
from flask import request
from pythonjsonlogger.orjson import OrjsonFormatter

# A failure that repeats on every request (a dependency down) is logged once per interval.
WARN_INTERVAL_SECONDS = 30.0


class EveryInterval:
    """`due()` is true at most once per `seconds` in this process."""

    def __init__(self, seconds: float = WARN_INTERVAL_SECONDS) -> None:
        self.seconds = seconds
        self._last = -seconds

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.seconds:
            return False
        self._last = now
        return True


class OncePerInterval(logging.Filter):
    """Let one record through per interval (per process), drop the rest."""

    def __init__(self, seconds: float = WARN_INTERVAL_SECONDS) -> None:
        super().__init__()
        self._interval = EveryInterval(seconds)

    def filter(self, record: logging.LogRecord) -> bool:
        return self._interval.due()


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


# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "service",
    "trace_id",
    "span_id",
    "color_message",
}
_LEVEL_COLORS = {
    "DEBUG": "\033[2m",
    "INFO": "\033[36m",
    "WARNING": "\033[33m",
    "ERROR": "\033[31m",
    "CRITICAL": "\033[1;31m",
}


class ConsoleFormatter(logging.Formatter):
    """`12:03:04 INFO  glassbox.access  GET /api/v1/products/{product_id} 404 2.1 ms`.

    One line per record for a developer's terminal; extras as key=value, the whole trace
    id (to paste into Jaeger), the traceback below. Colours only on a terminal without
    NO_COLOR.
    """

    def __init__(self, *, color: bool = False) -> None:
        super().__init__()
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname:<7}"
        if self.color:
            level = f"{_LEVEL_COLORS.get(record.levelname, '')}{level}\033[0m"
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {level} {record.name}  {self._message(record)}"
        trace_id = getattr(record, "trace_id", "")
        if trace_id:
            line += f"  trace={trace_id}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        return line

    @staticmethod
    def _message(record: logging.LogRecord) -> str:
        extras = {
            key: value
            for key, value in vars(record).items()
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_")
        }
        if record.name == access_log.name and "status" in extras:
            route = extras.pop("route", None) or extras.pop("path", "")
            extras.pop("path", None)
            head = (
                f"{extras.pop('method', '')} {route} {extras.pop('status')} "
                f"{extras.pop('duration_ms', 0):.1f} ms"
            )
        else:
            head = record.getMessage()
        tail = " ".join(f"{key}={value}" for key, value in extras.items())
        return f"{head}  {tail}" if tail else head


LOG_FORMATS = ("auto", "json", "console")


def choose_format(requested: str, environment: str, stream: TextIO | None = None) -> str:
    """`json` or `console` for LOG_FORMAT=`requested` (auto, json, console).

    auto: console only on a development terminal that is not gunicorn's (gunicorn's own
    lines are JSON, and a mix would be read by nobody's log collector).
    """
    if requested in ("json", "console"):
        return requested
    stream = sys.stdout if stream is None else stream
    on_terminal = bool(getattr(stream, "isatty", lambda: False)())
    under_gunicorn = "gunicorn.arbiter" in sys.modules
    if environment == "development" and on_terminal and not under_gunicorn:
        return "console"
    return "json"


def configure_logging(
    level: str = "INFO",
    service_name: str = SERVICE_NAME,
    *,
    log_format: str = "auto",
    environment: str = "development",
) -> None:
    """Route the root logger to one handler on stdout; safe to call more than once.

    Both services pass LOG_FORMAT and GLASSBOX_ENV as service/config/ parsed them.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    requested = log_format.strip().lower()
    env = environment.strip().lower()
    handler = logging.StreamHandler(sys.stdout)
    setattr(handler, _HANDLER_MARK, True)
    if choose_format(requested, env, sys.stdout) == "console":
        # NO_COLOR is the terminal's convention (no-color.org), not a glassbox setting.
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        handler.setFormatter(ConsoleFormatter(color=color))
    else:
        handler.setFormatter(json_formatter())
    handler.addFilter(ContextFilter(service_name))
    root.addHandler(handler)
    global _direct  # the access line's shortcut, for this JSON handler only (log_access)
    _direct = _DirectAccessLine(handler, service_name) if _is_json(handler) else None
    root.setLevel(level)
    # The access line below replaces werkzeug's and gunicorn's own request logs.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # SQLAlchemy quiets its own loggers; the instrumented pool's logger is named after
    # its module (service.database), so quiet it the same way.
    logging.getLogger("service.database.InstrumentedQueuePool").setLevel(logging.WARNING)


access_log = logging.getLogger("glassbox.access")


def log_access(method: str, route: str, status: int, seconds: float) -> None:
    """One line per request; called by the request hooks in service/telemetry/server.py."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    extra: dict[str, Any] = {
        "method": method,
        "route": route or None,
        "path": request.path,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "client": request.remote_addr,
    }
    direct = _direct
    if direct is not None and direct.applies() and direct.write(extra):
        return
    pathname, lineno, function = _ACCESS_CALLER
    record = access_log.makeRecord(
        access_log.name, logging.INFO, pathname, lineno, "request", (), None, function, extra
    )
    access_log.handle(record)


# Where every access record comes from (the function above, by its first line), stated
# once: `Logger.findCaller` walking the stack for it cost ≈ 18% of the access line.
_ACCESS_CALLER = (log_access.__code__.co_filename, log_access.__code__.co_firstlineno, "log_access")


def _is_json(handler: logging.Handler) -> bool:
    return isinstance(handler.formatter, OrjsonFormatter)


class _DirectAccessLine:
    """Writes the access line's JSON straight to the handler's stream.

    The same bytes as the record path (python-json-logger's fields in its order), without a
    LogRecord, filters and the formatter: that machinery was ≈ 8% of a cached read's worker
    time (py-spy; 2 KB of attribute copying per line). Used only while the JSON handler is
    the one place access records would go: another handler anywhere on the way (OTLP log
    export, a test's capture) makes `applies()` false and the record path runs.
    """

    def __init__(self, handler: logging.StreamHandler[TextIO], service_name: str) -> None:
        self.handler = handler
        self.service_name = service_name
        self.root = logging.getLogger()

    def applies(self) -> bool:
        handler = self.handler
        if self.root.handlers != [handler] or handler.level > logging.INFO:
            return False
        logger: logging.Logger | None = access_log
        while logger is not None and logger is not self.root:
            if logger.handlers or logger.filters or not logger.propagate or logger.disabled:
                return False
            logger = logger.parent
        return len(handler.filters) == 1

    def write(self, extra: dict[str, Any]) -> bool:
        """False when the line could not be written (the record path then reports it)."""
        trace_id, span_id = current_trace_ids()
        line = {
            "level": "INFO",
            "logger": access_log.name,
            "message": "request",
            "service": self.service_name,
            "trace_id": trace_id,
            "span_id": span_id,
            "pid": os.getpid(),
            **extra,
            "timestamp": datetime.fromtimestamp(time.time(), tz=UTC).isoformat(),
        }
        handler = self.handler
        handler.acquire()
        try:
            stream = handler.stream
            stream.write(orjson.dumps(line).decode() + handler.terminator)
            stream.flush()
        except Exception:  # a closed or full stream: let logging's own error handling speak
            return False
        finally:
            handler.release()
        return True


_direct: _DirectAccessLine | None = None
