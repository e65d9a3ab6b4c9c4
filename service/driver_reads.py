"""The hot reads on the driver: SQLAlchemy's compiled statement, run on a psycopg cursor.

Why not `Connection.execute`: for one row by primary key, SQLAlchemy's connection,
execution context, event dispatch and result objects cost more than psycopg's own execute
and fetch (in-process, this machine: 251 µs a read through them against 139 µs here, the
same pooled connection, autocommit switched on and off around it), and `make bench`
measured the uncached product read at 1.16x and the first page at 1.15x with this path
against SQLAlchemy's (docs/measurement.md, 2026-12-06). What stays SQLAlchemy's: the
statement, its compilation (once per statement object), the bind and result processing of
its column types, the pool with its events (deadlines, idle ping, wait metric), the error
classes the handler maps (a 503 for an `OperationalError`) and the invalidation of the
pool when the server dropped a connection. The statement's span and duration metric are
the same as on SQLAlchemy's path (service/telemetry/sql.py).

Used for PostgreSQL reached directly (DATABASE_POOLER=none) while glassbox's own
instrumentation is the only one watching the engine; a statement with anything this path
does not do (expanding IN parameters, escaped bind names) goes through SQLAlchemy.

A statement is compiled only once a connection has been checked out, never before: the
dialect learns on its first connect what the compiled SQL and the type processors depend on
(`standard_conforming_strings`, which decides whether `ESCAPE '\\'` is written with one
backslash or two; the server version; `max_identifier_length`; psycopg's hstore adapter),
and a plan compiled earlier would be kept, wrong, for the life of the process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg
import sqlalchemy.exc
from sqlalchemy.engine import Engine
from sqlalchemy.sql import Executable, Select

from service.telemetry.sql import StatementObserver

_MAX_PLANS = 512  # statements are module constants or built once per list shape


@dataclass
class _Plan:
    sql: str
    compiled: Any  # sqlalchemy.sql.compiler.SQLCompiler
    bind_processors: dict[str, Callable[[Any], Any]]
    column_types: list[Any]
    # Set from the cursor's description on the first run: the result keys and processors.
    keys: tuple[str, ...] | None = None
    processors: list[tuple[int, Callable[[Any], Any]]] = field(default_factory=list)


class DriverReads:
    """Runs read-only statements of one engine on the pool's psycopg connections."""

    def __init__(self, engine: Engine, observer: StatementObserver) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self.observer = observer
        self._plans: dict[int, tuple[Executable, _Plan | None]] = {}

    def read(
        self, statement: Executable, parameters: Mapping[str, Any] | None
    ) -> list[dict[str, Any]] | None:
        """The statement's rows as dicts; None when this path cannot run it."""
        held = self._plans.get(id(statement))
        if held is not None and held[0] is statement and held[1] is None:
            return None
        try:
            fairy = self.engine.raw_connection()  # the pool's checkout events run
        except psycopg.Error as error:  # could not connect: SQLAlchemy's class for it
            raise self._wrapped(error, str(statement), parameters, invalidated=False) from error
        try:
            # Only now: the first checkout has run the dialect's first-connect initialisation.
            plan = self._plan(statement)
            if plan is None:
                return None
            params = plan.compiled.construct_params(parameters)
            for name, processor in plan.bind_processors.items():
                if name in params:
                    params[name] = processor(params[name])
            raw = self._execute(plan, params, fairy)
        finally:
            fairy.close()
        keys, processors = plan.keys or (), plan.processors  # keys: set by _execute
        result = [dict(zip(keys, row, strict=True)) for row in raw]
        for index, processor in processors:
            key = keys[index]
            for row in result:
                row[key] = processor(row[key])
        return result

    def _plan(self, statement: Executable) -> _Plan | None:
        """The statement compiled once; None when this path cannot run it."""
        held = self._plans.get(id(statement))
        if held is not None and held[0] is statement:
            return held[1]
        plan = self._compile(statement)
        if len(self._plans) < _MAX_PLANS:
            # The statement is kept with its plan, so its id is never reused meanwhile.
            self._plans[id(statement)] = (statement, plan)
        return plan

    def _compile(self, statement: Executable) -> _Plan | None:
        if not isinstance(statement, Select):
            return None
        if self.dialect.server_version_info is None:  # set by the first connect
            raise RuntimeError("the dialect is compiled against before its first connect")
        compiled: Any = statement.compile(dialect=self.dialect)
        if compiled.post_compile_params or compiled.literal_execute_params:
            return None  # expanded at execution time by SQLAlchemy
        if compiled.escaped_bind_names:
            return None
        processors = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(self.dialect).bind_processor(self.dialect)
            if processor is not None:
                processors[name] = processor
        return _Plan(
            sql=str(compiled),
            compiled=compiled,
            bind_processors=processors,
            column_types=[column.type for column in statement.selected_columns],
        )

    def _execute(self, plan: _Plan, params: dict[str, Any], fairy: Any) -> list[tuple[Any, ...]]:
        connection = cast(psycopg.Connection[Any], fairy.driver_connection)
        started, span = self.observer.started(plan.sql)
        try:
            # As the read engine's AUTOCOMMIT option does on SQLAlchemy's path: the SELECT
            # alone, no BEGIN and ROLLBACK round trips (switching costs no round trip).
            connection.autocommit = True
            try:
                with connection.cursor() as cursor:
                    cursor.execute(plan.sql, params)
                    raw = cursor.fetchall()
                    if plan.keys is None:
                        self._describe(plan, cursor.description or [])
            finally:
                if not connection.closed:
                    connection.autocommit = False
        except psycopg.Error as error:
            self.observer.finished(plan.sql, started, span, error)
            disconnected = self.dialect.is_disconnect(error, connection, None)  # type: ignore[arg-type]
            if disconnected:
                # What SQLAlchemy's Connection does on a disconnect: a server restart ended
                # every pooled connection, so the whole pool is renewed, not only this one.
                self.engine.pool._invalidate(fairy, error)
            raise self._wrapped(error, plan.sql, params, invalidated=disconnected) from error
        except BaseException as error:  # not the driver's: still end the span
            self.observer.finished(plan.sql, started, span, error)
            raise
        self.observer.finished(plan.sql, started, span)
        return raw

    def _describe(self, plan: _Plan, description: Any) -> None:
        if len(description) != len(plan.column_types):
            raise RuntimeError(f"{len(description)} columns for {len(plan.column_types)} types")
        processors = []
        for index, (column, type_) in enumerate(zip(description, plan.column_types, strict=True)):
            impl = type_.dialect_impl(self.dialect)
            processor = impl.result_processor(self.dialect, column.type_code)
            if processor is not None:
                processors.append((index, processor))
        plan.processors = processors
        plan.keys = tuple(column.name for column in description)

    def _wrapped(
        self, error: psycopg.Error, sql: str, params: Any, *, invalidated: bool
    ) -> sqlalchemy.exc.DBAPIError:
        wrapped = sqlalchemy.exc.DBAPIError.instance(
            sql,
            params,
            error,
            psycopg.Error,
            connection_invalidated=invalidated,
            dialect=self.dialect,
        )
        return cast(sqlalchemy.exc.DBAPIError, wrapped)
