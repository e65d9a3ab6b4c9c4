"""No order ends cancelled with money held, and no order is charged twice (issue 10, finding 2).

The real payments service under gunicorn with 2 workers and a PostgreSQL ledger; the API on
PostgreSQL, called from threads. Every test ends by checking the gateway's own ledger:
every approved authorization belongs to a paid order (with that reference), and every
cancelled order's authorization is voided or refunded.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from service.auth import service as auth
from service.auth.models import Scope
from service.catalog.models import Product
from service.extensions import db
from service.orders.models import Order
from tests.factories import Factories
from tests.payments.gateway import Gateway, postgres_ledger, use_gateway
from tests.reliability.servers import wait_until

StartPayments = Callable[..., Gateway]
LATENCY_MS = 300


def assert_ledger_matches_orders(app: Flask, gateway: Gateway) -> dict[str, int]:
    """The invariants, from the gateway's side; returns how many of each status it holds."""
    seen: dict[str, int] = {}
    with app.app_context():
        orders = db.session.scalars(select(Order)).all()
        for order in orders:
            held = gateway.authorizations_of(order.id)
            assert len(held) <= 1, (order.id, held)
            for authorization in held:
                seen[authorization["status"]] = seen.get(authorization["status"], 0) + 1
                assert authorization["status"] != "processing", (order.id, authorization)
                if authorization["status"] == "approved":
                    assert order.status == "paid", (order.id, order.status, authorization)
                    assert order.payment_reference == authorization["reference"]
            if order.status == "cancelled":
                assert all(a["status"] in ("voided", "refunded") for a in held), (order.id, held)
    return seen


def order_body(product: Product) -> dict[str, Any]:
    return {
        "customer_email": "race@example.com",
        "items": [{"product_id": product.id, "quantity": 1}],
    }


@pytest.fixture
def slow_gateway(
    pg_app: Flask, postgres_url: str, payments_server: StartPayments
) -> Iterator[Callable[..., Gateway]]:
    """A two-worker payments service on a PostgreSQL ledger, `latency_ms` slow per call,
    that `pg_app` calls with `timeout` and `retries`."""

    with contextlib.ExitStack() as ledgers:

        def start(latency_ms: int, *, timeout: float, retries: int) -> Gateway:
            gateway = payments_server(
                ledgers.enter_context(postgres_ledger(postgres_url)),
                WEB_CONCURRENCY="2",
                PAYMENTS_LATENCY_MS=str(latency_ms),
            )
            use_gateway(pg_app, gateway.base_url, timeout=timeout, retries=retries)
            return gateway

        yield start


def test_cancel_racing_a_slow_payment_never_leaves_money_held(
    pg_app: Flask, slow_gateway: Callable[..., Gateway]
) -> None:
    gateway = slow_gateway(LATENCY_MS, timeout=5.0, retries=1)
    rounds = 24
    product = Factories(pg_app).product(stock=rounds)
    with pg_app.app_context():
        token = auth.create_key(name="racer", scopes=[Scope.CUSTOMER])
    headers = {"Authorization": f"Bearer {token}"}
    outcomes: list[tuple[int, int, int]] = []
    answers: dict[int, dict[str, Any]] = {}

    def one_round(n: int) -> None:
        client: FlaskClient = pg_app.test_client()
        placed: dict[str, Any] = {}
        key = f"race-{n}"

        def place() -> None:
            response = pg_app.test_client().post(
                "/api/v1/orders",
                json=order_body(product),
                headers={**headers, "Idempotency-Key": key},
            )
            placed["status"], placed["body"] = response.status_code, response.json

        placing = threading.Thread(target=place)
        placing.start()
        # The cancel lands anywhere from before the decision to after it: the race itself.
        found: dict[str, int] = {}

        def order_exists() -> bool:
            items = client.get("/api/v1/orders?limit=100", headers=headers).json["items"]
            mine = [o for o in items if o["id"] not in {r[0] for r in outcomes}]
            if mine:
                found["id"] = max(o["id"] for o in mine)
            return bool(mine)

        wait_until(order_exists, timeout=30, what="the order being recorded")
        time.sleep((n % 8) * LATENCY_MS / 1000 / 6)
        cancel = client.post(f"/api/v1/orders/{found['id']}/cancel", headers=headers)
        placing.join(timeout=60)
        outcomes.append((found["id"], placed["status"], cancel.status_code))
        answers[found["id"]] = placed["body"]

    for n in range(rounds):
        one_round(n)

    for order_id, placed_status, cancel_status in outcomes:
        assert cancel_status == 200, (order_id, cancel_status)
        # Paid before the cancel reached it: 201 paid, then refunded. Voided mid-flight:
        # 409 order-cancelled naming the order, whether or not the cancel had finished.
        body = answers[order_id]
        held = [a["status"] for a in gateway.authorizations_of(order_id)]
        if placed_status == 201:
            assert (body["id"], body["status"], held) == (order_id, "paid", ["refunded"])
        else:
            assert placed_status == 409, (order_id, placed_status, body)
            assert body["type"].endswith("order-cancelled"), body
            assert body["order_id"] == order_id
            assert body["order_status"] in ("pending", "cancelled")
            assert f"Order {order_id} is" in body["detail"]
            assert held == ["voided"], (order_id, body)
    seen = assert_ledger_matches_orders(pg_app, gateway)
    # Both sides of the race happened: cancels during the payment and after it.
    assert seen.get("voided", 0) > 0, seen
    assert seen.get("refunded", 0) > 0, seen
    with pg_app.app_context():
        assert db.session.get(Product, product.id).stock == rounds  # every unit back


