"""Liveness and readiness probes.

`/health/live` touches nothing but the process. `/health/ready` checks the database
(required: 503 when down) and the cache and rate limiter's Redis (optional: reported as
degraded, still 200, because reads fall back to the database and limits fail open). Each
check ends within HEALTH_CHECK_TIMEOUT, also when the dependency hangs; a Redis whose
circuit breaker is open is reported down without being called.
"""

from __future__ import annotations

import time
from typing import Any

import marshmallow as ma
from flask import current_app
from flask.views import MethodView
from sqlalchemy import text

from service.api import Blueprint
from service.database import deadline
from service.extensions import cache, db

blp = Blueprint("health", __name__, url_prefix="/health", description="Health probes")


class CheckSchema(ma.Schema):
    status = ma.fields.String(metadata={"description": "up or down"})
    required = ma.fields.Boolean()
    latency_ms = ma.fields.Float()
    error = ma.fields.String()


class HealthSchema(ma.Schema):
    status = ma.fields.String(metadata={"description": "ok, degraded or down"})
    checks = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Nested(CheckSchema))


def _timed(check: Any) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any]
    try:
        check()
    except Exception as exc:
        result = {"status": "down", "error": type(exc).__name__}
    else:
        result = {"status": "up"}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


def _check_database() -> None:
    timeout = current_app.config["HEALTH_CHECK_TIMEOUT"]
    timeout_ms = int(timeout * 1000)
    with deadline(timeout), db.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # SET LOCAL ends with the transaction, so it is safe behind PgBouncer too.
            connection.execute(text(f"SET LOCAL statement_timeout = {timeout_ms}"))
        connection.execute(text("SELECT 1"))
        connection.rollback()


def _check_cache() -> None:
    backend = cache.cache
    client = getattr(backend, "_write_client", None)
    if client is not None:
        client.ping()  # REDIS_TIMEOUT at most; at once while the breaker is open


def _check_rate_limiter() -> None:
    for limiter in current_app.extensions.get("limiter", ()):
        connection = getattr(limiter.storage, "get_connection", None)
        if connection is not None:  # Redis storage; memory:// has nothing to check
            connection().ping()


def readiness() -> tuple[dict[str, Any], int]:
    checks = {
        "database": {**_timed(_check_database), "required": True},
        "cache": {**_timed(_check_cache), "required": False},
        "rate_limiter": {**_timed(_check_rate_limiter), "required": False},
    }
    if any(c["status"] == "down" and c["required"] for c in checks.values()):
        status, code = "down", 503
    elif any(c["status"] == "down" for c in checks.values()):
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    return {"status": status, "checks": checks}, code


@blp.route("/live")
class Live(MethodView):
    @blp.response(200, HealthSchema)
    @blp.doc(operationId="getLiveness")
    def get(self) -> Any:
        """Is the process up (no dependency is called)"""
        return {"status": "ok", "checks": {}}


@blp.route("/ready")
class Ready(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="A required dependency is down")
    @blp.doc(operationId="getReadiness")
    def get(self) -> Any:
        """Can the service take traffic (database and cache checked)"""
        return readiness()
