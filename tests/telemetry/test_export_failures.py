"""A collector that refuses or hangs must not slow requests down or grow memory without bound."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from profiling.harness.processes import bind_free_port
from tests.processes import start_gunicorn
from tests.reliability.servers import free_port
from tests.telemetry.conftest import one_worker_env


@pytest.fixture
def hanging_collector() -> Iterator[str]:
    """Accepts connections and reads requests, but never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    bind_free_port(listener)
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        listener.close()


def _exporting_env(endpoint: str, database: str, **extra: str) -> dict[str, str]:
    settings = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16",
        # A small queue makes the bound visible quickly: spans beyond it are dropped.
        "OTEL_BSP_MAX_QUEUE_SIZE": "64",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "30",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
    }
    return one_worker_env(database, **{**settings, **extra})


@pytest.mark.parametrize("collector", ["hanging", "refusing"])
def test_requests_are_served_while_export_fails(
    collector: str, request: pytest.FixtureRequest, sqlite_url: str, tmp_path: Path
) -> None:
    if collector == "hanging":
        endpoint = request.getfixturevalue("hanging_collector")
    else:
        endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    api = start_gunicorn("api", _exporting_env(endpoint, sqlite_url), tmp_path / "api.log")
    try:
        with requests.Session() as session:
            for _ in range(150):
                # The client timeout is the bound: an exporter blocking the request path
                # for its 30 s export timeout would fail here.
                response = session.get(api.base_url + "/api/v1/categories", timeout=5)
                assert response.status_code == 200
        assert requests.get(api.base_url + "/health/ready", timeout=5).status_code == 200
    finally:
        # Even with the collector hanging, the worker's final flush gives up in time.
        assert api.stop(timeout=20) == 0
    if collector == "hanging":
        # 150 requests made ~300 spans for a queue of 64: the processor dropped the rest
        # instead of holding them all in memory.
        assert "Queue full, dropping Span" in api.output(), api.output()[-2000:]
