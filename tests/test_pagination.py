from __future__ import annotations

import base64
import hashlib
import hmac
import json
from decimal import Decimal

from flask import Flask
from flask.testing import FlaskClient

from service.pagination import decode_cursor, encode_cursor
from tests.factories import Factories


def test_cursor_round_trip(app: Flask) -> None:
    with app.test_request_context():
        token = encode_cursor("scope", ["a", 3])
        assert decode_cursor(token, "scope", 2) == ["a", 3]


def _first_cursor(client: FlaskClient, make: Factories, query: str = "") -> str:
    category = make.category()
    for _ in range(3):
        make.product(category_id=category.id)
    response = client.get(f"/api/v1/products?limit=1{query}")
    return str(response.json["next_cursor"])


def test_tampered_cursor_is_400(client: FlaskClient, make: Factories) -> None:
    cursor = _first_cursor(client, make)
    payload, signature = cursor.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["k"][1] = 1  # jump elsewhere
    forged = _b64(json.dumps(data).encode())
    response = client.get(f"/api/v1/products?limit=1&cursor={forged}.{signature}")
    assert response.status_code == 400
    assert response.json["type"].endswith("invalid-cursor")


def test_cursor_from_another_list_or_filter_is_400(
    client: FlaskClient, make: Factories, auth_headers: dict
) -> None:
    cursor = _first_cursor(client, make)
    assert client.get(f"/api/v1/products?limit=1&sort=-price&cursor={cursor}").status_code == 400
    assert client.get(f"/api/v1/products?limit=1&q=x&cursor={cursor}").status_code == 400
    assert client.get(f"/api/v1/categories?cursor={cursor}").status_code == 400
    assert client.get(f"/api/v1/orders?cursor={cursor}", headers=auth_headers).status_code == 400


def test_cursor_from_another_deployment_is_400(
    app: Flask, client: FlaskClient, make: Factories
) -> None:
    cursor = _first_cursor(client, make)
    app.config["SECRET_KEY"] = "another-deployment-secret"
    assert client.get(f"/api/v1/products?limit=1&cursor={cursor}").status_code == 400


def test_replayed_cursor_returns_the_same_page(client: FlaskClient, make: Factories) -> None:
    cursor = _first_cursor(client, make)
    first = client.get(f"/api/v1/products?limit=1&cursor={cursor}")
    second = client.get(f"/api/v1/products?limit=1&cursor={cursor}")
    assert first.status_code == second.status_code == 200
    assert first.json == second.json


def test_cursor_format_is_stable(app: Flask, client: FlaskClient, make: Factories) -> None:
    """Cursors handed out before a release keep working after it: this spells the format
    out (signed JSON of the list's scope and the last sort key) instead of calling the
    service's encoder."""
    category = make.category()
    prices = ["3.00", "5.00", "5.00", "9.00"]
    made = [make.product(category_id=category.id, price=Decimal(p)) for p in prices]
    # The page of `sort=price&category_id=...` after the sort key (5.00, id 0).
    scope_text = json.dumps(
        ["products", [["category_id", str(category.id)], ["sort", "price"]]],
        separators=(",", ":"),
    )
    scope = hashlib.sha256(scope_text.encode()).hexdigest()[:16]
    payload = json.dumps({"s": scope, "k": [{"d": "5.00"}, 0]}, separators=(",", ":")).encode()
    key = str(app.config["SECRET_KEY"]).encode()
    signature = hmac.new(key, b"cursor:" + payload, hashlib.sha256).digest()[:16]
    cursor = f"{_b64(payload)}.{_b64(signature)}"
    response = client.get(
        f"/api/v1/products?sort=price&category_id={category.id}&limit=2&cursor={cursor}"
    )
    assert response.status_code == 200, response.json
    assert [i["id"] for i in response.json["items"]] == [p.id for p in made[1:3]]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
