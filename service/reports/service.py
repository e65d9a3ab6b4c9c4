"""Sales report, aggregated where the data lives: one SQL statement per report, then cached.

The database groups the paid order lines of the range, ranks each group's values with a
window function and hands back, per group, the counts and sums and only the values at the
ranks a percentile needs. Python then interpolates between those two values exactly as the
reference computation does (service/reports/reference.py), in Decimal: PostgreSQL's
`percentile_cont` works in double precision and would round some half-cents the other way.
Amounts are summed and ranked as integer cents, exact on both backends.

Why not rollups: the percentiles of a range are not a function of the percentiles of its
days, so a rollup would have to keep every value anyway; the statement reads the rows in
range once, and the cache (invalidated when an order is paid or a paid one is cancelled, and
when a product or category is renamed) answers every repeat.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from opentelemetry import trace
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    Numeric,
    Select,
    String,
    case,
    cast,
    func,
    literal_column,
    null,
    select,
    text,
    true,
    type_coerce,
    union_all,
)

from service import faults
from service.caching import bump_generation, cached, generation
from service.catalog.models import Category, Product
from service.catalog.service import NAMES
from service.database import CENT
from service.extensions import db
from service.orders.models import Order, OrderItem, OrderStatus

DEFAULT_RANGE_DAYS = 30
SALES = "sales"  # the generation of every cached report: a paid or cancelled order bumps it
# The reported percentiles: name, then the fraction in hundredths (integer rank arithmetic).
PERCENTILES = (("p50", 50), ("p90", 90), ("p99", 99))

REPORT_WORK_MEM = "64MB"  # per sort of the report's one statement, for its transaction only

R = TypeVar("R")

tracer = trace.get_tracer("glassbox")


def default_start(end: date) -> date:
    """The first day of the default range ending on `end` (never before 0001-01-01)."""
    if end - date.min < timedelta(days=DEFAULT_RANGE_DAYS):
        return date.min
    return end - timedelta(days=DEFAULT_RANGE_DAYS)


def report_range(start: date | None, end: date | None) -> tuple[date, date]:
    """The range a request means: `to` defaults to today (UTC), `from` to 30 days before."""
    end = end or datetime.now(UTC).date()
    return start or default_start(end), end


def in_range(start: date, end: date) -> list[ColumnElement[bool]]:
    """Paid orders created from `start` 00:00 UTC up to the end of `end`."""
    return [
        Order.status == OrderStatus.PAID,
        Order.created_at >= datetime.combine(start, time.min, UTC),
        # The day after `end`, or no bound at all after 9999-12-31 (no such day exists).
        Order.created_at < datetime.combine(end + timedelta(days=1), time.min, UTC)
        if end < date.max
        else true(),
    ]


def percentile_ranks(count: int, hundredths: int) -> tuple[int, int]:
    """The 0-based ranks whose values the percentile interpolates between."""
    lower = (count - 1) * hundredths // 100
    return lower, min(lower + 1, count - 1)


def interpolate(lower: Decimal, upper: Decimal, count: int, hundredths: int) -> Decimal:
    """Linear interpolation between closest ranks, like numpy's default, to the cent."""
    position = (count - 1) * Decimal(hundredths) / 100
    weight = position - int(position)
    return (lower + (upper - lower) * weight).quantize(CENT)


def summary(
    *, orders: int, units: int, revenue: Decimal, percentiles: dict[str, Decimal]
) -> dict[str, Any]:
    """The figures of one group (or of the totals) from its sums and percentiles."""
    return {
        "orders": orders,
        "units": units,
        "revenue": revenue.quantize(CENT),
        "average": (revenue / orders).quantize(CENT) if orders else Decimal(0),
        **percentiles,
    }


def sort_key(group_by: str, key: str) -> tuple[int, str]:
    """Days in date order, products and categories by id."""
    return (int(key), "") if group_by != "day" else (0, key)


