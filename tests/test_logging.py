from __future__ import annotations

import json

import pytest
from flask import Flask

from tests.conftest import build_app


def _lines(captured: str) -> list[dict]:
    return [json.loads(line) for line in captured.splitlines() if line.startswith("{")]


def test_one_json_access_line_per_request(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app = build_app(sqlite_url, LOG_LEVEL="INFO")
    app.test_client().get("/api/v1/products/123456")
    access = [
        line for line in _lines(capsys.readouterr().out) if line["logger"] == "glassbox.access"
    ]
    assert len(access) == 1
    line = access[0]
    assert line["method"] == "GET"
    assert line["route"] == "/api/v1/products/{product_id}"  # the template, as in spans
    assert line["status"] == 404
    assert line["duration_ms"] >= 0
    assert line["client"] == "127.0.0.1"
    assert line["level"] == "INFO"
    assert line["service"] == "glassbox-api"
    assert {"trace_id", "span_id", "timestamp"} <= set(line)


def test_errors_are_logged_once_with_their_stack(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    app: Flask = build_app(sqlite_url)  # built here so its log handler writes to the capture

    def boom() -> str:
        raise RuntimeError("kaput")

    app.add_url_rule("/boom", view_func=boom)
    app.test_client().get("/boom")
    errors = [line for line in _lines(capsys.readouterr().out) if line["level"] == "ERROR"]
    assert len(errors) == 1
    assert "RuntimeError: kaput" in errors[0]["exc_info"]
