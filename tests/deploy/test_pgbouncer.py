"""The app behind PgBouncer in transaction pooling mode, the way a managed pooler (Supabase's,
a PgBouncer in front of a managed PostgreSQL) serves it in production: each transaction may
run on a different server connection, so nothing may rely on session state, and psycopg's
server-side prepared statements (made after `prepare_threshold` executions of one query on
one connection, 5 by default) break. With DATABASE_POOLER=transaction, service/config/ sets
prepare_threshold=None; with `none` (PostgreSQL reached directly) statements are prepared,
which the last test checks on a direct connection.

Debian's pgbouncer runs here on a free 127.0.0.1 port, with fewer server connections than
the app has clients, in front of a scratch database of the test PostgreSQL. The migrations
run through it (the migration Job's locked upgrade, twice at once), then a shop workload;
then the same workload with psycopg's default threshold shows the failure the setting
prevents.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from flask import Flask

from profiling.harness.processes import free_port
from service.auth import service as auth
from service.config import load_config
from service.extensions import db
from tests.conftest import TEST_DATABASE_URL, build_app, require, uncached_app
from tests.deploy.conftest import finish, start_migration

pytestmark = pytest.mark.postgres

SERVER_CONNECTIONS = 2  # PgBouncer's pool: fewer than the app's concurrent clients
CLIENTS = 6
ROUNDS = 12
LINES = 6  # per order
STOCK = 10_000
PREPARED_STATEMENT_ERRORS = {"42P05", "26000"}  # duplicate / unknown prepared statement


def _pgbouncer_binary() -> str:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin"
    found = shutil.which("pgbouncer", path=path)
    if found is None and os.geteuid() == 0:
        # As .ci/run on the project's machines: Debian's package, installed once.
        subprocess.run(  # noqa: S602 (a fixed command line)
            "command -v pgbouncer || command -v /usr/sbin/pgbouncer || "
            "(apt-get update -qq && apt-get install -y -qq --no-install-recommends pgbouncer)",
            shell=True,
            check=True,
            timeout=600,
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("pgbouncer", path=path)
    if found is None:
        pytest.fail("pgbouncer is not installed (Debian/Ubuntu: apt-get install pgbouncer)")
    return found


def _version(binary: str) -> tuple[int, int]:
    output = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)", output)
    assert match, output
    return int(match[1]), int(match[2])


def _admin_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(scope="module")
def scratch_database() -> Iterator[sa.engine.URL]:
    """A database of its own beside the test database, dropped at the end."""
    url = sa.engine.make_url(require(TEST_DATABASE_URL, "TEST_DATABASE_URL (PostgreSQL)"))
    name = f"{url.database}_pgbouncer"
    admin = sa.create_engine(_admin_url(TEST_DATABASE_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        connection.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield url.set(database=name)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture(scope="module")
def pgbouncer(scratch_database: sa.engine.URL) -> Iterator[dict[str, Any]]:
    binary = _pgbouncer_binary()
    version = _version(binary)
    # pgbouncer refuses to run as root: as root, drop to the postgres user, which must be
    # able to read the files (hence a world-readable folder of our own, not pytest's 0700).
    folder = Path(tempfile.mkdtemp(prefix="glassbox-pgbouncer-"))
    folder.chmod(0o755)
    server = scratch_database
    target = f"host={server.host or '127.0.0.1'} port={server.port or 5432} "
    target += f"dbname={server.database} user={server.username or 'postgres'}"
    if server.password:
        target += f" password={server.password}"
    (folder / "users.txt").write_text(f'"{server.username or "postgres"}" ""\n')
    process = None
    log = folder / "pgbouncer.log"
    try:
        for _attempt in range(3):  # another process may take the probed port first
            port = free_port()
            settings = [
                "[databases]",
                f"glassbox = {target}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {folder / 'users.txt'}",
                f"admin_users = {server.username or 'postgres'}",
                "pool_mode = transaction",
                f"default_pool_size = {SERVER_CONNECTIONS}",
                "min_pool_size = 0",
                "reserve_pool_size = 0",
                "max_client_conn = 200",
            ]
            if version >= (1, 21):
                # 1.21+ can track protocol-level prepared statements; 0 (off) is what
                # PgBouncer < 1.21 and other transaction poolers give. The app must not care.
                settings.append("max_prepared_statements = 0")
            ini = folder / "pgbouncer.ini"
            ini.write_text("\n".join(settings) + "\n")
            for path in (ini, folder / "users.txt"):
                path.chmod(0o644)
            command = [binary, *(["-u", "postgres"] if os.geteuid() == 0 else []), str(ini)]
            with log.open("ab") as output:
                process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
            url = f"postgresql://{server.username or 'postgres'}@127.0.0.1:{port}/glassbox"
            deadline = time.monotonic() + 15
            while process.poll() is None and time.monotonic() < deadline:
                try:
                    psycopg.connect(url, connect_timeout=2).close()
                    break
                except psycopg.OperationalError:
                    time.sleep(0.05)
            if process.poll() is None:
                yield {
                    "url": url,
                    "admin": url.rsplit("/", 1)[0] + "/pgbouncer",
                    "version": version,
                    "server": server,
                }
                return
        pytest.fail(f"pgbouncer did not start:\n{log.read_text()}")
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def migrations(pgbouncer: dict[str, Any]) -> list[tuple[int, str]]:
    """The migration Job's command, twice at once, through PgBouncer."""
    return finish([start_migration(pgbouncer["url"]) for _ in range(2)])