def test_timeout_then_retry_charges_once(
    pg_app: Flask, slow_gateway: Callable[..., Gateway]
) -> None:
    # The API gives up before the gateway decides: the gateway approves after the timeout.
    gateway = slow_gateway(1500, timeout=1.0, retries=0)
    product = Factories(pg_app).product(stock=10)
    with pg_app.app_context():
        token = auth.create_key(name="retrier", scopes=[Scope.CUSTOMER])
    client = pg_app.test_client()

    def place(key: str) -> Any:
        return client.post(
            "/api/v1/orders",
            json=order_body(product),
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
        )

    for n in range(3):
        first = place(f"retry-{n}")
        assert first.status_code == 503, first.json
        retry = place(f"retry-{n}")
        assert retry.status_code == 201, retry.json
        assert retry.json["id"] == first.json["order_id"]
        assert retry.json["status"] == "paid"
        held = gateway.authorizations_of(retry.json["id"])
        assert [(a["status"], a["reference"]) for a in held] == [
            ("approved", retry.json["payment_reference"])
        ]

    # Timed out, then cancelled instead of retried: the late approval is voided.
    first = place("given-up")
    assert first.status_code == 503
    order_id = first.json["order_id"]
    cancel = client.post(
        f"/api/v1/orders/{order_id}/cancel", headers={"Authorization": f"Bearer {token}"}
    )
    assert cancel.status_code == 200, cancel.json
    wait_until(
        lambda: gateway.authorizations_of(order_id)[0]["status"] != "processing",
        timeout=30,
        what="the gateway deciding",
    )
    assert [a["status"] for a in gateway.authorizations_of(order_id)] == ["voided"]
    assert_ledger_matches_orders(pg_app, gateway)
    with pg_app.app_context():
        assert db.session.get(Product, product.id).stock == 7


def test_many_concurrent_retries_of_one_order_charge_once(
    pg_app: Flask, slow_gateway: Callable[..., Gateway]
) -> None:
    gateway = slow_gateway(600, timeout=0.3, retries=3)
    product = Factories(pg_app).product(stock=5)
    with pg_app.app_context():
        token = auth.create_key(name="impatient", scopes=[Scope.CUSTOMER])

    def place(_: int) -> int:
        return (
            pg_app.test_client()
            .post(
                "/api/v1/orders",
                json=order_body(product),
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "same"},
            )
            .status_code
        )

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(place, range(6)))
    final = pg_app.test_client().post(
        "/api/v1/orders",
        json=order_body(product),
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "same"},
    )
    assert final.status_code == 201, final.json
    assert final.json["status"] == "paid"
    held = gateway.authorizations_of(final.json["id"])
    assert [(a["status"], a["reference"]) for a in held] == [
        ("approved", final.json["payment_reference"])
    ]
    assert_ledger_matches_orders(pg_app, gateway)
