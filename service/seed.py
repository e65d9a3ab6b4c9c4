"""Demo data: `flask --app service seed` (a small shop) and `seed --products N` (volume)."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import click
from flask.cli import with_appcontext
from sqlalchemy import func, insert, select

from service.catalog.models import Category, Product
from service.database import CENT, utcnow
from service.extensions import db
from service.orders.models import Order, OrderItem, OrderStatus
from service.progress import progress

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
    """Insert `count` products in batches (fast enough for 200,000+), showing progress."""
    category_ids = seed_categories()
    start = (db.session.scalar(select(func.max(Product.id))) or 0) + 1
    now = utcnow()
    inserted = 0
    with progress("products", total=count) as advance:
        while inserted < count:
            rows = []
            for n in range(start + inserted, start + min(count, inserted + batch)):
                rows.append(
                    {
                        "sku": f"SKU-{n:08d}",
                        "name": f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {n}",
                        "description": "",
                        "price": (Decimal(rng.randint(199, 19999)) / 100).quantize(CENT),
                        "stock": rng.randint(0, 500),
                        "category_id": rng.choice(category_ids),
                        "created_at": now - timedelta(seconds=count - n),
                        "updated_at": now,
                    }
                )
            db.session.execute(insert(Product), rows)
            db.session.commit()
            inserted += len(rows)
            advance(len(rows))
    return inserted


def seed_orders(count: int, *, rng: random.Random, days: int = 60) -> int:
    """Paid (and a few cancelled) orders spread over the last `days` days."""
    products = list(db.session.execute(select(Product.id, Product.price).limit(500)))
    if not products:
        return 0
    now = utcnow()
    with progress("orders", total=count) as advance:
        for n in range(count):
            chosen = rng.sample(products, k=min(len(products), rng.randint(1, 4)))
            items = [
                OrderItem(product_id=pid, quantity=rng.randint(1, 3), unit_price=price)
                for pid, price in chosen
            ]
            order = Order(
                customer_email=f"customer{rng.randint(1, 200)}@example.com",
                status=OrderStatus.CANCELLED if n % 12 == 0 else OrderStatus.PAID,
                total=sum((i.unit_price * i.quantity for i in items), Decimal(0)),
                payment_reference=f"seed-{n}",
                created_at=now - timedelta(minutes=rng.randint(0, days * 24 * 60)),
                items=items,
            )
            db.session.add(order)
            if (n + 1) % ORDER_BATCH == 0:  # commit as we go: progress is what is stored
                db.session.commit()
                advance(ORDER_BATCH)
        db.session.commit()
        advance(count % ORDER_BATCH)
    return count


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
