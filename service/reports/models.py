"""The sales report's rollups: one row per paid order, one per paid order and category, and
counts per day, product and value; written when an order is paid and taken back when it is
cancelled (service/reports/rollups.py).

They hold only what the report ranks and sums, in integer cents, keyed by the order's UTC
day, so a report reads narrow rows of its range from an index instead of joining orders,
their lines, products and categories. Labels are not kept: names are read at report time.

Only `order_id` is a foreign key (its rows go with a deleted order). A product or category
key needs none: a product on an order cannot be deleted, nor a category with products.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, Date, ForeignKey, Index
from sqlalchemy.orm import Mapped, mapped_column

from service.database import Base

_FIGURES = ("cents", "units", "lines")


class OrderSale(Base):
    """A paid order: its day, total, units and lines."""

    __tablename__ = "order_sales"
    __table_args__ = (
        # Rows of a range in day, then value order: a day's values come sorted.
        Index("ix_order_sales_day_cents", "day", "cents", postgresql_include=["units", "lines"]),
    )

    order_id: Mapped[int] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    day: Mapped[date] = mapped_column(Date)
    cents: Mapped[int] = mapped_column(BigInteger)
    units: Mapped[int]
    lines: Mapped[int]


class ProductSale(Base):
    """How many paid orders spent `cents` on a product on a day, with their units and lines.

    Counted rather than one row per order: a product sells at a few prices and quantities a
    day, so its rows are a fraction of its orders' (1,146,120 order-and-product rows in a
    month of 1,000,000 orders make 45,585 of these), and the report reads only those.
    """

    __tablename__ = "product_sales"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    product_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    cents: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    orders: Mapped[int]
    units: Mapped[int]
    lines: Mapped[int]


class CategorySale(Base):
    """What a paid order spent on the products of one category (as the products stand now:
    moving a product rewrites the rows of its orders)."""

    __tablename__ = "category_sales"
    __table_args__ = (
        # A category's rows of a range, read group by group: no sort of the whole range.
        Index(
            "ix_category_sales_category_id_day",
            "category_id",
            "day",
            postgresql_include=list(_FIGURES),
        ),
    )

    order_id: Mapped[int] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    category_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    day: Mapped[date] = mapped_column(Date)
    cents: Mapped[int] = mapped_column(BigInteger)
    units: Mapped[int]
    lines: Mapped[int]
