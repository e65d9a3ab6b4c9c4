"""Order placement against the real payments service (gunicorn): declines, failures, timeouts.

Whatever the payments service does, the order ends in a defined state, stock is never lost,
and a retry with the same Idempotency-Key converges on one order.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from flask import Flask
from flask.testing import FlaskClient

from tests.factories import Factories
from tests.orders.test_orders import stock_of
from tests.payments.gateway import Gateway, use_gateway
from tests.reliability.servers import free_port

StartPayments = Callable[..., Gateway]


def place(client: FlaskClient, headers: dict, product_id: int, quantity: int = 1, key: str = "k1"):
    return client.post(
        "/api/v1/orders",
        json={
            "customer_email": "pay@example.com",
            "items": [{"product_id": product_id, "quantity": quantity}],
        },
        headers={**headers, "Idempotency-Key": key},
    )


def test_approved_by_the_payments_service(
    app: Flask,
    client: FlaskClient,
    make: Factories,
    auth_headers: dict,
    payments_server: StartPayments,
) -> None:
    use_gateway(app, payments_server().base_url)
    product = make.product(stock=3)
    response = place(client, auth_headers, product.id)
    assert response.status_code == 201
    assert response.json["status"] == "paid"
    assert response.json["payment_reference"].startswith("pay-")
    assert stock_of(app, product.id) == 2


def test_declined_payment_is_402_and_restores_stock(
    app: Flask,
    client: FlaskClient,
    make: Factories,
    auth_headers: dict,
    payments_server: StartPayments,
) -> None:
    gateway = payments_server()
    use_gateway(app, gateway.base_url)
    product = make.product(stock=3, price=Decimal("6000.00"))  # 12,000 is over the limit
    response = place(client, auth_headers, product.id, quantity=2)
    assert response.status_code == 402
    assert response.content_type == "application/problem+json"
    order_id = response.json["order_id"]
    assert f"order {order_id}" in response.json["detail"]
    assert stock_of(app, product.id) == 3
    replay = place(client, auth_headers, product.id, quantity=2)
    assert replay.status_code == 402
    assert replay.json["order_id"] == order_id
    assert stock_of(app, product.id) == 3
    assert [a["status"] for a in gateway.authorizations_of(order_id)] == ["declined"]


def test_failing_payments_leave_a_pending_order_that_a_retry_completes(
    app: Flask,
    client: FlaskClient,
    make: Factories,
    auth_headers: dict,
    payments_server: StartPayments,
) -> None:
    failing = payments_server(PAYMENTS_FAILURE_RATE="1.0")
    use_gateway(app, failing.base_url, retries=2)
    product = make.product(stock=4)
    first = place(client, auth_headers, product.id, quantity=3, key="checkout-9")
    assert first.status_code == 503
    assert first.content_type == "application/problem+json"
    assert first.json["type"].endswith("payment-unavailable")
    order_id = first.json["order_id"]
    assert first.json["order_status"] == "pending"
    assert stock_of(app, product.id) == 1  # reserved for the pending order, not lost
    read = client.get(f"/api/v1/orders/{order_id}", headers=auth_headers)
    assert read.json["status"] == "pending"

    # The payments service recovers; the client retries with the same key.
    use_gateway(app, payments_server(PAYMENTS_FAILURE_RATE="0.0").base_url)
    retry = place(client, auth_headers, product.id, quantity=3, key="checkout-9")
    assert retry.status_code == 201
    assert retry.json["id"] == order_id
    assert retry.json["status"] == "paid"
    assert stock_of(app, product.id) == 1  # still decremented once
    again = place(client, auth_headers, product.id, quantity=3, key="checkout-9")
    assert again.json == retry.json


def test_timeouts_are_bounded_and_expired_orders_release_their_stock(
    app: Flask,
    client: FlaskClient,
    make: Factories,
    auth_headers: dict,
    payments_server: StartPayments,
) -> None:
    slow = payments_server(PAYMENTS_LATENCY_MS="1500")
    use_gateway(app, slow.base_url, timeout=0.2, retries=0)
    product = make.product(stock=2)
    response = place(client, auth_headers, product.id, quantity=2)
    assert response.status_code == 503
    assert "timeout" in response.json["detail"]
    assert stock_of(app, product.id) == 0

    result = app.test_cli_runner().invoke(args=["orders", "expire-pending", "--older-than", "0"])
    assert result.exit_code == 0, result.output
    order_id = response.json["order_id"]
    order = client.get(f"/api/v1/orders/{order_id}", headers=auth_headers).json
    assert order["status"] == "cancelled"
    assert order["cancellation_reason"] == "payment_expired"
    assert stock_of(app, product.id) == 2
    # The late approval is voided: no money held for the expired order.
    assert [a["status"] for a in slow.authorizations_of(order_id)] == ["voided"]


def test_unreachable_payments_service_is_503_not_500(
    app: Flask, client: FlaskClient, make: Factories, auth_headers: dict
) -> None:
    use_gateway(app, f"http://127.0.0.1:{free_port()}", timeout=0.5, retries=1)
    product = make.product(stock=1)
    response = place(client, auth_headers, product.id)
    assert response.status_code == 503
    assert response.json["order_status"] == "pending"


def test_a_hung_payments_service_costs_at_most_the_payments_budget() -> None:
    """A gateway that accepts the connection and never answers: retries stop when the
    budget (PAYMENTS_BUDGET) runs out, not after PAYMENTS_TIMEOUT x (1 + PAYMENTS_RETRIES)."""
    import socket
    import time

    from service.orders.payments import HttpPaymentGateway

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # connections complete in the backlog; nothing ever answers
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        gateway = HttpPaymentGateway(url, timeout=1.0, retries=5, secret="s" * 32, budget=1.5)
        started = time.monotonic()
        result = gateway.authorize(order_id=1, amount=Decimal("1.00"), key="order-1")
        elapsed = time.monotonic() - started
    assert result.unavailable
    assert result.reason == "timeout"
    # Six attempts of 1 s would take 6 s; the budget allows one whole and one short attempt.
    assert elapsed < 1.5 + 0.5, elapsed
