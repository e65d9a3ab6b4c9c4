"""The database side: SQL spans and metrics per statement, pool usage and wait metrics."""

from __future__ import annotations

import functools
import re
import time
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool

from service.metrics import metrics
from service.telemetry.setup import process_state

tracer = trace.get_tracer("glassbox")

# A table after FROM, INTO or JOIN, or after a leading UPDATE (not `FOR UPDATE`, `DO UPDATE`).
_SQL_TABLE = re.compile(r"(?:\b(?:FROM|INTO|JOIN)|^\s*UPDATE)\s+\"?([A-Za-z_][A-Za-z0-9_]*)", re.I)


class StatementObserver:
    """The span and the duration metric of one engine's statements.

    SQLAlchemy's cursor events call it for statements SQLAlchemy runs; the hot reads that run
    on the driver (service/driver_reads.py) call it themselves, so both are observed alike.
    """

    def __init__(self, engine: Engine, *, spans: bool, alone: bool) -> None:
        url = engine.url
        self.system = engine.dialect.name
        self.namespace = url.database or ""
        self.spans = spans
        # No other instrumentation (the contrib SQLAlchemy instrumentor, the distro's)
        # listens to this engine's events: statements may run without them.
        self.alone = alone
        attributes: dict[str, Any] = {"db.system.name": self.system}
        if self.namespace:
            attributes["db.namespace"] = self.namespace
        if url.host:
            attributes["server.address"] = url.host
        if url.port:
            attributes["server.port"] = url.port
        self._base_attributes = attributes

    def started(self, statement: str) -> tuple[float, Any]:
        """Call right before the statement is sent; returns what `finished` needs."""
        span = None
        if self.spans and trace.get_current_span().is_recording():
            operation, collection = statement_summary(statement)
            attributes = {
                **self._base_attributes,
                "db.operation.name": operation,
                # Bound parameters only: SQLAlchemy never inlines values into the text.
                "db.query.text": statement,
            }
            if collection:
                attributes["db.collection.name"] = collection
            name = f"{operation} {collection}" if collection else operation
            span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        return time.perf_counter(), span

    def finished(
        self, statement: str, started: float, span: Any, error: BaseException | None = None
    ) -> None:
        operation, collection = statement_summary(statement)
        error_type = type(error).__name__ if error is not None else ""
        seconds = time.perf_counter() - started
        metrics.db_operation(
            self.system, self.namespace, operation, collection, error_type, seconds
        )
        if span is None:
            return
        if error is not None:
            span.set_attribute("error.type", error_type)
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, error_type))
        span.end()


def statement_observer(engine: Engine) -> StatementObserver | None:
    """The observer `instrument_engine` gave `engine`, None before it ran."""
    observer: StatementObserver | None = getattr(engine, "_glassbox_statements", None)
    return observer


def instrument_engine(engine: Engine, *, spans: bool | None = None) -> None:
    """SQL spans and metrics for every statement on `engine`, and pool usage metrics."""
    if getattr(engine, "_glassbox_instrumented", False):
        return
    engine._glassbox_instrumented = True  # type: ignore[attr-defined]
    url = engine.url
    system = engine.dialect.name
    pool_name = (
        f"{system}://{url.host or ''}{':' + str(url.port) if url.port else ''}/{url.database or ''}"
    )
    engine.pool._glassbox_name = pool_name  # type: ignore[attr-defined]
    contrib = process_state.contrib
    make_spans = (
        process_state.tracing and not process_state.external and not contrib
        if spans is None
        else spans
    )
    if contrib and process_state.tracing and not process_state.external:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        SQLAlchemyInstrumentor().instrument(engine=engine)
    observer = StatementObserver(
        engine, spans=make_spans, alone=not contrib and not process_state.external
    )
    engine._glassbox_statements = observer  # type: ignore[attr-defined]

    @event.listens_for(engine, "before_cursor_execute")
    def before(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        ctx._gb_observed = observer.started(statement)

    @event.listens_for(engine, "after_cursor_execute")
    def after(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        observed = getattr(ctx, "_gb_observed", None)
        if observed is not None:
            ctx._gb_observed = None
            observer.finished(statement, *observed)

    @event.listens_for(engine, "handle_error")
    def failed(exception_context: Any) -> None:
        ctx = exception_context.execution_context
        observed = getattr(ctx, "_gb_observed", None) if ctx is not None else None
        if observed is not None:
            ctx._gb_observed = None
            statement = exception_context.statement or ""
            started, span = observed
            observer.finished(statement, started, span, exception_context.original_exception)

    # QueuePool keeps max_overflow private only (-1: no ceiling, nothing to report).
    overflow = getattr(engine.pool, "_max_overflow", -1)
    if isinstance(engine.pool, QueuePool) and overflow >= 0:
        metrics.pool_maximum(pool_name, engine.pool.size() + overflow)
    last = {"used": 0, "idle": 0}

    def report_pool(*_: Any) -> None:
        pool = engine.pool
        if not isinstance(pool, QueuePool):
            return
        current = {"used": int(pool.checkedout()), "idle": int(pool.checkedin())}
        for state, value in current.items():
            if value != last[state]:
                metrics.pool_connections(pool_name, state, value - last[state])
                last[state] = value

    for name in ("checkout", "checkin", "close", "close_detached"):
        event.listen(engine, name, report_pool)


_OPERATIONS = ("SELECT", "INSERT", "UPDATE", "DELETE")


@functools.lru_cache(maxsize=1024)
def statement_summary(statement: str) -> tuple[str, str]:
    """`db.operation.name` and `db.collection.name` ("" unless exactly one table) of a statement.

    The semantic conventions name a collection parsed from the query text only when the text
    names one. Cached: SQLAlchemy's compiled cache hands over the same few statement strings,
    and every value comes from the application's SQL, never from a client, so both are bounded.
    """
    head = statement.lstrip()[:6].upper()
    operation = head if head in _OPERATIONS else "OTHER"
    tables = set(_SQL_TABLE.findall(statement))
    return operation, tables.pop() if len(tables) == 1 else ""
