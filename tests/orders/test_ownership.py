"""Orders belong to the API key that placed them (issue 10, finding 3)."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from service.auth import service as auth
from service.auth.models import Scope
from tests.factories import Factories


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_orders_are_private_to_their_key(
    app: Flask, client: FlaskClient, make: Factories, customer_headers: dict, admin_headers: dict
) -> None:
    product = make.product(stock=10)
    with app.app_context():
        other = bearer(auth.create_key(name="someone-else", scopes=[Scope.CUSTOMER]))
    body = {
        "customer_email": "alice@example.com",
        "items": [{"product_id": product.id, "quantity": 1}],
    }
    mine = client.post("/api/v1/orders", json=body, headers=customer_headers).json
    theirs = client.post(
        "/api/v1/orders", json={**body, "customer_email": "bob@example.com"}, headers=other
    ).json

    # Without a key: nothing, not even whether an email shops here.
    for path in (
        "/api/v1/orders",
        "/api/v1/orders?customer_email=bob@example.com",
        f"/api/v1/orders/{mine['id']}",
    ):
        response = client.get(path)
        assert response.status_code == 401, path
        assert "alice" not in response.get_data(as_text=True)
    assert client.post(f"/api/v1/orders/{mine['id']}/cancel").status_code == 401

    # Each key sees its own orders only; another key's order is as absent as a missing one.
    listed = client.get("/api/v1/orders", headers=customer_headers).json["items"]
    assert [o["id"] for o in listed] == [mine["id"]]
    assert (
        client.get("/api/v1/orders?customer_email=bob@example.com", headers=customer_headers).json[
            "items"
        ]
        == []
    )
    assert client.get(f"/api/v1/orders/{theirs['id']}", headers=customer_headers).status_code == 404
    refused = client.post(f"/api/v1/orders/{theirs['id']}/cancel", headers=customer_headers)
    assert refused.status_code == 404
    assert client.get(f"/api/v1/orders/{theirs['id']}", headers=other).json["status"] == "paid"

    # An operator key sees and cancels everyone's.
    everyone = client.get("/api/v1/orders", headers=admin_headers).json["items"]
    assert {o["id"] for o in everyone} == {mine["id"], theirs["id"]}
    cancelled = client.post(f"/api/v1/orders/{theirs['id']}/cancel", headers=admin_headers)
    assert cancelled.status_code == 200
    assert cancelled.json["status"] == "cancelled"


def test_catalog_reads_stay_public(client: FlaskClient) -> None:
    for path in ("/api/v1/products", "/api/v1/categories"):
        assert client.get(path).status_code == 200, path


def test_cli_creates_operator_keys(app: Flask, client: FlaskClient, make: Factories) -> None:
    product = make.product(stock=1)
    make.order(items=[(product, 1)])  # an order from before keys owned orders
    runner = app.test_cli_runner()
    plain = runner.invoke(
        args=["api-keys", "create", "plain", "--scope", "customer"]
    ).stdout.strip()
    operator = runner.invoke(
        args=["api-keys", "create", "ops", "--scope", "operator"]
    ).stdout.strip()
    assert client.get("/api/v1/orders", headers=bearer(plain)).json["items"] == []
    assert len(client.get("/api/v1/orders", headers=bearer(operator)).json["items"]) == 1
