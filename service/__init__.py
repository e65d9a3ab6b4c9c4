"""glassbox: an observability-first shop API."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from sqlalchemy import event
from sqlalchemy.engine import Engine

from service import logging as app_logging
from service import telemetry
from service.api import require_json_body
from service.config import load_config
from service.errors import security_headers
from service.extensions import api, cache, db, make_limiter, migrate, own_retry_after

__version__ = "0.1.0"

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

API_DESCRIPTION = """\
A small shop (categories, products, orders, sales reports) built to be observed.

Reads are public. Writes need an API key: `Authorization: Bearer <token>`
(`make run` prints a development key). Lists are paginated with opaque cursors: pass
`next_cursor` back as `cursor`. Every error is `application/problem+json` (RFC 9457).
"""


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the application. `config` overrides environment variables by name."""
    settings = load_config(overrides=config)
    app_logging.configure_logging(
        settings["LOG_LEVEL"],
        service_name=os.environ.get("OTEL_SERVICE_NAME") or app_logging.SERVICE_NAME,
        log_format=settings["LOG_FORMAT"],
        environment=settings["GLASSBOX_ENV"],
    )

    app = Flask(__name__)
    app.config.update(settings)
    app.config.update(
        API_TITLE="glassbox",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="/static/swagger-ui/",
        API_SPEC_OPTIONS={
            "info": {"description": API_DESCRIPTION},
            "components": {
                "securitySchemes": {
                    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "token"}
                }
            },
        },
    )

    # Registered before the limiter so that it runs after the limiter has added its headers
    # (Flask runs after_request hooks in reverse order of registration).
    app.after_request(_finalize_headers)
    # Request hooks (span, metrics, access line) before anything that may refuse a request.
    telemetry.init_app(app, service_name="glassbox-api", service_version=__version__)
    app.before_request(require_json_body)
    _use_instrumented_pool(app)
    db.init_app(app)
    with app.app_context():
        telemetry.instrument_engine(db.engine)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True)
    cache.init_app(app)
    make_limiter().init_app(app)
    api.init_app(app)
    _register_blueprints(app)
    _register_commands(app)

    from service.orders.payments import gateway_for

    app.extensions["glassbox.payments"] = gateway_for(app.config)
    return app


def _use_instrumented_pool(app: Flask) -> None:
    """Pool checkouts report their wait time (not for in-memory SQLite's single connection)."""
    if ":memory:" not in app.config["SQLALCHEMY_DATABASE_URI"]:
        options = dict(app.config["SQLALCHEMY_ENGINE_OPTIONS"])
        options.setdefault("poolclass", telemetry.InstrumentedQueuePool)
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options


def _register_blueprints(app: Flask) -> None:
    from service import health
    from service.catalog.routes import categories, products
    from service.orders.routes import blp as orders
    from service.reports.routes import blp as reports

    for blueprint in (health.blp, categories, products, orders, reports):
        api.register_blueprint(blueprint)


def _register_commands(app: Flask) -> None:
    from service.auth.cli import api_keys_cli
    from service.orders.cli import orders_cli
    from service.seed import seed_command

    app.cli.add_command(api_keys_cli)
    app.cli.add_command(orders_cli)
    app.cli.add_command(seed_command)


def _finalize_headers(response: Response) -> Response:
    headers = response.headers
    # Flask-Limiter sends Retry-After on every response; it is the limiter's only on a 429.
    # Any other status carries the service's own value (a 503's) or none. And
    # RateLimit-Reset is seconds until the window resets (IETF draft), not the epoch
    # timestamp the library writes.
    if response.status_code != 429:
        own = own_retry_after()
        if own is None:
            headers.pop("Retry-After", None)
        else:
            headers["Retry-After"] = own
    reset = headers.get("RateLimit-Reset")
    if reset is not None and reset.isdigit() and int(reset) > 1_000_000_000:
        headers["RateLimit-Reset"] = str(max(0, int(reset) - int(time.time())))
    for name, value in security_headers().items():
        headers.setdefault(name, value)
    if request.path.startswith("/docs"):
        headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
        )
    return response


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # SQLite ignores foreign keys unless asked, and WAL lets readers run beside a writer.
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()
        # PostgreSQL's pg_sleep, so REPORTS_SQL_DELAY_MS works on the embedded default too.
        dbapi_connection.create_function("pg_sleep", 1, _sleep_seconds)


def _sleep_seconds(seconds: float) -> None:
    time.sleep(seconds)
