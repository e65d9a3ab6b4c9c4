"""The 503 when the payments service does not answer (issue 23, finding 5): it carries
Retry-After, like the database's, and its detail says what is true for that request."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient

from tests.factories import Factories
from tests.payments.gateway import use_gateway
from tests.reliability.servers import free_port


def _place(client: FlaskClient, headers: dict[str, str], product_id: int) -> object:
    body = {
        "customer_email": "down@example.com",
        "items": [{"product_id": product_id, "quantity": 1}],
    }
    return client.post("/api/v1/orders", json=body, headers=headers)


def _assert_retry_later(response: object) -> dict:
    assert response.status_code == 503, response.json  # type: ignore[attr-defined]
    assert response.content_type == "application/problem+json"  # type: ignore[attr-defined]
    assert response.json["type"].endswith("payment-unavailable")  # type: ignore[attr-defined]
    assert int(response.headers["Retry-After"]) > 0  # type: ignore[attr-defined]
    return response.json  # type: ignore[attr-defined,no-any-return]


def test_payment_unavailable_says_retry_after_and_only_what_is_true(
    app: Flask, client: FlaskClient, make: Factories, auth_headers: dict
) -> None:
    use_gateway(app, f"http://127.0.0.1:{free_port()}", timeout=0.5, retries=0)
    product = make.product(stock=5)

    keyed = _assert_retry_later(
        _place(client, {**auth_headers, "Idempotency-Key": "down-1"}, product.id)
    )
    assert "same Idempotency-Key" in keyed["detail"]

    unkeyed = _assert_retry_later(_place(client, auth_headers, product.id))
    assert "same Idempotency-Key" not in unkeyed["detail"]
    assert f"/orders/{unkeyed['order_id']}/cancel" in unkeyed["detail"]
    assert "Idempotency-Key" in unkeyed["detail"]  # how to make the next one retryable

    cancel = client.post(f"/api/v1/orders/{unkeyed['order_id']}/cancel", headers=auth_headers)
    assert _assert_retry_later(cancel)["order_status"] == "pending"
