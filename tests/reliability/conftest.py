"""Fixtures that start real processes: gunicorn, a throwaway PostgreSQL cluster, a Redis.

`gunicorn_server(**env)` starts the app as production runs it and returns the running
server (`.base_url`, `.worker_pids()`, `.log_records()`); every server is stopped when the
test ends. `server_database` is the test PostgreSQL (TEST_DATABASE_URL) when there is one,
else a migrated SQLite file, and `server_token` an API key in it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.auth import service as auth
from service.extensions import db
from tests.conftest import BACKENDS, _clean, _migrated, build_app
from tests.reliability.servers import GunicornServer, RedisProcess, ThrowawayPostgres, server_env

StartServer = Callable[..., GunicornServer]
StartLimited = Callable[[str], GunicornServer]


@pytest.fixture
def server_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """The database a test server uses: PostgreSQL when configured, SQLite otherwise."""
    name = "postgres_url" if "postgres" in BACKENDS else "sqlite_url"
    url = str(request.getfixturevalue(name))
    yield url
    _clean(build_app(url))


def api_key_for(database_url: str, name: str = "reliability") -> str:
    """A new API key in the (migrated) database a test server will use."""
    app = build_app(database_url)
    with app.app_context():
        token = auth.create_key(name=name, scopes=auth.DEVELOPMENT_SCOPES)
        db.engine.dispose()
    return token


@pytest.fixture
def server_token(server_database: str) -> str:
    return api_key_for(server_database)


@pytest.fixture
def gunicorn_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start gunicorn with the given environment variables (on top of `server_env()`)."""
    servers: list[GunicornServer] = []

    def start(**env: str) -> GunicornServer:
        log = tmp_path / f"gunicorn-{len(servers)}.log"
        server = GunicornServer(server_env(**env), log)
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def rate_limited_server(
    gunicorn_server: StartServer, server_database: str, redis_process: RedisProcess
) -> StartLimited:
    """Start gunicorn on the test database and the test's own Redis, limited to `limit`."""

    def start(limit: str) -> GunicornServer:
        return gunicorn_server(
            DATABASE_URL=server_database,
            REDIS_URL=redis_process.url,
            RATELIMIT_ENABLED="true",
            RATELIMIT_DEFAULT=limit,
        )

    return start


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """A migrated PostgreSQL cluster of the test's own, which the test may stop and start."""
    cluster = ThrowawayPostgres()
    try:
        cluster.init().start()
        _migrated({"DATABASE_URL": cluster.url, "GLASSBOX_ENV": "test"})
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of the test's own, which the test may stop."""
    server = RedisProcess(tmp_path / "redis.log")
    try:
        yield server.start()
    finally:
        server.stop()
