"""Orders against the payments ledger: the mismatches that mean money or stock is wrong.

Read-only on both sides (the orders database through the app's session, the ledger through
its own URL, the database the payments service writes). Four counts:

- `paid_without_approval`: orders `paid` whose payment has no `approved` authorization in
  the ledger (goods shipped without money);
- `approval_without_paid_order`: `approved` authorizations whose order is not `paid` (money
  taken for an order that is pending, failed or cancelled);
- `pending_backlog`: orders `pending` for longer than `pending_after` (a placement answers in
  seconds; these are stuck on the payments service);
- `expire_pending_not_running`: orders `pending` for longer than expire-pending's threshold
  plus a grace: had `flask orders expire-pending` run on schedule, it would have cancelled them.

Orders and authorizations changed within `settle` are left out: the two books are written one
after the other within a request, and a check between the two writes is not a mismatch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.engine import make_url

from service.database import utcnow
from service.extensions import db
from service.orders.models import Order, OrderStatus
from service.payments.ledger import Status, authorizations

# Ids per IN (...) list: well under every backend's limit on bound parameters.
_CHUNK = 500


@dataclass(frozen=True)
class Mismatches:
    paid_without_approval: int
    approval_without_paid_order: int
    pending_backlog: int
    expire_pending_not_running: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Windows:
    """How far back to look, and how old a state must be before it counts."""

    lookback: timedelta = timedelta(days=2)
    settle: timedelta = timedelta(minutes=5)
    pending_after: timedelta = timedelta(minutes=5)
    # expire-pending's default --older-than (900 s), and as long again for its schedule.
    expiry_after: timedelta = timedelta(seconds=900)
    expiry_grace: timedelta = timedelta(seconds=900)


def ledger_engine(url: str) -> Engine:
    """An engine on the ledger that cannot write: SQLite opened read-only, PostgreSQL in
    read-only transactions."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""

        def connect() -> sqlite3.Connection:
            return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=15)

        return create_engine("sqlite://", creator=connect)
    return create_engine(
        parsed,
        pool_pre_ping=True,
        execution_options={"postgresql_readonly": True},
        connect_args={"connect_timeout": 3, "application_name": "glassbox-reconcile"},
    )


def _chunks(ids: Iterable[int]) -> Iterator[list[int]]:
    ordered = sorted(ids)
    for start in range(0, len(ordered), _CHUNK):
        yield ordered[start : start + _CHUNK]


def reconcile(*, ledger: Engine, windows: Windows | None = None) -> Mismatches:
    """Count the four mismatches between the orders and the ledger, as they stand now."""
    windows = windows or Windows()
    now = utcnow()
    since, settled = now - windows.lookback, now - windows.settle
    session = db.session
    try:
        paid = set(
            session.scalars(
                select(Order.id).where(
                    Order.status == OrderStatus.PAID,
                    Order.created_at >= since,
                    Order.updated_at < settled,
                )
            )
        )
        with ledger.connect() as connection:
            approved_for_paid = {
                row.order_id
                for chunk in _chunks(paid)
                for row in connection.execute(
                    select(authorizations.c.order_id).where(
                        authorizations.c.order_id.in_(chunk),
                        authorizations.c.status == Status.APPROVED,
                    )
                )
            }
            approved = {
                row.order_id
                for row in connection.execute(
                    select(authorizations.c.order_id).where(
                        authorizations.c.status == Status.APPROVED,
                        authorizations.c.created_at >= since,
                        authorizations.c.updated_at < settled,
                    )
                )
            }
        paid_of_approved = {
            order_id
            for chunk in _chunks(approved)
            for order_id in session.scalars(
                select(Order.id).where(Order.id.in_(chunk), Order.status == OrderStatus.PAID)
            )
        }
        backlog = _pending_older_than(now - windows.pending_after)
        overdue = _pending_older_than(now - windows.expiry_after - windows.expiry_grace)
    finally:
        session.rollback()  # nothing was written; end the read transaction
    return Mismatches(
        paid_without_approval=len(paid - approved_for_paid),
        approval_without_paid_order=len(approved - paid_of_approved),
        pending_backlog=backlog,
        expire_pending_not_running=overdue,
    )


def _pending_older_than(cutoff: Any) -> int:
    return (
        db.session.scalar(
            select(func.count())
            .select_from(Order)
            .where(Order.status == OrderStatus.PENDING, Order.created_at < cutoff)
        )
        or 0
    )
