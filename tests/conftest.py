"""Fixtures: an app per test on each available backend, a client, API keys, data factories.

Backends: `sqlite` (the embedded default: SQLite file, in-process cache and limiter)
always; `postgres` (PostgreSQL + Redis) when TEST_DATABASE_URL and TEST_REDIS_URL are
set. Tests that only make sense on a real server use the `pg_app` / `redis_url`
fixtures. With GLASSBOX_REQUIRE_SERVICES=1 (as .ci/run sets) a missing service is a
failure, never a skip.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service import database as service_database
from service.auth import service as auth
from service.auth.models import Scope
from service.extensions import db
from tests.factories import Factories
from tests.payments.gateway import Gateway, start_gateway

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "")
REQUIRE_SERVICES = os.environ.get("GLASSBOX_REQUIRE_SERVICES") == "1"

TABLES = (
    "order_sales",
    "product_sales",
    "category_sales",
    "order_items",
    "orders",
    "products",
    "categories",
    "api_keys",
)


def require(url: str, name: str) -> str:
    if url:
        return url
    message = f"{name} not configured"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message}, and GLASSBOX_REQUIRE_SERVICES=1 forbids skipping")
    pytest.skip(message)


def _reset_postgres(url: str) -> None:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as connection:
        connection.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
        connection.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


def _migrated(config: dict[str, Any]) -> None:
    from flask_migrate import upgrade

    app = create_app(config)
    with app.app_context():
        upgrade()
        db.engine.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'glassbox-test.db'}"
    _migrated({"DATABASE_URL": url, "GLASSBOX_ENV": "test"})
    return url


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = require(TEST_DATABASE_URL, "TEST_DATABASE_URL (PostgreSQL)")
    _reset_postgres(url)
    _migrated({"DATABASE_URL": url, "GLASSBOX_ENV": "test"})
    return url


@pytest.fixture
def redis_url() -> Iterator[str]:
    url = require(TEST_REDIS_URL, "TEST_REDIS_URL (Redis)")
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def _clean(app: Flask) -> None:
    with app.app_context():
        with db.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
                )
            else:
                for table in TABLES:
                    connection.execute(sa.text(f"DELETE FROM {table}"))  # noqa: S608
        db.engine.dispose()


# Apps that build_app made: their pools are emptied after each test (_built_apps_disposed).
_built_apps: list[Flask] = []


def build_app(database_url: str, redis: str = "", **overrides: Any) -> Flask:
    config: dict[str, Any] = {
        "GLASSBOX_ENV": "test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis,
        "RATELIMIT_ENABLED": False,
        "LOG_LEVEL": "WARNING",
        **overrides,
    }
    app = create_app(config)
    _built_apps.append(app)
    return app


@pytest.fixture(autouse=True)
def _built_apps_disposed() -> Iterator[None]:
    """Close the pooled connections of every app a test built. A pool left to the garbage
    collector closes nothing: psycopg's ResourceWarning then surfaces, as an error, in
    whichever later test the collector happens to run in (seen once in CI)."""
    yield
    while _built_apps:
        app = _built_apps.pop()
        with app.app_context():
            db.engine.dispose()


def uncached_app(database_url: str, pooler: str = "none") -> Flask:
    """An app whose every read reaches the database: no cache in front of it."""
    return build_app(
        database_url, DATABASE_POOLER=pooler, CACHE_TYPE="NullCache", CACHE_NO_NULL_WARNING=True
    )


def terminate_backends(postgres_url: str, pids: set[int]) -> None:
    """What a database restart does to the app's connections: the server ends them."""
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.fixture(autouse=True)
def _database_breaker_closed() -> None:
    """Each test starts with the process's database breaker closed: a test that refuses
    connections in a request (an unreachable database) opens it for DATABASE_BREAKER_SECONDS,
    and the next test's requests to the real database would answer 503 until it closes."""
    service_database.breaker.open_until = 0.0


BACKENDS = ["sqlite"]
if TEST_DATABASE_URL or REQUIRE_SERVICES:
    BACKENDS.append("postgres")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app_config() -> dict[str, Any]:
    """Override in a test module to change settings of the `app` fixture."""
    return {}


@pytest.fixture
def app(
    backend: str, request: pytest.FixtureRequest, app_config: dict[str, Any]
) -> Iterator[Flask]:
    if backend == "postgres":
        database = request.getfixturevalue("postgres_url")
        cache_url = request.getfixturevalue("redis_url")
    else:
        database = request.getfixturevalue("sqlite_url")
        cache_url = ""
    # No app context is held open: each test-client request must get its own, as in
    # production (an outer context would share `g` and the session between requests).
    app = build_app(database, cache_url, **app_config)
    yield app
    _clean(app)


@pytest.fixture
def pg_app(postgres_url: str, redis_url: str) -> Iterator[Flask]:
    app = build_app(postgres_url, redis_url)
    yield app
    _clean(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def bearer_headers(app: Flask, name: str, *scopes: Scope) -> dict[str, str]:
    """The Authorization header of a new key called `name` with `scopes`."""
    with app.app_context():
        return {"Authorization": f"Bearer {auth.create_key(name=name, scopes=scopes)}"}


@pytest.fixture
def api_token(app: Flask) -> str:
    """A key with every scope, as the development key has: the README's examples work."""
    with app.app_context():
        return auth.create_key(name="tests", scopes=auth.DEVELOPMENT_SCOPES)


@pytest.fixture
def admin_headers(app: Flask) -> dict[str, str]:
    """An operator key (`api-keys create NAME --scope operator`): sees every key's orders."""
    return bearer_headers(app, "operator", Scope.OPERATOR)


@pytest.fixture
def customer_headers(app: Flask) -> dict[str, str]:
    """A customer key (`api-keys create NAME --scope customer`): its own orders only."""
    return bearer_headers(app, "customer", Scope.CUSTOMER)


@pytest.fixture
def make(app: Flask) -> Factories:
    return Factories(app)


@pytest.fixture
def auth_headers(api_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_token}"}


@pytest.fixture
def payments_server(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Start payments services under gunicorn (a SQLite ledger in tmp_path unless given)."""
    started: list[Gateway] = []

    def start(ledger_url: str = "", **env: str) -> Gateway:
        ledger_url = ledger_url or f"sqlite:///{tmp_path / 'ledger.db'}"
        started.append(start_gateway(tmp_path, ledger_url, **env))
        return started[-1]

    yield start
    for gateway in started:
        gateway.process.stop()


@pytest.fixture
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
