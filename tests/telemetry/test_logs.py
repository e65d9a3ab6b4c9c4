"""Logs joined to traces: in gunicorn's stdout and over OTLP."""

from __future__ import annotations

import json

import requests

from tests.telemetry.conftest import Stack
from tests.telemetry.otlp import wait_for


def test_gunicorn_log_lines_carry_the_request_trace_id(stack: Stack) -> None:
    response = requests.get(stack.url("/api/v1/products?limit=1"), timeout=10)
    trace_id = response.headers["X-Trace-Id"]

    def access_line() -> dict | None:
        for line in stack.api.output().splitlines():
            if line.startswith("{") and trace_id in line:
                record = json.loads(line)
                if record["logger"] == "glassbox.access":
                    return record
        return None

    record = wait_for(access_line, what="the access line of the request")
    assert record["trace_id"] == trace_id
    assert len(record["span_id"]) == 16
    assert record["service"] == "glassbox-api"
    assert record["route"] == "/api/v1/products"
    # Lines outside a request have empty ids, not made-up ones.
    boot = [
        json.loads(line)
        for line in stack.api.output().splitlines()
        if line.startswith("{") and "Booting worker" in line
    ]
    assert boot
    assert all(line.get("trace_id", "") == "" for line in boot)


def test_logs_are_exported_over_otlp_with_trace_context(stack: Stack) -> None:
    response = requests.get(stack.url("/api/v1/categories?limit=1"), timeout=10)
    trace_id = response.headers["X-Trace-Id"]

    def exported() -> bool:
        return any(
            record.trace_id.hex() == trace_id and resource.get("service.name") == "glassbox-api"
            for resource, record in stack.receiver.log_records()
        )

    wait_for(exported, what="the access log record over OTLP")
