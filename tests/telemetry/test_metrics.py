"""Metrics on both paths: OTLP to the receiver (with exemplars), and /metrics across workers."""

from __future__ import annotations

import json
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.telemetry.conftest import Stack
from tests.telemetry.otlp import attributes, wait_for
from tests.telemetry.test_traces import _create_product

EXPECTED = {
    "http.server.request.duration": {
        "http.request.method",
        "http.route",
        "http.response.status_code",
    },
    "http.server.active_requests": {"http.request.method"},
    "db.client.operation.duration": {"db.system.name", "db.operation.name"},
    "db.client.connection.count": {"db.client.connection.state", "db.client.connection.pool.name"},
    "db.client.connection.wait_time": {"db.client.connection.pool.name"},
    "glassbox.cache.requests": {"cache.name", "result"},
    "glassbox.payments.duration": {"outcome"},
    "glassbox.orders.placed": {"status"},
    "glassbox.orders.cancelled": set(),
    "glassbox.revenue": set(),
    "process.cpu.time": {"cpu.mode", "worker"},
    "process.memory.usage": {"worker"},
    "cpython.gc.collections": {"cpython.gc.generation", "worker"},
}


def _points(metric: Any) -> list[Any]:
    kind = metric.WhichOneof("data")
    return list(getattr(metric, kind).data_points)


def _place_and_cancel(stack: Stack) -> str:
    product_id = _create_product(stack, stock=9)
    requests.get(stack.url(f"/api/v1/products/{product_id}"), timeout=10)  # miss
    requests.get(stack.url(f"/api/v1/products/{product_id}"), timeout=10)  # hit
    placed = stack.place_order(product_id, 1, "m@example.com")
    assert placed.status_code == 201
    cancelled = requests.post(
        stack.url(f"/api/v1/orders/{placed.json()['id']}/cancel"),
        headers=stack.headers(),
        timeout=10,
    )
    assert cancelled.status_code == 200
    return str(placed.headers["X-Trace-Id"])


def test_otlp_metrics_have_the_instruments_and_attributes(stack: Stack) -> None:
    _place_and_cancel(stack)

    def collected() -> dict[str, set[str]] | None:
        seen: dict[str, set[str]] = {}
        for resource, metric in stack.receiver.metrics():
            if resource.get("service.name") != "glassbox-api":
                continue
            for point in _points(metric):
                seen.setdefault(metric.name, set()).update(attributes(point.attributes))
        return seen if set(EXPECTED) <= set(seen) else None

    seen = wait_for(collected, what="every instrument exported")
    for name, keys in EXPECTED.items():
        assert keys <= seen[name], (name, seen[name])
    units = {metric.name: metric.unit for _, metric in stack.receiver.metrics()}
    assert units["http.server.request.duration"] == "s"
    assert units["process.memory.usage"] == "By"


def test_duration_exemplars_carry_the_trace_id(stack: Stack) -> None:
    trace_id = _place_and_cancel(stack)

    def exemplar() -> bool:
        for _, metric in stack.receiver.metrics():
            if metric.name != "http.server.request.duration":
                continue
            for point in _points(metric):
                if attributes(point.attributes).get("http.route") != "/api/v1/orders":
                    continue
                if any(e.trace_id.hex() == trace_id for e in point.exemplars):
                    return True
        return False

    wait_for(exemplar, what=f"an exemplar with trace id {trace_id}")


def _scraped_count(stack: Stack, route: str) -> float:
    body = requests.get(stack.url("/metrics"), timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if (
                sample.name == "http_server_request_duration_seconds_count"
                and sample.labels.get("http_route") == route
                and sample.labels.get("http_request_method") == "GET"
                and sample.labels.get("http_response_status_code") == "200"
            ):
                total += sample.value
    return total


def _access_pids(stack: Stack, route: str) -> set[int]:
    pids = set()
    for line in stack.api.output().splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("logger") == "glassbox.access" and record.get("route") == route:
            pids.add(record["pid"])
    return pids


def test_scrape_counts_every_worker(stack: Stack) -> None:
    route = "/api/v1/reports/sales"
    sent = 0
    # Until both workers have served it (bounded): a new connection each time, so the
    # kernel hands requests to whichever worker accepts first.
    while sent < 200 and (sent < 20 or len(_access_pids(stack, route)) < 2):
        response = requests.get(stack.url(route), headers={"Connection": "close"}, timeout=10)
        assert response.status_code == 200
        sent += 1
    assert len(_access_pids(stack, route)) == 2, "one worker served every request"
    assert _scraped_count(stack, route) == sent
    body = requests.get(stack.url("/metrics"), timeout=10).text
    workers = {
        sample.labels["worker"]
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "process_memory_usage_bytes"
    }
    assert len(workers) == 2
