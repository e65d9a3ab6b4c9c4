"""The payments service: a small Flask app of its own, the second hop of every order.

POST /api/v1/authorizations {"order_id", "amount", "currency"} → 201 {"reference", …},
402 when declined (amounts over DECLINE_ABOVE), 503 for the injected failure rate.
PAYMENTS_LATENCY_MS and PAYMENTS_FAILURE_RATE are knobs for experiments (the profiling
lab slows this service down to show what tracing sees that a profiler does not).
Instrumented like the API (service/telemetry.py); `make serve-payments` runs it.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Flask, jsonify, request
from opentelemetry import baggage, trace
from werkzeug.exceptions import HTTPException

from service import telemetry
from service.config import PAYMENTS_SERVICE_VARIABLES, ConfigError
from service.logging import configure_logging

DECLINE_ABOVE = Decimal("10000.00")
_IDEMPOTENCY_MEMORY = 10_000

tracer = trace.get_tracer("glassbox.payments")


def _settings(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    overrides = dict(overrides or {})
    values: dict[str, Any] = {}
    problems = []
    for variable in PAYMENTS_SERVICE_VARIABLES:
        raw = overrides.pop(variable.name, os.environ.get(variable.name) or variable.default)
        try:
            values[variable.name] = variable.parse(raw)
        except (TypeError, ValueError) as exc:
            problems.append(f"{variable.name}={raw!r}: {exc}")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    values.update(overrides)
    return values


class _Ledger:
    """Authorisations by idempotency key (in memory: a demo processor, not a bank)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._by_key.get(key)

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._by_key[key] = value
            while len(self._by_key) > _IDEMPOTENCY_MEMORY:
                self._by_key.popitem(last=False)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    settings = _settings(config)
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"), service_name="glassbox-payments")
    app = Flask(__name__)
    app.config.update(settings)
    app.config.setdefault("GLASSBOX_ENV", os.environ.get("GLASSBOX_ENV", "development"))
    telemetry.init_app(app, service_name="glassbox-payments", service_version="0.1.0")
    ledger = _Ledger()

    @app.get("/health/live")
    @app.get("/health/ready")
    def health() -> Any:
        return {"status": "ok", "checks": {}}

    @app.post("/api/v1/authorizations")
    def authorize() -> Any:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("order_id"), int):
            return _problem(422, "Validation failed", "order_id (integer) and amount are required.")
        try:
            amount = Decimal(str(body.get("amount")))
        except InvalidOperation:
            return _problem(422, "Validation failed", "amount must be a decimal string.")
        if not amount.is_finite() or amount < 0:
            return _problem(422, "Validation failed", "amount must be a non-negative decimal.")
        key = request.headers.get("Idempotency-Key") or f"order-{body['order_id']}"
        order_from_baggage = baggage.get_baggage("glassbox.order_id")
        span = trace.get_current_span()
        span.set_attribute("payment.order_id", body["order_id"])
        if order_from_baggage is not None:
            span.set_attribute("glassbox.order_id", str(order_from_baggage))

        previous = ledger.get(key)
        if previous is not None:
            span.set_attribute("payment.idempotent_replay", True)
            return jsonify(previous["body"]), previous["status"]

        with tracer.start_as_current_span("payments.risk_check") as check:
            latency = app.config["PAYMENTS_LATENCY_MS"] / 1000
            if latency:
                time.sleep(latency)  # the experiment's knob: a slow dependency
            check.set_attribute("payment.amount", float(amount))
        if random.random() < app.config["PAYMENTS_FAILURE_RATE"]:  # noqa: S311
            return _problem(503, "Service unavailable", "Injected failure (PAYMENTS_FAILURE_RATE).")
        if amount > DECLINE_ABOVE:
            result = {
                "approved": False,
                "reason": "amount over limit",
                "order_id": body["order_id"],
            }
            ledger.put(key, {"body": result, "status": 402})
            return jsonify(result), 402
        result = {
            "approved": True,
            "reference": f"pay-{uuid.uuid4().hex[:16]}",
            "order_id": body["order_id"],
            "amount": f"{amount:.2f}",
        }
        ledger.put(key, {"body": result, "status": 201})
        return jsonify(result), 201

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        return _problem(error.code or 500, error.name, error.description or error.name)

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Any:
        telemetry.record_exception(error)
        app.logger.exception("unhandled error")
        return _problem(500, "Internal server error", "The payment could not be processed.")

    return app


def _problem(status: int, title: str, detail: str) -> Any:
    response = jsonify(
        {
            "type": "about:blank",
            "title": title,
            "status": status,
            "detail": detail,
            "instance": request.path,
        }
    )
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response
