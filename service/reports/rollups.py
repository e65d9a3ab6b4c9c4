"""Keeping the sales report's rollups (service/reports/models.py) true to the orders.

An order is added in the transaction that makes it paid and taken back in the one that
cancels it, so the rollups never disagree with the orders a reader can see. Each write is
set-based (INSERT … SELECT, or an upsert of counts), so the same statements serve a
payment (one order) and seeding (a batch); the migration's backfill is their SQL.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    Numeric,
    cast,
    delete,
    func,
    insert,
    literal_column,
    select,
    text,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from service.catalog.models import Product
from service.extensions import db
from service.orders.models import Order, OrderItem, OrderStatus
from service.reports.models import CategorySale, OrderSale, ProductSale

ROLLUPS = (OrderSale, ProductSale, CategorySale)


def cents(amount: Any) -> ColumnElement[int]:
    """An amount as integer cents: SQLite stores cents; NUMERIC(12, 2) times 100 is exact."""
    if db.session.get_bind().dialect.name == "sqlite":
        return type_coerce(amount, BigInteger)
    return cast(type_coerce(amount, Numeric(12, 2)) * literal_column("100"), BigInteger)


def utc_day(created_at: Any) -> ColumnElement[date]:
    """The UTC day of a timestamp (SQLite holds naive UTC text)."""
    if db.session.get_bind().dialect.name == "sqlite":
        return func.date(created_at, type_=Date)
    # UTC as a bound parameter: no literal in the statement spans carry.
    return func.date(func.timezone("UTC", created_at), type_=Date)


def record(*where: ColumnElement[bool]) -> None:
    """Add the paid orders matching `where` (in the caller's transaction)."""
    paid = (Order.status == OrderStatus.PAID, *where)
    lines = select().select_from(Order).join(OrderItem, OrderItem.order_id == Order.id)
    db.session.execute(
        insert(OrderSale).from_select(
            ("order_id", "day", "cents", "units", "lines"),
            lines.add_columns(
                Order.id,
                utc_day(Order.created_at),
                cents(Order.total),
                func.sum(OrderItem.quantity),
                func.count(OrderItem.id),
            )
            .where(*paid)
            .group_by(Order.id, Order.created_at, Order.total),
        )
    )
    _count_products(paid, +1)
    _record_categories(paid)


def rebuild(since: date | None = None) -> int:
    """Rewrite the rollups of the days from `since` (every day: None) from the orders, and
    commit; the number of paid orders they hold for those days.

    For orders that code without the rollups paid or cancelled: the previous release, still
    serving while a deploy rolls out after migration 0007, or a hand-made fix in SQL. On
    PostgreSQL the tables are locked against writes meanwhile: a payment's rows wait for
    the rebuild, so none is written twice or lost.
    """
    if db.session.get_bind().dialect.name == "postgresql":
        names = ", ".join(rollup.__tablename__ for rollup in ROLLUPS)
        db.session.execute(text(f"LOCK TABLE {names} IN SHARE ROW EXCLUSIVE MODE"))
    for rollup in ROLLUPS:
        db.session.execute(delete(rollup).where(*([rollup.day >= since] if since else [])))
    from_day = (Order.created_at >= datetime.combine(since, time.min, UTC),) if since else ()
    record(*from_day)
    held = select(func.count()).select_from(OrderSale)
    count = db.session.scalar(held.where(*([OrderSale.day >= since] if since else []))) or 0
    db.session.commit()
    return count


def forget(order: Order) -> None:
    """Take back a paid order that is being cancelled (in the caller's transaction, which
    holds the claim on it: it is taken back exactly once)."""
    this_order = (Order.id == order.id,)
    _count_products(this_order, -1)
    for rollup in (OrderSale, CategorySale):
        db.session.execute(delete(rollup).where(rollup.order_id == order.id))


def regroup(product_id: int) -> None:
    """A product moved to another category: rewrite the category rows of its orders
    (after the move is flushed, in the caller's transaction)."""
    orders = select(OrderItem.order_id).where(OrderItem.product_id == product_id)
    db.session.execute(delete(CategorySale).where(CategorySale.order_id.in_(orders)))
    _record_categories((Order.status == OrderStatus.PAID, Order.id.in_(orders)))


def _per_order_and_product(where: tuple[ColumnElement[bool], ...]) -> Any:
    """What each order matching `where` spent on each of its products, with units, lines."""
    return (
        select(
            utc_day(Order.created_at).label("day"),
            OrderItem.product_id,
            func.sum(cents(OrderItem.unit_price) * OrderItem.quantity).label("cents"),
            func.sum(OrderItem.quantity).label("units"),
            func.count(OrderItem.id).label("lines"),
        )
        .select_from(Order)
        .join(OrderItem, OrderItem.order_id == Order.id)
        .where(*where)
        .group_by(Order.id, OrderItem.product_id, Order.created_at)
        .subquery("spent")
    )


def _count_products(where: tuple[ColumnElement[bool], ...], sign: int) -> None:
    """Add (+1) or take back (-1) the orders matching `where` in the product counts."""
    spent = _per_order_and_product(where)
    counts = (
        select(
            spent.c.day,
            spent.c.product_id,
            spent.c.cents,
            func.count().label("orders"),
            func.sum(spent.c.units).label("units"),
            func.sum(spent.c.lines).label("lines"),
        )
        .group_by(spent.c.day, spent.c.product_id, spent.c.cents)
        # The same row order in every transaction: two payments of the same products take
        # the rows' locks one after the other, never each waiting for the other's.
        .order_by(spent.c.day, spent.c.product_id, spent.c.cents)
    )
    table = ProductSale.__table__
    figures = ("orders", "units", "lines")
    if sign > 0:
        upsert = _dialect_insert()(table).from_select(
            ("day", "product_id", "cents", *figures), counts
        )
        db.session.execute(
            upsert.on_conflict_do_update(
                index_elements=["day", "product_id", "cents"],
                set_={name: table.c[name] + upsert.excluded[name] for name in figures},
            )
        )
        return
    taken = counts.subquery("taken")
    at = (
        ProductSale.day == taken.c.day,
        ProductSale.product_id == taken.c.product_id,
        ProductSale.cents == taken.c.cents,
    )
    # Lock the rows in the order a payment's upsert takes them before changing them, so a
    # cancel and a payment of the same products queue instead of deadlocking.
    db.session.execute(
        select(ProductSale.day)
        .where(*at)
        .order_by(ProductSale.day, ProductSale.product_id, ProductSale.cents)
        .with_for_update(of=ProductSale)
    )
    db.session.execute(
        update(ProductSale)
        .where(*at)
        .values({name: getattr(ProductSale, name) - taken.c[name] for name in figures})
        .execution_options(synchronize_session=False)
    )
    keys = select(taken.c.day, taken.c.product_id, taken.c.cents)
    db.session.execute(
        delete(ProductSale)
        .where(tuple_(ProductSale.day, ProductSale.product_id, ProductSale.cents).in_(keys))
        .where(ProductSale.orders == 0)
        .execution_options(synchronize_session=False)
    )


def _dialect_insert() -> Any:
    """INSERT with ON CONFLICT for the session's backend (both spell it the same)."""
    if db.session.get_bind().dialect.name == "sqlite":
        return sqlite_insert
    return postgresql_insert


def _record_categories(where: tuple[ColumnElement[bool], ...]) -> None:
    line_cents = cents(OrderItem.unit_price) * OrderItem.quantity
    db.session.execute(
        insert(CategorySale).from_select(
            ("order_id", "category_id", "day", "cents", "units", "lines"),
            select(
                Order.id,
                Product.category_id,
                utc_day(Order.created_at),
                func.sum(line_cents),
                func.sum(OrderItem.quantity),
                func.count(OrderItem.id),
            )
            .select_from(Order)
            .join(OrderItem, OrderItem.order_id == Order.id)
            .join(Product, Product.id == OrderItem.product_id)
            .where(*where)
            .group_by(Order.id, Product.category_id, Order.created_at),
        )
    )
