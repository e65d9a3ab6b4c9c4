"""Round trips to PostgreSQL per request, counted on the wire, and the idle-connection ping.

libpq's own protocol trace (PQtrace) records every message each of the app's connections
sends; a round trip ends with a `Query` (simple protocol) or a `Sync` (extended protocol,
including a Parse that prepares a statement). Directly (DATABASE_POOLER=none) a catalog
read is its one SELECT; behind a transaction-mode pooler it is BEGIN, the per-transaction
set_config, the SELECT and ROLLBACK. No request pays a ping unless its connection sat idle.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import sqlalchemy as sa
from flask import Flask
from psycopg import pq

import service.database
from service.extensions import db
from tests.conftest import _clean, build_app, terminate_backends, uncached_app
from tests.factories import Factories

pytestmark = pytest.mark.postgres

ROUND_TRIP_ENDS = {"Query", "Sync"}


class Wire:
    """libpq traces of every connection the app checks out, read back per request."""

    def __init__(self, app: Flask, folder: Path) -> None:
        self.folder = folder
        self.traced: dict[int, tuple[Any, Path, IO[str]]] = {}
        self.names = itertools.count()
        self.pids: set[int] = set()
        with app.app_context():
            # First in line, so the trace also sees what the app's own checkout hook sends.
            sa.event.listen(db.engine, "checkout", self._checkout, insert=True)

    def _checkout(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        self.pids.add(dbapi_connection.info.backend_pid)
        if id(dbapi_connection) not in self.traced:
            self._trace(dbapi_connection, self.folder / f"trace-{next(self.names)}.txt")

    def _trace(self, dbapi_connection: Any, path: Path) -> None:
        stream = path.open("a")
        dbapi_connection.pgconn.trace(stream.fileno())
        dbapi_connection.pgconn.set_trace_flags(
            pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE
        )
        self.traced[id(dbapi_connection)] = (dbapi_connection, path, stream)

    def sent(self) -> list[str]:
        """What the app sent since the last call: one line per round trip."""
        trips: list[str] = []
        for key, (connection, path, stream) in list(self.traced.items()):
            if not connection.closed:
                connection.pgconn.untrace()  # flushes libpq's buffer
            stream.close()
            lines = path.read_text().splitlines()
            path.write_text("")
            messages: list[str] = []
            for line in lines:
                parts = line.split("\t")
                if len(parts) >= 3 and parts[0] == "F":
                    messages.append(" ".join(parts[2:]).strip())
                    if parts[2] in ROUND_TRIP_ENDS:
                        trips.append(" | ".join(messages))
                        messages = []
            if connection.closed:
                del self.traced[key]
            else:
                self._trace(connection, path)
        return trips

    def close(self) -> None:
        self.sent()
        for connection, _, stream in self.traced.values():
            if not connection.closed:
                connection.pgconn.untrace()
            stream.close()


@pytest.fixture
def catalog(postgres_url: str) -> Iterator[dict[str, int]]:
    app = build_app(postgres_url)
    make = Factories(app)
    category = make.category()
    product = make.product(category_id=category.id)
    with app.app_context():
        db.engine.dispose()
    yield {"category": category.id, "product": product.id}
    _clean(app)


@pytest.fixture
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="glassbox-wire-") as path:
        yield Path(path)


READS = {
    "product": "/api/v1/products/{product}",
    "product list": "/api/v1/products?limit=20",
    "category": "/api/v1/categories/{category}",
    "category list": "/api/v1/categories?limit=20",
}


@pytest.mark.parametrize("read", list(READS))
def test_a_catalog_read_is_one_round_trip_when_connected_directly(
    postgres_url: str, catalog: dict[str, int], folder: Path, read: str
) -> None:
    app = uncached_app(postgres_url, "none")
    wire = Wire(app, folder)
    client = app.test_client()
    path = READS[read].format(**catalog)
    try:
        assert client.get(path).status_code == 200  # connects; sets the session's timeouts
        first = wire.sent()
        assert any("set_config('statement_timeout', '2000', false)" in t for t in first), first
        for _ in range(7):  # past psycopg's prepare_threshold: the SELECT gets prepared
            response = client.get(path)
            assert response.status_code == 200
            trips = wire.sent()
            # One, or two when psycopg prepares it: Parse of the named statement, then Bind.
            assert len(trips) == 1 or (len(trips) == 2 and '"_pg3_' in trips[0]), trips
            assert "SELECT" in trips[0] or '"_pg3_' in trips[0], trips
        # Prepared by now: one round trip, Bind/Execute of the named statement.
        response = client.get(path)
        assert response.status_code == 200
        trips = wire.sent()
        assert len(trips) == 1, trips
        assert '"_pg3_' in trips[0], trips
    finally:
        wire.close()
        with app.app_context():
            db.engine.dispose()


def test_behind_a_transaction_pooler_a_read_is_a_transaction_with_its_timeouts(
    postgres_url: str, catalog: dict[str, int], folder: Path
) -> None:
    app = uncached_app(postgres_url, "transaction")
    wire = Wire(app, folder)
    client = app.test_client()
    try:
        for _ in range(3):
            assert client.get(f"/api/v1/products/{catalog['product']}").status_code == 200
            trips = wire.sent()
            assert [t.split(" ", 1)[0] for t in trips] == ["Query", "Query", "Parse", "Query"]
            assert '"BEGIN"' in trips[0]
            assert "set_config('statement_timeout', '2000', true)" in trips[1]
            assert "SELECT products.id" in trips[2]
            assert '"ROLLBACK"' in trips[3]
            assert "_pg3_" not in " ".join(trips)  # never prepared
    finally:
        wire.close()
        with app.app_context():
            db.engine.dispose()


@pytest.mark.parametrize("pooler", ["none", "transaction"])
def test_a_connection_dropped_by_the_server_costs_one_request_at_most(
    postgres_url: str,
    catalog: dict[str, int],
    folder: Path,
    pooler: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = uncached_app(postgres_url, pooler)
    wire = Wire(app, folder)
    client = app.test_client()
    path = f"/api/v1/products/{catalog['product']}"
    try:
        assert client.get(path).status_code == 200
        wire.sent()

        # Used moments ago: no ping. The dropped connection fails its statement once (503);
        # SQLAlchemy invalidates the pool, and the next request reconnects.
        terminate_backends(postgres_url, wire.pids)
        failed = client.get(path)
        assert failed.status_code == 503
        assert failed.mimetype == "application/problem+json"
        assert client.get(path).status_code == 200

        # Idle in the pool past PING_AFTER_IDLE: pinged at checkout, replaced, no failure.
        monkeypatch.setattr(service.database, "PING_AFTER_IDLE", 0.0)
        wire.sent()
        terminate_backends(postgres_url, wire.pids)
        assert client.get(path).status_code == 200
        trips = wire.sent()
        assert trips[0].split() == ["Query", '";"'], trips  # the ping, then a new connection
    finally:
        wire.close()
        with app.app_context():
            db.engine.dispose()
