"""WSGI apps for `make bench`, served by gunicorn with service/gunicorn_conf.py like the real one.

- `bare_wsgi`: the ceiling — a WSGI callable that answers a constant; nothing is cheaper
  under the same server, workers and load generator.
- `hello_app()`: what Flask alone costs (one route returning a small JSON object).
- `glassbox_app()`: the real app from `create_app`, with the cache type taken from
  BENCH_CACHE_TYPE when set (the app has no such variable: `create_app` passes keys that
  are not glassbox settings through to Flask's config, and Flask-Caching reads CACHE_TYPE).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

BODY = b'{"ok": true}'


def bare_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]
    )
    return [BODY]


def hello_app() -> Flask:
    app = Flask("hello")

    @app.get("/")
    def hello() -> dict[str, bool]:
        return {"ok": True}

    return app


def glassbox_app() -> Flask:
    from service import create_app

    cache_type = os.environ.get("BENCH_CACHE_TYPE", "")
    return create_app({"CACHE_TYPE": cache_type} if cache_type else None)
