"""The attributes of the request and database metrics, recorded through the real SDK.

Issue 14: `url.scheme` and `error.type` on `http.server.request.duration`; issue 10: no
route attribute for a path that matched none. The whole stack under gunicorn is in
test_metrics.py; this checks the OTLP attribute rules on one Metrics object with the SDK's
in-memory reader, and the scrape path on an app whose database is down (a real 503).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import Metrics
from tests.conftest import build_app


def _recorded(record: Any) -> dict[str, list[dict[str, Any]]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = Metrics()
    metrics.enable_otel(provider.get_meter("test"))
    record(metrics)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    found: dict[str, list[dict[str, Any]]] = {}
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = [dict(p.attributes or {}) for p in metric.data.data_points]
    return found


def test_server_errors_carry_error_type_and_unmatched_paths_no_route() -> None:
    def record(metrics: Metrics) -> None:
        metrics.http_request("GET", "/api/v1/products", 200, "https", 0.01)
        metrics.http_request("POST", "/api/v1/orders", 503, "http", 0.02)
        metrics.http_request("_OTHER", "", 405, "http", 0.001)
        metrics.http_request("GET", "/api/v1/products", 200, "https", 0.01, synthetic=True)

    points = _recorded(record)["http.server.request.duration"]
    assert {
        "http.request.method": "GET",
        "http.route": "/api/v1/products",
        "http.response.status_code": 200,
        "url.scheme": "https",
        "synthetic": "false",
    } in points
    assert {
        "http.request.method": "GET",
        "http.route": "/api/v1/products",
        "http.response.status_code": 200,
        "url.scheme": "https",
        "synthetic": "true",
    } in points
    assert {
        "http.request.method": "POST",
        "http.route": "/api/v1/orders",
        "http.response.status_code": 503,
        "url.scheme": "http",
        "error.type": "503",
        "synthetic": "false",
    } in points
    assert {
        "http.request.method": "_OTHER",
        "http.response.status_code": 405,
        "url.scheme": "http",
        "synthetic": "false",
    } in points


def test_database_operations_carry_namespace_and_collection() -> None:
    def record(metrics: Metrics) -> None:
        metrics.db_operation("postgresql", "shop", "SELECT", "products", "", 0.001)
        metrics.db_operation("postgresql", "shop", "SELECT", "", "OperationalError", 0.5)

    points = _recorded(record)["db.client.operation.duration"]
    assert {
        "db.system.name": "postgresql",
        "db.namespace": "shop",
        "db.operation.name": "SELECT",
        "db.collection.name": "products",
    } in points
    assert {
        "db.system.name": "postgresql",
        "db.namespace": "shop",
        "db.operation.name": "SELECT",
        "error.type": "OperationalError",
    } in points


def test_a_503_is_scraped_with_its_error_type() -> None:
    app = build_app("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    client = app.test_client()
    assert client.get("/api/v1/categories").status_code == 503
    body = client.get("/metrics").get_data(as_text=True)
    labels = [
        sample.labels
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "http_server_request_duration_seconds_count"
        and sample.labels["http_route"] == "/api/v1/categories"
        and sample.labels["http_response_status_code"] == "503"
    ]
    assert labels, body
    assert all(label["error_type"] == "503" for label in labels)
    assert all(label["url_scheme"] == "http" for label in labels)