def _app(pgbouncer: dict[str, Any], **connect_args: Any) -> Flask:
    """The app through PgBouncer; connect_args replace the driver settings of service/config."""
    overrides: dict[str, Any] = {
        # Reads must reach the database every time, not an in-process cache.
        "CACHE_TYPE": "NullCache",
        "CACHE_NO_NULL_WARNING": True,
        "DATABASE_POOLER": "transaction",
    }
    if connect_args:
        options = copy.deepcopy(
            load_config(
                environ={},
                overrides={
                    "DATABASE_URL": pgbouncer["url"],
                    "GLASSBOX_ENV": "test",
                    "DATABASE_POOLER": "transaction",
                },
            )["SQLALCHEMY_ENGINE_OPTIONS"]
        )
        options["connect_args"] = connect_args
        overrides["SQLALCHEMY_ENGINE_OPTIONS"] = options
    return build_app(pgbouncer["url"], **overrides)


def _seed(app: Flask) -> tuple[str, list[int]]:
    """An API key, a category and eight products with plenty of stock."""
    tag = time.monotonic_ns()
    with app.app_context():
        token = auth.create_key(name=f"pgbouncer-{tag}", scopes=auth.DEVELOPMENT_SCOPES)
    headers = {"Authorization": f"Bearer {token}"}
    client = app.test_client()
    category = client.post("/api/v1/categories", json={"name": f"Pooled {tag}"}, headers=headers)
    assert category.status_code == 201, category.get_json()
    products = []
    for n in range(8):
        created = client.post(
            "/api/v1/products",
            json={
                "sku": f"PGB-{tag}-{n}",
                "name": f"Pooled {n}",
                "price": "9.50",
                "stock": STOCK,
                "category_id": category.get_json()["id"],
            },
            headers=headers,
        )
        assert created.status_code == 201, created.get_json()
        products.append(created.get_json()["id"])
    return token, products


def _shop(app: Flask, token: str, products: list[int], clients: int, rounds: int) -> dict[str, Any]:
    """Concurrent shoppers: list, read, order, read, cancel, list again. Returns the statuses,
    the products' stock afterwards and how many connections the app opened to PgBouncer."""
    opened: list[int] = []
    with app.app_context():
        sa.event.listen(db.engine, "connect", lambda *_: opened.append(1))
    headers = {"Authorization": f"Bearer {token}"}
    barrier = Barrier(clients)

    def shopper(n: int) -> list[tuple[str, int]]:
        client = app.test_client()
        seen: list[tuple[str, int]] = []
        barrier.wait(timeout=30)
        for r in range(rounds):
            product = products[(n + r) % len(products)]
            # Six lines: the stock UPDATE runs six times in one transaction, past psycopg's
            # default threshold of five, as a real basket would make it.
            basket = [products[(n + r + k) % len(products)] for k in range(LINES)]
            seen.append(("list products", client.get("/api/v1/products?limit=5").status_code))
            seen.append(("get product", client.get(f"/api/v1/products/{product}").status_code))
            seen.append(("list categories", client.get("/api/v1/categories").status_code))
            placed = client.post(
                "/api/v1/orders",
                json={
                    "customer_email": f"shopper{n}@example.com",
                    "items": [{"product_id": p, "quantity": 2} for p in basket],
                },
                headers={**headers, "Idempotency-Key": f"pgb-{token[-8:]}-{n}-{r}"},
            )
            seen.append(("place order", placed.status_code))
            if placed.status_code != 201:
                continue
            order = placed.get_json()["id"]
            read = client.get(f"/api/v1/orders/{order}", headers=headers)
            seen.append(("get order", read.status_code))
            cancelled = client.post(f"/api/v1/orders/{order}/cancel", headers=headers)
            seen.append(("cancel order", cancelled.status_code))
            listed = client.get("/api/v1/orders?limit=5", headers=headers)
            seen.append(("list orders", listed.status_code))
        return seen

    with ThreadPoolExecutor(max_workers=clients) as pool:
        statuses = [s for seen in pool.map(shopper, range(clients)) for s in seen]
    return {"statuses": statuses, "opened": len(opened)}


