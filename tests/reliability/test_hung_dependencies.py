"""A dependency that accepts connections and never answers: the request budget still holds.

The real PostgreSQL (TEST_DATABASE_URL) and Redis (TEST_REDIS_URL) sit behind a black-hole
proxy (tests/reliability/blackhole.py) that forwards normally, then holds every byte; the
app runs under gunicorn with 2 sync workers and takes concurrent requests. Every request
must answer within REQUEST_BUDGET plus a generous margin (the timed assertion the issue
asks for), liveness must answer, no worker may be killed, and once the proxy passes bytes
again the service must recover without a restart. The figures are printed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from sqlalchemy.engine import make_url

from tests.conftest import _clean, build_app
from tests.reliability.blackhole import BlackHoleProxy, black_hole
from tests.reliability.conftest import StartServer, api_key_for
from tests.reliability.servers import GunicornServer, create_product, serves_reads, wait_until
from tests.reliability.test_dependencies import _assert_503_problem

BUDGET = 5.0  # REQUEST_BUDGET's default
MARGIN = 1.0  # for a 2-core machine shared with the client threads and PostgreSQL
CLIENT_TIMEOUT = 30  # far past the budget: a request that hangs fails the bound, not the client
CONCURRENCY = 8

Timed = tuple[float, requests.Response]


@pytest.fixture
def clean_postgres(postgres_url: str) -> Iterator[str]:
    yield postgres_url
    _clean(build_app(postgres_url))


@pytest.fixture
def postgres_proxy(clean_postgres: str) -> Iterator[BlackHoleProxy]:
    url = make_url(clean_postgres)
    with black_hole(url.host or "127.0.0.1", url.port or 5432) as proxy:
        yield proxy


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[BlackHoleProxy]:
    parts = urlsplit(redis_url)
    with black_hole(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        yield proxy


def _timed(call: Callable[[], requests.Response]) -> Timed:
    started = time.monotonic()
    response = call()
    return time.monotonic() - started, response


def _concurrently(calls: list[Callable[[], requests.Response]]) -> list[Timed]:
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as executor:
        return list(executor.map(_timed, calls))


def _figures(results: list[Timed]) -> str:
    seconds = sorted(elapsed for elapsed, _ in results)
    return (
        f"{len(seconds)} requests: median {statistics.median(seconds):.2f} s, "
        f"max {seconds[-1]:.2f} s"
    )


def _assert_within_budget(results: list[Timed]) -> None:
    slow = [
        (round(elapsed, 2), r.status_code) for elapsed, r in results if elapsed > BUDGET + MARGIN
    ]
    assert not slow, f"answered after REQUEST_BUDGET + {MARGIN} s: {slow}"


def _assert_no_worker_killed(server: GunicornServer, workers: set[int]) -> None:
    assert server.worker_pids() == workers
    assert "WORKER TIMEOUT" not in server.output()


def test_hung_database_answers_503_within_the_budget_and_recovers_without_restart(
    gunicorn_server: StartServer, clean_postgres: str, postgres_proxy: BlackHoleProxy
) -> None:
    token = api_key_for(clean_postgres, "dependencies")
    headers = {"Authorization": f"Bearer {token}"}
    proxied = make_url(clean_postgres).set(host="127.0.0.1", port=postgres_proxy.port)
    server = gunicorn_server(DATABASE_URL=proxied.render_as_string(hide_password=False))
    workers = server.worker_pids()
    created = requests.post(
        server.url("/api/v1/categories"), json={"name": "Hung"}, headers=headers, timeout=10
    )
    assert created.status_code == 201
    # Both workers hold pooled connections through the proxy (the pre-ping path).
    for _ in range(6):
        assert (
            requests.get(server.url("/api/v1/orders"), headers=headers, timeout=10).status_code
            == 200
        )

    def calls(round_: int) -> list[Callable[[], requests.Response]]:
        kinds: list[Callable[[int], requests.Response]] = [
            lambda i: requests.get(
                server.url("/api/v1/orders"), headers=headers, timeout=CLIENT_TIMEOUT
            ),
            # A search nobody made before: a cache miss, so the database is asked.
            lambda i: requests.get(
                server.url(f"/api/v1/products?q=hung{round_}x{i}"), timeout=CLIENT_TIMEOUT
            ),
            lambda i: requests.get(
                server.url("/api/v1/reports/sales"), headers=headers, timeout=CLIENT_TIMEOUT
            ),
            lambda i: requests.post(
                server.url("/api/v1/categories"),
                json={"name": f"During {round_} {i}"},
                headers=headers,
                timeout=CLIENT_TIMEOUT,
            ),
        ]
        return [lambda i=i: kinds[i % len(kinds)](i) for i in range(2 * CONCURRENCY)]

    postgres_proxy.hold()
    results = _concurrently(calls(1))
    ready = _timed(lambda: requests.get(server.url("/health/ready"), timeout=CLIENT_TIMEOUT))
    # A second round while it still hangs: the breaker's trials cost no more.
    results += _concurrently(calls(2))
    live = _timed(lambda: requests.get(server.url("/health/live"), timeout=CLIENT_TIMEOUT))

    for _, response in results:
        _assert_503_problem(response)
    _assert_within_budget([*results, ready, live])
    assert ready[1].status_code == 503
    assert ready[1].json()["checks"]["database"]["status"] == "down"
    assert live[1].status_code == 200
    _assert_no_worker_killed(server, workers)

    postgres_proxy.release()
    ready_after = wait_until(
        lambda: (
            requests.get(server.url("/health/ready"), timeout=CLIENT_TIMEOUT).status_code == 200
        ),
        timeout=60,
        what="readiness after the database answered again",
    )
    # Several reads, so the kernel hands some to each worker.
    api_after = ready_after + wait_until(
        lambda: serves_reads(server, headers, CLIENT_TIMEOUT),
        timeout=60,
        what="API reads after the database answered again",
    )
    after = requests.post(
        server.url("/api/v1/categories"), json={"name": "After"}, headers=headers, timeout=10
    )
    assert after.status_code == 201
    _assert_no_worker_killed(server, workers)
    print(
        f"hung PostgreSQL, {CONCURRENCY} concurrent clients: {_figures(results)} (all 503); "
        f"readiness {ready[0]:.2f} s, liveness {live[0]:.2f} s; after release: ready in "
        f"{ready_after:.2f} s, API on both workers in {api_after:.2f} s, no restart"
    )


def test_hung_redis_costs_one_short_timeout_then_reads_go_on_at_database_speed(
    gunicorn_server: StartServer,
    server_database: str,
    server_token: str,
    redis_url: str,
    redis_proxy: BlackHoleProxy,
    tmp_path: Path,
) -> None:
    parts = urlsplit(redis_url)
    proxied = urlunsplit(parts._replace(netloc=f"127.0.0.1:{redis_proxy.port}"))
    server = gunicorn_server(
        DATABASE_URL=server_database,
        REDIS_URL=proxied,
        RATELIMIT_ENABLED="true",
        RATELIMIT_DEFAULT="5 per minute",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    workers = server.worker_pids()
    headers = {"Authorization": f"Bearer {server_token}"}
    product = create_product(server, headers, "Hung", "H-1")
    assert requests.get(server.url("/health/ready"), timeout=10).json()["status"] == "ok"

    redis_proxy.hold()
    paths = [f"/api/v1/products/{product['id']}", "/api/v1/products", "/api/v1/categories"]
    results = _concurrently(
        [
            lambda path=path: requests.get(server.url(path), timeout=CLIENT_TIMEOUT)
            for path in paths * CONCURRENCY
        ]
    )
    ready = _timed(lambda: requests.get(server.url("/health/ready"), timeout=CLIENT_TIMEOUT))
    live = _timed(lambda: requests.get(server.url("/health/live"), timeout=CLIENT_TIMEOUT))
    changed = _timed(
        lambda: requests.patch(
            server.url(f"/api/v1/products/{product['id']}"),
            json={"stock": 7},
            headers=headers,
            timeout=CLIENT_TIMEOUT,
        )
    )
    fetched = _timed(
        lambda: requests.get(server.url(f"/api/v1/products/{product['id']}"), timeout=10)
    )

    # 24 reads from one address against a limit of 5 per minute: the limiter fails open.
    assert [r.status_code for _, r in results] == [200] * len(results)
    _assert_within_budget([*results, ready, live, changed, fetched])
    assert ready[1].status_code == 200
    body = ready[1].json()
    assert body["status"] == "degraded"
    assert body["checks"]["cache"]["status"] == "down"
    assert body["checks"]["rate_limiter"]["status"] == "down"
    assert live[1].status_code == 200
    assert changed[1].status_code == 200
    assert fetched[1].json()["stock"] == 7  # the write reached the reads, no stale cache
    # One warning per worker from the breaker (at most every 30 s), not one per request.
    warnings = [
        r
        for r in server.log_records()
        if r.get("logger") == "service.redis" and r["level"] != "INFO"
    ]
    assert 1 <= len(warnings) <= 2, warnings
    opened = [
        line
        for line in requests.get(server.url("/metrics"), timeout=10).text.splitlines()
        if line.startswith("glassbox_redis_breaker_opened_total{")
    ]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in opened) >= 1, opened
    _assert_no_worker_killed(server, workers)

    redis_proxy.release()
    ready_after = wait_until(
        lambda: (
            requests.get(server.url("/health/ready"), timeout=CLIENT_TIMEOUT).json()["status"]
            == "ok"
        ),
        timeout=60,
        what="readiness ok after Redis answered again",
    )
    # The limiter counts again: anonymous reads reach the limit of 5 per minute.
    limited_after = ready_after + wait_until(
        lambda: (
            requests.get(server.url("/api/v1/categories"), timeout=CLIENT_TIMEOUT).status_code
            == 429
        ),
        timeout=60,
        what="the rate limit enforced again after Redis answered again",
    )
    _assert_no_worker_killed(server, workers)
    print(
        f"hung Redis, {CONCURRENCY} concurrent clients: reads {_figures(results)} (all 200); "
        f"readiness {ready[0]:.2f} s (degraded), write {changed[0]:.2f} s; after release: "
        f"ready ok in {ready_after:.2f} s, limits enforced in {limited_after:.2f} s, no restart"
    )