def forget_sales() -> None:
    """Drop every cached report: an order was paid, or a paid one cancelled."""
    bump_generation(SALES)


def sales_report(
    *,
    start: date | None = None,
    end: date | None = None,
    group_by: str = "day",
    render: Callable[[dict[str, Any]], R],
) -> R:
    """Totals, counts and percentiles of value per day, product or category (paid orders).

    Per day the values are order totals; per product or category they are what each
    order spent on that product or category. Cached as `render` makes it, until an order
    is paid or cancelled or a product or category is changed.
    """
    start, end = report_range(start, end)
    with tracer.start_as_current_span("reports.sales") as span:
        span.set_attribute("report.group_by", group_by)
        span.set_attribute("report.days", (end - start).days + 1)

        def load() -> R:
            report, lines = _aggregate(start, end, group_by)
            # The report's cost, on the span of the request that paid it.
            span.set_attribute("report.rows_scanned", lines)
            span.set_attribute("report.orders", report["totals"]["orders"])
            span.set_attribute("report.groups", len(report["groups"]))
            return render(report)

        key = f"sales:{generation(SALES)}:{generation(NAMES)}:{start}:{end}:{group_by}"
        value, _ = cached(key, load, name="sales_report")
        return value


def wait_in_database() -> None:
    """The lab's slow query (REPORTS_SQL_DELAY_MS, or the reportsSqlDelayMs fault): time spent
    waiting on the database, invisible to a profiler."""
    delay_ms = faults.value(faults.REPORTS_SQL_DELAY_MS)
    if delay_ms:
        db.session.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": delay_ms / 1000})


def _cents(amount: Any) -> ColumnElement[int]:
    """An amount as integer cents: SQLite stores cents; NUMERIC(12, 2) times 100 is exact."""
    if db.session.get_bind().dialect.name == "sqlite":
        return type_coerce(amount, BigInteger)
    return cast(type_coerce(amount, Numeric(12, 2)) * literal_column("100"), BigInteger)


def _day(created_at: Any) -> ColumnElement[date]:
    """The UTC day of a timestamp (SQLite holds naive UTC text)."""
    if db.session.get_bind().dialect.name == "sqlite":
        return func.date(created_at, type_=Date)
    return func.date(func.timezone(literal_column("'UTC'"), created_at), type_=Date)


def _statement(start: date, end: date, group_by: str) -> Select[Any]:
    """Groups, then the totals (key NULL): counts, sums and the values at percentile ranks."""
    columns: dict[str, Any] = {
        "day": (_day(Order.created_at), _day(Order.created_at)),
        "product": (OrderItem.product_id, Product.name),
        "category": (Product.category_id, Category.name),
    }
    key, label = columns[group_by]
    lines = select(
        Order.id.label("order_id"),
        cast(key, String).label("key") if group_by != "day" else key.label("key"),
        label.label("label"),
        OrderItem.quantity.label("quantity"),
        (_cents(OrderItem.unit_price) * OrderItem.quantity).label("line_cents"),
        _cents(Order.total).label("order_cents"),
    ).join(OrderItem, OrderItem.order_id == Order.id)
    if group_by != "day":
        lines = lines.join(Product, Product.id == OrderItem.product_id)
    if group_by == "category":
        lines = lines.join(Category, Category.id == Product.category_id)
    rows = lines.where(*in_range(start, end))
    if group_by == "day":
        # A day is the order's: one pass makes each order's row, and both the days and the
        # totals rank those rows (no second pass over the lines).
        lines_of = rows.subquery("lines")
        orders = (
            select(
                lines_of.c.key,
                lines_of.c.label,
                func.max(lines_of.c.order_cents).label("value"),
                func.sum(lines_of.c.quantity).label("units"),
                func.count().label("lines"),
            )
            .group_by(lines_of.c.order_id, lines_of.c.key, lines_of.c.label)
            .cte("orders_in_range")
        )
        per_group = select(orders)
        per_order = select(
            cast(null(), orders.c.key.type).label("key"),
            cast(null(), orders.c.label.type).label("label"),
            orders.c.value,
            orders.c.units,
            orders.c.lines,
        )
    else:
        shared = rows.cte("lines")
        # One value per group and order: what the order spent on that product or category.
        per_group = select(
            shared.c.key,
            shared.c.label,
            func.sum(shared.c.line_cents).label("value"),
            func.sum(shared.c.quantity).label("units"),
            func.count().label("lines"),
        ).group_by(shared.c.key, shared.c.label, shared.c.order_id)
        per_order = select(
            cast(null(), shared.c.key.type).label("key"),
            cast(null(), shared.c.label.type).label("label"),
            func.max(shared.c.order_cents).label("value"),
            func.sum(shared.c.quantity).label("units"),
            func.count().label("lines"),
        ).group_by(shared.c.order_id)
    return union_all(
        _distribution(per_group.subquery("per_group")),
        _distribution(per_order.subquery("per_order")),
    )  # type: ignore[return-value]


