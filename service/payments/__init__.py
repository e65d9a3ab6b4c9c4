"""The payments service: a small Flask app of its own, the second hop of every order.

It stands in for a real payment gateway and behaves like one (docs/payments.md): a durable
ledger shared by every worker (PAYMENTS_DATABASE_URL, never glassbox's database), a unique
Idempotency-Key per authorization, void and refund, look-ups by reference and by order,
and a shared secret (PAYMENTS_SHARED_SECRET) on every /api/ call.
PAYMENTS_LATENCY_MS and PAYMENTS_FAILURE_RATE are knobs for experiments (the profiling
lab slows this service down to show what tracing sees that a profiler does not); the fault
flags `paymentsLatencyMs` and `paymentsFailureRate` switch the same faults while it runs
(service/faults.py).
Instrumented like the API (service/telemetry/); `make serve-payments` runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy.exc
from flask import Flask
from werkzeug.exceptions import HTTPException

from service import faults, telemetry
from service.config import load_payments_config
from service.edge import BoundedChunkedBody
from service.errors import framework_problem
from service.logs import configure_logging
from service.payments.ledger import Ledger
from service.payments.routes import blp, problem
from service.version import __version__


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    settings = load_payments_config(overrides=config)
    configure_logging(
        settings["LOG_LEVEL"],
        service_name="glassbox-payments",
        log_format=settings["LOG_FORMAT"],
        environment=settings["GLASSBOX_ENV"],
    )
    app = Flask(__name__)
    app.config.update(settings)
    telemetry.init_app(app, service_name="glassbox-payments", service_version=__version__)
    faults.init_app(app, service_name="glassbox-payments")
    app.extensions["glassbox.payments.ledger"] = Ledger(settings["PAYMENTS_DATABASE_URL"])
    app.register_blueprint(blp)
    # A chunked body is read (or refused by gunicorn's parser) before the app runs, as in the
    # API: a malformed one is the server's 400, not an error inside a view.
    app.config["MAX_CONTENT_LENGTH"] = app.config.get("MAX_CONTENT_LENGTH") or 64 * 1024
    app.wsgi_app = BoundedChunkedBody(app.wsgi_app, app)  # type: ignore[method-assign]

    @app.get("/health/live")
    @app.get("/health/ready")
    def health() -> Any:
        return {"status": "ok", "checks": {}}

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        slug, title, detail = framework_problem(error)
        headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        return problem(error.code or 500, title, detail, slug=slug, headers=headers)

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Any:
        telemetry.record_exception(error)
        if isinstance(error, sqlalchemy.exc.OperationalError):
            app.logger.error("ledger database unavailable: %s", type(error).__name__)
            return problem(
                503,
                "Service unavailable",
                "The ledger is not answering. Try again shortly.",
                slug="ledger-unavailable",
                headers={"Retry-After": "5"},
            )
        app.logger.exception("unhandled error")
        return problem(
            500,
            "Internal server error",
            "The payment could not be processed.",
            slug="internal-error",
        )

    return app
