"""Cancel, decline and expiry against the real payments service (gunicorn, 2 workers): what
the gateway holds afterwards, and the stock a client reads through the API's cached product
read (issue 23, findings 9 and 12).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from service.extensions import db
from service.orders.models import Order
from tests.factories import Factories
from tests.payments.gateway import Gateway, start_gateway, use_gateway
from tests.reliability.servers import free_port


@pytest.fixture(scope="module")
def payments(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One payments service for the module; each order has a payment key of its own."""
    tmp = tmp_path_factory.mktemp("payments")
    gateway = start_gateway(tmp, f"sqlite:///{tmp / 'ledger.db'}", WEB_CONCURRENCY="2")
    yield gateway
    gateway.process.stop()


class Shopper:
    def __init__(self, app: Flask, client: FlaskClient, headers: dict, payments: Gateway) -> None:
        self.app, self.client, self.headers, self.payments = app, client, headers, payments
        self.ledger = Path(payments.process.env["PAYMENTS_DATABASE_URL"].removeprefix("sqlite:///"))
        self.gateway_up()

    def gateway_up(self) -> None:
        use_gateway(self.app, self.payments.base_url)

    def gateway_down(self) -> None:
        use_gateway(self.app, f"http://127.0.0.1:{free_port()}", timeout=0.3, retries=0)

    def place(self, product_id: int, quantity: int = 1) -> TestResponse:
        return self.client.post(
            "/api/v1/orders",
            json={
                "customer_email": "release@example.com",
                "items": [{"product_id": product_id, "quantity": quantity}],
            },
            headers=self.headers,
        )

    def cancel(self, order_id: int) -> TestResponse:
        return self.client.post(f"/api/v1/orders/{order_id}/cancel", headers=self.headers)

    def status(self, order_id: int) -> str:
        return str(
            self.client.get(f"/api/v1/orders/{order_id}", headers=self.headers).json["status"]
        )

    def stock_read(self, product_id: int) -> int:
        """Through the API: the cached product read a client sees."""
        return int(self.client.get(f"/api/v1/products/{product_id}").json["stock"])

    def held(self, order_id: int) -> list[str]:
        """What the gateway's ledger holds under the order's own payment key."""
        with self.app.app_context():
            key = db.session.get(Order, order_id).payment_key
        with sqlite3.connect(self.ledger) as ledger:
            rows = ledger.execute(
                "SELECT status FROM payment_authorizations WHERE idempotency_key = ?", (key,)
            )
            return [status for (status,) in rows]


@pytest.fixture
def shopper(app: Flask, client: FlaskClient, auth_headers: dict, payments: Gateway) -> Shopper:
    return Shopper(app, client, auth_headers, payments)


def test_cancel_refunds_a_paid_order_and_the_product_read_shows_the_stock_back(
    shopper: Shopper, make: Factories
) -> None:
    product = make.product(stock=4)
    order = shopper.place(product.id, 3).json
    assert shopper.stock_read(product.id) == 1  # now cached

    cancelled = shopper.cancel(order["id"])
    assert cancelled.status_code == 200
    assert cancelled.json["status"] == "cancelled"
    assert shopper.stock_read(product.id) == 4
    assert shopper.held(order["id"]) == ["refunded"]

    again = shopper.cancel(order["id"])
    assert again.status_code == 409
    assert shopper.stock_read(product.id) == 4


def test_cancel_of_a_pending_order_voids_its_payment(shopper: Shopper, make: Factories) -> None:
    product = make.product(stock=2)
    shopper.gateway_down()
    pending = shopper.place(product.id, 2)
    assert pending.status_code == 503
    order_id = pending.json["order_id"]
    assert shopper.stock_read(product.id) == 0
    shopper.gateway_up()
    assert shopper.cancel(order_id).status_code == 200
    assert shopper.stock_read(product.id) == 2
    assert shopper.held(order_id) == ["voided"]


def test_declined_payment_is_402_naming_the_order_and_the_read_shows_the_stock(
    shopper: Shopper, make: Factories
) -> None:
    product = make.product(stock=2, price=Decimal("6000.00"))  # 12,000 is over the limit
    assert shopper.stock_read(product.id) == 2  # cached before the order
    response = shopper.place(product.id, 2)
    assert response.status_code == 402
    assert response.content_type == "application/problem+json"
    assert response.json["type"].endswith("payment-declined")
    order_id = response.json["order_id"]
    assert str(order_id) in response.json["detail"]
    assert response.json["order_status"] == "payment_failed"
    assert shopper.stock_read(product.id) == 2
    assert shopper.status(order_id) == "payment_failed"
    assert shopper.held(order_id) == ["declined"]
    # Nothing to cancel: the stock is already back.
    assert shopper.cancel(order_id).status_code == 409
    assert shopper.stock_read(product.id) == 2


def test_expiry_voids_and_the_product_read_shows_the_stock_back(
    shopper: Shopper, make: Factories
) -> None:
    product = make.product(stock=3)
    shopper.gateway_down()
    order_id = shopper.place(product.id, 2).json["order_id"]
    assert shopper.stock_read(product.id) == 1  # cached while the order is pending
    shopper.gateway_up()
    result = shopper.app.test_cli_runner().invoke(
        args=["orders", "expire-pending", "--older-than", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "expired 1 pending orders" in result.output
    assert shopper.status(order_id) == "cancelled"
    assert shopper.stock_read(product.id) == 3
    assert shopper.held(order_id) == ["voided"]


@pytest.mark.parametrize("paid", [True, False], ids=["paid", "pending"])
def test_cancel_while_the_payments_service_does_not_answer_is_503_and_changes_nothing(
    shopper: Shopper, make: Factories, paid: bool
) -> None:
    product = make.product(stock=2)
    if not paid:
        shopper.gateway_down()
    placed = shopper.place(product.id)
    order_id = placed.json["id"] if paid else placed.json["order_id"]
    assert shopper.status(order_id) == ("paid" if paid else "pending")
    shopper.gateway_down()
    refused = shopper.cancel(order_id)
    assert refused.status_code == 503
    assert refused.content_type == "application/problem+json"
    assert refused.json["type"].endswith("payment-unavailable")
    assert refused.json["order_status"] == ("paid" if paid else "pending")
    assert shopper.status(order_id) == ("paid" if paid else "pending")
    assert shopper.stock_read(product.id) == 1
    assert shopper.held(order_id) == (["approved"] if paid else [])
    # The payments service answers again: the same cancel completes.
    shopper.gateway_up()
    assert shopper.cancel(order_id).status_code == 200
    assert shopper.stock_read(product.id) == 2
    assert shopper.held(order_id) == (["refunded"] if paid else ["voided"])


def test_cancel_changes_only_its_own_order(shopper: Shopper, make: Factories) -> None:
    """Two mutants survived with one order per test: `Order.id == order.id` → `>=` in the
    cancel's UPDATE (it cancelled every later order too), and → `<=` in the order look-up."""
    product = make.product(stock=3)
    first, second = (shopper.place(product.id).json for _ in range(2))
    assert shopper.cancel(first["id"]).status_code == 200
    # and the look-up finds the order asked for (`Order.id == order_id` → `<=` survived too)
    read = shopper.client.get(f"/api/v1/orders/{second['id']}", headers=shopper.headers)
    assert (read.json["id"], read.json["status"]) == (second["id"], "paid")
    assert shopper.held(second["id"]) == ["approved"]
    assert shopper.stock_read(product.id) == 2
