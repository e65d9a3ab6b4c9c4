"""gunicorn settings for `make serve` and the container: `gunicorn -c python:service.gunicorn_conf`.

Read by gunicorn, not by the app: HOST, PORT and WEB_CONCURRENCY come from the environment.
"""

from __future__ import annotations

import os

from service.logging import SERVICE_NAME, ContextFilter, json_formatter

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Sync workers: one request per process at a time, balanced by the kernel. gthread with
# keep-alive was seen to starve a worker on this kind of machine (shared/PITFALLS.md).
worker_class = "sync"
timeout = 30
graceful_timeout = 25
keepalive = 2
# The app writes one JSON access line per request; gunicorn's own would be a duplicate.
accesslog = None
errorlog = "-"
wsgi_app = "service:create_app()"


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
