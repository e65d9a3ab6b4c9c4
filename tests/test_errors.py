"""Every failure leaves as application/problem+json with the right status and no internals."""

from __future__ import annotations

import json
import logging

import pytest
import sqlalchemy.exc
from flask import Flask
from flask.testing import FlaskClient

INTERNALS = ("Traceback", 'File "', "sqlalchemy", "psycopg", "SELECT", "/service/", "Error:")


def assert_problem(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status
    assert response.content_type == "application/problem+json"
    body = response.json
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["status"] == status
    text = response.get_data(as_text=True)
    for marker in INTERNALS:
        assert marker not in text
    assert response.headers["Cache-Control"] == "no-store"
    return body


def test_unknown_route_is_404(client: FlaskClient) -> None:
    body = assert_problem(client.get("/api/v1/nothing-here"), 404)
    assert body["instance"] == "/api/v1/nothing-here"


def test_method_not_allowed_has_allow(client: FlaskClient) -> None:
    response = client.put("/api/v1/products")
    assert_problem(response, 405)
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        pytest.param("{not json", "application/json", 400, id="malformed-json-400"),
        pytest.param(
            "name=Coffee", "application/x-www-form-urlencoded", 415, id="wrong-content-type-415"
        ),
    ],
)
def test_unreadable_body_is_a_problem(
    client: FlaskClient, auth_headers: dict, data: str, content_type: str, status: int
) -> None:
    response = client.post(
        "/api/v1/categories", data=data, content_type=content_type, headers=auth_headers
    )
    assert_problem(response, status)


def test_body_over_the_limit_is_413(app: Flask, auth_headers: dict) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 2048
    response = app.test_client().post(
        "/api/v1/categories",
        data=json.dumps({"name": "x" * 5000}),
        content_type="application/json",
        headers=auth_headers,
    )
    assert_problem(response, 413)


def test_validation_error_lists_fields(client: FlaskClient, auth_headers: dict) -> None:
    body = assert_problem(
        client.post("/api/v1/categories", json={"name": "", "extra": 1}, headers=auth_headers), 422
    )
    assert set(body["errors"]) == {"name", "extra"}


@pytest.fixture
def failing_app(app: Flask) -> Flask:
    def boom() -> str:
        raise RuntimeError("secret internals at /srv/service/x.py")

    def db_down() -> str:
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))

    app.add_url_rule("/boom", view_func=boom)
    app.add_url_rule("/db-down", view_func=db_down)
    return app


def test_unexpected_exception_is_500_without_internals(failing_app: Flask) -> None:
    response = failing_app.test_client().get("/boom")
    body = assert_problem(response, 500)
    assert "secret" not in response.get_data(as_text=True)
    assert body["title"] == "Internal server error"


def test_database_failure_is_503(failing_app: Flask) -> None:
    response = failing_app.test_client().get("/db-down")
    body = assert_problem(response, 503)
    assert "database" in body["detail"].lower()
    assert response.headers["Retry-After"]


def test_a_database_outage_logs_its_stack_once_per_interval_not_per_request(
    failing_app: Flask, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service import errors
    from service.logs import EveryInterval

    monkeypatch.setattr(errors, "_database_down_logged", EveryInterval())
    client = failing_app.test_client()
    with caplog.at_level(logging.DEBUG, logger="service.errors"):
        statuses = [client.get("/db-down").status_code for _ in range(3)]
    assert statuses == [503, 503, 503]
    records = [r for r in caplog.records if r.name == "service.errors"]
    # The first one says what failed, with its stack; the next ones only at DEBUG, unstacked
    # (each request still has its access line, its span and its 5xx in the metrics).
    assert [(r.levelname, r.exc_info is not None) for r in records] == [
        ("ERROR", True),
        ("DEBUG", False),
        ("DEBUG", False),
    ]


def test_bad_cursor_is_400(client: FlaskClient) -> None:
    for cursor in ("garbage", "abc.def", "eyJzIjoxfQ.AAAA"):
        assert_problem(client.get(f"/api/v1/products?cursor={cursor}"), 400)
