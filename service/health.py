"""Liveness and readiness probes.

`/health/live` touches nothing but the process. `/health/ready` checks the database
(required: 503 when down) and the cache (optional: reported as degraded, still 200,
because reads fall back to the database).
"""

from __future__ import annotations

import time
from typing import Any

import marshmallow as ma
from flask import current_app
from flask.views import MethodView
from sqlalchemy import text

from service.api import Blueprint
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
    timeout_ms = int(current_app.config["HEALTH_CHECK_TIMEOUT"] * 1000)
    with db.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # SET LOCAL ends with the transaction, so it is safe behind PgBouncer too.
            connection.execute(text(f"SET LOCAL statement_timeout = {timeout_ms}"))
        connection.execute(text("SELECT 1"))
        connection.rollback()


def _check_cache() -> None:
    backend = cache.cache
    client = getattr(backend, "_write_client", None)
    if client is not None:
        client.ping()


def readiness() -> tuple[dict[str, Any], int]:
    checks = {
        "database": {**_timed(_check_database), "required": True},
        "cache": {**_timed(_check_cache), "required": False},
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