def _stock(app: Flask, products: list[int]) -> set[int]:
    client = app.test_client()
    return {client.get(f"/api/v1/products/{p}").get_json()["stock"] for p in products}


def _admin(pgbouncer: dict[str, Any], command: str) -> list[dict[str, Any]]:
    # The admin console speaks the simple query protocol only: no parameters.
    with psycopg.connect(pgbouncer["admin"], autocommit=True) as connection:
        cursor = connection.execute(command)
        names = [column.name for column in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_migrations_run_through_pgbouncer_twice_at_once(
    migrations: list[tuple[int, str]], pgbouncer: dict[str, Any]
) -> None:
    # Two at once on a pool of two server connections: one runs, the other waits for the
    # lock and then finds nothing to do. Neither needs a second connection (no deadlock).
    for status, output in migrations:
        assert status == 0, output
        assert "lock held, upgrading" in output
    assert sum("Running upgrade" in output for _, output in migrations) == 1
    with psycopg.connect(pgbouncer["url"]) as connection:
        (version,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        tables = {
            name
            for (name,) in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
    assert version
    assert {"products", "orders", "order_items", "api_keys"} <= tables


def test_shop_workload_through_transaction_pooling(
    migrations: list[tuple[int, str]], pgbouncer: dict[str, Any]
) -> None:
    app = _app(pgbouncer)  # the app's own driver settings
    options = app.config["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"]
    assert options["prepare_threshold"] is None
    token, products = _seed(app)
    before = _admin(pgbouncer, "SHOW STATS")
    result = _shop(app, token, products, CLIENTS, ROUNDS)
    stock = _stock(app, products)
    with app.app_context():
        db.engine.dispose()

    expected = {
        "list products": 200,
        "get product": 200,
        "list categories": 200,
        "place order": 201,
        "get order": 200,
        "cancel order": 200,
        "list orders": 200,
    }
    wrong = [(name, status) for name, status in result["statuses"] if expected[name] != status]
    assert wrong == []
    assert len(result["statuses"]) == CLIENTS * ROUNDS * len(expected)
    # Every order was cancelled, so every unit is back: no write was lost between poolings.
    assert stock == {STOCK}
    # More client connections than PgBouncer had server connections...
    assert result["opened"] > SERVER_CONNECTIONS
    pools = [p for p in _admin(pgbouncer, "SHOW POOLS") if p["database"] == "glassbox"]
    assert pools[0]["pool_mode"] == "transaction"
    servers = [s for s in _admin(pgbouncer, "SHOW SERVERS") if s["database"] == "glassbox"]
    assert len(servers) <= SERVER_CONNECTIONS
    # ...and the traffic went through PgBouncer: each request is at least one transaction.
    stats = {s["database"]: s for s in _admin(pgbouncer, "SHOW STATS")}
    old = {s["database"]: s for s in before}
    transactions = stats["glassbox"]["total_xact_count"] - old["glassbox"]["total_xact_count"]
    assert transactions >= len(result["statuses"])


def test_psycopg_default_prepared_statements_break_behind_the_pooler(
    migrations: list[tuple[int, str]],
    pgbouncer: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What the workload above would meet without prepare_threshold=None: psycopg's default
    # (prepare a query after 5 executions on a connection) behind transaction pooling.
    good = _app(pgbouncer)
    token, products = _seed(good)
    with good.app_context():
        db.engine.dispose()
    app = _app(pgbouncer, connect_timeout=3)
    result = _shop(app, token, products, clients=4, rounds=6)
    with app.app_context():
        db.engine.dispose()
    failures = [status for _, status in result["statuses"] if status >= 500]
    assert failures, "expected prepared-statement errors with psycopg's default threshold"
    states = {
        getattr(getattr(record.exc_info[1], "orig", None), "sqlstate", None)
        for record in caplog.records
        if record.exc_info and record.exc_info[1] is not None
    }
    assert states & PREPARED_STATEMENT_ERRORS, states


def test_directly_statements_are_prepared_and_requests_carry_the_timeouts(
    postgres_url: str,
) -> None:
    # DATABASE_POOLER=none: psycopg prepares a statement run often on a connection, and the
    # connection a request uses has the budget's statement_timeout as a session setting.
    app = uncached_app(postgres_url, "none")
    assert app.config["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"]["prepare_threshold"] == 5
    client = app.test_client()
    try:
        for _ in range(8):
            assert client.get("/api/v1/categories?limit=3").status_code == 200
        with app.test_request_context(), db.engine.connect() as connection:
            # The pool holds one connection: the one the reads above used.
            assert db.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
            prepared = list(
                connection.exec_driver_sql("SELECT statement FROM pg_prepared_statements").scalars()
            )
            timeout = connection.exec_driver_sql("SHOW statement_timeout").scalar()
        assert any("FROM categories" in statement for statement in prepared), prepared
        assert timeout == "2s"
    finally:
        with app.app_context():
            db.engine.dispose()
