from __future__ import annotations

from flask.testing import FlaskClient

from tests.conftest import build_app


def test_live(client: FlaskClient) -> None:
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response.json["status"] == "ok"


def test_ready_reports_each_check(client: FlaskClient, backend: str) -> None:
    response = client.get("/health/ready")
    assert response.status_code == 200
    checks = response.json["checks"]
    assert checks["database"]["status"] == "up"
    assert checks["database"]["required"] is True
    assert checks["cache"]["status"] == "up"
    assert checks["database"]["latency_ms"] >= 0


def test_ready_is_503_when_the_database_is_unreachable() -> None:
    app = build_app("postgresql://nobody@127.0.0.1:1/none", DATABASE_CONNECT_TIMEOUT=1)
    response = app.test_client().get("/health/ready")
    assert response.status_code == 503
    assert response.json["status"] == "down"
    assert response.json["checks"]["database"]["status"] == "down"
    # API requests say 503 problem+json too, not 500
    api = app.test_client().get("/api/v1/products/1")
    assert api.status_code == 503
    assert api.content_type == "application/problem+json"


def test_ready_is_degraded_when_redis_is_unreachable(sqlite_url: str) -> None:
    app = build_app(sqlite_url, "redis://127.0.0.1:1/0")
    response = app.test_client().get("/health/ready")
    assert response.status_code == 200
    assert response.json["status"] == "degraded"
    assert response.json["checks"]["cache"]["status"] == "down"
    # Reads still work: the cache is bypassed.
    assert app.test_client().get("/api/v1/products").status_code == 200
