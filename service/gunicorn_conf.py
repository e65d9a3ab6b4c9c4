"""gunicorn settings for `make serve` and the container: `gunicorn -c python:service.gunicorn_conf`.

Read by gunicorn, not by the app: HOST, PORT, WEB_CONCURRENCY, WEB_THREADS and
PROMETHEUS_MULTIPROC_DIR come from the environment. The app is not preloaded: each worker
runs `create_app` after the fork, so OpenTelemetry's providers and export threads are per
worker (service/telemetry/setup.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from service.logs import SERVICE_NAME, ContextFilter, json_formatter

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# One request at a time per worker by default (worker_class at the end of this file): with
# 4 threads, contended stock updates queued 16 transactions deep on one row and some orders
# hit the statement timeout, and make bench measured no gain (docs/deploy.md). With more
# threads, DATABASE_POOL_SIZE must be at least WEB_THREADS.
threads = int(os.environ.get("WEB_THREADS", "1"))
timeout = 30
graceful_timeout = 25
keepalive = 5  # seconds an idle connection is kept; under a proxy's idle timeout (60 s)
# The app writes one JSON access line per request; gunicorn's own would be a duplicate, and
# its logger would still compute the line's atoms for every request (service/gunicorn_worker.py).
accesslog = None
logger_class = "service.gunicorn_worker.NoAccessLogger"
errorlog = "-"
# No control socket: nothing here uses it, and its default path ($HOME/.gunicorn) is shared
# by every gunicorn of the user and unwritable with a read-only root filesystem.
control_socket_disable = True
wsgi_app = "service:create_app()"
# What one request may make a worker read and hold before the app runs (gunicorn's defaults,
# stated so that the README's values are these). Over them, the worker answers without the
# app: a longer request line is a 414, more header fields or a longer one a 431, as
# problem+json (service/gunicorn_worker.py).
limit_request_line = 4094  # bytes: method, path, query and version
limit_request_fields = 100
limit_request_field_size = 8190  # bytes of one header line, name and CRLF included


# gunicorn's own messages (worker boot, signals) as JSON lines like the app's.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": ContextFilter, "service_name": SERVICE_NAME}},
    "formatters": {"json": {"()": json_formatter}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["context"],
            "stream": "ext://sys.stdout",
        }
    },
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
    },
}

# gunicorn merges this dict over its defaults, whose root logger uses a "console" handler
# that the dict above does not define ("Unable to configure root logger" at start). The app
# adds its own JSON handler to the root logger (service/logs.py), so none is needed here.
logconfig_dict["root"] = {"level": "INFO", "handlers": []}


def on_starting(server: Any) -> None:
    """Start with an empty metrics folder: old workers' files would be counted forever."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """A dead worker's gauges must leave `/metrics` (its counters stay in the totals)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def worker_exit(server: Any, worker: Any) -> None:
    """Graceful stop (SIGTERM): export the spans, metrics and logs still queued."""
    from service import telemetry

    telemetry.shutdown()


# The worker (service/gunicorn_worker.py): gunicorn's threaded worker, reading each request
# whole on its event loop before a thread runs it (a client that stops sending holds a
# socket, not a thread: no buffering proxy is needed in front), keeping connections alive,
# answering the requests gunicorn's HTTP parser refuses as problem+json and, on SIGTERM,
# serving the connections already queued instead of leaving them to be reset.
worker_class = "service.gunicorn_worker.DrainingThreadWorker"
