"""The database a measurement runs against: created if missing, migrated, seeded once."""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa

from profiling.harness.flask_cli import cli_env, run_flask
from service.config import database_url as parse_database_url


def create_if_missing(database_url: str, prefix: str) -> sa.URL:
    """Create a PostgreSQL database (or a SQLite file's folder) when it does not exist yet."""
    url = parse_database_url(database_url)
    if url.get_backend_name() != "postgresql":
        if url.database:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        return url
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": url.database},
            )
            if not exists:
                print(f"{prefix}: creating database {url.database}", flush=True)
                quoted = connection.dialect.identifier_preparer.quote(str(url.database))
                connection.execute(sa.text(f"CREATE DATABASE {quoted}"))
    finally:
        admin.dispose()
    return url


def migrate(database_url: str) -> None:
    run_flask("db", "upgrade", env=cli_env(database_url))


def seed(database_url: str, *, products: int, orders: int, prefix: str) -> None:
    """`flask seed`, its progress shown on this terminal (a bar) or as lines in a log."""
    print(f"{prefix}: seeding {products} products and {orders} orders (once)", flush=True)
    started = time.monotonic()
    run_flask(
        "seed",
        "--products",
        str(products),
        "--orders",
        str(orders),
        env=cli_env(database_url),
        show_output=True,
    )
    print(f"{prefix}: seeded in {time.monotonic() - started:.0f} s", flush=True)
