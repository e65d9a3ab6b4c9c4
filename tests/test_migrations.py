"""Migrations upgrade and downgrade cleanly, and match the models."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from service.database import only_on
from service.extensions import db
from service.reports import rollups
from tests.conftest import TEST_DATABASE_URL, build_app, require


def _cycle(url: str) -> None:
    app = build_app(url)
    with app.app_context():
        upgrade()
        tables = set(sa.inspect(db.engine).get_table_names())
        assert {"products", "categories", "orders", "order_items", "api_keys"} <= tables
        with db.engine.connect() as connection:
            include_object = only_on(connection.dialect.name)
            context = MigrationContext.configure(
                connection, opts={"include_object": include_object}
            )
            differences: list[Any] = compare_metadata(context, db.metadata)
        assert differences == [], differences
        downgrade(revision="base")
        assert set(sa.inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade()
        db.engine.dispose()


def test_sqlite_upgrade_downgrade(tmp_path: Any) -> None:
    _cycle(f"sqlite:///{tmp_path / 'migrations.db'}")


@contextlib.contextmanager
def _scratch_database(suffix: str) -> Iterator[str]:
    """A database of its own beside the test database, so the shared schema is undisturbed."""
    url = require(TEST_DATABASE_URL, "TEST_DATABASE_URL")
    scratch = f"{sa.engine.make_url(url).database}_{suffix}"

    def admin(statement: str) -> None:
        engine = sa.create_engine(
            url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
        )
        with engine.connect() as connection:
            connection.execute(sa.text(statement))
        engine.dispose()

    admin(f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)")
    admin(f"CREATE DATABASE {scratch}")
    try:
        yield sa.engine.make_url(url).set(database=scratch).render_as_string(hide_password=False)
    finally:
        admin(f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)")


@pytest.mark.postgres
def test_postgres_upgrade_downgrade(postgres_url: str) -> None:
    with _scratch_database("migrations") as target:
        _cycle(target)


def _backfilled_as_recorded(url: str) -> None:
    """Orders stored before 0007 get the report rows that payment writes from then on."""
    app = build_app(url)
    with app.app_context():
        upgrade(revision="0006")
        statements = [
            "INSERT INTO categories (id, name, description, created_at, updated_at) VALUES "
            "(1, 'Coffee', '', :at, :at), (2, 'Tea', '', :at, :at)",
            "INSERT INTO products (id, sku, name, description, price, stock, category_id, "
            "created_at, updated_at) VALUES "
            "(1, 'A', 'Beans', '', :beans, 5, 1, :at, :at), "
            "(2, 'B', 'Leaves', '', :leaves, 5, 2, :at, :at)",
            "INSERT INTO orders (id, customer_email, status, total, created_at, updated_at) "
            "VALUES (1, 'a@example.com', 'paid', :one, :late, :late), "
            "(2, 'a@example.com', 'paid', :two, :at, :at), "
            "(3, 'a@example.com', 'cancelled', :two, :at, :at), "
            "(4, 'a@example.com', 'pending', :two, :at, :at)",
            "INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES "
            "(1, 1, 2, :beans), (2, 1, 1, :beans), (2, 2, 3, :leaves), (3, 1, 1, :beans), "
            "(4, 2, 1, :leaves)",
        ]
        sqlite = db.engine.dialect.name == "sqlite"
        money = {"beans": 1050, "leaves": 399, "one": 2100, "two": 2247}  # cents
        values = {
            **{k: v if sqlite else v / 100 for k, v in money.items()},
            # 23:30 at UTC-2 is the next UTC day: the backfill keeps UTC days, as payment does.
            "late": "2026-03-01 01:30:00" if sqlite else "2026-02-28 23:30:00-02:00",
            "at": "2026-03-02 12:00:00" if sqlite else "2026-03-02 12:00:00+00:00",
        }
        with db.engine.begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement), values)
        upgrade()
        tables = ("order_sales", "product_sales", "category_sales")

        def rows() -> dict[str, set[tuple[Any, ...]]]:
            with db.engine.connect() as connection:
                return {
                    t: {tuple(r) for r in connection.execute(sa.text(f"SELECT * FROM {t}"))}  # noqa: S608
                    for t in tables
                }

        backfilled = rows()
        assert {r[0] for r in backfilled["order_sales"]} == {1, 2}
        for table in tables:
            db.session.execute(sa.text(f"DELETE FROM {table}"))  # noqa: S608
        rollups.record()
        db.session.commit()
        assert backfilled == rows()
        db.session.remove()
        db.engine.dispose()


def test_sqlite_backfills_the_report_rollups(tmp_path: Any) -> None:
    _backfilled_as_recorded(f"sqlite:///{tmp_path / 'backfill.db'}")


@pytest.mark.postgres
def test_postgres_backfills_the_report_rollups(postgres_url: str) -> None:
    with _scratch_database("backfill") as target:
        _backfilled_as_recorded(target)
