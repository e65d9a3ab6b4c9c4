"""Every failure leaves as application/problem+json with the right status and no internals."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

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


STOCK_WERKZEUG_TEXT = (
    "If you entered the URL manually",
    "The browser (or proxy)",
    "capacity limit",
)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "slug", "title", "says"),
    [
        ("GET", "/api/v1/nothing-here", None, 404, "not-found", "Not found", "/openapi.json"),
        ("GET", "/api/v1/products/abc", None, 404, "not-found", "Not found", "positive integers"),
        ("PUT", "/api/v1/products", None, 405, "method-not-allowed", "Method not allowed", "Allow"),
        (
            "POST",
            "/api/v1/categories",
            '{"name":\n  "x",,}',
            400,
            "invalid-json",
            "Invalid JSON body",
            "line 2, column 7",
        ),
        (
            "POST",
            "/api/v1/categories",
            '{"name": ""}',
            422,
            "validation-failed",
            "Validation failed",
            "errors",
        ),
        (
            "GET",
            "/api/v1/products?limit=0",
            None,
            422,
            "validation-failed",
            "Validation failed",
            "errors",
        ),
    ],
    ids=["unknown-path", "not-an-id", "405", "malformed-json", "422-body", "422-query"],
)
def test_framework_refusals_speak_the_service_vocabulary(
    client: FlaskClient,
    auth_headers: dict,
    method: str,
    path: str,
    body: str | None,
    status: int,
    slug: str,
    title: str,
    says: str,
) -> None:
    response = client.open(
        path, method=method, data=body, content_type="application/json", headers=auth_headers
    )
    problem = assert_problem(response, status)
    assert problem["type"] == f"urn:glassbox:problem:{slug}"
    assert problem["title"] == title
    assert says in problem["detail"]
    assert not any(stock in problem["detail"] for stock in STOCK_WERKZEUG_TEXT)


def test_413_says_the_limit(app: Flask, auth_headers: dict) -> None:
    app.config["MAX_CONTENT_LENGTH"] = 2048
    response = app.test_client().post(
        "/api/v1/categories", json={"name": "x" * 5000}, headers=auth_headers
    )
    problem = assert_problem(response, 413)
    assert problem["type"] == "urn:glassbox:problem:body-too-large"
    assert "2048 bytes" in problem["detail"]


def _problem_types_in_the_readme(project_root: Path) -> set[str]:
    readme = (project_root / "README.md").read_text()
    return set(re.findall(r"^\| `((?:payments:)?[a-z<>-]+)` \| \d{3} ", readme, re.MULTILINE))


def test_one_readme_table_lists_every_problem_type(project_root: Path) -> None:
    """Every slug the API, its HTTP server and the payments service can answer has its row in
    the README's table of problem types, and every row is one they answer."""
    import service.orders.service  # noqa: F401  (defines its own problem types)
    from service.errors import AppError

    classes, pending = set(), [AppError]
    while pending:
        cls = pending.pop()
        classes.add(cls)
        pending.extend(cls.__subclasses__())
    answered = {cls.slug for cls in classes}
    server = (project_root / "service" / "gunicorn_worker.py").read_text()
    answered |= set(re.findall(r'ServerProblem\(\s*\d+,\s*"([a-z-]+)"', server))
    payments = "".join(
        (project_root / "service" / "payments" / name).read_text()
        for name in ("__init__.py", "routes.py")
    )
    answered |= {f"payments:{slug}" for slug in re.findall(r'slug="([a-z-]+)"', payments)}
    # Its Werkzeug refusals in the same words (service.errors.framework_problem), and the
    # authorizations' own states.
    answered |= {"payments:method-not-allowed", "payments:body-too-large"}
    answered |= {"payments:authorization-<status>"}
    assert _problem_types_in_the_readme(project_root) == answered
