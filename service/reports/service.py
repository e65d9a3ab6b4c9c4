"""Sales report, computed in Python from the rows.

Deliberately so: the aggregation could be SQL, but this is the CPU-bound target of the
profiling lab (docs/measurement.md), where a flame graph should name these functions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from opentelemetry import trace
from sqlalchemy import select, text, true

from service import faults
from service.catalog.models import Category, Product
from service.database import CENT
from service.extensions import db
from service.orders.models import Order, OrderItem, OrderStatus

DEFAULT_RANGE_DAYS = 30

tracer = trace.get_tracer("glassbox")


def default_start(end: date) -> date:
    """The first day of the default range ending on `end` (never before 0001-01-01)."""
    if end - date.min < timedelta(days=DEFAULT_RANGE_DAYS):
        return date.min
    return end - timedelta(days=DEFAULT_RANGE_DAYS)


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


def percentile(ordered: list[Decimal], fraction: Decimal) -> Decimal:
    """Linear interpolation between closest ranks, like numpy's default."""
    if not ordered:
        return Decimal(0)
    position = (len(ordered) - 1) * fraction
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    weight = position - lower
    return (ordered[lower] + (ordered[upper] - ordered[lower]) * weight).quantize(CENT)


def figures(values: Iterable[Decimal], *, orders: int, units: int) -> dict[str, Any]:
    ordered = sorted(values)
    revenue = sum(ordered, Decimal(0))
    return {
        "orders": orders,
        "units": units,
        "revenue": revenue.quantize(CENT),
        "average": (revenue / len(ordered)).quantize(CENT) if ordered else Decimal(0),
        "p50": percentile(ordered, Decimal("0.50")),
        "p90": percentile(ordered, Decimal("0.90")),
        "p99": percentile(ordered, Decimal("0.99")),
    }


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
        .where(
            Order.status == OrderStatus.PAID,
            Order.created_at >= datetime.combine(start, time.min, UTC),
            # The day after `end`, or no bound at all after 9999-12-31 (no such day exists).
            Order.created_at < datetime.combine(end + timedelta(days=1), time.min, UTC)
            if end < date.max
            else true(),
        )
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
    with tracer.start_as_current_span("reports.sales") as span:
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
    end = end or datetime.now(UTC).date()
    start = start or default_start(end)
    delay_ms = faults.value(faults.REPORTS_SQL_DELAY_MS)
    if delay_ms:
        # The lab's slow query (or the reportsSqlDelayMs fault): time spent waiting on the
        # database, invisible to a profiler.
        db.session.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": delay_ms / 1000})
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
        for key, bucket in sorted(buckets.items(), key=lambda kv: _sort_key(group_by, kv[0]))
    ]
    return {
        "start": start,
        "end": end,
        "group_by": group_by,
        "totals": figures(order_totals.values(), orders=len(order_totals), units=units),
        "groups": groups,
    }


def _sort_key(group_by: str, key: str) -> tuple[int, str]:
    return (int(key), "") if group_by != "day" else (0, key)
