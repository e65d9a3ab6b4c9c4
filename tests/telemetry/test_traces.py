"""One placed order, followed through every layer and across the service boundary."""

from __future__ import annotations

import re
import uuid

import requests

from tests.telemetry.conftest import Stack
from tests.telemetry.otlp import Span, wait_for

SERVER, CLIENT = 2, 3  # OTLP SpanKind values
STATUS_ERROR = 2


def _create_product(stack: Stack, stock: int = 5) -> int:
    category = requests.post(
        stack.url("/api/v1/categories"),
        json={"name": f"Traced {uuid.uuid4().hex}"},
        headers=stack.headers(),
        timeout=10,
    ).json()
    product = requests.post(
        stack.url("/api/v1/products"),
        json={
            "sku": f"TRACE-{category['id']}",
            "name": "Traced thing",
            "price": "4.20",
            "stock": stock,
            "category_id": category["id"],
        },
        headers=stack.headers(),
        timeout=10,
    )
    assert product.status_code == 201, product.text
    return int(product.json()["id"])


def _trace(stack: Stack, trace_id: str, *names: str) -> list[Span]:
    def complete() -> list[Span] | None:
        spans = [s for s in stack.receiver.spans() if s.trace_id == trace_id]
        found = {s.name for s in spans}
        return spans if all(name in found for name in names) else None

    return wait_for(complete, what=f"spans {names} of trace {trace_id}")


def test_order_trace_crosses_every_layer_and_the_payments_hop(stack: Stack) -> None:
    product_id = _create_product(stack)
    response = stack.place_order(product_id, 2, "traced@example.com")
    assert response.status_code == 201, response.text
    trace_id = response.headers["X-Trace-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert response.headers["traceresponse"].startswith(f"00-{trace_id}-")

    spans = _trace(
        stack,
        trace_id,
        "POST /api/v1/orders",
        "orders.place",
        "payments.authorize",
        "POST",
        "POST /api/v1/authorizations",
        "payments.risk_check",
    )
    by_id = {s.span_id: s for s in spans}

    def parent(span: Span) -> Span:
        return by_id[span.parent_span_id]

    def only(name: str) -> Span:
        matches = [s for s in spans if s.name == name]
        assert len(matches) == 1, (name, [s.name for s in spans])
        return matches[0]

    server = only("POST /api/v1/orders")
    assert server.kind == SERVER
    assert server.parent_span_id == ""
    assert server.resource["service.name"] == "glassbox-api"
    assert server.attributes["http.route"] == "/api/v1/orders"
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.response.status_code"] == 201
    assert server.status_code != STATUS_ERROR

    place = only("orders.place")
    assert parent(place) is server
    assert place.attributes["order.items_count"] == 1
    assert place.attributes["order.total"] == 8.4
    assert place.attributes["order.status"] == "paid"

    sql = [s for s in spans if "db.system.name" in s.attributes]
    assert {s.attributes["db.operation.name"] for s in sql} >= {"INSERT", "UPDATE"}
    for span in sql:
        assert span.kind == CLIENT
        assert parent(span) in (place, server)
        text = span.attributes["db.query.text"]
        # Parameters only: no literal from the request reaches the statement text.
        assert "traced@example.com" not in text
        assert "'" not in text, text
    update_stock = [s for s in sql if s.name == "UPDATE products"]
    assert update_stock
    assert parent(update_stock[0]) is place

    authorize = only("payments.authorize")
    assert parent(authorize) is place
    client = only("POST")
    assert client.kind == CLIENT
    assert parent(client) is authorize
    remote = only("POST /api/v1/authorizations")
    assert remote.kind == SERVER
    assert remote.resource["service.name"] == "glassbox-payments"
    assert parent(remote) is client
    # Baggage crossed the hop with the trace context.
    assert remote.attributes["glassbox.order_id"] == str(response.json()["id"])
    assert parent(only("payments.risk_check")) is remote
    # Each worker is its own instance.
    assert server.resource["service.instance.id"] != remote.resource["service.instance.id"]


def test_cache_calls_are_traced_when_redis_is_configured(stack: Stack) -> None:
    product_id = _create_product(stack, stock=3)
    response = requests.get(stack.url(f"/api/v1/products/{product_id}"), timeout=10)
    trace_id = response.headers["X-Trace-Id"]
    spans = _trace(stack, trace_id, "GET /api/v1/products/{product_id}")
    if stack.env["REDIS_URL"]:
        spans = _trace(stack, trace_id, "GET")
        redis_spans = [
            s
            for s in spans
            if s.attributes.get("db.system") == "redis"
            or s.attributes.get("db.system.name") == "redis"
        ]
        assert redis_spans, [s.name for s in spans]


def test_a_read_from_the_database_has_its_sql_span(stack: Stack) -> None:
    # On PostgreSQL the read runs on the driver (service/driver_reads.py), not through
    # SQLAlchemy's events: the span must be the same.
    product_id = _create_product(stack)
    response = requests.get(stack.url(f"/api/v1/products/{product_id}"), timeout=10)
    assert response.status_code == 200
    trace_id = response.headers["X-Trace-Id"]
    spans = _trace(stack, trace_id, "GET /api/v1/products/{product_id}", "SELECT products")
    server = next(s for s in spans if s.kind == SERVER)
    sql = next(s for s in spans if s.name == "SELECT products")
    assert sql.kind == CLIENT
    assert sql.parent_span_id == server.span_id
    assert sql.attributes["db.operation.name"] == "SELECT"
    assert sql.attributes["db.collection.name"] == "products"
    assert sql.attributes["db.query.text"].startswith("SELECT products.id")
    assert str(product_id) not in sql.attributes["db.query.text"]  # a parameter, not a literal


def test_client_errors_are_not_span_errors(stack: Stack) -> None:
    response = requests.get(stack.url("/api/v1/products/987654"), timeout=10)
    assert response.status_code == 404
    problem = response.json()
    assert problem["trace_id"] == response.headers["X-Trace-Id"]
    spans = _trace(stack, problem["trace_id"], "GET /api/v1/products/{product_id}")
    server = next(s for s in spans if s.kind == SERVER)
    assert server.attributes["http.response.status_code"] == 404
    assert server.status_code != STATUS_ERROR


def test_incoming_trace_context_is_continued(stack: Stack) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = requests.get(
        stack.url("/api/v1/categories"),
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
        timeout=10,
    )
    assert response.headers["X-Trace-Id"] == trace_id
    spans = _trace(stack, trace_id, "GET /api/v1/categories")
    server = next(s for s in spans if s.name == "GET /api/v1/categories")
    assert server.parent_span_id == "00f067aa0ba902b7"
