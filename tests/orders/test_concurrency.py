"""Stock decrement under real concurrency, on PostgreSQL (SQLite serialises writers)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier
from typing import Any, TypeVar

import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from service.auth import service as auth
from service.auth.models import Scope
from service.catalog.models import Product
from service.extensions import db
from service.orders.models import OrderItem
from tests.factories import Factories
from tests.processes import start_gunicorn
from tests.reliability.servers import server_env

T = TypeVar("T")


def at_once(count: int, call: Callable[[FlaskClient], T], app: Flask) -> list[T]:
    """`count` threads, each with its own test client, released together by a barrier."""
    barrier = Barrier(count)

    def run(_: int) -> T:
        client = app.test_client()
        barrier.wait(timeout=30)  # release every thread at once
        return call(client)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def one_unit_of(product: Product, email: str) -> dict[str, Any]:
    return {"customer_email": email, "items": [{"product_id": product.id, "quantity": 1}]}


def test_threads_never_sell_the_same_last_units(pg_app: Flask) -> None:
    make = Factories(pg_app)
    product = make.product(stock=5)
    with pg_app.app_context():
        token = auth.create_key(name="concurrency", scopes=[Scope.CUSTOMER])
    buyers = 20

    def buy(client: FlaskClient) -> int:
        response = client.post(
            "/api/v1/orders",
            json=one_unit_of(product, "c@example.com"),
            headers={"Authorization": f"Bearer {token}"},
        )
        return response.status_code

    statuses = at_once(buyers, buy, pg_app)

    assert statuses.count(201) == 5
    assert statuses.count(409) == buyers - 5
    with pg_app.app_context():
        assert db.session.get(Product, product.id).stock == 0
        sold = db.session.scalar(
            select(func.sum(OrderItem.quantity)).where(OrderItem.product_id == product.id)
        )
        assert sold == 5


def test_concurrent_retries_with_one_key_create_one_order(pg_app: Flask) -> None:
    make = Factories(pg_app)
    product = make.product(stock=10)
    with pg_app.app_context():
        token = auth.create_key(name="one-key", scopes=[Scope.CUSTOMER])

    def retry(client: FlaskClient) -> tuple[int, int]:
        response = client.post(
            "/api/v1/orders",
            json=one_unit_of(product, "k@example.com"),
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "same-click"},
        )
        return response.status_code, response.json["id"]

    results = at_once(10, retry, pg_app)

    assert {status for status, _ in results} == {201}
    assert len({order_id for _, order_id in results}) == 1
    with pg_app.app_context():
        assert db.session.get(Product, product.id).stock == 9


def test_200_concurrent_orders_under_gunicorn_sell_exactly_the_stock(
    pg_app: Flask, postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    """Several worker processes, real PostgreSQL: 200 buyers, 50 units."""
    make = Factories(pg_app)
    product = make.product(stock=50)
    with pg_app.app_context():
        token = auth.create_key(name="crowd", scopes=[Scope.CUSTOMER])
    server = start_gunicorn(
        "api",
        server_env(DATABASE_URL=postgres_url, REDIS_URL=redis_url, WEB_CONCURRENCY="4"),
        tmp_path / "api.log",
    )
    try:
        session_headers = {"Authorization": f"Bearer {token}", "Connection": "close"}
        body = one_unit_of(product, "crowd@example.com")

        def buy(_: int) -> int:
            return requests.post(
                server.base_url + "/api/v1/orders",
                json=body,
                headers=session_headers,
                timeout=60,
            ).status_code

        with ThreadPoolExecutor(max_workers=40) as pool:
            statuses = list(pool.map(buy, range(200)))
    finally:
        server.stop()

    assert statuses.count(201) == 50
    assert statuses.count(409) == 150
    with pg_app.app_context():
        assert db.session.get(Product, product.id).stock == 0
        sold = db.session.scalar(
            select(func.sum(OrderItem.quantity)).where(OrderItem.product_id == product.id)
        )
        assert sold == 50
