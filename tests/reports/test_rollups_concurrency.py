"""Payments and cancels of orders sharing products, at once on PostgreSQL: none fails (each
takes the counted product rows' locks in key order, so none waits for another holding what
it needs) and the rollups end as a rebuild from the orders makes them (counts change in
place, with the row locked, never read and written back)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from service.extensions import db
from service.orders.models import Order, OrderStatus
from service.reports import rollups
from tests.conftest import _clean, build_app
from tests.factories import Factories
from tests.reports.rollup_rows import assert_as_rebuilt

ORDERS = 12


@pytest.fixture
def shop(postgres_url: str) -> Any:
    app = build_app(postgres_url, DATABASE_POOL_SIZE=ORDERS)  # all of them at once
    yield app
    _clean(app)


@pytest.mark.postgres
def test_payments_and_cancels_of_the_same_products_at_once_neither_deadlock_nor_drift(
    shop: Flask,
) -> None:
    make = Factories(shop)
    products = [make.product(price=Decimal("2.50"), stock=999) for _ in range(4)]
    # Every order holds all four products, in a different line order each time; the even
    # ones are paid (recorded) up front and are cancelled below while the odd ones are paid.
    orders = []
    for n in range(ORDERS):
        lines = [(products[(n + k) % 4], 1 + k) for k in range(4)]
        if n % 2:
            lines.reverse()
        orders.append(make.order(items=lines, status=OrderStatus.PAID if n % 2 == 0 else "pending"))
    start = threading.Barrier(ORDERS)

    def settle(order: Order) -> None:
        with shop.app_context():
            start.wait(timeout=30)
            if order.status == OrderStatus.PAID:  # cancel: take it back, as _release does
                db.session.execute(
                    sa.update(Order).where(Order.id == order.id).values(status="cancelled")
                )
                rollups.forget(order)
            else:  # pay: add it, as _finish does
                db.session.execute(
                    sa.update(Order).where(Order.id == order.id).values(status="paid")
                )
                rollups.record(Order.id == order.id)
            db.session.commit()

    with ThreadPoolExecutor(max_workers=ORDERS) as pool:
        for done in [pool.submit(settle, order) for order in orders]:
            done.result(timeout=60)  # a deadlock is raised here (psycopg DeadlockDetected)

    with shop.app_context():
        kept = assert_as_rebuilt()
    assert {row[0] for row in kept["order_sales"]} == {o.id for o in orders[1::2]}
