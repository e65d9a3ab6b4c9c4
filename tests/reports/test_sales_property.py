"""The report the database aggregates answers the same figures as the Python reference.

Hypothesis generates shops' orders (amounts, quantities, days, times at the edges of the
UTC day written in other time zones, every status, paid orders cancelled, i.e. refunded)
and a range and grouping; the API's statement and the reference computation
(service/reports/reference.py) must give the same report, dumped as the API sends it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.catalog.models import Category, Product
from service.extensions import db
from service.orders.models import Order, OrderItem, OrderStatus
from service.reports import reference, rollups
from service.reports.schemas import SalesReportSchema
from service.reports.service import _aggregate
from tests.conftest import _clean, build_app

FIRST_DAY = date(2026, 3, 1)
DAYS = 4
PRODUCTS = 4
# Offsets a customer's clock may have: the day edge in UTC is another hour there.
ZONES = [timezone(timedelta(hours=h, minutes=m)) for h, m in ((-12, 0), (5, 30), (14, 0), (0, 0))]

cents = st.integers(min_value=1, max_value=99_999)
line = st.tuples(st.integers(0, PRODUCTS - 1), st.integers(1, 5), cents)
# A moment near a UTC midnight of the window (or just outside it), written in some zone.
moment = st.builds(
    lambda day, seconds, zone: (
        datetime.combine(FIRST_DAY + timedelta(days=day), time.min, UTC)
        + timedelta(seconds=seconds)
    ).astimezone(zone),
    st.integers(-1, DAYS),
    st.one_of(st.integers(-2, 2), st.integers(-86_400, 86_400)),
    st.sampled_from(ZONES),
)
status = st.sampled_from(
    [
        (OrderStatus.PAID, None),
        (OrderStatus.PAID, None),
        (OrderStatus.CANCELLED, "customer"),  # a paid order refunded, or a pending one voided
        (OrderStatus.PENDING, None),
        (OrderStatus.PAYMENT_FAILED, "payment_declined"),
    ]
)
order = st.tuples(st.lists(line, min_size=1, max_size=4), moment, status)
day_in_window = st.integers(-1, DAYS).map(lambda n: FIRST_DAY + timedelta(days=n))


@pytest.fixture
def shop(backend: str, request: pytest.FixtureRequest) -> Any:
    database = request.getfixturevalue("postgres_url" if backend == "postgres" else "sqlite_url")
    app = build_app(database)
    with app.app_context():
        categories = [Category(name=f"Category {n}") for n in range(2)]
        db.session.add_all(categories)
        db.session.flush()
        products = [
            Product(
                sku=f"SKU-{n}",
                name=f"Product {n}",
                price=Decimal("1.00"),
                stock=0,
                category_id=categories[n % 2].id,
            )
            for n in range(PRODUCTS)
        ]
        db.session.add_all(products)
        db.session.commit()
        product_ids = [p.id for p in products]
    yield app, product_ids
    _clean(app)


def _store(app: Flask, product_ids: list[int], orders: list[Any]) -> None:
    """The orders, each through the transitions that reach its status: a cancelled one is
    paid first, so its report rows are written at payment and deleted at the cancel, the
    way service/orders/service.py writes and deletes them."""
    with app.app_context():
        for table in (*rollups.ROLLUPS, OrderItem, Order):
            db.session.execute(sa.delete(table))
        for lines, created_at, (state, reason) in orders:
            items = [
                OrderItem(product_id=product_ids[p], quantity=q, unit_price=Decimal(c) / 100)
                for p, q, c in lines
            ]
            total = sum((i.unit_price * i.quantity for i in items), Decimal(0))
            paid_first = state in (OrderStatus.PAID, OrderStatus.CANCELLED)
            order = Order(
                customer_email="buyer@example.com",
                status=OrderStatus.PAID if paid_first else state,
                cancellation_reason=reason,
                total=total,
                created_at=created_at,
                items=items,
            )
            db.session.add(order)
            db.session.flush()
            if paid_first:
                rollups.record(Order.id == order.id)
            if state == OrderStatus.CANCELLED:
                order.status = state
                rollups.forget(order)
            db.session.commit()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    orders=st.lists(order, max_size=25),
    first=day_in_window,
    days=st.integers(0, DAYS),
    group_by=st.sampled_from(["day", "product", "category"]),
)
def test_the_database_aggregates_the_reference_figures(
    shop: Any, orders: list[Any], first: date, days: int, group_by: str
) -> None:
    app, product_ids = shop
    _store(app, product_ids, orders)
    last = first + timedelta(days=days)
    schema = SalesReportSchema()
    with app.app_context():
        expected = reference._sales_report(start=first, end=last, group_by=group_by)
        answered, _ = _aggregate(first, last, group_by)
        db.session.rollback()
    assert schema.dump(answered) == schema.dump(expected)


def test_the_percentiles_interpolate_between_half_cents(shop: Any) -> None:
    """Ties at half a cent round to even, as Decimal does: a double would not always."""
    app, product_ids = shop
    noon = datetime.combine(FIRST_DAY, time(12), UTC)
    # Four orders: p50 sits halfway between 0.01 and 0.02, p90 at 0.02 + 0.7 * 0.01.
    amounts = [1, 1, 2, 3]
    _store(app, product_ids, [([(0, 1, c)], noon, (OrderStatus.PAID, None)) for c in amounts])
    with app.app_context():
        answered, cost = _aggregate(FIRST_DAY, FIRST_DAY, "day")
        expected = reference._sales_report(start=FIRST_DAY, end=FIRST_DAY, group_by="day")
    assert cost == {"rows_read": 8, "lines": 4}  # each order read for its day and the totals
    assert answered["totals"]["p50"] == expected["totals"]["p50"] == Decimal("0.02")
    assert answered["totals"]["average"] == expected["totals"]["average"] == Decimal("0.02")
    assert SalesReportSchema().dump(answered) == SalesReportSchema().dump(expected)
