"""The sales report computed in Python from every order line: the reference.

The API aggregates in the database (service/reports/service.py). This computation stays as
the definition the property test compares it with, and as the profiling lab's CPU-bound
target (a lab-only route, LAB_ROUTES), where a flame graph should name these functions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from opentelemetry import trace
from sqlalchemy import select

from service.catalog.models import Category, Product
from service.extensions import db
from service.orders.models import Order, OrderItem
from service.reports.service import (
    PERCENTILES,
    in_range,
    interpolate,
    percentile_ranks,
    report_range,
    sort_key,
    summary,
    wait_in_database,
)

tracer = trace.get_tracer("glassbox")


@dataclass(frozen=True)
class SaleLine:
    order_id: int
    day: date
    product_id: int
    product_name: str
    category_id: int
    category_name: str
    quantity: int
    unit_price: Decimal
    order_total: Decimal


@dataclass
class _Bucket:
    label: str
    orders: set[int] = field(default_factory=set)
    units: int = 0
    # The values whose distribution the percentiles describe (order or line values).
    values: dict[int, Decimal] = field(default_factory=lambda: defaultdict(Decimal))


def percentile(ordered: list[Decimal], hundredths: int) -> Decimal:
    """Linear interpolation between closest ranks of sorted values, like numpy's default."""
    if not ordered:
        return Decimal(0)
    lower, upper = percentile_ranks(len(ordered), hundredths)
    return interpolate(ordered[lower], ordered[upper], len(ordered), hundredths)


def figures(values: Iterable[Decimal], *, orders: int, units: int) -> dict[str, Any]:
    ordered = sorted(values)
    return summary(
        orders=orders,
        units=units,
        revenue=sum(ordered, Decimal(0)),
        percentiles={name: percentile(ordered, h) for name, h in PERCENTILES},
    )


def _lines(start: date, end: date) -> list[SaleLine]:
    statement = (
        select(
            Order.id,
            Order.created_at,
            Order.total,
            OrderItem.product_id,
            Product.name,
            Product.category_id,
            Category.name,
            OrderItem.quantity,
            OrderItem.unit_price,
        )
        .join(OrderItem, OrderItem.order_id == Order.id)
        .join(Product, Product.id == OrderItem.product_id)
        .join(Category, Category.id == Product.category_id)
        .where(*in_range(start, end))
    )
    return [
        SaleLine(
            order_id=row[0],
            day=row[1].date(),
            order_total=row[2],
            product_id=row[3],
            product_name=row[4],
            category_id=row[5],
            category_name=row[6],
            quantity=row[7],
            unit_price=row[8],
        )
        for row in db.session.execute(statement)
    ]


_GROUP_KEYS: dict[str, Callable[[SaleLine], tuple[str, str]]] = {
    "day": lambda line: (line.day.isoformat(), line.day.isoformat()),
    "product": lambda line: (str(line.product_id), line.product_name),
    "category": lambda line: (str(line.category_id), line.category_name),
}


def sales_report(
    *, start: date | None = None, end: date | None = None, group_by: str = "day"
) -> dict[str, Any]:
    """Totals, counts and percentiles of value per day, product or category (paid orders)."""
    with tracer.start_as_current_span("reports.sales_in_python") as span:
        report = _sales_report(start=start, end=end, group_by=group_by)
        span.set_attribute("report.group_by", group_by)
        span.set_attribute("report.days", (report["end"] - report["start"]).days + 1)
        span.set_attribute("report.orders", report["totals"]["orders"])
        span.set_attribute("report.groups", len(report["groups"]))
        return report


def _sales_report(*, start: date | None, end: date | None, group_by: str) -> dict[str, Any]:
    """Totals, counts and percentiles of value per day, product or category (paid orders).

    Per day the values are order totals; per product or category they are what each
    order spent on that product or category.
    """
    start, end = report_range(start, end)
    wait_in_database()
    lines = _lines(start, end)
    key_of = _GROUP_KEYS[group_by]

    buckets: dict[str, _Bucket] = {}
    order_totals: dict[int, Decimal] = {}
    units = 0
    for line in lines:
        key, label = key_of(line)
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = _Bucket(label=label)
        bucket.orders.add(line.order_id)
        bucket.units += line.quantity
        if group_by == "day":
            bucket.values[line.order_id] = line.order_total
        else:
            bucket.values[line.order_id] += line.unit_price * line.quantity
        order_totals[line.order_id] = line.order_total
        units += line.quantity

    groups = [
        {
            "key": key,
            "label": bucket.label,
            **figures(bucket.values.values(), orders=len(bucket.orders), units=bucket.units),
        }
        for key, bucket in sorted(buckets.items(), key=lambda kv: sort_key(group_by, kv[0]))
    ]
    return {
        "start": start,
        "end": end,
        "group_by": group_by,
        "totals": figures(order_totals.values(), orders=len(order_totals), units=units),
        "groups": groups,
    }
