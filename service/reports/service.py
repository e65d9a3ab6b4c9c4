"""Sales report, aggregated where the data lives: one SQL statement over the rollups, cached.

The rollups (service/reports/models.py, kept by service/reports/rollups.py) hold one row
per paid order (its day and total), one per paid order and category, and per day, product
and value how many orders spent it. A report reads its range's rows from an index, and
per group the database returns the counts and sums and only the values at the ranks a
percentile needs; Python then interpolates between those two exactly as the reference
computation does (service/reports/reference.py), in Decimal. Amounts are integer cents,
exact on both backends; not `percentile_cont`, which works in double precision and rounds
some half-cents the other way.

Why rollups, and these: a range's percentiles are not a function of its days', so every
value of the range has to be read; what can be saved is the join of orders, lines,
products and categories (4.5 of the 7.6 s the join-based statement took at 1,000,000
orders) and, for products, the rows themselves (a product sells at a few values a day: a
month's 1,146,120 order-and-product values are 45,585 counted rows). On PostgreSQL, a
group's values are sorted into an array by an ordered aggregate, several times faster than
ranking them with a window; SQLite ranks running counts of the same rows, one statement.
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
    Select,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    select,
    text,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by

from service import faults
from service.caching import bump_generation, cached, generation
from service.catalog.models import Category, Product
from service.catalog.service import NAMES
from service.database import CENT
from service.extensions import db
from service.orders.models import Order, OrderStatus
from service.reports.models import CategorySale, OrderSale, ProductSale

DEFAULT_RANGE_DAYS = 30
SALES = "sales"  # the generation of every cached report: a paid or cancelled order bumps it
# The reported percentiles: name, then the fraction in hundredths (integer rank arithmetic).
PERCENTILES = (("p50", 50), ("p90", 90), ("p99", 99))

REPORT_WORK_MEM = "64MB"  # per sort of the report's statement, for its transaction only

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


def in_days(day: Any, start: date, end: date) -> list[ColumnElement[bool]]:
    """A rollup's rows from day `start` to day `end`, both included."""
    return [day >= start, day <= end]


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
            report, cost = _aggregate(start, end, group_by)
            # The report's cost, on the span of the request that paid it.
            span.set_attribute("report.rows_scanned", cost["rows_read"])
            span.set_attribute("report.lines", cost["lines"])
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


# Where each grouping's values are kept: the rollup, and its column that is the group key.
SOURCES: dict[str, tuple[Any, str]] = {
    "day": (OrderSale, "day"),
    "product": (ProductSale, "product_id"),
    "category": (CategorySale, "category_id"),
}


def _values(rollup: Any, key: Any, start: date, end: date) -> Select[Any]:
    """The rollup's rows of the range: a key, a value in cents, how many orders spent it
    (one per row, or a count: product_sales), and their units and lines."""
    orders = rollup.orders if rollup is ProductSale else literal(1, BigInteger)
    return select(
        key.label("key"), rollup.cents.label("value"), orders.label("n"), rollup.units, rollup.lines
    ).where(*in_days(rollup.day, start, end))


def _sorted_arrays(value: Any, units: Any, lines: Any) -> list[Any]:
    """Counts and sums of the rows, and their values sorted into one array (PostgreSQL)."""
    return [
        func.count().label("orders"),
        func.sum(units).label("units"),
        func.sum(value).label("revenue_cents"),
        func.sum(lines).label("lines"),
        func.array_agg(aggregate_order_by(value, value.asc())).label("sorted_values"),
    ]


def _ranked_in_arrays(values: Any) -> Select[Any]:
    """PostgreSQL: per key, counts and sums and the key's values sorted into one array,
    from which the values at the percentile ranks are read (an ordered aggregate sorts a
    group's values in memory; a window over the same rows took several times as long)."""
    figures = _sorted_arrays(values.c.value, values.c.units, values.c.lines)
    grouped = select(values.c.key, *figures).group_by(values.c.key).subquery("grouped")
    return _picked(grouped)


def _ranked_per_category(start: date, end: date) -> Select[Any]:
    """PostgreSQL, by category: each category's rows of the range read on their own (an
    index range per category), so the cost follows the range, not all the days kept."""
    per_category = (
        select(*_sorted_arrays(CategorySale.cents, CategorySale.units, CategorySale.lines))
        .where(CategorySale.category_id == Category.id, *in_days(CategorySale.day, start, end))
        .lateral("per_category")
    )
    grouped = (
        select(Category.id.label("key"), per_category)
        .join(per_category, true())
        .where(per_category.c.orders > 0)
        .subquery("grouped")
    )
    return _picked(grouped)


def _picked(grouped: Any) -> Select[Any]:
    """The figures of each key, and the values at the ranks each percentile needs."""
    picks = []
    for name, hundredths in PERCENTILES:
        lower = (grouped.c.orders - 1) * hundredths // 100 + 1  # arrays count from 1
        picks.append(grouped.c.sorted_values[lower].label(f"{name}_low"))
        picks.append(grouped.c.sorted_values[lower + 1].label(f"{name}_high"))
    return select(
        grouped.c.key,
        grouped.c.orders,
        grouped.c.units,
        grouped.c.revenue_cents,
        grouped.c.lines,
        *picks,
    )