def _distribution(values: Any) -> Select[Any]:
    """Per key: counts and sums, and the value at each rank a percentile interpolates."""
    ranked = select(
        values,
        (func.row_number().over(partition_by=values.c.key, order_by=values.c.value) - 1).label(
            "rank"
        ),
        func.count().over(partition_by=values.c.key).label("n"),
    ).subquery("ranked")
    lower_ranks = {name: (ranked.c.n - 1) * hundredths // 100 for name, hundredths in PERCENTILES}
    picks = []
    for name, lower in lower_ranks.items():
        for suffix, rank in (("low", lower), ("high", lower + 1)):
            picks.append(
                func.max(case((ranked.c.rank == rank, ranked.c.value))).label(f"{name}_{suffix}")
            )
    return select(
        ranked.c.key,
        func.max(ranked.c.label).label("label"),
        func.count().label("orders"),
        func.sum(ranked.c.units).label("units"),
        func.sum(ranked.c.value).label("revenue_cents"),
        func.sum(ranked.c.lines).label("lines"),
        *picks,
    ).group_by(ranked.c.key)


def _aggregate(start: date, end: date, group_by: str) -> tuple[dict[str, Any], int]:
    """The report and the number of order lines it read."""
    wait_in_database()
    if db.session.get_bind().dialect.name == "postgresql":
        # Room to rank a month of orders in memory: the default 4 MB sorts on disk.
        db.session.execute(text(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))
    groups: list[dict[str, Any]] = []
    totals = summary(orders=0, units=0, revenue=Decimal(0), percentiles=_no_percentiles())
    lines = 0
    for row in db.session.execute(_statement(start, end, group_by)).mappings():
        figures = summary(
            orders=row["orders"],
            units=int(row["units"]),
            revenue=Decimal(int(row["revenue_cents"])) / 100,
            percentiles=_percentiles(row),
        )
        if row["key"] is None:
            totals, lines = figures, int(row["lines"])
            continue
        key = row["key"].isoformat() if isinstance(row["key"], date) else str(row["key"])
        label = key if group_by == "day" else row["label"]
        groups.append({"key": key, "label": label, **figures})
    groups.sort(key=lambda group: sort_key(group_by, group["key"]))
    report = {"start": start, "end": end, "group_by": group_by, "totals": totals}
    return {**report, "groups": groups}, lines


def _percentiles(row: Any) -> dict[str, Decimal]:
    count = row["orders"]
    found = {}
    for name, hundredths in PERCENTILES:
        low = Decimal(int(row[f"{name}_low"])) / 100
        high_cents = row[f"{name}_high"]  # none past the last rank: the lower value then
        high = Decimal(int(high_cents)) / 100 if high_cents is not None else low
        found[name] = interpolate(low, high, count, hundredths)
    return found


def _no_percentiles() -> dict[str, Decimal]:
    return {name: Decimal(0) for name, _ in PERCENTILES}
