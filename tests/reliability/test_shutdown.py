"""Graceful shutdown: SIGTERM to gunicorn while requests are in flight.

The slow requests are sales reports with REPORTS_SQL_DELAY_MS (the profiling knob that
adds a database sleep to the report query), so they are still running when the signal
arrives. Whether a worker holds a connection is read from /proc (the socket is among the
worker's open files), not guessed with a sleep.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from tests.reliability.conftest import StartServer
from tests.reliability.servers import GunicornServer, wait_until

SLOW_MS = 3000
WORKERS = 2
# Request threads per worker (WEB_THREADS): 1 runs the sync worker, 2 the threaded one.
THREAD_COUNTS = (1, 2)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed while we looked
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _established(server: GunicornServer) -> list[str]:
    """Socket inodes of established connections to the server (0 while still queued)."""
    inodes = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == server.port and fields[3] == "01":
            inodes.append(fields[9])
    return inodes


def reports_sleeping(database_url: str) -> int:
    """Sales reports inside their database sleep (REPORTS_SQL_DELAY_MS) right now."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
            " AND datname = current_database() AND query LIKE 'SELECT pg_sleep%'"
        ).fetchone()
    return int(row[0]) if row else 0


def connections_held_by_workers(server: GunicornServer) -> int:
    """Established connections to the server that a worker has accepted."""
    return sum(connections_held_by_each_worker(server).values())


def connections_held_by_each_worker(server: GunicornServer) -> dict[int, int]:
    established = set(_established(server))
    return {pid: len(_socket_inodes(pid) & established) for pid in server.worker_pids()}


def connections_queued(server: GunicornServer) -> int:
    """Connections the kernel accepted that no worker has taken yet (no inode yet)."""
    return sum(1 for inode in _established(server) if inode == "0")


@pytest.mark.parametrize("threads_per_worker", THREAD_COUNTS)
def test_sigterm_serves_in_flight_and_queued_requests_then_refuses(
    gunicorn_server: StartServer, server_database: str, server_token: str, threads_per_worker: int
) -> None:
    # A budget past the slow reports (the default 5 s gives SQL 2 s: statement_timeout).
    server = gunicorn_server(
        DATABASE_URL=server_database,
        REPORTS_SQL_DELAY_MS=str(SLOW_MS),
        REQUEST_BUDGET="10",
        WEB_CONCURRENCY=str(WORKERS),
        WEB_THREADS=str(threads_per_worker),
    )
    results: dict[str, Any] = {}

    def get(name: str, path: str) -> None:
        try:
            headers = {"Authorization": f"Bearer {server_token}"}
            response = requests.get(server.url(path), headers=headers, timeout=60)
            results[name] = response.status_code
        except requests.RequestException as error:  # recorded; the test fails on it
            results[name] = error

    def start(name: str, path: str) -> threading.Thread:
        thread = threading.Thread(target=get, args=(name, path))
        thread.start()
        return thread

    busy = WORKERS * threads_per_worker
    threads = []
    for n in range(busy):
        # One at a time, each inside its database sleep before the next: a worker that has
        # accepted a connection but not yet handed its request to a thread still accepts
        # (slow clients hold sockets, not threads), so reports sent at once could all land
        # on one worker and leave the other's threads idle.
        threads.append(start(f"report {n}", "/api/v1/reports/sales"))
        wait_until(
            lambda n=n: reports_sleeping(server_database) == n + 1,
            timeout=30,
            what=f"report {n} in the database",
        )
    # Every thread of both workers is inside a slow report...
    wait_until(
        lambda: connections_held_by_workers(server) == busy, timeout=30, what=f"{busy} reports"
    )
    # ...each worker as many as it has threads: a worker whose threads are all busy leaves
    # new connections to the others (gunicorn's own gthread worker takes up to 1000).
    held = sorted(connections_held_by_each_worker(server).values())
    assert held == [threads_per_worker] * WORKERS
    # ...and three more requests wait in the listening socket's queue.
    threads += [start(f"queued {n}", "/api/v1/categories") for n in range(3)]
    wait_until(lambda: connections_queued(server) == 3, timeout=30, what="3 queued requests")

    server.signal(signal.SIGTERM)
    # New connections while the workers finish are taken too, not refused.
    threads += [start(f"after SIGTERM {n}", "/api/v1/categories") for n in range(3)]

    for thread in threads:
        thread.join(timeout=60)
    assert results == dict.fromkeys(results, 200)
    assert len(results) == busy + 6
    assert server.wait(timeout=60) == 0

    messages = [record.get("message", "") for record in server.log_records()]
    assert any("Handling signal: term" in message for message in messages)
    assert not any("WORKER TIMEOUT" in message for message in messages)
    # Once the server has stopped nothing listens: a new connection is refused.
    try:
        requests.get(server.url("/health/live"), timeout=5)
    except requests.ConnectionError:
        pass
    else:
        raise AssertionError("the server still answered after it stopped")
