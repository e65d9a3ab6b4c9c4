"""Order placement against the real payments service (gunicorn): declines, failures, timeouts.

Whatever the payments service does, the order ends in a defined state, stock is never lost,
and a retry with the same Idempotency-Key converges on one order.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.factories import Factories
from tests.orders.test_orders import stock_of
from tests.payments.gateway import Gateway, use_gateway
from tests.reliability.servers import free_port

StartPayments = Callable[..., Gateway]


class Checkout:
    """The shop's side of a payment: the app, an authenticated client, orders and stock."""

    def __init__(self, app: Flask, client: FlaskClient, headers: dict) -> None:
        self.app, self.client, self.headers = app, client, headers

    def use_gateway(self, base_url: str, *, timeout: float = 2.0, retries: int = 1) -> None:
        use_gateway(self.app, base_url, timeout=timeout, retries=retries)

    def place(self, product_id: int, quantity: int = 1, key: str = "k1") -> TestResponse:
        return self.client.post(
            "/api/v1/orders",
            json={
                "customer_email": "pay@example.com",
                "items": [{"product_id": product_id, "quantity": quantity}],
            },
            headers={**self.headers, "Idempotency-Key": key},
        )

    def stock(self, product_id: int) -> int:
        return stock_of(self.app, product_id)


@pytest.fixture
def checkout(app: Flask, client: FlaskClient, auth_headers: dict) -> Checkout:
    return Checkout(app, client, auth_headers)


def test_approved_by_the_payments_service(
    checkout: Checkout, make: Factories, payments_server: StartPayments
) -> None:
    checkout.use_gateway(payments_server().base_url)
    product = make.product(stock=3)
    response = checkout.place(product.id)
    assert response.status_code == 201
    assert response.json["status"] == "paid"
    assert response.json["payment_reference"].startswith("pay-")
    assert checkout.stock(product.id) == 2


def test_declined_payment_is_402_and_restores_stock(
    checkout: Checkout, make: Factories, payments_server: StartPayments
) -> None:
    gateway = payments_server()
    checkout.use_gateway(gateway.base_url)
    product = make.product(stock=3, price=Decimal("6000.00"))  # 12,000 is over the limit
    response = checkout.place(product.id, quantity=2)
    assert response.status_code == 402
    assert response.content_type == "application/problem+json"
    order_id = response.json["order_id"]
    assert f"order {order_id}" in response.json["detail"]
    assert checkout.stock(product.id) == 3
    replay = checkout.place(product.id, quantity=2)
    assert replay.status_code == 402
    assert replay.json["order_id"] == order_id
    assert checkout.stock(product.id) == 3
    assert [a["status"] for a in gateway.authorizations_of(order_id)] == ["declined"]


def test_failing_payments_leave_a_pending_order_that_a_retry_completes(
    checkout: Checkout, make: Factories, payments_server: StartPayments
) -> None:
    failing = payments_server(PAYMENTS_FAILURE_RATE="1.0")
    checkout.use_gateway(failing.base_url, retries=2)
    product = make.product(stock=4)
    first = checkout.place(product.id, quantity=3, key="checkout-9")
    assert first.status_code == 503
    assert first.content_type == "application/problem+json"
    assert first.json["type"].endswith("payment-unavailable")
    order_id = first.json["order_id"]
    assert first.json["order_status"] == "pending"
    assert checkout.stock(product.id) == 1  # reserved for the pending order, not lost
    read = checkout.client.get(f"/api/v1/orders/{order_id}", headers=checkout.headers)
    assert read.json["status"] == "pending"

    # The payments service recovers; the client retries with the same key.
    checkout.use_gateway(payments_server(PAYMENTS_FAILURE_RATE="0.0").base_url)
    retry = checkout.place(product.id, quantity=3, key="checkout-9")
    assert retry.status_code == 201
    assert retry.json["id"] == order_id
    assert retry.json["status"] == "paid"
    assert checkout.stock(product.id) == 1  # still decremented once
    again = checkout.place(product.id, quantity=3, key="checkout-9")
    assert again.json == retry.json


