"""Metrics on both paths: OTLP to the receiver (with exemplars), and /metrics across workers."""

from __future__ import annotations

import json
import os
import random
import string
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TABLES
from tests.reliability.servers import PROJECT_ROOT, VENV_BIN
from tests.telemetry.conftest import Stack
from tests.telemetry.otlp import attributes, wait_for
from tests.telemetry.test_traces import _create_product

EXPECTED = {
    "http.server.request.duration": {
        "http.request.method",
        "http.route",
        "http.response.status_code",
        "url.scheme",
    },
    "http.server.active_requests": {"http.request.method"},
    "db.client.operation.duration": {
        "db.system.name",
        "db.namespace",
        "db.operation.name",
        "db.collection.name",
    },
    "db.client.connection.count": {"db.client.connection.state", "db.client.connection.pool.name"},
    "db.client.connection.wait_time": {"db.client.connection.pool.name"},
    "db.client.connection.max": {"db.client.connection.pool.name"},
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
        response = requests.get(
            stack.url(route), headers=stack.headers(Connection="close"), timeout=10
        )
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


def test_scrape_has_the_pool_maximum_of_every_worker(stack: Stack) -> None:
    # Each worker's pool: DATABASE_POOL_SIZE plus as many overflow connections (service/config),
    # summed over the workers as db_client_connection_count is.
    samples = [
        sample
        for family in text_string_to_metric_families(
            requests.get(stack.url("/metrics"), timeout=10).text
        )
        for sample in family.samples
    ]
    (maximum,) = [s for s in samples if s.name == "db_client_connection_max"]
    workers = {s.labels["worker"] for s in samples if s.name == "process_memory_usage_bytes"}
    assert maximum.labels["db_client_connection_pool_name"].startswith("postgresql://")
    per_worker = 2 * int(stack.env.get("DATABASE_POOL_SIZE", "5"))
    assert maximum.value == len(workers) * per_worker


# Bounded labels (issue 10, finding 4; issue 14): whatever clients send, the number of
# series stays fixed. Methods as the HTTP semantic conventions say (known, else _OTHER),
# routes as templates (none for a path that matches no route).

# RFC 9110, PATCH (RFC 5789) and QUERY: the list opentelemetry-util-http knows.
KNOWN_METHODS = {
    "CONNECT",
    "DELETE",
    "GET",
    "HEAD",
    "OPTIONS",
    "PATCH",
    "POST",
    "PUT",
    "TRACE",
    "QUERY",
}
NORMALISED_METHODS = KNOWN_METHODS | {"_OTHER"}
SCHEMES = {"http", "https"}
JUNK_SHAPES = 4  # requests per round of _send_junk


def _send_junk(stack: Stack, rounds: int, seed: int) -> int:
    """Made-up methods and paths, as a scanner sends them; returns the made-up-method count."""
    rng = random.Random(seed)
    close = {"Connection": "close"}  # a new connection each time: both workers get some
    for _ in range(rounds):
        method = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 12)))
        path = f"/{rng.choice(['api/v1', 'wp-admin', 'cgi-bin'])}/{uuid.uuid4().hex}"
        assert (
            requests.request(method, stack.url(path), headers=close, timeout=10).status_code == 404
        )
        known = requests.request(method, stack.url("/api/v1/categories"), headers=close, timeout=10)
        assert known.status_code == 405
        assert requests.get(stack.url(path), headers=close, timeout=10).status_code == 404
        # gunicorn trusts X-Forwarded-Proto from 127.0.0.1: a made-up scheme is plain http.
        scheme = {**close, "X-Forwarded-Proto": rng.choice(["https", "gopher", uuid.uuid4().hex])}
        assert requests.get(stack.url("/api/v1/categories"), headers=scheme, timeout=10).ok
    return 2 * rounds


def _scraped_series(stack: Stack) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    body = requests.get(stack.url("/metrics"), timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name.startswith(("http_server_", "glassbox_ratelimit"))
    }


