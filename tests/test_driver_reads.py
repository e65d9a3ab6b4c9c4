"""The hot reads on the driver (service/driver_reads.py) against SQLAlchemy's own path.

The same documents and rows, the same statement metric, SQLAlchemy's error classes, the
connection handed back to the pool as SQLAlchemy would leave it, and the whole pool renewed
when the server ended its connections.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from flask import Flask

import service.database
from service.catalog.models import Category, Product
from service.database import read_rows
from service.extensions import db
from service.metrics import metrics
from service.telemetry.setup import process_state
from tests.conftest import _clean, build_app, terminate_backends, uncached_app
from tests.factories import Factories

pytestmark = pytest.mark.postgres

DRIVER = "glassbox.driver_reads"


@pytest.fixture
def pg_uncached(postgres_url: str) -> Iterator[Flask]:
    app = uncached_app(postgres_url)
    make = Factories(app)
    categories = [make.category(name=f"Kind {n}") for n in range(3)]
    for n in range(45):
        make.product(
            sku=f"DRV-{n:03}",
            name=f"Thing {n % 7} {n}",
            price=Decimal(f"{(n * 37) % 90 + 1}.{n % 100:02}"),
            stock=n,
            category_id=categories[n % 3].id,
        )
    yield app
    _clean(app)


def _on_sqlalchemy(app: Flask) -> Flask:
    """The same app with the driver path off: every read through SQLAlchemy."""
    app.extensions[DRIVER] = None
    return app


LISTS = [
    "/api/v1/products?limit=7",
    "/api/v1/products?limit=7&sort=-price",
    "/api/v1/products?limit=7&sort=price&min_price=10&max_price=60",
    "/api/v1/products?limit=7&sort=name",
    "/api/v1/products?limit=7&sort=-created_at",
    "/api/v1/products?limit=3&sort=created_at&q=thing%203",
    "/api/v1/categories?limit=2",
]


def _without_trace(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key != "trace_id"}


def _pages(client: Any, path: str) -> list[Any]:
    """Every page of a list, following `next` links."""
    pages = []
    while path:
        response = client.get(path)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        pages.append(body)
        cursor = body.get("next_cursor")
        path = f"{path.split('&cursor=')[0]}&cursor={cursor}" if cursor else ""
    return pages


def test_the_driver_path_answers_what_sqlalchemy_answers(
    pg_uncached: Flask, postgres_url: str
) -> None:
    assert pg_uncached.extensions[DRIVER] is not None
    reference = _on_sqlalchemy(uncached_app(postgres_url))
    try:
        _compare_documents(pg_uncached, reference)
    finally:
        with reference.app_context():
            db.engine.dispose()


def _compare_documents(pg_uncached: Flask, reference: Flask) -> None:
    driver, plain = pg_uncached.test_client(), reference.test_client()
    with pg_uncached.app_context():
        product_ids = db.session.scalars(sa.select(Product.id)).all()
        category_ids = db.session.scalars(sa.select(Category.id)).all()
    paths = [f"/api/v1/products/{i}" for i in product_ids[:10]]
    paths += [f"/api/v1/categories/{i}" for i in category_ids]
    paths += ["/api/v1/products/999999"]  # no row: the same 404
    for path in paths:
        ours, theirs = driver.get(path), plain.get(path)
        assert ours.status_code == theirs.status_code, path
        if ours.status_code == 200:
            assert ours.data == theirs.data, path
            assert ours.headers["ETag"] == theirs.headers["ETag"], path
        else:  # each problem document carries its own request's trace id
            assert _without_trace(ours.get_json()) == _without_trace(theirs.get_json()), path
    for path in LISTS:
        ours_pages, theirs_pages = _pages(driver, path), _pages(plain, path)
        assert ours_pages == theirs_pages, path
        assert len(ours_pages) > 1, path  # the cursor's values went through the bind path


def test_rows_carry_the_column_types_values(pg_uncached: Flask, postgres_url: str) -> None:
    from service.catalog.service import _PRODUCT_BY_ID

    with pg_uncached.test_request_context("/"):
        product_id = db.session.scalars(sa.select(Product.id)).first()
        ours = read_rows(_PRODUCT_BY_ID, {"id": product_id})
        _on_sqlalchemy(pg_uncached)
        theirs = [dict(row) for row in read_rows(_PRODUCT_BY_ID, {"id": product_id})]
    assert ours == theirs
    (row,) = ours
    assert isinstance(row["price"], Decimal)
    assert row["price"].as_tuple().exponent == -2
    assert row["created_at"].utcoffset().total_seconds() == 0  # UTCDateTime: aware, UTC


def test_a_read_skips_sqlalchemys_execution_and_keeps_its_metric(
    pg_uncached: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    executed: list[str] = []
    recorded: list[tuple[Any, ...]] = []
    with pg_uncached.app_context():
        sa.event.listen(db.engine, "before_cursor_execute", lambda *a: executed.append(a[2]))
        product_id = db.session.scalars(sa.select(Product.id)).first()
        db.session.remove()
    executed.clear()
    monkeypatch.setattr(metrics, "db_operation", lambda *values: recorded.append(values))
    response = pg_uncached.test_client().get(f"/api/v1/products/{product_id}")
    assert response.status_code == 200
    assert executed == []
    database = sa.engine.make_url(pg_uncached.config["SQLALCHEMY_DATABASE_URI"]).database
    assert [values[:5] for values in recorded] == [
        ("postgresql", database, "SELECT", "products", "")
    ]


def test_a_statement_with_expanding_parameters_goes_through_sqlalchemy(
    pg_uncached: Flask,
) -> None:
    statement = sa.select(Product.sku).where(Product.sku.in_(sa.bindparam("skus", expanding=True)))
    with pg_uncached.test_request_context("/"):
        assert pg_uncached.extensions[DRIVER].read(statement, {"skus": ["DRV-001"]}) is None
        rows = read_rows(statement, {"skus": ["DRV-001", "DRV-002", "none"]})
    assert sorted(row["sku"] for row in rows) == ["DRV-001", "DRV-002"]


def test_an_error_is_sqlalchemys_and_the_connection_goes_back_usable(
    pg_uncached: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded: list[tuple[Any, ...]] = []
    monkeypatch.setattr(metrics, "db_operation", lambda *values: recorded.append(values))
    missing = sa.select(sa.column("id")).select_from(sa.table("no_such_table"))
    with pg_uncached.test_request_context("/"):
        with pytest.raises(sa.exc.ProgrammingError) as raised:
            read_rows(missing)
        assert isinstance(raised.value.orig, psycopg.errors.UndefinedTable)
        assert recorded[-1][4] == "UndefinedTable"
        # Back in the pool out of autocommit, so the ORM's next transaction is one.
        connection = db.engine.raw_connection()
        try:
            assert connection.driver_connection.autocommit is False
        finally:
            connection.close()
        assert read_rows(sa.select(sa.literal(1).label("one"))) == [{"one": 1}]


def test_a_server_restart_renews_the_whole_pool_after_one_failed_read(
    pg_uncached: Flask, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Connections used moments ago are not pinged (PING_AFTER_IDLE): the first read on a
    # dropped one fails; the pool is then renewed, so the other dropped one is not used.
    monkeypatch.setattr(service.database, "PING_AFTER_IDLE", 3600.0)
    statement = sa.select(sa.literal(1).label("one"))
    with pg_uncached.test_request_context("/"):
        first, second = db.engine.raw_connection(), db.engine.raw_connection()
        pids = {c.driver_connection.info.backend_pid for c in (first, second)}
        first.close()
        second.close()
        terminate_backends(postgres_url, pids)
        with pytest.raises(sa.exc.OperationalError) as raised:
            read_rows(statement)
        assert raised.value.connection_invalidated
        assert read_rows(statement) == [{"one": 1}]
        assert read_rows(statement) == [{"one": 1}]


def test_reads_stay_on_sqlalchemy_when_other_instrumentation_watches_the_engine(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # opentelemetry-instrument's SQLAlchemy instrumentor sees statements only through
    # SQLAlchemy's events: under it, no read may bypass them.
    monkeypatch.setattr(process_state, "external", True)
    app = build_app(postgres_url)
    try:
        assert app.extensions[DRIVER] is None
    finally:
        with app.app_context():
            db.engine.dispose()