def test_timeouts_are_bounded_and_expired_orders_release_their_stock(
    checkout: Checkout, make: Factories, payments_server: StartPayments
) -> None:
    slow = payments_server(PAYMENTS_LATENCY_MS="1500")
    checkout.use_gateway(slow.base_url, timeout=0.2, retries=0)
    product = make.product(stock=2)
    response = checkout.place(product.id, quantity=2)
    assert response.status_code == 503
    assert "timeout" in response.json["detail"]
    assert checkout.stock(product.id) == 0

    result = checkout.app.test_cli_runner().invoke(
        args=["orders", "expire-pending", "--older-than", "0"]
    )
    assert result.exit_code == 0, result.output
    order_id = response.json["order_id"]
    order = checkout.client.get(f"/api/v1/orders/{order_id}", headers=checkout.headers).json
    assert order["status"] == "cancelled"
    assert order["cancellation_reason"] == "payment_expired"
    assert checkout.stock(product.id) == 2
    # The late approval is voided: no money held for the expired order.
    assert [a["status"] for a in slow.authorizations_of(order_id)] == ["voided"]


def test_unreachable_payments_service_is_503_not_500(checkout: Checkout, make: Factories) -> None:
    checkout.use_gateway(f"http://127.0.0.1:{free_port()}", timeout=0.5, retries=1)
    product = make.product(stock=1)
    response = checkout.place(product.id)
    assert response.status_code == 503
    assert response.json["order_status"] == "pending"


def test_a_hung_payments_service_costs_at_most_the_payments_budget() -> None:
    """A gateway that accepts the connection and never answers: retries stop when the
    budget (PAYMENTS_BUDGET) runs out, not after PAYMENTS_TIMEOUT x (1 + PAYMENTS_RETRIES)."""
    import socket
    import time

    from profiling.harness.processes import bind_free_port
    from service.orders.payment_gateway import HttpPaymentGateway

    with socket.socket() as hung:
        bind_free_port(hung)
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


def test_a_paid_order_whose_payment_was_released_elsewhere_can_still_be_cancelled(
    checkout: Checkout, make: Factories, payments_server: StartPayments
) -> None:
    """What the old expiry job left behind (issue 23, finding 1): an order `paid` whose
    authorization the gateway holds as voided. The refund answers 409, which means nothing
    is held; the cancel completes instead of answering 503 forever."""
    gateway = payments_server()
    checkout.use_gateway(gateway.base_url)
    product = make.product(stock=2)
    paid = checkout.place(product.id)
    assert paid.status_code == 201, paid.json
    reference = paid.json["payment_reference"]
    assert gateway.call("POST", f"/api/v1/authorizations/{reference}/void").status_code == 200

    cancel = checkout.client.post(
        f"/api/v1/orders/{paid.json['id']}/cancel", headers=checkout.headers
    )
    assert cancel.status_code == 200, cancel.json
    assert cancel.json["status"] == "cancelled"
    assert checkout.stock(product.id) == 2
    assert [a["status"] for a in gateway.authorizations_of(paid.json["id"])] == ["voided"]


def test_a_payments_service_refusing_the_api_leaves_the_order_pending(
    checkout: Checkout, make: Factories, payments_server: StartPayments
) -> None:
    """A 4xx other than 402/409/429 (here 401: a wrong shared secret) decides nothing: 503 and
    the order stays pending, never `payment_failed` (a surviving mutant made it a decline)."""
    from service.orders.payment_gateway import gateway_for

    gateway = payments_server()
    checkout.app.extensions["glassbox.payments"] = gateway_for(
        {
            **checkout.app.config,
            "PAYMENTS_URL": gateway.base_url,
            "PAYMENTS_TIMEOUT": 2.0,
            "PAYMENTS_RETRIES": 0,
            "PAYMENTS_SHARED_SECRET": "not-the-payments-secret-0123456789abcdef",
        }
    )
    product = make.product(stock=1)
    refused = checkout.place(product.id)
    assert refused.status_code == 503, refused.json
    assert refused.json["order_status"] == "pending"
    assert checkout.stock(product.id) == 0
