"""Migrations upgrade and downgrade cleanly, and match the models."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from service.database import only_on
from service.extensions import db
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


@pytest.mark.postgres
def test_postgres_upgrade_downgrade(postgres_url: str) -> None:
    # A database of its own so the shared test schema is not disturbed.
    url = require(TEST_DATABASE_URL, "TEST_DATABASE_URL")
    scratch = f"{sa.engine.make_url(url).database}_migrations"  # beside the test database
    admin = sa.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {scratch}"))
        connection.execute(sa.text(f"CREATE DATABASE {scratch}"))
    admin.dispose()
    target = sa.engine.make_url(url).set(database=scratch).render_as_string(hide_password=False)
    try:
        _cycle(target)
    finally:
        admin = sa.create_engine(
            url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {scratch}"))
        admin.dispose()
