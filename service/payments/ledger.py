"""The payments service's ledger: every authorization, in a database of its own.

One table, shared by every worker through the database (a SQLite file by default,
PostgreSQL through PAYMENTS_DATABASE_URL). The unique idempotency key decides which of two
concurrent requests authorizes; each change of status is one conditional UPDATE, so a void
racing an approval has exactly one winner. The stand-in keeps one table and creates it at
start rather than carrying migrations of its own.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError


class Status(StrEnum):
    PROCESSING = "processing"  # inserted, decision not reached yet
    APPROVED = "approved"
    DECLINED = "declined"
    VOIDED = "voided"
    REFUNDED = "refunded"


metadata = MetaData()

authorizations = Table(
    "payment_authorizations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("reference", String(40), nullable=False, unique=True),
    Column("idempotency_key", String(255), nullable=False, unique=True),
    Column("order_id", BigInteger, nullable=False, index=True),
    # Cents: exact on every backend (SQLite has no decimal type).
    Column("amount_cents", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class Authorization:
    reference: str
    idempotency_key: str
    order_id: int
    amount: Decimal
    currency: str
    status: Status

    def same_request(self, *, order_id: int, amount: Decimal, currency: str) -> bool:
        return (self.order_id, self.amount, self.currency) == (order_id, amount, currency)

    def as_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "order_id": self.order_id,
            "amount": f"{self.amount:.2f}",
            "currency": self.currency,
            "status": str(self.status),
            "approved": self.status == Status.APPROVED,
        }


def _now() -> datetime:
    return datetime.now(UTC)


def _cents(amount: Decimal) -> int:
    return int(amount * 100)


def _row(row: Any) -> Authorization:
    return Authorization(
        reference=row.reference,
        idempotency_key=row.idempotency_key,
        order_id=row.order_id,
        amount=Decimal(row.amount_cents) / 100,
        currency=row.currency,
        status=Status(row.status),
    )


def _engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        if url.database not in (None, "", ":memory:"):
            path = Path(url.database)
            path = path if path.is_absolute() else Path.cwd() / path
            path.parent.mkdir(parents=True, exist_ok=True)
            url = url.set(database=str(path))
        engine = create_engine(url, connect_args={"timeout": 15})

        @event.listens_for(engine, "connect")
        def _wal(connection: Any, _record: Any) -> None:
            # Readers do not block the writer: replays poll while another worker decides.
            connection.execute("PRAGMA journal_mode=WAL")

        return engine
    return create_engine(
        url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 3, "application_name": "glassbox-payments"},
    )


class Ledger:
    def __init__(self, url: URL) -> None:
        self.engine = _engine(url)
        # A pool inherited across fork would share sockets between processes.
        os.register_at_fork(after_in_child=lambda: self.engine.dispose(close=False))
        self._create_table()

    def _create_table(self) -> None:
        # Several workers start at once: a loser of the CREATE race sees the table next time.
        for attempt in range(3):
            try:
                metadata.create_all(self.engine)
                return
            except DBAPIError:
                if attempt == 2:
                    raise
                time.sleep(0.2)

    def begin(
        self, *, key: str, order_id: int, amount: Decimal, currency: str
    ) -> tuple[Authorization, bool]:
        """Insert a `processing` authorization under `key`; (existing row, False) if taken."""
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    insert(authorizations).values(
                        reference=f"pay-{uuid.uuid4().hex[:16]}",
                        idempotency_key=key,
                        order_id=order_id,
                        amount_cents=_cents(amount),
                        currency=currency,
                        status=Status.PROCESSING,
                        created_at=_now(),
                        updated_at=_now(),
                    )
                )
        except IntegrityError:
            existing = self.by_key(key)
            if existing is None:  # deleted meanwhile (an injected failure): try once more
                return self.begin(key=key, order_id=order_id, amount=amount, currency=currency)
            return existing, False
        created = self.by_key(key)
        assert created is not None
        return created, True

    def decide(self, key: str, status: Status) -> Authorization:
        """Record the decision unless a void came first; the row as it now stands."""
        self._transition(
            authorizations.c.idempotency_key == key, status, from_statuses=[Status.PROCESSING]
        )
        decided = self.by_key(key)
        assert decided is not None
        return decided

    def forget(self, key: str) -> None:
        """Drop an undecided authorization (the call failed): a retry starts afresh."""
        with self.engine.begin() as connection:
            connection.execute(
                authorizations.delete().where(
                    authorizations.c.idempotency_key == key,
                    authorizations.c.status == Status.PROCESSING,
                )
            )

    def void_key(self, *, key: str, order_id: int, amount: Decimal, currency: str) -> Authorization:
        """Void what was, is being, or will be authorized under `key`.

        When nothing arrived under the key yet, a `voided` row takes it: a late
        authorization with this key then replays the void instead of approving. A key taken
        by another order, amount or currency is returned unchanged (the caller refuses it).
        """
        row, created = self.begin(key=key, order_id=order_id, amount=amount, currency=currency)
        if not row.same_request(order_id=order_id, amount=amount, currency=currency):
            return row
        if created or row.status in (Status.PROCESSING, Status.APPROVED):
            self._transition(
                authorizations.c.idempotency_key == key,
                Status.VOIDED,
                from_statuses=[Status.PROCESSING, Status.APPROVED],
            )
        voided = self.by_key(key)
        assert voided is not None
        return voided

    def void(self, reference: str) -> Authorization | None:
        self._transition(
            authorizations.c.reference == reference,
            Status.VOIDED,
            from_statuses=[Status.PROCESSING, Status.APPROVED],
        )
        return self.by_reference(reference)

    def refund(self, reference: str) -> Authorization | None:
        self._transition(
            authorizations.c.reference == reference,
            Status.REFUNDED,
            from_statuses=[Status.APPROVED],
        )
        return self.by_reference(reference)

    def _transition(self, where: Any, status: Status, *, from_statuses: list[Status]) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(authorizations)
                .where(where, authorizations.c.status.in_([str(s) for s in from_statuses]))
                .values(status=status, updated_at=_now())
            )

    def by_key(self, key: str) -> Authorization | None:
        return self._one(authorizations.c.idempotency_key == key)

    def by_reference(self, reference: str) -> Authorization | None:
        return self._one(authorizations.c.reference == reference)

    def by_order(self, order_id: int) -> list[Authorization]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(authorizations)
                .where(authorizations.c.order_id == order_id)
                .order_by(authorizations.c.id)
            )
            return [_row(row) for row in rows]

    def _one(self, where: Any) -> Authorization | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(authorizations).where(where)).first()
        return _row(row) if row is not None else None
