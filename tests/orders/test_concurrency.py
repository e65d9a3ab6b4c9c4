"""Stock decrement under real concurrency, on PostgreSQL (SQLite serialises writers)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

from flask import Flask
from sqlalchemy import func, select

from service.auth import service as auth
from service.catalog.models import Product
from service.extensions import db
from service.orders.models import OrderItem
from tests.factories import Factories


def test_threads_never_sell_the_same_last_units(pg_app: Flask) -> None:
    make = Factories(pg_app)
    product = make.product(stock=5)
    with pg_app.app_context():
        token = auth.create_key(name="concurrency")
    buyers = 20
    barrier = Barrier(buyers)

    def buy(_: int) -> int:
        client = pg_app.test_client()
        barrier.wait(timeout=30)  # release every thread at once
        response = client.post(
            "/api/v1/orders",
            json={
                "customer_email": "c@example.com",
                "items": [{"product_id": product.id, "quantity": 1}],
            },
            headers={"Authorization": f"Bearer {token}"},
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=buyers) as pool:
        statuses = list(pool.map(buy, range(buyers)))

    assert statuses.count(201) == 5
    assert statuses.count(409) == buyers - 5
    with pg_app.app_context():
        assert db.session.get(Product, product.id).stock == 0
        sold = db.session.scalar(
            select(func.sum(OrderItem.quantity)).where(OrderItem.product_id == product.id)
        )
        assert sold == 5