def test_junk_methods_and_paths_add_no_scraped_series(stack: Stack) -> None:
    _send_junk(stack, 20, seed=1)
    before = _scraped_series(stack)
    size_before = len(requests.get(stack.url("/metrics"), timeout=10).content)
    _send_junk(stack, 40, seed=2)  # 160 requests, 40 new methods and 40 new paths
    after = _scraped_series(stack)
    size_after = len(requests.get(stack.url("/metrics"), timeout=10).content)
    print(
        f"/metrics: {len(before)} HTTP series and {size_before} bytes before 160 junk "
        f"requests, {len(after)} and {size_after} bytes after"
    )
    assert after - before == set()
    assert len(after) == len(before)
    labels = [dict(series) for _, series in after]
    assert {series["http_request_method"] for series in labels} <= NORMALISED_METHODS
    assert {series["url_scheme"] for series in labels if "url_scheme" in series} <= SCHEMES
    routes = {series.get("http_route", "") for series in labels}
    assert routes <= _route_templates(stack) | {""}
    for series in labels:
        if "error_type" in series:  # only on the duration histogram
            status = series["http_response_status_code"]
            assert series["error_type"] == (status if status.startswith("5") else "")


def _route_templates(stack: Stack) -> set[str]:
    return set(requests.get(stack.url("/openapi.json"), timeout=10).json()["paths"])


def _latest_points(stack: Stack, name: str) -> dict[tuple[Any, ...], Any]:
    """The newest cumulative point of `name` per (worker, attribute set)."""
    latest: dict[tuple[Any, ...], Any] = {}
    for resource, metric in stack.receiver.metrics():
        if resource.get("service.name") != "glassbox-api" or metric.name != name:
            continue
        for point in _points(metric):
            labels = attributes(point.attributes)
            key = (resource.get("service.instance.id"), tuple(sorted(labels.items())))
            if key not in latest or point.time_unix_nano >= latest[key].time_unix_nano:
                latest[key] = point
    return latest


def _exported_other_count(stack: Stack) -> int:
    points = _latest_points(stack, "http.server.request.duration")
    return sum(
        point.count
        for (_, labels), point in points.items()
        if dict(labels).get("http.request.method") == "_OTHER"
    )


def _attribute_sets(stack: Stack, name: str) -> set[tuple[Any, ...]]:
    return {labels for _, labels in _latest_points(stack, name)}


def _values(sets: Iterable[tuple[Any, ...]], key: str) -> set[Any]:
    return {dict(labels)[key] for labels in sets if key in dict(labels)}


def test_junk_methods_and_paths_add_no_otlp_series(stack: Stack) -> None:
    start = _exported_other_count(stack)
    sent = _send_junk(stack, 20, seed=3)
    wait_for(lambda: _exported_other_count(stack) >= start + sent, what="junk requests exported")
    first = _attribute_sets(stack, "http.server.request.duration")
    sent += _send_junk(stack, 40, seed=4)
    wait_for(lambda: _exported_other_count(stack) >= start + sent, what="more junk exported")
    second = _attribute_sets(stack, "http.server.request.duration")
    assert second - first == set()
    assert _values(second, "http.request.method") <= NORMALISED_METHODS
    assert _values(second, "http.route") <= _route_templates(stack)
    assert _values(second, "url.scheme") <= SCHEMES
    for labels in map(dict, second):
        status = labels["http.response.status_code"]
        assert labels.get("error.type") == (str(status) if status >= 500 else None), labels
        if labels["http.request.method"] == "_OTHER":  # matched no route
            assert "http.route" not in labels, labels
    active = _attribute_sets(stack, "http.server.active_requests")
    assert _values(active, "http.request.method") <= NORMALISED_METHODS


def test_database_attributes_are_bounded(stack: Stack) -> None:
    _place_and_cancel(stack)

    def exported() -> set[tuple[Any, ...]] | None:
        sets = _attribute_sets(stack, "db.client.operation.duration")
        return sets if _values(sets, "db.collection.name") else None

    sets = wait_for(exported, what="database operations exported")
    database = sa.engine.make_url(stack.env["DATABASE_URL"]).database
    assert _values(sets, "db.namespace") == {database}
    collections = _values(sets, "db.collection.name")
    assert {"products", "orders"} <= collections
    assert collections <= set(TABLES) | {"alembic_version"}
    assert _values(sets, "db.operation.name") <= {"SELECT", "INSERT", "UPDATE", "DELETE", "OTHER"}
    scraped = requests.get(stack.url("/metrics"), timeout=10).text
    samples = [
        sample.labels
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "db_client_operation_duration_seconds_count"
    ]
    assert {labels["db_namespace"] for labels in samples} == {database}
    assert {labels["db_collection_name"] for labels in samples} <= collections | {""}


def test_an_empty_multiprocess_folder_means_one_process(tmp_path: Path) -> None:
    """`PROMETHEUS_MULTIPROC_DIR=` (empty, as .env.example has it) is unset: a flask command
    leaves no prometheus_client files in the folder it runs in."""
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": "",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'glassbox.db'}",
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    result = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "service", "db", "upgrade"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["glassbox.db"]
