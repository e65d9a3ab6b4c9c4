"""Rows for tests, inserted through the ORM with unique defaults.

Each call runs in its own app context and returns the committed row (attributes stay
loaded: the session does not expire on commit).
"""

from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal
from typing import Any

from flask import Flask

from service.catalog.models import Category, Product
from service.database import utcnow
from service.extensions import db
from service.orders.models import Order, OrderItem, OrderStatus
from service.reports import rollups

_sequence = itertools.count(1)


class Factories:
    def __init__(self, app: Flask) -> None:
        self.app = app

    def _save(self, row: Any) -> Any:
        with self.app.app_context():
            db.session.add(row)
            db.session.commit()
            db.session.expunge(row)
        return row

    def category(self, **overrides: Any) -> Category:
        n = next(_sequence)
        return self._save(Category(**{"name": f"Category {n}", "description": "", **overrides}))

    def product(self, **overrides: Any) -> Product:
        n = next(_sequence)
        if "category_id" not in overrides:
            overrides["category_id"] = self.category().id
        values: dict[str, Any] = {
            "sku": f"SKU-T{n:06d}",
            "name": f"Product {n}",
            "description": "",
            "price": Decimal("10.00"),
            "stock": 10,
            **overrides,
        }
        return self._save(Product(**values))

    def order(
        self,
        *,
        items: list[tuple[Product, int]],
        status: str = OrderStatus.PAID,
        created_at: datetime | None = None,
        customer_email: str = "buyer@example.com",
        api_key_id: int | None = None,
    ) -> Order:
        lines = [OrderItem(product_id=p.id, quantity=q, unit_price=p.price) for p, q in items]
        row = Order(
            customer_email=customer_email,
            status=status,
            total=sum((line.unit_price * line.quantity for line in lines), Decimal(0)),
            created_at=created_at or utcnow(),
            items=lines,
            api_key_id=api_key_id,
        )
        with self.app.app_context():
            db.session.add(row)
            db.session.flush()
            rollups.record(Order.id == row.id)  # a paid order's report rows, as payment writes
            db.session.commit()
            for line in row.items:
                db.session.expunge(line)
            db.session.expunge(row)
        return row
