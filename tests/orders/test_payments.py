"""Order placement against the real payments service (gunicorn): declines, failures, timeouts.

Whatever the payments service does, the order ends in a defined state, stock is never lost,
and a retry with the same Idempotency-Key converges on one order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.orders.payments import gateway_for
from tests.factories import Factories
from tests.orders.test_orders import stock_of
from tests.processes import PAYMENTS_APP, Process, start_gunicorn
from tests.reliability.servers import free_port, server_env

StartPayments = Callable[..., Process]


@pytest.fixture
def payments_server(tmp_path: Path) -> Iterator[StartPayments]:
    started: list[Process] = []

    def start(**env: str) -> Process:
        process = start_gunicorn(
            "payments",
            server_env(WEB_CONCURRENCY="1", **env),
            tmp_path / f"payments-{len(started)}.log",
            app=PAYMENTS_APP,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def use_payments(app: Flask, url: str, *, timeout: float = 2.0, retries: int = 1) -> None:
    app.extensions["glassbox.payments"] = gateway_for(
        {"PAYMENTS_URL": url, "PAYMENTS_TIMEOUT": timeout, "PAYMENTS_RETRIES": retries}
    )


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
    use_payments(app, payments_server().base_url)
    product = make.product(stock=3)
    response = place(client, auth_headers, product.id)
    assert response.status_code == 201
    assert response.json["status"] == "paid"
    assert response.json["payment_reference"].startswith("pay-")
    assert stock_of(app, product.id) == 2


def test_declined_payment_cancels_and_restores_stock(
    app: Flask,
    client: FlaskClient,
    make: Factories,
    auth_headers: dict,
    payments_server: StartPayments,
) -> None:
    use_payments(app, payments_server().base_url)
    product = make.product(stock=3, price=Decimal("6000.00"))  # 12,000 is over the limit
    response = place(client, auth_headers, product.id, quantity=2)
    assert response.status_code == 201
    assert response.json["status"] == "cancelled"
    assert response.json["cancellation_reason"] == "payment_declined"
    assert stock_of(app, product.id) == 3
    replay = place(client, auth_headers, product.id, quantity=2)
    assert replay.status_code == 201
    assert replay.json["id"] == response.json["id"]
    assert stock_of(app, product.id) == 3


def test_failing_payments_leave_a_pending_order_that_a_retry_completes(
    app: Flask,
    client: FlaskClient,
    make: Factories,
    auth_headers: dict,
    payments_server: StartPayments,
) -> None:
    failing = payments_server(PAYMENTS_FAILURE_RATE="1.0")
    use_payments(app, failing.base_url, retries=2)
    product = make.product(stock=4)
    first = place(client, auth_headers, product.id, quantity=3, key="checkout-9")
    assert first.status_code == 503
    assert first.content_type == "application/problem+json"
    assert first.json["type"].endswith("payment-unavailable")
    order_id = first.json["order_id"]
    assert first.json["order_status"] == "pending"
    assert stock_of(app, product.id) == 1  # reserved for the pending order, not lost
    assert client.get(f"/api/v1/orders/{order_id}").json["status"] == "pending"

    # The payments service recovers; the client retries with the same key.
    use_payments(app, payments_server().base_url)
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
    slow = payments_server(PAYMENTS_LATENCY_MS="3000")
    use_payments(app, slow.base_url, timeout=0.2, retries=1)
    product = make.product(stock=2)
    response = place(client, auth_headers, product.id, quantity=2)
    assert response.status_code == 503
    assert "timeout" in response.json["detail"]
    assert stock_of(app, product.id) == 0

    result = app.test_cli_runner().invoke(args=["orders", "expire-pending", "--older-than", "0"])
    assert result.exit_code == 0, result.output
    order = client.get(f"/api/v1/orders/{response.json['order_id']}").json
    assert order["status"] == "cancelled"
    assert order["cancellation_reason"] == "payment_expired"
    assert stock_of(app, product.id) == 2


def test_unreachable_payments_service_is_503_not_500(
    app: Flask, client: FlaskClient, make: Factories, auth_headers: dict
) -> None:
    use_payments(app, f"http://127.0.0.1:{free_port()}", timeout=0.5, retries=1)
    product = make.product(stock=1)
    response = place(client, auth_headers, product.id)
    assert response.status_code == 503
    assert response.json["order_status"] == "pending"
