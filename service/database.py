"""The database: declarative base, column types, the engine, and PostgreSQL deadlines.

`init_app` binds Flask-SQLAlchemy to an app and configures its engine: the pool (reports
its checkout waits, pings only connections that sat idle), SQLite's pragmas, and SQL spans and
metrics (service/telemetry/sql.py). The options the engine is built with (pool size, timeouts,
libpq keepalives, prepared statements) are settings, parsed by service/config/ into
SQLALCHEMY_ENGINE_OPTIONS. `read_rows` runs the hot reads (service/catalog/service.py).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import psycopg
from flask import Flask, current_app, has_request_context
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import BigInteger, DateTime, Dialect, MetaData, Numeric, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool
from sqlalchemy.sql import Executable
from sqlalchemy.types import TypeDecorator, TypeEngine

from service.driver_reads import DriverReads
from service.logs import EveryInterval
from service.metrics import metrics
from service.telemetry.sql import instrument_engine, statement_observer

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


def only_on(dialect: str) -> Callable[..., bool]:
    """Alembic's `include_object` for a database of `dialect`: it leaves out what the models
    create on another dialect only (`ddl_if`), so autogenerate and the migration test agree."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        ddl_if = getattr(obj, "_ddl_if", None)
        return ddl_if is None or ddl_if.dialect in (None, dialect)

    return include


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
        default = db.engine
    for engine in engines:
        if engine.dialect.name == "sqlite" and not event.contains(
            engine, "connect", _sqlite_pragmas
        ):
            event.listen(engine, "connect", _sqlite_pragmas)
        if engine.dialect.name == "postgresql":
            _ping_idle_connections(engine)
        instrument_engine(engine)
    direct = app.config.get("DATABASE_POOLER", "none") == "none"
    postgres_direct = direct and default.dialect.name == "postgresql"
    # The same pool; each connection of this one is in autocommit while checked out.
    app.extensions[_READS] = (
        default.execution_options(isolation_level="AUTOCOMMIT") if postgres_direct else default
    )
    observer = statement_observer(default)
    app.extensions[_DRIVER_READS] = (
        DriverReads(default, observer)
        if postgres_direct and observer is not None and observer.alone
        else None
    )


_READS = "glassbox.read_engine"
_DRIVER_READS = "glassbox.driver_reads"


def read_rows(
    statement: Executable, parameters: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The rows of one read-only statement, as dicts, on a pooled connection of its own.

    Directly on PostgreSQL (DATABASE_POOLER=none) that is one round trip: autocommit, so no
    BEGIN or ROLLBACK, and the session already carries the request's timeouts; the statement
    runs on the driver (service/driver_reads.py). Behind a transaction-mode pooler it is a
    transaction, which `_set_transaction_timeouts` opens with the timeouts. On SQLite a
    plain SELECT opens no transaction either.
    """
    extensions = current_app.extensions
    driver: DriverReads | None = extensions[_DRIVER_READS]
    if driver is not None:
        rows = driver.read(statement, parameters)
        if rows is not None:
            return rows
    with extensions[_READS].connect() as connection:
        return [dict(row) for row in connection.execute(statement, parameters).mappings()]


# SQLAlchemy's pool_pre_ping costs a round trip per checkout. Instead, the documented
# pessimistic recipe on pool events: ping (and replace by raising DisconnectionError) only a
# connection that sat in the pool longer than this. One in use moments ago that the server
# dropped fails its statement once; SQLAlchemy then invalidates the whole pool, so the others
# reconnect. HikariCP skips its check the same way for a connection used in the last 0.5 s.
PING_AFTER_IDLE = 2.0


def _ping_idle_connections(engine: Engine) -> None:
    dialect = engine.dialect

    def checked_in(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["glassbox_idle_since"] = time.monotonic()

    def checked_out(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle_since = record.info.pop("glassbox_idle_since", None)
        if idle_since is not None and time.monotonic() - idle_since > PING_AFTER_IDLE:
            try:
                dialect.do_ping(dbapi_connection)
            except psycopg.Error as error:
                if dialect.is_disconnect(cast(Any, error), dbapi_connection, None):
                    raise DisconnectionError(str(error)) from error
                raise
        _session_timeouts(dbapi_connection)

    if not event.contains(engine, "checkout", checked_out):
        event.listen(engine, "checkin", checked_in)
        event.listen(engine, "checkout", checked_out)


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
# The server enforces statement_timeout, lock_timeout and idle_in_transaction_session_timeout.
# Directly (DATABASE_POOLER=none) they are session settings, set once when a request first
# checks the connection out and reset when code outside a request (CLI) checks it out: no
# round trip per transaction. Behind a transaction-mode pooler (DATABASE_POOLER=transaction)
# a session SET would stay on whichever server connection the pooler lent, and PgBouncer
# refuses libpq's startup `options` (or drops it), so they are set per transaction with
# set_config(..., is_local => true): one round trip per transaction.
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
    glassbox_begin_sql: str | None = None  # behind a transaction-mode pooler
    glassbox_session_sql: str | None = None  # directly
    glassbox_request_session = False  # whether the session has the request timeouts

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
    local = timeouts.get("pooler") == "transaction"
    settings = ", ".join(
        f"set_config('{name}', '{int(timeouts[name])}', {'true' if local else 'false'})"
        for name in _TIMEOUTS
    )
    if local:
        connection.glassbox_begin_sql = f"SELECT {settings}"
    else:
        connection.glassbox_session_sql = f"SELECT {settings}"
    return connection


_TIMEOUTS = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
_RESET_TIMEOUTS = "; ".join(f"RESET {name}" for name in _TIMEOUTS)


def _session_timeouts(dbapi_connection: Any) -> None:
    """Give a direct connection the request timeouts in requests, the server's outside."""
    sql = getattr(dbapi_connection, "glassbox_session_sql", None)
    wanted = has_request_context()
    if sql is None or dbapi_connection.glassbox_request_session == wanted:
        return
    # In autocommit: a session SET inside a transaction that rolls back would be undone.
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    try:
        dbapi_connection.execute(sql if wanted else _RESET_TIMEOUTS, prepare=False)
    finally:
        if not dbapi_connection.closed:
            dbapi_connection.autocommit = autocommit
    dbapi_connection.glassbox_request_session = wanted


@event.listens_for(Engine, "begin")
def _set_transaction_timeouts(connection: Any) -> None:
    dbapi_connection = connection.connection.dbapi_connection
    sql = getattr(dbapi_connection, "glassbox_begin_sql", None)
    if sql is not None and has_request_context():
        # On the driver's connection: no SQLAlchemy event, so no span of its own.
        try:
            dbapi_connection.execute(sql)
        except psycopg.Error as error:
            # As SQLAlchemy treats its own statements' errors: wrapped (a 503), and a
            # dropped connection invalidates the pool. No ping at checkout caught it.
            connection._handle_dbapi_exception(error, sql, (), None, None)