def _ranked_by_counts(values: Any) -> Select[Any]:
    """Any backend: per key and distinct value, how many orders spent it; a running count
    then tells which value sits at each percentile rank. Fast where the values come
    counted (product_sales), and what SQLite runs."""
    counted = (
        select(
            values.c.key,
            values.c.value,
            func.sum(values.c.n).label("n"),
            func.sum(values.c.units).label("units"),
            func.sum(values.c.lines).label("lines"),
        )
        .group_by(values.c.key, values.c.value)
        .subquery("counted")
    )
    through = func.sum(counted.c.n).over(partition_by=counted.c.key, order_by=counted.c.value)
    total = func.sum(counted.c.n).over(partition_by=counted.c.key)
    running = select(
        counted,
        cast(through, BigInteger).label("through"),  # rows up to and with this value
        cast(total, BigInteger).label("total"),
    ).subquery("running")
    picks = []
    for name, hundredths in PERCENTILES:
        lower = (running.c.total - 1) * hundredths // 100
        for suffix, rank in (("low", lower), ("high", lower + 1)):
            holds = and_(running.c.through - running.c.n <= rank, rank < running.c.through)
            picks.append(func.max(case((holds, running.c.value))).label(f"{name}_{suffix}"))
    return select(
        running.c.key,
        func.sum(running.c.n).label("orders"),
        func.sum(running.c.units).label("units"),
        func.sum(running.c.value * running.c.n).label("revenue_cents"),
        func.sum(running.c.lines).label("lines"),
        *picks,
    ).group_by(running.c.key)


def _statement(start: date, end: date, group_by: str) -> Select[Any]:
    """Groups with their labels, then the totals (key NULL): counts, sums, and the values at
    the ranks each percentile interpolates between."""
    postgres = db.session.get_bind().dialect.name == "postgresql"
    rollup, key_name = SOURCES[group_by]
    key = getattr(rollup, key_name)
    # Products come counted: ranking the counts is cheapest. One row per order: arrays.
    if postgres and group_by == "category":
        ranked_groups = _ranked_per_category(start, end)
    else:
        ranked = _ranked_in_arrays if postgres and group_by != "product" else _ranked_by_counts
        ranked_groups = ranked(_values(rollup, key, start, end).subquery("values"))
    groups = ranked_groups.subquery("groups")
    if group_by == "day":
        labelled = select(groups, cast(groups.c.key, String).label("label")).subquery("named")
    else:
        named = Product if group_by == "product" else Category
        labelled = (
            select(groups, named.name.label("label"))
            .join(named, named.id == groups.c.key)
            .subquery("named")
        )
    ranked_totals = _ranked_in_arrays if postgres else _ranked_by_counts
    totals = ranked_totals(
        _values(OrderSale, cast(null(), BigInteger), start, end).subquery("all_values")
    ).subquery("totals")
    return union_all(
        select(cast(labelled.c.key, String).label("key"), *_figures(labelled), labelled.c.label),
        select(cast(totals.c.key, String), *_figures(totals), cast(null(), String)),
    )  # type: ignore[return-value]


def _figures(ranked: Any) -> list[Any]:
    names = ["orders", "units", "revenue_cents", "lines"]
    names += [f"{name}_{suffix}" for name, _ in PERCENTILES for suffix in ("low", "high")]
    return [ranked.c[name] for name in names]


def _aggregate(start: date, end: date, group_by: str) -> tuple[dict[str, Any], dict[str, int]]:
    """The report, and its cost: the values it ranked (one per order in each group and in the
    totals; a counted product row stands for several) and the order lines they sum up."""
    wait_in_database()
    if db.session.get_bind().dialect.name == "postgresql":
        # Room to sort a month of values in memory (the default 4 MB sorts on disk), and no
        # JIT: compiling this statement cost more than running it.
        db.session.execute(text(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))
        db.session.execute(text("SET LOCAL jit = off"))
    groups: list[dict[str, Any]] = []
    totals = summary(orders=0, units=0, revenue=Decimal(0), percentiles=_no_percentiles())
    cost = {"rows_read": 0, "lines": 0}
    for row in db.session.execute(_statement(start, end, group_by)).mappings():
        figures = summary(
            orders=int(row["orders"]),
            units=int(row["units"]),
            revenue=Decimal(int(row["revenue_cents"])) / 100,
            percentiles=_percentiles(row),
        )
        cost["rows_read"] += figures["orders"]  # one value per order in its group
        if row["key"] is None:
            totals, cost["lines"] = figures, int(row["lines"])
            continue
        key = str(row["key"])
        label = key if group_by == "day" else row["label"]
        groups.append({"key": key, "label": label, **figures})
    groups.sort(key=lambda group: sort_key(group_by, group["key"]))
    report = {"start": start, "end": end, "group_by": group_by, "totals": totals}
    return {**report, "groups": groups}, cost


def _percentiles(row: Any) -> dict[str, Decimal]:
    count = int(row["orders"])
    found = {}
    for name, hundredths in PERCENTILES:
        low = Decimal(int(row[f"{name}_low"])) / 100
        high_cents = row[f"{name}_high"]  # none past the last rank: the lower value then
        high = Decimal(int(high_cents)) / 100 if high_cents is not None else low
        found[name] = interpolate(low, high, count, hundredths)
    return found


def _no_percentiles() -> dict[str, Decimal]:
    return {name: Decimal(0) for name, _ in PERCENTILES}
