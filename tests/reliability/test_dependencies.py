"""Dependencies fail under a running gunicorn: PostgreSQL stopped and started, Redis stopped.

Real processes only: a PostgreSQL cluster and a redis-server of the test's own, stopped
and started by the test; the app under gunicorn with 2 sync workers. Bounds are client
timeouts and polling deadlines, never timed assertions; recovery times are printed.
"""

from __future__ import annotations

import time
from typing import Any

import requests

from tests.reliability.conftest import StartLimited, StartServer, api_key_for
from tests.reliability.servers import (
    RedisProcess,
    ThrowawayPostgres,
    create_product,
    serves_reads,
    wait_until,
)

# Every request below must answer within this (the app's own timeouts are 1-2 s).
CLIENT_TIMEOUT = 15


def _assert_503_problem(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    assert int(response.headers["Retry-After"]) > 0
    body = response.json()
    assert body["status"] == 503
    assert "Traceback" not in response.text
    assert "psycopg" not in response.text
    return dict(body)


def test_database_down_is_503_and_the_service_recovers_without_restart(
    gunicorn_server: StartServer, throwaway_postgres: ThrowawayPostgres
) -> None:
    token = api_key_for(throwaway_postgres.url, "dependencies")
    headers = {"Authorization": f"Bearer {token}"}
    server = gunicorn_server(
        DATABASE_URL=throwaway_postgres.url,
        DATABASE_CONNECT_TIMEOUT="2",
        DATABASE_POOL_TIMEOUT="2",
        HEALTH_CHECK_TIMEOUT="1",
    )
    workers = server.worker_pids()
    category = requests.post(
        server.url("/api/v1/categories"), json={"name": "Before"}, headers=headers, timeout=10
    )
    assert category.status_code == 201
    assert requests.get(server.url("/health/ready"), timeout=10).json()["status"] == "ok"

    throwaway_postgres.stop()

    # Readiness says down; every kind of API request is a 503 problem, none hangs.
    for _ in range(4):  # enough for both workers to have seen the outage
        ready = requests.get(server.url("/health/ready"), timeout=CLIENT_TIMEOUT)
        assert ready.status_code == 503
        assert ready.json()["status"] == "down"
        assert ready.json()["checks"]["database"]["status"] == "down"
        _assert_503_problem(
            requests.get(server.url("/api/v1/orders"), headers=headers, timeout=CLIENT_TIMEOUT)
        )
        _assert_503_problem(
            requests.get(
                server.url("/api/v1/reports/sales"), headers=headers, timeout=CLIENT_TIMEOUT
            )
        )
        _assert_503_problem(
            requests.post(
                server.url("/api/v1/categories"),
                json={"name": "During"},
                headers=headers,
                timeout=CLIENT_TIMEOUT,
            )
        )
    assert requests.get(server.url("/health/live"), timeout=CLIENT_TIMEOUT).status_code == 200
    assert server.worker_pids() == workers  # no worker died or was replaced

    throwaway_postgres.start()
    restarted = time.monotonic()
    ready_after = wait_until(
        lambda: (
            requests.get(server.url("/health/ready"), timeout=CLIENT_TIMEOUT).status_code == 200
        ),
        timeout=60,
        what="readiness after the database came back",
    )
    # Both workers serve again (several requests, so the kernel hands them to both).
    wait_until(
        lambda: serves_reads(server, headers, CLIENT_TIMEOUT),
        timeout=60,
        what="API reads after the database came back",
    )
    api_after = time.monotonic() - restarted
    created = requests.post(
        server.url("/api/v1/categories"), json={"name": "After"}, headers=headers, timeout=10
    )
    assert created.status_code == 201
    assert server.worker_pids() == workers
    print(
        f"database outage: recovered with no restart; ready {ready_after:.2f} s and API "
        f"{api_after:.2f} s after PostgreSQL accepted connections again"
    )


def test_redis_down_reads_still_work_limits_fail_open_and_ready_is_degraded(
    rate_limited_server: StartLimited,
    server_token: str,
    redis_process: RedisProcess,
) -> None:
    server = rate_limited_server("5 per minute")
    headers = {"Authorization": f"Bearer {server_token}"}
    product = create_product(server, headers, "Cached", "R-1")
    ready = requests.get(server.url("/health/ready"), timeout=10).json()
    assert ready["status"] == "ok"

    redis_process.stop()

    statuses = [
        requests.get(server.url(path), timeout=CLIENT_TIMEOUT).status_code
        for path in [f"/api/v1/products/{product['id']}", "/api/v1/products"] * 10
    ]
    # 20 reads from one address against a limit of 5 per minute: the limiter fails open.
    assert statuses == [200] * 20
    ready_response = requests.get(server.url("/health/ready"), timeout=CLIENT_TIMEOUT)
    assert ready_response.status_code == 200
    assert ready_response.json()["status"] == "degraded"
    assert ready_response.json()["checks"]["cache"]["status"] == "down"
    # Writes still work, and what they change is what reads return.
    changed = requests.patch(
        server.url(f"/api/v1/products/{product['id']}"),
        json={"stock": 7},
        headers=headers,
        timeout=CLIENT_TIMEOUT,
    )
    assert changed.status_code == 200
    fetched = requests.get(server.url(f"/api/v1/products/{product['id']}"), timeout=10)
    assert fetched.json()["stock"] == 7

    # The outage is logged once per 30 s per worker (2 workers), not once per request:
    # by the cache, and by the limiter that let the requests through.
    records = server.log_records()
    for logger in ("service.cache", "flask-limiter"):
        lines = [r for r in records if r.get("logger") == logger and r.get("level") != "INFO"]
        assert 1 <= len(lines) <= 2, (logger, lines)
    assert server.process is not None
    assert server.process.poll() is None
