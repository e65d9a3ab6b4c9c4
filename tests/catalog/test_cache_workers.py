"""Two gunicorn workers, each holding a product in its local cache tier: a write through the
API (or an order's stock change) is seen by the very next read on either worker."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from profiling.harness.gunicorn import GunicornServer
from profiling.harness.processes import wait_until
from service.auth import service as auth
from service.catalog.models import Product
from tests.factories import Factories
from tests.processes import start_gunicorn
from tests.reliability.servers import server_env

READS_AT_ONCE = 8
CLOSE = {"Connection": "close"}  # a fresh connection each time, so both workers answer


@pytest.fixture
def product(pg_app: Flask) -> Product:
    return Factories(pg_app).product(name="Before", stock=50)


@pytest.fixture
def token(pg_app: Flask) -> str:
    with pg_app.app_context():
        return auth.create_key(name="cache-workers", scopes=auth.DEVELOPMENT_SCOPES)


@pytest.fixture
def server(
    pg_app: Flask, postgres_url: str, redis_url: str, tmp_path: Path
) -> Iterator[GunicornServer]:
    env = server_env(DATABASE_URL=postgres_url, REDIS_URL=redis_url, WEB_CONCURRENCY="2")
    server = start_gunicorn("api", env, tmp_path / "api.log")
    try:
        yield server
    finally:
        server.stop()


def _reads_by_worker(server: GunicornServer, path: str, after: int = 0) -> Counter[int]:
    """Worker pid → GETs of `path` it answered, counting from access line number `after`."""
    records = [r for r in server.log_records() if r.get("logger") == "glassbox.access"]
    return Counter(
        r["pid"] for r in records[after:] if r.get("path") == path and r.get("method") == "GET"
    )


def _access_lines(server: GunicornServer) -> int:
    return sum(1 for r in server.log_records() if r.get("logger") == "glassbox.access")


def _read_all(url: str, headers: dict[str, str] | None = None) -> list[requests.Response]:
    def read(_: int) -> requests.Response:
        return requests.get(url, headers={**CLOSE, **(headers or {})}, timeout=15)

    with ThreadPoolExecutor(READS_AT_ONCE) as pool:
        return list(pool.map(read, range(READS_AT_ONCE)))


def _warm_both_workers(server: GunicornServer, path: str) -> str:
    """Read until each worker has answered several times (so holds the product locally)."""
    etags: set[str] = set()

    def both_hold_it() -> bool:
        for response in _read_all(server.url(path)):
            assert response.status_code == 200
            etags.add(response.headers["ETag"])
        served = _reads_by_worker(server, path)
        return len(served) == 2 and min(served.values()) >= 3

    wait_until(both_hold_it, timeout=30, what="both workers reading the product")
    assert len(etags) == 1
    return etags.pop()


def _every_read_shows(
    server: GunicornServer, path: str, check: Callable[[dict[str, Any]], bool], old_etag: str
) -> None:
    """From now on, every read on both workers passes `check`; the old ETag gets no 304."""
    start = _access_lines(server)
    seen_etags: set[str] = set()

    def both_workers_answered() -> bool:
        for response in _read_all(server.url(path)):
            assert response.status_code == 200
            assert check(response.json()), response.json()
            seen_etags.add(response.headers["ETag"])
        for response in _read_all(server.url(path), {"If-None-Match": old_etag}):
            assert response.status_code == 200, "an old ETag still gets 304"
            assert check(response.json()), response.json()
        return len(_reads_by_worker(server, path, after=start)) == 2

    wait_until(both_workers_answered, timeout=30, what="reads on both workers")
    assert len(seen_etags) == 1
    assert old_etag not in seen_etags


def _write(server: GunicornServer, token: str, method: str, path: str, body: Any) -> int:
    headers = {**CLOSE, "Authorization": f"Bearer {token}"}
    return requests.request(
        method, server.url(path), json=body, headers=headers, timeout=15
    ).status_code


@pytest.mark.parametrize(
    ("write", "check"),
    [
        pytest.param(
            lambda product: ("PATCH", f"/api/v1/products/{product.id}", {"name": "After"}, 200),
            lambda body: body["name"] == "After",
            id="patch",
        ),
        pytest.param(
            lambda product: (
                "POST",
                "/api/v1/orders",
                {
                    "customer_email": "buyer@example.com",
                    "items": [{"product_id": product.id, "quantity": 3}],
                },
                201,
            ),
            lambda body: body["stock"] == 47,
            id="order changes the stock",
        ),
    ],
)
def test_a_write_is_seen_by_every_read_on_every_worker(
    server: GunicornServer,
    product: Product,
    token: str,
    write: Callable[[Product], tuple[str, str, Any, int]],
    check: Callable[[dict[str, Any]], bool],
) -> None:
    path = f"/api/v1/products/{product.id}"
    old_etag = _warm_both_workers(server, path)
    unchanged = requests.get(
        server.url(path), headers={**CLOSE, "If-None-Match": old_etag}, timeout=15
    )
    assert unchanged.status_code == 304

    method, write_path, body, status = write(product)
    assert _write(server, token, method, write_path, body) == status

    _every_read_shows(server, path, check, old_etag)
