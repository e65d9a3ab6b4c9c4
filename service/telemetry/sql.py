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
    namespace = url.database or ""
    base_attributes: dict[str, Any] = {"db.system.name": system}
    if namespace:
        base_attributes["db.namespace"] = namespace
    if url.host:
        base_attributes["server.address"] = url.host
    if url.port:
        base_attributes["server.port"] = url.port

    @event.listens_for(engine, "before_cursor_execute")
    def before(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        ctx._gb_started = time.perf_counter()
        if make_spans and trace.get_current_span().is_recording():
            operation, collection = statement_summary(statement)
            name = f"{operation} {collection}" if collection else operation
            attributes = {
                **base_attributes,
                "db.operation.name": operation,
                # Bound parameters only: SQLAlchemy never inlines values into the text.
                "db.query.text": statement,
            }
            if collection:
                attributes["db.collection.name"] = collection
            ctx._gb_span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)

    @event.listens_for(engine, "after_cursor_execute")
    def after(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        started = getattr(ctx, "_gb_started", None)
        if started is not None:
            operation, collection = statement_summary(statement)
            seconds = time.perf_counter() - started
            metrics.db_operation(system, namespace, operation, collection, "", seconds)
        span = getattr(ctx, "_gb_span", None)
        if span is not None:
            span.end()
            ctx._gb_span = None

    @event.listens_for(engine, "handle_error")
    def failed(exception_context: Any) -> None:
        ctx = exception_context.execution_context
        if ctx is None:
            return
        error_type = type(exception_context.original_exception).__name__
        started = getattr(ctx, "_gb_started", None)
        statement = exception_context.statement or ""
        if started is not None:
            operation, collection = statement_summary(statement)
            seconds = time.perf_counter() - started
            metrics.db_operation(system, namespace, operation, collection, error_type, seconds)
        span = getattr(ctx, "_gb_span", None)
        if span is not None:
            span.set_attribute("error.type", error_type)
            span.record_exception(exception_context.original_exception)
            span.set_status(Status(StatusCode.ERROR, error_type))
            span.end()
            ctx._gb_span = None

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
