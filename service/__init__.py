"""glassbox: an observability-first shop API."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin

from service import caching, database, edge, faults, health, json_provider, telemetry
from service import logs as app_logging
from service.api import Api
from service.auth.cli import api_keys_cli
from service.auth.decorators import SECURITY_SCHEME, SECURITY_SCHEME_DOC
from service.catalog.routes import categories, products
from service.config import load_config
from service.extensions import db, migrate
from service.orders.cli import orders_cli
from service.orders.payment_gateway import gateway_for
from service.orders.routes import blp as orders
from service.ratelimit import make_limiter
from service.reports.cli import reports_cli
from service.reports.routes import blp as reports
from service.reports.routes import lab as reports_lab
from service.seed import seed_command
from service.version import __version__

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

API_DESCRIPTION = """\
A small shop (categories, products, orders, sales reports) built to be observed.

Catalog and report reads are public. Orders (reading them too) and every write need an API
key: `Authorization: Bearer <token>` (`make run` prints a development key); each operation's
`security` says which. Lists are paginated with opaque cursors: pass `next_cursor` back as
`cursor` (or follow the `Link` header). A 201 names the new resource in `Location`; catalog
writes answer its `ETag`, and PATCH and DELETE honour `If-Match` (412 when stale, not
required). A retried `POST /orders` with the same `Idempotency-Key` answers the first order
with `Idempotent-Replayed: true`.

Every answer under /api/ carries `X-Trace-Id` and, while rate limiting is on, `RateLimit-*`;
over the allowance is a 429 with `Retry-After`. Every error is `application/problem+json`
(RFC 9457) with a `type` of the `urn:glassbox:problem:` family (the README lists them all)
and the request's `trace_id`.
"""


class Glassbox(Flask):
    """Flask, with `ensure_sync` decided once per function instead of on every call.

    Flask passes every view and before/after/teardown hook through `ensure_sync`, which
    asks `inspect.iscoroutinefunction` each time: 16 calls per request here. No glassbox
    function is async, and a function's nature does not change.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._is_async: dict[Callable[..., Any], bool] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        # A MethodView's handler is a new bound method on every request: key by its function.
        key = getattr(func, "__func__", func)
        try:
            is_async = self._is_async[key]
        except KeyError:
            is_async = self._is_async[key] = inspect.iscoroutinefunction(func)
        except TypeError:  # an unhashable callable: ask each time, as Flask does
            is_async = inspect.iscoroutinefunction(func)
        return self.async_to_sync(func) if is_async else func


class NoSessions(SessionInterface):
    """The API keeps no session: no cookie is read or written.

    Flask's default cookie session builds an itsdangerous signer for every request, to find
    no cookie: ≈ 5% of a cached read's worker time (py-spy). Flask gives a request without a
    session its read-only null session.
    """

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        return None

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        return None


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the application. `config` overrides environment variables by name."""
    settings = load_config(overrides=config)
    app_logging.configure_logging(
        settings["LOG_LEVEL"],
        service_name=settings["OTEL_SERVICE_NAME"] or app_logging.SERVICE_NAME,
        log_format=settings["LOG_FORMAT"],
        environment=settings["GLASSBOX_ENV"],
    )

    app = Glassbox(__name__)
    app.session_interface = NoSessions()
    json_provider.init_app(app)
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
            "components": {"securitySchemes": {SECURITY_SCHEME: SECURITY_SCHEME_DOC}},
        },
    )

    # Request hooks (span, metrics, access line) before anything that may refuse a request.
    telemetry.init_app(app, service_name="glassbox-api", service_version=__version__)
    faults.init_app(app, service_name="glassbox-api")
    # Before the limiter, so that its header hook runs after the limiter's (Flask runs
    # after_request hooks in reverse order of registration).
    edge.init_app(app)
    database.init_app(app, db)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR), render_as_batch=True)
    caching.init_app(app)
    make_limiter().init_app(app)
    api = Api(app)
    _register_blueprints(api)
    if app.config.get("LAB_ROUTES"):
        api.register_blueprint(reports_lab)
    _register_commands(app)

    app.extensions["glassbox.payments"] = gateway_for(app.config)
    return app


def _register_blueprints(api: Api) -> None:
    for blueprint in (health.blp, categories, products, orders, reports):
        api.register_blueprint(blueprint)


def _register_commands(app: Flask) -> None:
    app.cli.add_command(api_keys_cli)
    app.cli.add_command(orders_cli)
    app.cli.add_command(reports_cli)
    app.cli.add_command(seed_command)
