"""orjson behind Flask's JSON provider, and cached representations: the documents stay the same."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from flask.json.provider import DefaultJSONProvider
from flask.testing import FlaskClient

from service.catalog.routes import PRODUCT, version_of
from service.catalog.schemas import ProductSchema
from service.json_provider import OrjsonProvider, encode
from service.representations import etag_of
from tests.factories import Factories


@dataclass
class Point:
    x: int
    y: int


DOCUMENTS: list[Any] = [
    {"b": 1, "a": [1, 2, {"z": None, "y": True}]},
    {"price": Decimal("12.50"), "ratio": Decimal("0.1")},
    {"at": datetime(2026, 12, 1, 23, 0, tzinfo=UTC), "on": date(2026, 12, 1)},
    {"id": uuid.UUID("12345678-1234-5678-1234-567812345678"), "point": Point(1, 2)},
    {"text": 'Café ☕ \u2013 東京 "quoted" \\ \u0085 \ud7ff'},
    {"big": 2**70, "negative": -(2**65)},  # wider than orjson's 64 bits: Flask's encoder
    {"float": 0.1, "exp": 1e16, "small": 1e-7},
    [],
    "plain",
    None,
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_documents_read_back_the_same_as_flasks(app: Flask, document: Any) -> None:
    flask_provider = DefaultJSONProvider(app)
    assert isinstance(app.json, OrjsonProvider)
    with app.app_context():
        expected = json.loads(flask_provider.dumps(document))
        assert json.loads(app.json.dumps(document)) == expected
        assert json.loads(app.json.response(document).get_data()) == expected
        assert json.loads(encode(document)) == expected


def test_keys_are_sorted_and_compact_with_a_final_newline(app: Flask) -> None:
    with app.app_context():
        body = app.json.response({"b": 1, "a": {"d": 2, "c": 3}}).get_data()
    assert body == b'{"a":{"c":3,"d":2},"b":1}\n'


def test_unserialisable_objects_are_refused_as_by_flask(app: Flask) -> None:
    with app.app_context(), pytest.raises(TypeError):
        app.json.dumps({"x": object()})


def test_errors_are_still_problem_json(client: FlaskClient) -> None:
    response = client.get("/api/v1/products/999999")
    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    assert response.json["status"] == 404
    assert response.json["title"]


def test_a_product_is_sent_as_its_schema_dumps_it(app: Flask, client: FlaskClient) -> None:
    product = Factories(app).product(name="Crème brûlée", price=Decimal("9.90"))
    response = client.get(f"/api/v1/products/{product.id}")
    with app.app_context():
        data = {c: getattr(product, c) for c in ProductSchema().fields if hasattr(product, c)}
        expected = ProductSchema().dump(data)
        representation = PRODUCT(data)
    assert response.json == expected
    assert response.json["price"] == "9.90"
    assert response.headers["ETag"] == f'"{etag_of(version_of(data))}"'
    assert representation.body == response.data


def test_a_star_or_a_matching_etag_gets_304_without_a_body(app: Flask, client: FlaskClient) -> None:
    product = Factories(app).product()
    path = f"/api/v1/products/{product.id}"
    etag = client.get(path).headers["ETag"]
    for held in (etag, "*", f'"other", {etag}'):
        response = client.get(path, headers={"If-None-Match": held})
        assert response.status_code == 304, held
        assert response.data == b""
    head = client.head(path)
    assert head.status_code == 200
    assert head.headers["ETag"] == etag
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
