"""The database: declarative base, column types, the engine, and PostgreSQL deadlines.

`init_app` binds Flask-SQLAlchemy to an app and configures its engine: the pool (reports
its checkout waits), SQLite's pragmas, and SQL spans and metrics (service/telemetry/sql.py).
The options the engine is built with (pool size, timeouts, libpq keepalives) are settings,
parsed by service/config/ into SQLALCHEMY_ENGINE_OPTIONS.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from flask import Flask, has_request_context
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import BigInteger, DateTime, Dialect, MetaData, Numeric, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import QueuePool
from sqlalchemy.types import TypeDecorator, TypeEngine

from service.logs import EveryInterval
from service.metrics import metrics
from service.telemetry.sql import instrument_engine

# Stable constraint names so Alembic migrations can drop and alter them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

CENT = Decimal("0.01")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the backend stores."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite keeps no zone; store naive UTC so string comparison orders correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class MoneyColumn(TypeDecorator[Decimal]):
    """An amount with two decimal places: NUMERIC(12, 2), or integer cents on SQLite.

    SQLite has no decimal type; cents keep sums and comparisons exact there.
    """

    impl = Numeric(12, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(12, 2, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        amount = Decimal(value).quantize(CENT)
        return int(amount * 100) if dialect.name == "sqlite" else amount

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return (Decimal(value) / 100).quantize(CENT)
        return Decimal(value).quantize(CENT)


def init_app(app: Flask, db: SQLAlchemy) -> None:
    """Bind `db` to `app` and configure its engines (pool, pragmas, SQL telemetry)."""
    if ":memory:" not in app.config["SQLALCHEMY_DATABASE_URI"]:
        # Pool checkouts report their wait time (not in-memory SQLite's single connection).
        options = dict(app.config["SQLALCHEMY_ENGINE_OPTIONS"])
        options.setdefault("poolclass", InstrumentedQueuePool)
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options
    db.init_app(app)
    with app.app_context():
        engines = list(db.engines.values())
    for engine in engines:
        if engine.dialect.name == "sqlite" and not event.contains(
            engine, "connect", _sqlite_pragmas
        ):
            event.listen(engine, "connect", _sqlite_pragmas)
        instrument_engine(engine)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # SQLite ignores foreign keys unless asked, and WAL lets readers run beside a writer.
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()
        # PostgreSQL's pg_sleep, so REPORTS_SQL_DELAY_MS works on the embedded default too.
        dbapi_connection.create_function("pg_sleep", 1, _sleep_seconds)


def _sleep_seconds(seconds: float) -> None:
    time.sleep(seconds)


class InstrumentedQueuePool(QueuePool):
    """QueuePool that reports how long a checkout waited (db.client.connection.wait_time)."""

    def _do_get(self) -> Any:
        started = time.perf_counter()
        try:
            return super()._do_get()
        finally:
            metrics.pool_wait(_pool_name(self), time.perf_counter() - started)


def _pool_name(pool: Any) -> str:
    name: str | None = getattr(pool, "_glassbox_name", None)
    return name or "default"


# Deadlines on every wait for PostgreSQL (README "Configuration", docs/reliability.md).
#
# The server enforces statement_timeout, lock_timeout and idle_in_transaction_session_timeout,
# set per transaction with set_config(..., is_local => true): libpq's startup `options`
# would cost nothing per transaction, but PgBouncer refuses that startup parameter (or,
# listed in ignore_startup_parameters, drops it), and a session-level SET would stay on
# whichever server connection PgBouncer lent in transaction mode. One round trip per
# transaction works the same directly and behind PgBouncer.
#
# A server that is stuck, or a network that holds the bytes, cancels nothing: the client
# gives up on its own after the statement timeout plus a grace (psycopg's wait timeout),
# closes the connection, and the request answers 503. Then, for DATABASE_BREAKER_SECONDS,
# requests of this worker answer 503 without connecting (the first one after is the trial):
# with sync workers, requests queued behind a hung one would otherwise each wait their own
# timeout in turn. Only inside requests: CLI commands (migrations, seeding) keep the
# server's defaults, wait as long as they need and ignore the breaker.

log = logging.getLogger("service.database")

_wait_limit: ContextVar[float | None] = ContextVar("glassbox_database_wait_limit", default=None)


class DatabaseDeadlineExceeded(psycopg.OperationalError):
    """PostgreSQL did not answer within the time the request budget gives it."""


class DatabaseUnavailable(psycopg.OperationalError):
    """PostgreSQL failed moments ago: not called until the breaker's period is over."""


