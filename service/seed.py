"""Demo data: `flask --app service seed` (a small shop) and `seed --products N` (volume)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal
from typing import Any, cast

import click
from flask.cli import with_appcontext
from sqlalchemy import Table, func, insert, select, text

from service.catalog.models import Category, Product
from service.database import utcnow
from service.extensions import db
from service.orders.models import Order, OrderItem, OrderStatus
from service.progress import progress
from service.reports import rollups

CATEGORIES = (
    ("Coffee", "Beans and ground coffee"),
    ("Tea", "Loose leaf and bags"),
    ("Brewing", "Grinders, kettles and presses"),
    ("Cups", "Mugs, glasses and saucers"),
    ("Snacks", "Biscuits and chocolate"),
    ("Books", "On coffee, tea and how to make them"),
)
ADJECTIVES = ("Classic", "Dark", "Bright", "Smooth", "Bold", "Organic", "Single-origin", "Smoky")
ORDER_BATCH = 1000
PRODUCTS, ORDERS, ORDER_ITEMS = (cast(Table, m.__table__) for m in (Product, Order, OrderItem))
ROLLUP_TABLES = [cast(Table, m.__table__) for m in rollups.ROLLUPS]
NOUNS = ("blend", "roast", "kit", "mug", "set", "box", "sampler", "edition")


def seed_categories() -> list[int]:
    existing = {name: id_ for id_, name in db.session.execute(select(Category.id, Category.name))}
    for name, description in CATEGORIES:
        if name not in existing:
            category = Category(name=name, description=description)
            db.session.add(category)
            db.session.flush()
            existing[name] = category.id
    db.session.commit()
    return [existing[name] for name, _ in CATEGORIES]


def seed_products(count: int, *, rng: random.Random, batch: int = 5000) -> int:
    """Insert `count` products in batches (COPY on PostgreSQL), showing progress."""
    category_ids = seed_categories()
    start = (db.session.scalar(select(func.max(Product.id))) or 0) + 1
    now = utcnow()
    columns = [column.name for column in PRODUCTS.columns]  # the order the rows below follow
    with progress("products", total=count) as advance:
        for first in range(start, start + count, batch):
            rows = [
                (
                    n,
                    f"SKU-{n:08d}",
                    f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {n}",
                    "",
                    rng.randint(199, 19999),  # cents
                    rng.randint(0, 500),
                    rng.choice(category_ids),
                    now - timedelta(seconds=start + count - n),
                    now,
                )
                for n in range(first, min(start + count, first + batch))
            ]
            _write(PRODUCTS, columns, rows, money=("price",))
            advance(len(rows))
    _after_bulk_load(PRODUCTS)
    return count


def seed_orders(count: int, *, rng: random.Random, days: int = 60) -> int:
    """Paid (and 1 in 12 cancelled) orders spread over the last `days` days, in batches."""
    products = list(db.session.execute(select(Product.id, Product.price).limit(500)))
    if not products:
        return 0
    # Prices as integer cents: the batches are built in plain ints, then written as money.
    priced = [(pid, int(price * 100)) for pid, price in products]
    now = utcnow()
    next_order = (db.session.scalar(select(func.max(Order.id))) or 0) + 1
    next_item = (db.session.scalar(select(func.max(OrderItem.id))) or 0) + 1
    order_columns = [
        "id",
        "customer_email",
        "status",
        "total",
        "payment_reference",
        "cancellation_reason",
        "created_at",
        "updated_at",
    ]
    item_columns = ["id", "order_id", "product_id", "quantity", "unit_price"]
    with progress("orders", total=count) as advance:
        for first in range(0, count, ORDER_BATCH):
            orders, items = [], []
            for n in range(first, min(count, first + ORDER_BATCH)):
                order_id = next_order + n
                total = 0
                for pid, cents in rng.sample(priced, k=min(len(priced), rng.randint(1, 4))):
                    quantity = rng.randint(1, 3)
                    items.append((next_item, order_id, pid, quantity, cents))
                    next_item += 1
                    total += cents * quantity
                cancelled = n % 12 == 0
                created_at = now - timedelta(minutes=rng.randint(0, days * 24 * 60))
                orders.append(
                    (
                        order_id,
                        f"customer{rng.randint(1, 200)}@example.com",
                        (OrderStatus.CANCELLED if cancelled else OrderStatus.PAID).value,
                        total,
                        f"seed-{n}",
                        "customer" if cancelled else None,
                        created_at,
                        created_at,
                    )
                )
            _write(ORDERS, order_columns, orders, money=("total",))
            _write(ORDER_ITEMS, item_columns, items, money=("unit_price",))
            # The sales report's rows of this batch's paid orders, as a payment writes them.
            rollups.record(Order.id.between(orders[0][0], orders[-1][0]))
            db.session.commit()
            advance(len(orders))
    _after_bulk_load(ORDERS, ORDER_ITEMS, analyze=ROLLUP_TABLES)
    return count


def _write(
    table: Table, columns: list[str], rows: list[tuple[Any, ...]], *, money: tuple[str, ...]
) -> None:
    """Write one batch and commit it (progress is what is stored). Amounts come in cents.

    PostgreSQL: COPY, an order of magnitude faster than INSERTs for a million rows.
    Elsewhere: one executemany INSERT through the column types.
    """
    positions = [columns.index(name) for name in money]
    connection = db.session.connection()
    if connection.dialect.name == "postgresql":
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                values = list(row)
                for i in positions:
                    values[i] = Decimal(values[i]).scaleb(-2)
                copy.write_row(values)
    else:
        records = []
        for row in rows:
            record = dict(zip(columns, row, strict=True))
            for name in money:
                record[name] = Decimal(record[name]).scaleb(-2)
            records.append(record)
        db.session.execute(insert(table), records)
    db.session.commit()


def _after_bulk_load(*tables: Table, analyze: Iterable[Table] = ()) -> None:
    """Ids were given explicitly: move each id sequence past them; then fresh statistics
    of those and of `analyze` (and, PostgreSQL, the GIN index's pending list merged) so
    plans fit the new size."""
    connection = db.session.connection()
    if connection.dialect.name != "postgresql":
        db.session.commit()
        return
    for table in tables:
        db.session.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "  # noqa: S608
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table.name}), false)"
            )
        )
    db.session.commit()
    with db.engine.connect() as autocommit:
        autocommit = autocommit.execution_options(isolation_level="AUTOCOMMIT")
        for table in (*tables, *analyze):
            autocommit.exec_driver_sql(f"VACUUM ANALYZE {table.name}")


@click.command("seed")
@click.option(
    "--products",
    "product_count",
    type=click.IntRange(min=0),
    default=None,
    help="Add N generated products (for benchmarks) instead of the demo shop.",
)
@click.option(
    "--orders",
    "order_count",
    type=click.IntRange(min=0),
    default=None,
    help="Add N generated orders.",
)
@click.option("--if-empty", is_flag=True, help="Do nothing when products already exist.")
@click.option("--seed", "random_seed", type=int, default=42, show_default=True)
@with_appcontext
def seed_command(
    product_count: int | None, order_count: int | None, if_empty: bool, random_seed: int
) -> None:
    """Load demo data: 6 categories, 300 products and 400 orders unless told otherwise."""
    if if_empty and db.session.scalar(select(func.count(Product.id))):
        click.echo("demo data already present", err=True)
        return
    rng = random.Random(random_seed)  # noqa: S311 - demo data, not secrets
    if product_count is None and order_count is None:
        product_count, order_count = 300, 400
    made_products = seed_products(product_count or 0, rng=rng)
    made_orders = seed_orders(order_count or 0, rng=rng)
    click.echo(f"seeded {made_products} products and {made_orders} orders", err=True)
