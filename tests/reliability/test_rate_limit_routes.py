"""Issue 10, finding 9: one allowance per client across every route and both workers.

gunicorn with 2 workers and the limiter in Redis, as production runs: requests to lists,
single items, unknown paths (404) and writes without a key (401) all draw on one allowance,
and exactly that many get through, whichever worker serves them.
"""

from __future__ import annotations

import itertools
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.reliability.conftest import StartServer
from tests.reliability.servers import GunicornServer

LIMIT = 15
REQUESTS = 60
CLIENTS = 8

# (method, path, status when under the limit)
MIX = [
    ("GET", "/api/v1/categories", 200),
    ("GET", "/api/v1/products", 200),
    ("GET", "/api/v1/reports/sales", 401),
    ("GET", "/api/v1/products/999999", 404),
    ("GET", "/api/v1/no-such-route", 404),
    ("POST", "/api/v1/categories", 401),
]


def _fire(server: GunicornServer, headers: dict[str, str], count: int) -> Counter[int]:
    calls = list(itertools.islice(itertools.cycle(MIX), count))

    def call(item: tuple[str, str, int]) -> int:
        method, path, _ = item
        response = requests.request(
            method,
            server.url(path),
            json={"name": "x"} if method == "POST" else None,
            headers={**headers, "Connection": "close"},
            timeout=15,
        )
        if response.status_code == 429:
            assert response.headers["Content-Type"] == "application/problem+json"
            assert int(response.headers["Retry-After"]) > 0
        return response.status_code

    with ThreadPoolExecutor(CLIENTS) as pool:
        return Counter(pool.map(call, calls))


def _served_by(server: GunicornServer) -> set[int]:
    return {
        record["pid"]
        for record in server.log_records()
        if record.get("logger") == "glassbox.access" and record.get("path", "").startswith("/api/")
    }


def test_one_allowance_per_client_across_routes_and_workers(
    gunicorn_server: StartServer, server_database: str, server_token: str, redis_url: str
) -> None:
    server = gunicorn_server(
        DATABASE_URL=server_database,
        REDIS_URL=redis_url,
        RATELIMIT_ENABLED="true",
        # An hour: the window cannot roll over while the test runs.
        RATELIMIT_DEFAULT=f"{LIMIT} per hour",
    )
    anonymous = _fire(server, {}, REQUESTS)
    print(f"limit {LIMIT}, {REQUESTS} mixed requests from one address: {dict(anonymous)}")
    assert anonymous[429] == REQUESTS - LIMIT
    assert sum(anonymous.values()) == REQUESTS
    assert len(_served_by(server)) == 2, "one worker served every request"
    # A made-up token draws on the address's allowance, which is spent.
    assert _fire(server, {"Authorization": "Bearer gbx_made_up"}, 3) == {429: 3}
    # A valid key has one allowance of its own, across the same routes.
    keyed = _fire(server, {"Authorization": f"Bearer {server_token}"}, REQUESTS)
    print(f"limit {LIMIT}, {REQUESTS} mixed requests with one key: {dict(keyed)}")
    assert keyed[429] == REQUESTS - LIMIT
