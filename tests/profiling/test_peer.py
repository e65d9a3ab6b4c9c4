"""The bench's peer (profiling/peer) answers what glassbox answers, from glassbox's own rows.

Both read the same PostgreSQL database: glassbox through its app (the Flask test client),
the peer as users run it (uvicorn, 2 workers, uvloop, httptools). Under stock
`opentelemetry-instrument` it exports real OTLP/HTTP payloads to a receiver in this process.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from profiling.peer.launch import Peer, start_instrumented_peer, start_peer
from service.extensions import db
from service.seed import seed_products
from tests.factories import Factories
from tests.telemetry.otlp import Span, serve_receiver, wait_for

pytestmark = pytest.mark.postgres

PRODUCT_ROUTE = "/api/v1/products/{product_id}"


@pytest.fixture(scope="module")
def peer(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    with start_peer(postgres_url, log_path=tmp_path_factory.mktemp("peer") / "peer.log") as peer:
        yield peer


@pytest.fixture
def shop(pg_app: Flask) -> Flask:
    """More than a page of products, the way `flask seed --products` makes them, plus one
    with the values most likely to be rendered differently (cents, text, zero stock)."""
    with pg_app.app_context():
        seed_products(24, rng=random.Random(12))
        db.session.remove()
    Factories(pg_app).product(
        price=Decimal("0.50"),
        stock=0,
        name='Crème "brûlée" kit',
        description="Line one\nline two — ünïcode, \\ and 100%",
    )
    return pg_app


def peer_get(peer: Peer, path: str) -> requests.Response:
    return requests.get(peer.url + path, timeout=10)


def ordered(document: Any) -> Any:
    """A JSON document with each object's keys as a list, so order is compared too."""
    if isinstance(document, dict):
        return [(key, ordered(value)) for key, value in document.items()]
    if isinstance(document, list):
        return [ordered(value) for value in document]
    return document


def test_a_product_is_the_same_json_as_glassboxs(shop: Flask, peer: Peer) -> None:
    client = shop.test_client()
    for product_id in (1, 25):  # a seeded product and the one with awkward values
        expected = client.get(f"/api/v1/products/{product_id}")
        assert expected.status_code == 200

        answer = peer_get(peer, f"/api/v1/products/{product_id}")

        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == "application/json"
        assert ordered(answer.json()) == ordered(expected.get_json())
    assert answer.json()["price"] == "0.50"


def test_a_missing_product_is_a_404_problem_in_both(shop: Flask, peer: Peer) -> None:
    expected = shop.test_client().get("/api/v1/products/999999")
    answer = peer_get(peer, "/api/v1/products/999999")

    assert answer.status_code == expected.status_code == 404
    assert answer.headers["Content-Type"] == expected.content_type == "application/problem+json"
    assert answer.json()["detail"] == expected.get_json()["detail"]


def test_the_first_page_is_the_same_items_in_the_same_envelope(shop: Flask, peer: Peer) -> None:
    client = shop.test_client()
    expected = client.get("/api/v1/products").get_json()

    page = peer_get(peer, "/api/v1/products")

    assert page.status_code == 200
    document = page.json()
    assert list(document) == list(expected) == ["items", "next_cursor"]
    assert len(document["items"]) == 20
    assert ordered(document["items"]) == ordered(expected["items"])
    # Each cursor is its own opaque string; following the peer's reaches glassbox's next page.
    assert isinstance(document["next_cursor"], str)
    following = client.get(f"/api/v1/products?cursor={expected['next_cursor']}").get_json()
    second = peer_get(peer, f"/api/v1/products?cursor={document['next_cursor']}").json()
    assert ordered(second["items"]) == ordered(following["items"])
    assert second["next_cursor"] is following["next_cursor"] is None


def test_a_bad_cursor_is_a_400_problem(peer: Peer) -> None:
    answer = peer_get(peer, "/api/v1/products?cursor=not-a-cursor")

    assert answer.status_code == 400
    assert answer.headers["Content-Type"] == "application/problem+json"


def _request_trace(spans: list[Span]) -> list[Span] | None:
    """The spans of one traced product read, once its root, server and SELECT spans have
    arrived (the root ends last, so it may come in a later export than its children)."""
    for server in spans:
        if server.attributes.get("http.route") == PRODUCT_ROUTE:
            trace = [span for span in spans if span.trace_id == server.trace_id]
            has_select = any(
                "FROM products" in span.attributes.get("db.statement", "") for span in trace
            )
            if has_select and any(not span.parent_span_id for span in trace):
                return trace
    return None


def test_under_opentelemetry_instrument_it_exports_its_spans_over_otlp_http(
    shop: Flask, postgres_url: str, tmp_path: Path
) -> None:
    receiver, server = serve_receiver()
    try:
        with start_instrumented_peer(
            postgres_url,
            otlp_endpoint=receiver.url,
            sampling_ratio=1.0,
            log_path=tmp_path / "peer.log",
        ) as peer:
            assert peer_get(peer, "/api/v1/products/1").status_code == 200

            trace = wait_for(lambda: _request_trace(receiver.spans()), what="the peer's spans")
    finally:
        server.shutdown()
        server.server_close()

    names = {span.name for span in trace}
    assert "GET /api/v1/products/{product_id}" in names
    select = next(
        span for span in trace if "FROM products" in span.attributes.get("db.statement", "")
    )
    assert select.attributes["db.system"] == "postgresql"
    assert select.resource["service.name"] == "glassbox-peer"
    root = next(span for span in trace if not span.parent_span_id)
    assert root.attributes["http.route"] == PRODUCT_ROUTE
