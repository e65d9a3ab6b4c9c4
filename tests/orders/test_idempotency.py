"""Idempotency-Key on POST /orders: a retry returns the first order, never a second one."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from service.database import utcnow
from service.extensions import db
from service.orders.models import IdempotencyKey, Order
from tests.factories import Factories
from tests.orders.test_orders import stock_of


def order_body(product_id: int, quantity: int = 1) -> dict:
    return {
        "customer_email": "retry@example.com",
        "items": [{"product_id": product_id, "quantity": quantity}],
    }


def orders_count(app: Flask) -> int:
    with app.app_context():
        return int(db.session.scalar(select(func.count(Order.id))) or 0)


def test_retry_with_the_same_key_returns_the_first_order(
    client: FlaskClient, make: Factories, auth_headers: dict, app: Flask
) -> None:
    product = make.product(stock=5)
    headers = {**auth_headers, "Idempotency-Key": "checkout-1"}
    first = client.post("/api/v1/orders", json=order_body(product.id, 2), headers=headers)
    second = client.post("/api/v1/orders", json=order_body(product.id, 2), headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json["id"] == first.json["id"]
    assert second.json["payment_reference"] == first.json["payment_reference"]
    # The retry says it is one (as Stripe does); the first answer does not.
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["Location"] == first.headers["Location"]
    assert stock_of(app, product.id) == 3  # decremented once
    assert orders_count(app) == 1


def test_same_key_with_another_body_is_422(
    client: FlaskClient, make: Factories, auth_headers: dict, app: Flask
) -> None:
    product = make.product(stock=5)
    headers = {**auth_headers, "Idempotency-Key": "checkout-2"}
    assert (
        client.post("/api/v1/orders", json=order_body(product.id, 1), headers=headers).status_code
        == 201
    )
    other = client.post("/api/v1/orders", json=order_body(product.id, 2), headers=headers)
    assert other.status_code == 422
    assert "Idempotency-Key" in other.json["errors"]
    assert stock_of(app, product.id) == 4


def test_keys_belong_to_one_api_key(
    client: FlaskClient, make: Factories, auth_headers: dict, app: Flask
) -> None:
    from service.auth import service as auth

    with app.app_context():
        other_token = auth.create_key(name="another-client", scopes=["customer"])
    product = make.product(stock=5)
    mine = client.post(
        "/api/v1/orders",
        json=order_body(product.id),
        headers={**auth_headers, "Idempotency-Key": "same"},
    )
    theirs = client.post(
        "/api/v1/orders",
        json=order_body(product.id),
        headers={"Authorization": f"Bearer {other_token}", "Idempotency-Key": "same"},
    )
    assert mine.json["id"] != theirs.json["id"]


def test_keys_expire(client: FlaskClient, make: Factories, auth_headers: dict, app: Flask) -> None:
    product = make.product(stock=5)
    headers = {**auth_headers, "Idempotency-Key": "old"}
    first = client.post("/api/v1/orders", json=order_body(product.id), headers=headers)
    with app.app_context():
        db.session.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(days=2)))
        db.session.commit()
    again = client.post("/api/v1/orders", json=order_body(product.id), headers=headers)
    assert again.status_code == 201
    assert again.json["id"] != first.json["id"]
    assert stock_of(app, product.id) == 3


def test_without_a_key_each_post_is_a_new_order(
    client: FlaskClient, make: Factories, auth_headers: dict, app: Flask
) -> None:
    product = make.product(stock=5)
    client.post("/api/v1/orders", json=order_body(product.id), headers=auth_headers)
    client.post("/api/v1/orders", json=order_body(product.id), headers=auth_headers)
    assert orders_count(app) == 2


def test_key_is_validated(client: FlaskClient, make: Factories, auth_headers: dict) -> None:
    product = make.product(stock=5)
    response = client.post(
        "/api/v1/orders",
        json=order_body(product.id),
        headers={**auth_headers, "Idempotency-Key": "k" * 256},
    )
    assert response.status_code == 422


def test_same_key_with_another_customer_email_is_422(
    client: FlaskClient, make: Factories, auth_headers: dict, app: Flask
) -> None:
    """The email is part of the request a key stands for (issue 23, finding 10)."""
    product = make.product(stock=5)
    headers = {**auth_headers, "Idempotency-Key": "checkout-email"}
    first = client.post("/api/v1/orders", json=order_body(product.id), headers=headers)
    assert first.status_code == 201
    other = client.post(
        "/api/v1/orders",
        json={**order_body(product.id), "customer_email": "someone-else@example.com"},
        headers=headers,
    )
    assert other.status_code == 422
    assert other.json["type"].endswith("idempotency-key-reused")
    assert "Idempotency-Key" in other.json["errors"]
    assert stock_of(app, product.id) == 4
    assert orders_count(app) == 1