class _Breaker:
    """Per process: open for `seconds` after a timeout or connection failure in a request."""

    def __init__(self) -> None:
        self.open_until = 0.0
        self.log_interval = EveryInterval()

    def before_connect(self) -> None:
        if time.monotonic() < self.open_until:
            raise DatabaseUnavailable("PostgreSQL failed moments ago; not connecting")

    def failed(self, seconds: float, error: Exception) -> None:
        now = time.monotonic()
        self.open_until = now + seconds
        if self.log_interval.due():
            log.warning(
                "PostgreSQL did not answer (%s: %s); answering 503 without calling it "
                "for %.0f s at a time",
                type(error).__name__,
                error,
                seconds,
            )


breaker = _Breaker()


def _guarded() -> bool:
    """Deadlines and the breaker apply in requests and in `deadline` blocks, not in CLI."""
    return _wait_limit.get() is not None or has_request_context()


class DeadlineConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every wait ends at a deadline (inside a request)."""

    glassbox_wait: float | None = None
    glassbox_breaker_seconds: float = 0.0
    glassbox_begin_sql: str | None = None

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        limit = _wait_seconds(self.glassbox_wait)
        if limit is not None and (timeout is None or limit < timeout):
            timeout = limit
        try:
            return super().wait(gen, interval=interval, timeout=timeout)
        except psycopg.errors._WaitTimeout:  # what Connection.wait(timeout=) raises
            # The query may still be running, or the bytes held in the network: the
            # connection is in an unknown state and cannot be reused.
            self.pgconn.finish()
            error = DatabaseDeadlineExceeded(f"PostgreSQL did not answer within {timeout:.2f} s")
            breaker.failed(self.glassbox_breaker_seconds, error)
            raise error from None


def _wait_seconds(configured: float | None) -> float | None:
    """The longest one wait may take now: the configured wait in a request, or a scope's."""
    scoped = _wait_limit.get()
    if scoped is not None:
        remaining = scoped - time.monotonic()
        return max(0.001, remaining if configured is None else min(configured, remaining))
    return configured if configured is not None and has_request_context() else None


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every PostgreSQL wait and connection in the block ends `seconds` from now."""
    token = _wait_limit.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _wait_limit.reset(token)


@event.listens_for(Engine, "do_connect")
def _connect_with_deadlines(
    dialect: Dialect, _record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]
) -> Any:
    timeouts = cparams.get("glassbox_timeouts")  # the engine's dict: read, never change
    if timeouts is None:
        return None  # SQLite, or an engine built without them: the dialect connects
    params = {name: value for name, value in cparams.items() if name != "glassbox_timeouts"}
    guarded = _guarded()
    if guarded:
        breaker.before_connect()
        scoped = _wait_limit.get()
        if scoped is not None and scoped <= time.monotonic():
            raise DatabaseDeadlineExceeded("no time left to connect to PostgreSQL")
    try:
        connection = DeadlineConnection.connect(*cargs, **params)
    except psycopg.OperationalError as error:
        if guarded:
            breaker.failed(float(timeouts["breaker_seconds"]), error)
        raise
    connection.glassbox_wait = float(timeouts["wait"])
    connection.glassbox_breaker_seconds = float(timeouts["breaker_seconds"])
    settings = ", ".join(
        f"set_config('{name}', '{int(timeouts[name])}', true)"
        for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
    )
    connection.glassbox_begin_sql = f"SELECT {settings}"
    return connection


@event.listens_for(Engine, "begin")
def _set_transaction_timeouts(connection: Any) -> None:
    dbapi_connection = connection.connection.dbapi_connection
    sql = getattr(dbapi_connection, "glassbox_begin_sql", None)
    if sql is not None and has_request_context():
        # On the driver's connection: no SQLAlchemy event, so no span of its own.
        dbapi_connection.execute(sql)
